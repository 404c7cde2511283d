// One server per data dir. Two embedded-store servers on one `--data-dir` would both append
// to the feedback log and each replay the other's events into its own state on restart:
// counts doubled, state that depends on which one restarted last. The second one now fails
// at start-up, naming the first.
//
// The lock is a file, `<dataDir>/LOCK`, created exclusively and holding the owner's pid and
// host. One left by a process that is gone (a crash, a kill -9) is taken over when that pid
// no longer runs on this host. A lock from another host (a data dir on shared storage) cannot
// be checked from here: the message says which file to remove once that server is known to
// be gone. The lock is created whole (written aside, hard-linked into place) and a stale one
// is replaced under a second, short-lived lock, so two servers starting at once do not both
// get it (Node has no flock(2); a takeover lock left by a process that died while holding
// it is the remaining window).
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export class DataDirInUseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataDirInUseError';
  }
}

interface Owner {
  pid: number;
  host: string;
  started: string;
}

/**
 * Whether `pid` may still be the lock's server: it runs, and where /proc says what it is, it
 * is a Node process (after a reboot the pid may belong to anything else).
 */
async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (e) {
    // EPERM: it runs, as another user.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return /node|recserve/.test(cmdline);
  } catch {
    return true;
  }
}

/** The owner a lock file names; null for anything else (torn, garbage, pid ≤ 0). */
function parseOwner(text: string): Owner | null {
  try {
    const o = JSON.parse(text) as Partial<Owner>;
    // kill(0) and kill(-1) reach process groups: such a pid names no server.
    if (Number.isSafeInteger(o.pid) && o.pid! > 0 && typeof o.host === 'string')
      return { pid: o.pid!, host: o.host, started: String(o.started ?? '?') };
  } catch {
    // Not JSON.
  }
  return null;
}

async function readOwner(path: string): Promise<Owner | null> {
  try {
    return parseOwner(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

/** The data dir cannot be locked at all (the file system refuses); one line says why. */
export class DataDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataDirError';
  }
}

function me(): Owner {
  return { pid: process.pid, host: hostname(), started: new Date().toISOString() };
}

/**
 * Creates `path` holding `body`, whole, or fails with EEXIST: the body goes to a file of this
 * process's own first and is hard-linked into place, so nobody ever reads the lock empty or
 * half written (open('wx') then write left a moment where a rival saw an empty file, took it
 * for a torn one, and took the lock over).
 */
async function createWhole(path: string, body: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, body);
  try {
    await link(tmp, path);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

function isExists(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'EEXIST';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function takeLock(dir: string, path: string): Promise<void> {
  const mine = me();
  const body = JSON.stringify(mine) + '\n';
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await createWhole(path, body);
      return;
    } catch (e) {
      if (!isExists(e)) throw e;
    }
    const seen = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    // Gone between the two calls (its holder stopped): try to create it again.
    if (seen === null) continue;
    const owner = parseOwner(seen);
    if (owner && owner.host !== mine.host)
      throw new DataDirInUseError(
        `data dir ${dir} is locked by process ${owner.pid} on host ${owner.host} (since ` +
          `${owner.started}); give this server another --data-dir, or remove ${path} once ` +
          'that server is known to be gone',
      );
    if (owner && owner.pid !== process.pid && (await alive(owner.pid)))
      throw new DataDirInUseError(
        `data dir ${dir} is in use by process ${owner.pid} (since ${owner.started}); stop ` +
          `it, or give this server another --data-dir (if that process is not a recserve ` +
          `server, remove ${path})`,
      );
    // Stale (its process is gone) or unreadable. Taking it over is serialised by a second
    // lock, created whole as the first is: its holder checks that the lock is still the
    // stale one it saw and replaces it in one rename; a rival waits and looks again (and
    // then sees a live owner). A takeover lock left by a process that died holding it is
    // removed once its owner is gone.
    const takeover = `${path}.takeover`;
    try {
      await createWhole(takeover, body);
    } catch (e) {
      if (!isExists(e)) throw e;
      const t = parseOwner((await readFile(takeover, 'utf8').catch(() => '')) || '');
      if (!t || (t.host === mine.host && t.pid !== process.pid && !(await alive(t.pid))))
        await unlink(takeover).catch(() => undefined);
      await sleep(10 + Math.random() * 40);
      continue;
    }
    try {
      const now = await readFile(path, 'utf8').catch(() => null);
      if (now === seen) {
        const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
        await writeFile(tmp, body);
        await rename(tmp, path);
        return;
      }
    } finally {
      await unlink(takeover).catch(() => undefined);
    }
  }
  throw new DataDirInUseError(
    `data dir ${dir}: could not take ${path} (other servers are starting)`,
  );
}

/** Lock files this process holds (a second server in one process is refused too). */
const held = new Set<string>();

export class DirLock {
  private released = false;

  private constructor(readonly path: string) {}

  /**
   * Takes `<dir>/LOCK` (creating dir), or throws DataDirInUseError naming the holder, or
   * DataDirError when the file system refuses (a LOCK that is a directory, a read-only or
   * missing data dir).
   */
  static async acquire(dir: string): Promise<DirLock> {
    const path = join(dir, 'LOCK');
    if (held.has(path))
      throw new DataDirInUseError(
        `data dir ${dir} is in use by another server in this process (${process.pid})`,
      );
    try {
      await mkdir(dir, { recursive: true });
      await takeLock(dir, path);
    } catch (e) {
      if (e instanceof DataDirInUseError) throw e;
      throw new DataDirError(
        `data dir ${dir}: cannot take its lock ${path}: ${(e as Error).message}`,
      );
    }
    held.add(path);
    return new DirLock(path);
  }

  /** Removes the lock if it is still this process's. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    held.delete(this.path);
    const owner = await readOwner(this.path);
    if (owner?.pid === process.pid && owner.host === hostname())
      await unlink(this.path).catch(() => undefined);
  }
}
