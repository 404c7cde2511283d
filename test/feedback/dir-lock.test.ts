// One server per data dir (feedback/dir-lock.ts): a second holder is refused naming the
// first, a lock left by a process that is gone is taken over, and one from another host is
// refused with the file to remove.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DataDirError, DataDirInUseError, DirLock } from '../../src/feedback/dir-lock.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'recserve-lock-'));
}

/** A pid that ran and is gone (a child that exited). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], {
    encoding: 'utf8',
  });
  return Number(r.stdout);
}

test('a held data dir is refused until released; the lock file goes with the release', async () => {
  const dir = join(tempDir(), 'data');
  try {
    const lock = await DirLock.acquire(dir);
    const owner = JSON.parse(readFileSync(join(dir, 'LOCK'), 'utf8'));
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.host, hostname());
    await assert.rejects(DirLock.acquire(dir), (e: Error) => {
      assert.ok(e instanceof DataDirInUseError);
      assert.match(
        e.message,
        new RegExp(
          `data dir .*data is in use by another server in this process \\(${process.pid}\\)`,
        ),
      );
      return true;
    });
    await lock.release();
    assert.equal(existsSync(join(dir, 'LOCK')), false);
    await lock.release();
    const again = await DirLock.acquire(dir);
    await again.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock whose process is alive is refused; one whose process is gone, or torn, is taken over', async () => {
  const dir = tempDir();
  try {
    // The parent of this test process: alive, and not us.
    writeFileSync(
      join(dir, 'LOCK'),
      JSON.stringify({ pid: process.ppid, host: hostname(), started: 'then' }),
    );
    await assert.rejects(
      DirLock.acquire(dir),
      new RegExp(
        `is in use by process ${process.ppid} \\(since then\\); stop it, or give this server another --data-dir`,
      ),
    );
    // A pid that runs but is not a Node process (after a reboot the number is anyone's).
    const other = spawn('sleep', ['30'], { stdio: 'ignore' });
    const stales = [
      JSON.stringify({ pid: deadPid(), host: hostname(), started: 'then' }),
      '{"pid": 12', // torn by a crash while it was written
      JSON.stringify({ pid: other.pid, host: hostname(), started: 'then' }),
    ];
    try {
      for (const stale of stales) {
        writeFileSync(join(dir, 'LOCK'), stale);
        const lock = await DirLock.acquire(dir);
        assert.equal(JSON.parse(readFileSync(join(dir, 'LOCK'), 'utf8')).pid, process.pid);
        await lock.release();
      }
    } finally {
      other.kill();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("another host's lock is refused, naming the file to remove once that server is gone", async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'LOCK'), JSON.stringify({ pid: 1, host: 'elsewhere', started: 'x' }));
    await assert.rejects(
      DirLock.acquire(dir),
      /locked by process 1 on host elsewhere \(since x\); give this server another --data-dir, or remove .*LOCK once that server is known to be gone/,
    );
    assert.equal(JSON.parse(readFileSync(join(dir, 'LOCK'), 'utf8')).host, 'elsewhere');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a lock naming pid 0 or -1 is garbage and taken over; a LOCK that is a directory is one clear error', async () => {
  const dir = tempDir();
  try {
    for (const pid of [0, -1]) {
      writeFileSync(join(dir, 'LOCK'), JSON.stringify({ pid, host: hostname(), started: 'x' }));
      const lock = await DirLock.acquire(dir);
      await lock.release();
    }
    mkdirSync(join(dir, 'LOCK'));
    await assert.rejects(DirLock.acquire(dir), (e: Error) => {
      assert.ok(e instanceof DataDirError, e.name);
      assert.match(e.message, /^data dir .* cannot take its lock .*LOCK: /);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('two processes taking one data dir at the same instant: exactly one gets it, fresh or stale', async () => {
  const child = join(tempDir(), 'take.mjs');
  const lockModule = new URL('../../src/feedback/dir-lock.js', import.meta.url).href;
  writeFileSync(
    child,
    `import { DirLock } from ${JSON.stringify(lockModule)};
const [dir, at] = process.argv.slice(2);
while (Date.now() < Number(at)) {}
try {
  const l = await DirLock.acquire(dir);
  console.log('GOT');
  await new Promise((r) => setTimeout(r, 300));
  await l.release();
} catch (e) {
  console.log(e.name);
}
`,
  );
  const run = (dir: string, at: number) =>
    new Promise<string>((resolve) => {
      const c = spawn(process.execPath, [child, dir, String(at)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      c.stdout.on('data', (b: Buffer) => (out += b.toString()));
      c.once('exit', () => resolve(out.trim()));
    });
  try {
    for (const mode of ['fresh', 'stale'])
      for (let round = 0; round < 3; round++) {
        const dir = tempDir();
        if (mode === 'stale')
          writeFileSync(
            join(dir, 'LOCK'),
            JSON.stringify({ pid: deadPid(), host: hostname(), started: 'then' }),
          );
        const at = Date.now() + 400;
        const got = await Promise.all([run(dir, at), run(dir, at)]);
        assert.deepEqual(got.sort(), ['DataDirInUseError', 'GOT'], `${mode} round ${round}`);
        rmSync(dir, { recursive: true, force: true });
      }
  } finally {
    rmSync(join(child, '..'), { recursive: true, force: true });
  }
});
