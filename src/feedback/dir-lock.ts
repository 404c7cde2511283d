// One server per data dir. Two embedded-store servers on one `--data-dir` would both append
// to the feedback log and each replay the other's events into its own state on restart:
// counts doubled, state that depends on which one restarted last. The second one now fails
// at start-up, naming the first.
//
// The lock is a file, `<dataDir>/LOCK`, created exclusively and holding the owner's pid and
// host. One left by a process that is gone (a crash, a kill -9) is taken over when that pid
// no longer runs on this host. A lock from another host (a data dir on shared storage) cannot
// be checked from here: the message says which file to remove once that server is known to
// be gone. Known limit: two servers started within the same few milliseconds on a data dir
// whose lock is stale can both take it over (Node has no flock(2)).
import { hostname } from 'node:os';
import { mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
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

async function readOwner(path: string): Promise<Owner | null> {
  try {
    const o = JSON.parse(await readFile(path, 'utf8')) as Partial<Owner>;
    if (typeof o.pid === 'number' && typeof o.host === 'string')
      return { pid: o.pid, host: o.host, started: String(o.started ?? '?') };
  } catch {
    // Unreadable or torn (a crash while writing it): nobody's.
  }
  return null;
}

/** Lock files this process holds (a second server in one process is refused too). */
const held = new Set<string>();

export class DirLock {
  private released = false;

  private constructor(readonly path: string) {}

  /** Takes `<dir>/LOCK` (creating dir), or throws DataDirInUseError naming the holder. */
  static async acquire(dir: string): Promise<DirLock> {
    await mkdir(dir, { recursive: true });
    const path = join(dir, 'LOCK');
    const me: Owner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
    const body = JSON.stringify(me) + '\n';
    if (held.has(path))
      throw new DataDirInUseError(
        `data dir ${dir} is in use by another server in this process (${process.pid})`,
      );
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(path, 'wx');
        try {
          await fh.writeFile(body);
        } finally {
          await fh.close();
        }
        held.add(path);
        return new DirLock(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const owner = await readOwner(path);
      if (owner && owner.host !== me.host)
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
      // Stale (its process is gone) or unreadable: replace it in one rename, so no moment
      // exists without a lock file, then read it back to see who won a race for it.
      const tmp = `${path}.${process.pid}.tmp`;
      await writeFile(tmp, body);
      await rename(tmp, path);
      const now = await readOwner(path);
      if (now?.pid === process.pid && now.host === me.host) {
        held.add(path);
        return new DirLock(path);
      }
    }
    throw new DataDirInUseError(
      `data dir ${dir}: could not take ${path} (another server is starting)`,
    );
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
