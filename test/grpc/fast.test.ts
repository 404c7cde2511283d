// The unary fast path (transport/grpc/fast.ts) against grpc-js itself: two real servers over
// the same scripted service, one with the fast path and one without, and the same raw HTTP/2
// exchanges sent to both. Status, message, recserve trailers, content-type and the answer's
// bytes must be equal call for call, for answers, every kind of refusal, and the calls the
// fast path hands to grpc-js (compressed requests).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import { gzipSync } from 'node:zlib';
import { ApiError } from '../../src/api/errors.js';
import { startGrpcServer, type GrpcServerHandle } from '../../src/transport/grpc/server.js';
import { attachFastPath, frameMessage, parseGrpcTimeout } from '../../src/transport/grpc/fast.js';
import { serviceDefinition } from '../../src/transport/grpc/proto.js';
import { ScriptedService, sleep } from './helpers.js';

// One scripted service per server, so state (feedback dedupe) evolves the same in both.
const svcFast = new ScriptedService();
const svcSlow = new ScriptedService();
/** Sets the scripted behaviour of both services. */
function behave(b: ScriptedService['behaviour']): void {
  svcFast.behaviour = b;
  svcSlow.behaviour = b;
}
let fast: GrpcServerHandle;
let slow: GrpcServerHandle;

before(async () => {
  fast = await startGrpcServer(svcFast, { port: 0, maxReceiveBytes: 4096 });
  slow = await startGrpcServer(svcSlow, { port: 0, maxReceiveBytes: 4096, fastPath: false });
});
after(async () => {
  await Promise.all([fast.close(500), slow.close(500)]);
});

interface Exchange {
  headers: Record<string, unknown>;
  body: Buffer;
  trailers: Record<string, unknown>;
}

// What a client acts on; `date` and the like differ between any two answers.
const KEPT = [
  ':status',
  'content-type',
  'grpc-status',
  'grpc-message',
  'grpc-encoding',
  'recserve-error-code',
  'recserve-error-field',
];
function kept(h: http2.IncomingHttpHeaders): Record<string, unknown> {
  return Object.fromEntries(KEPT.filter((k) => h[k] !== undefined).map((k) => [k, h[k]]));
}

/** One call as raw HTTP/2: the body written in `chunks`, headers as given. */
function exchange(
  address: string,
  method: string,
  chunks: Buffer[],
  extra: http2.OutgoingHttpHeaders = {},
): Promise<Exchange> {
  const session = http2.connect(`http://${address}`);
  return new Promise((resolve, reject) => {
    const req = session.request({
      ':method': 'POST',
      ':path': `/recserve.v1.RecommendationService/${method}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...extra,
    });
    const out: Exchange = { headers: {}, body: Buffer.alloc(0), trailers: {} };
    const data: Buffer[] = [];
    req.on('response', (h) => (out.headers = kept(h)));
    req.on('trailers', (t) => (out.trailers = kept(t)));
    req.on('data', (c: Buffer) => data.push(c));
    req.on('error', reject);
    req.on('close', () => {
      out.body = Buffer.concat(data);
      session.close();
      resolve(out);
    });
    for (const c of chunks) req.write(c);
    req.end();
  });
}

function requestFrame(method: string, req: unknown): Buffer {
  const ser = serviceDefinition()[method]!.requestSerialize as (v: unknown) => Buffer;
  return frameMessage(ser(req));
}

async function both(
  method: string,
  chunks: Buffer[],
  extra?: http2.OutgoingHttpHeaders,
): Promise<Exchange> {
  const a = await exchange(fast.address, method, chunks, extra);
  const b = await exchange(slow.address, method, chunks, extra);
  assert.deepEqual(a, b, `${method}: the fast path answered differently from grpc-js`);
  return a;
}

test('the fast path is attached, and declines when grpc-js is not shaped as expected', () => {
  assert.equal(fast.fastPath, true);
  assert.equal(slow.fastPath, false);
  assert.equal(attachFastPath({}, [], { maxReceiveBytes: 1, maxSendBytes: 1 }), false);
  assert.equal(
    attachFastPath({ http2Servers: new Map() }, [], { maxReceiveBytes: 1, maxSendBytes: 1 }),
    false,
  );
});

test('answers: the same headers, bytes and trailers as grpc-js for every unary method', async () => {
  behave(undefined);
  const cases: [string, unknown][] = [
    ['GetRecommendations', { user_id: 'u1', num_items: 5, context: { device_type: 'mobile' } }],
    ['GetSimilarItems', { item_id: 'item_1', num_items: 2 }],
    ['RecordFeedback', { user_id: 'u1', events: [{ item_id: 'a', event_type: 'view' }] }],
    ['RecordNegativeFeedback', { user_id: 'u1', item_id: 'i', feedback_type: 'hide' }],
  ];
  for (const [method, req] of cases) {
    const frame = requestFrame(method, req);
    const r = await both(method, [frame]);
    assert.equal(r.trailers['grpc-status'], '0', method);
    assert.ok(r.body.length > 5, method);
    // The request split across DATA frames (a 1-byte first chunk) reads the same.
    const split = await exchange(fast.address, method, [frame.subarray(0, 1), frame.subarray(1)]);
    assert.equal(split.trailers['grpc-status'], '0', method);
  }
});

test('refusals: validation, pipeline errors and malformed messages match grpc-js', async () => {
  behave(undefined);
  const bad = await both('GetRecommendations', [requestFrame('GetRecommendations', {})]);
  assert.equal(bad.headers['grpc-status'], '3'); // INVALID_ARGUMENT, trailers-only
  assert.equal(bad.headers['recserve-error-field'], 'user_id');

  behave(async () => {
    throw new ApiError('not_found', 'no such item ü', 'item_id');
  });
  const nf = await both('GetSimilarItems', [requestFrame('GetSimilarItems', { item_id: 'x' })]);
  assert.equal(nf.headers['grpc-status'], '5');
  assert.equal(decodeURI(String(nf.headers['grpc-message'])), 'no such item ü');
  behave(undefined);

  const oversized = Buffer.alloc(5 + 5000);
  oversized.writeUInt32BE(5000, 1);
  const big = await both('GetRecommendations', [oversized]);
  assert.equal(big.headers['grpc-status'], '8'); // RESOURCE_EXHAUSTED

  const none = await both('GetRecommendations', []);
  assert.equal(none.headers['grpc-status'], '12'); // UNIMPLEMENTED: no request message

  // Not a message (a tag cut short): INVALID_ARGUMENT like any bad request (decode.ts), where
  // grpc-js on its own answers INTERNAL for a deserializer that throws.
  const garbage = await both('GetRecommendations', [frameMessage(Buffer.from([0xff, 0xff]))]);
  assert.equal(garbage.headers['grpc-status'], '3');
  assert.equal(garbage.headers['recserve-error-code'], 'malformed_body');

  const f = requestFrame('GetSimilarItems', { item_id: 'x' });
  const two = await both('GetSimilarItems', [Buffer.concat([f, f])]);
  assert.equal(two.headers['grpc-status'], '12');
});

test('bytes that are not the request message are malformed_body, naming the field', async () => {
  behave(undefined);
  const calls = svcFast.calls.length;
  const U = '0a 02 75 31'; // user_id "u1"
  const cases: [string, string, string | undefined, RegExp][] = [
    // num_items (an int32: a varint) sent length-delimited
    ['GetRecommendations', `${U} 22 01 05`, 'num_items', /sent as length-delimited/],
    ['GetRecommendations', `${U} 20 ff`, 'num_items', /varint runs past the end/],
    ['GetRecommendations', `${U} 7e 01`, undefined, /wire type 6 does not exist/],
    ['GetRecommendations', `${U} 7f`, undefined, /wire type 7 does not exist/],
    ['GetRecommendations', `${U} 7c`, undefined, /end-group \(field 15\) closes no group/],
    ['GetRecommendations', `${U}${' 7b'.repeat(101)}${' 7c'.repeat(101)}`, undefined, /deeper/],
    ['GetRecommendations', '00 00', undefined, /field number 0/],
    // user_id declared 80 bytes, 1 there: protobufjs reads user "a"
    ['GetRecommendations', '0a 50 61', 'user_id', /80 bytes run past the end .*\(1 left\)/],
    // context declared 10 bytes, 3 there; then a string running past context's end
    ['GetRecommendations', '12 0a 0a 01 6d', 'context', /10 bytes run past/],
    ['GetRecommendations', '12 03 0a 05 61 62 63 64 65', 'context.device_type', /5 bytes/],
    // Not UTF-8: protobufjs decodes each to U+FFFD, so different raw ids would collide.
    ['GetRecommendations', '0a 02 ff fe', 'user_id', /is not valid UTF-8/],
    ['GetRecommendations', '0a 03 ed a0 80', 'user_id', /is not valid UTF-8/], // a surrogate
    ['GetSimilarItems', '0a 02 61 c3', 'item_id', /is not valid UTF-8/], // a sequence cut off
    ['RecordFeedback', `${U} 12 04 0a 02 61 ff`, 'events[0].item_id', /is not valid UTF-8/],
    ['RecordNegativeFeedback', `${U} 22 01 80`, 'reason', /is not valid UTF-8/],
  ];
  for (const [method, hex, field, message] of cases) {
    const r = await both(method, [frameMessage(Buffer.from(hex.replace(/ /g, ''), 'hex'))]);
    assert.equal(r.headers['grpc-status'], '3', hex);
    assert.equal(r.headers['recserve-error-code'], 'malformed_body', hex);
    assert.equal(r.headers['recserve-error-field'], field, hex);
    assert.match(decodeURI(String(r.headers['grpc-message'])), message, hex);
  }
  assert.equal(svcFast.calls.length, calls, 'no malformed request reached the pipeline');

  // A request that ends inside its gRPC frame is malformed too. (grpc-js, when it carries
  // the call, drops the partial message and answers UNIMPLEMENTED: no request message.)
  const cut = frameMessage(Buffer.from(U.replace(/ /g, ''), 'hex')).subarray(0, 7);
  const r = await exchange(fast.address, 'GetRecommendations', [cut]);
  assert.equal(r.headers['grpc-status'], '3');
  assert.equal(r.headers['recserve-error-code'], 'malformed_body');
  assert.match(decodeURI(String(r.headers['grpc-message'])), /inside its message \(2 of 4 bytes/);
});

test('calls the fast path declines (compressed) are served by grpc-js on the same port', async () => {
  behave(undefined);
  const msg = serviceDefinition().GetSimilarItems!.requestSerialize({ item_id: 'gz' }) as Buffer;
  const z = gzipSync(msg);
  const frame = Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), z]);
  frame.writeUInt32BE(z.length, 1);
  const r = await both('GetSimilarItems', [frame], { 'grpc-encoding': 'gzip' });
  assert.equal(r.trailers['grpc-status'], '0');
  assert.equal((svcFast.calls.at(-1)!.req as { item_id: string }).item_id, 'gz');
});

test('a fast-path call past its grpc-timeout is DEADLINE_EXCEEDED and its work aborted', async () => {
  const signals: (AbortSignal | undefined)[] = [];
  behave(async (_m, opts) => {
    signals.push(opts?.signal);
    await sleep(1500);
  });
  const frame = requestFrame('GetSimilarItems', { item_id: 'slow' });
  const t0 = Date.now();
  const r = await exchange(fast.address, 'GetSimilarItems', [frame], { 'grpc-timeout': '100m' });
  assert.equal(r.headers['grpc-status'], '4');
  assert.ok(Date.now() - t0 < 1200, 'answered at the deadline, not when the work ended');
  assert.equal(signals[0]?.aborted, true, 'the pipeline was told to stop');
  behave(undefined);
});

test('a grpc-timeout beyond any timer (99999999H) is no deadline, not an instant one', async () => {
  // The work takes a little while: an overflowed timer (1 ms) would end the call first.
  behave(() => sleep(30));
  const frame = requestFrame('GetSimilarItems', { item_id: 'far' });
  const r = await exchange(fast.address, 'GetSimilarItems', [frame], {
    'grpc-timeout': '99999999H',
  });
  assert.equal(r.trailers['grpc-status'], '0');
  behave(undefined);
});

test('grpc-timeout is read as the gRPC spec writes it; malformed values are left to grpc-js', () => {
  assert.equal(parseGrpcTimeout('100m', 1000), 1100);
  assert.equal(parseGrpcTimeout('2S', 0), 2000);
  assert.equal(parseGrpcTimeout('1H', 0), 3_600_000);
  assert.equal(parseGrpcTimeout('1500u', 0), 1);
  assert.equal(parseGrpcTimeout('12x', 0), null);
  assert.equal(parseGrpcTimeout('123456789S', 0), null); // more than 8 digits
});
