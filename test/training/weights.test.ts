import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogBuilder, RATING_CODE, eventCode } from '../../src/data/log.js';
import { computeWeights } from '../../src/training/weights.js';

const DAY = 86_400_000;

test('purchase > share > like > click > view > skip, explicit weights win, ratings scale', () => {
  const b = new LogBuilder();
  const u = b.userRow('u');
  const t = Date.UTC(2025, 0, 1);
  for (const ev of ['purchase', 'share', 'like', 'click', 'view', 'skip'])
    b.push(u, 0, t, eventCode(ev));
  b.push(u, 0, t, eventCode('view'), NaN, 7);
  b.push(u, 0, t, RATING_CODE, 5);
  b.push(u, 0, t, RATING_CODE, 1);
  const w = computeWeights(b.finish(), { decayPerDay: 0 });
  for (let i = 0; i < 5; i++) assert.ok(w[i] > w[i + 1], `event ${i} outranks ${i + 1}`);
  assert.equal(w[5], 0);
  assert.equal(w[6], 7);
  assert.ok(w[7] > w[8] && w[8] > 0);
});

test('time decay: exp(-lambda·days) before the newest event; short views count less', () => {
  const b = new LogBuilder();
  const u = b.userRow('u');
  const now = Date.UTC(2025, 0, 1);
  b.push(u, 0, now, eventCode('click'));
  b.push(u, 0, now - 69.3147 * DAY, eventCode('click'));
  b.push(u, 0, now, eventCode('view'), NaN, NaN, 255, 5);
  b.push(u, 0, now, eventCode('view'), NaN, NaN, 255, 120);
  const w = computeWeights(b.finish(), { decayPerDay: 0.01 });
  assert.ok(Math.abs(w[1] / w[0] - 0.5) < 1e-4, `half after ln2/0.01 days: ${w[1] / w[0]}`);
  assert.ok(w[2] < w[3]);
});
