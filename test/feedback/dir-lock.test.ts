// One server per data dir (feedback/dir-lock.ts): a second holder is refused naming the
// first, a lock left by a process that is gone is taken over, and one from another host is
// refused with the file to remove.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DataDirInUseError, DirLock } from '../../src/feedback/dir-lock.js';

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
