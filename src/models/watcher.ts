// Which model version serves, and changing it while traffic flows (Triton's "poll" model
// control). The watcher lists the repository's complete versions (models/repository.ts:
// a version is a directory with a manifest, written to a temporary name and renamed in
// whole), and serves the newest one that loads, or the one version it is pinned to:
//
//   new version appears   -> load it beside the serving one, warm it, swap (registry.ts:
//                            requests in flight finish on the old model, which is freed
//                            when the last one releases it)
//   it fails to load      -> the serving version stays; the failure is kept with the
//                            version's file list (names, sizes, mtimes), and the version is
//                            tried again only once that changes (a copy still in progress,
//                            a file replaced) or on SIGHUP; once at the next listing when a
//                            file was missing or the files changed while it loaded
//   serving dir removed   -> the newest remaining version that loads replaces it (rolling
//                            back is deleting or moving the bad version away)
//   serving dir rewritten -> (same number, other manifest) it is loaded again; if the new
//                            content fails, the earlier content keeps serving
//   nothing listed at all -> the serving version stays (an unmounted volume must not take
//                            the model away); the log says so once
//   the server stops      -> a load in progress is abandoned at its next step
//
// At start-up the same rule picks the first version: a newest version that fails is logged
// and the next older one is tried, so one bad upload does not keep a restarted replica out.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelsStatus, VersionStatus } from '../api/types.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { ModelBundle } from './bundle.js';
import { releaseServingModel, type ModelRegistry, type ServingModel } from './registry.js';
import {
  BundleIntegrityError,
  listVersionsAsync,
  loadBundle,
  manifestDigests,
  type LoadedBundle,
} from './repository.js';

export interface ModelWatcherOptions {
  repoDir: string;
  name: string;
  /** Serve exactly this version; null (default) serves the newest that loads. */
  pinned?: number | null;
  /** List the repository this often; 0 turns polling off. */
  pollMs: number;
  registry: ModelRegistry;
  /**
   * Builds the runtime state of a loaded bundle (registry.ts buildServingModel); `previous`
   * is the model it will replace, whose catalog tables it may share.
   */
  build: (
    bundle: ModelBundle,
    previous: ServingModel | undefined,
    signal: AbortSignal,
  ) => Promise<ServingModel>;
  /** Runs every stage of a built model once before it serves (pipeline/service.ts warm). */
  warm: (m: ServingModel) => Promise<void>;
  log: Logger;
  metrics?: Metrics;
}

export type { ModelsStatus, VersionStatus };

/** No version could be served: the message lists what was tried and why each failed. */
export class NoServableVersionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoServableVersionError';
  }
}

interface Failure {
  reason: string;
  at: string;
  fingerprint: string;
  /** It failed for a missing file (retried once at the next listing). */
  vanished: boolean;
}

/** A file that was not there: ENOENT from below, or the repository's own "is missing". */
function isMissingFile(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | undefined;
  return (
    e?.code === 'ENOENT' ||
    (err instanceof BundleIntegrityError && / is missing$/.test(e?.message ?? ''))
  );
}

/** A fingerprint no directory has: the version is tried again at the next listing. */
const CHANGED_DURING_LOAD = '\u0000changed during the load';

/** The version directory's entries with their sizes and mtimes: what a retry waits to change. */
async function fingerprint(dir: string): Promise<string> {
  try {
    const names = (await readdir(dir)).sort();
    const parts = [String((await stat(dir)).mtimeMs)];
    for (const n of names) {
      const s = await stat(join(dir, n)).catch(() => null);
      parts.push(s ? `${n}:${s.size}:${s.mtimeMs}` : `${n}:-`);
    }
    return parts.join('|');
  } catch {
    return '-';
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class ModelWatcher {
  private readonly pinned: number | null;
  private readonly failures = new Map<number, Failure>();
  private serving: { version: number; since: string; loadMs: number } | null = null;
  /** The complete versions the last scan listed, ascending. */
  private listed: number[] = [];
  /** The serving version's bundle as loadBundle returned it (with its digests). */
  private servingBundle: LoadedBundle | undefined;
  private loading: number | null = null;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private emptyLogged = false;
  private pinnedGoneLogged = false;
  /** Abandons the load in progress (close()). */
  private abort: AbortController | null = null;
  /** Ends start()'s wait between checks early. */
  private wake: (() => void) | null = null;

  constructor(private readonly opts: ModelWatcherOptions) {
    this.pinned = opts.pinned ?? null;
  }

  /**
   * Loads, warms and swaps in the first version to serve. When none loads it calls
   * `onFailure` with why (naming every version tried) and, with polling on, keeps checking
   * until one does (a fixed version uploaded, a copy finished); with polling off, or once
   * closed, it throws NoServableVersionError.
   */
  async start(onFailure?: (reason: string) => void): Promise<ServingModel> {
    for (;;) {
      await this.check();
      const m = this.opts.registry.current();
      if (m && this.serving !== null) {
        if (this.opts.pollMs > 0 && !this.closed) this.schedule();
        return m;
      }
      const err = this.startError();
      if (this.closed || this.opts.pollMs === 0) throw err;
      onFailure?.(err.message);
      // The next poll, or sooner: a check() from SIGHUP, or close().
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.opts.pollMs);
        t.unref();
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private startError(): NoServableVersionError {
    const tried = [...this.failures].sort((a, b) => b[0] - a[0]);
    const dir = join(this.opts.repoDir, this.opts.name);
    if (this.closed) return new NoServableVersionError('stopped before a model version loaded');
    if (this.pinned !== null && !tried.length)
      return new NoServableVersionError(
        `version ${this.pinned} of '${this.opts.name}' is not in ${dir} (--model-version)`,
      );
    if (!tried.length) return new NoServableVersionError(`no model version under ${dir}`);
    // One version: its own error, as before there was a choice.
    if (tried.length === 1) return new NoServableVersionError(tried[0]![1].reason);
    return new NoServableVersionError(
      `no version of '${this.opts.name}' loads: ` +
        tried.map(([v, f]) => `version ${v}: ${f.reason}`).join('; '),
    );
  }

  /**
   * Lists the repository now and acts on it (SIGHUP). `retryFailed` forgets the recorded
   * failures first, so a version that failed for a reason outside its files (memory, a
   * library) is tried again. Settles when the check (and any swap it started) is done.
   */
  check(retryFailed = false): Promise<void> {
    if (retryFailed) this.failures.clear();
    if (this.running) {
      // One more pass after the one running: it may have listed before the change.
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.scan();
        } while (this.again && !this.closed);
      } finally {
        this.running = null;
        this.wake?.();
      }
    })();
    return this.running;
  }

  /** As of the last listing (no file system work here: /v1/models may be asked often). */
  status(): ModelsStatus {
    const all = new Set(this.listed);
    if (this.serving) all.add(this.serving.version);
    const versions = [...all]
      .sort((a, b) => b - a)
      .map((version): VersionStatus => {
        if (this.serving?.version === version) {
          const replaced = this.failures.get(version);
          return {
            version,
            state: 'serving',
            since: this.serving.since,
            load_ms: this.serving.loadMs,
            // Its directory was replaced by content that does not load; what serves is the
            // content loaded before.
            ...(replaced ? { reason: `its replacement on disk failed: ${replaced.reason}` } : {}),
          };
        }
        if (this.loading === version) return { version, state: 'loading' };
        const f = this.failures.get(version);
        if (f) return { version, state: 'failed', reason: f.reason, since: f.at };
        return { version, state: 'available' };
      });
    return {
      name: this.opts.name,
      serving: this.serving?.version ?? null,
      pinned: this.pinned,
      poll_ms: this.opts.pollMs,
      versions,
    };
  }

  /** Stops polling and waits for a load in progress (a model loaded too late is freed). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.wake?.();
    // A load in progress is abandoned at its next step (a 1M-item load takes ~10 s).
    this.abort?.abort(new Error('the server is stopping'));
    await this.running?.catch(() => undefined);
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.check().then(
        () => this.reschedule(),
        (err: unknown) => {
          // scan() catches a version's own failures; this is the repository itself.
          this.opts.log.error({ err }, 'model repository check failed');
          this.reschedule();
        },
      );
    }, this.opts.pollMs);
    this.timer.unref();
  }

  private reschedule(): void {
    if (!this.closed) this.schedule();
  }

  /** The versions to consider, best first: the pinned one alone, or newest to oldest. */
  private candidates(listed: number[]): number[] {
    if (this.pinned !== null) return listed.includes(this.pinned) ? [this.pinned] : [];
    return [...listed].reverse();
  }

  private async scan(): Promise<void> {
    const { repoDir, name, log } = this.opts;
    const listed = await listVersionsAsync(repoDir, name);
    this.listed = listed;
    const serving = this.serving?.version ?? null;
    if (serving !== null && listed.length === 0) {
      if (!this.emptyLogged)
        log.warn(
          { repo: join(repoDir, name), serving },
          'no model versions listed in the repository; the serving version stays',
        );
      this.emptyLogged = true;
      return;
    }
    this.emptyLogged = false;
    if (this.pinned !== null && serving === this.pinned && !listed.includes(this.pinned)) {
      if (!this.pinnedGoneLogged)
        log.warn({ serving }, 'the pinned version left the repository; it keeps serving');
      this.pinnedGoneLogged = true;
      return;
    }
    this.pinnedGoneLogged = false;
    for (const v of this.candidates(listed)) {
      if (this.closed) return;
      const dir = join(repoDir, name, String(v));
      if (v === serving) {
        // The serving version is the best one left: nothing to do, unless its directory was
        // replaced by another under the same number (removed, then written again: the
        // writers number a version latest + 1). Its manifest, which lists every file's
        // digest, tells; one that cannot be read now (mid-replacement) waits for the next
        // listing. A replacement that fails to load leaves the serving one as any failed
        // version does (not the next older version: what serves is still this number's
        // earlier content).
        const digest = (await manifestDigests(dir))?.manifest;
        if (digest === undefined || digest === this.servingBundle?.digests?.manifest) return;
        const failed = this.failures.get(v);
        if (failed?.fingerprint === (await fingerprint(dir))) return;
        log.warn({ version: v }, 'the serving version was replaced on disk: loading it again');
        await this.load(v, dir);
        return;
      }
      // Kept until it loads: a second failure for a missing file is then not retried again.
      const failed = this.failures.get(v);
      if (failed && failed.fingerprint === (await fingerprint(dir))) continue;
      if (await this.load(v, dir)) return;
    }
  }

  /** Loads, warms and swaps in version `v`; false (and the failure recorded) if it fails. */
  private async load(v: number, dir: string): Promise<boolean> {
    const { log, metrics, registry } = this.opts;
    const t0 = Date.now();
    const before = await fingerprint(dir);
    this.loading = v;
    const from = this.serving?.version ?? null;
    log.info({ version: v, serving: from }, 'loading model version');
    let model: ServingModel | undefined;
    const abort = new AbortController();
    this.abort = abort;
    const { signal } = abort;
    try {
      // The serving version's catalog and users are shared when this one has the same
      // (repository.ts loadBundle `reuse`): no catalog work while serving, one copy in memory.
      const previous = this.opts.registry.current();
      const bundle = await loadBundle(dir, {
        signal,
        ...(this.servingBundle ? { reuse: this.servingBundle } : {}),
      });
      // The directory is the version's name everywhere else (listings, pins, this status);
      // a copied directory whose config says another version or name would report one
      // model_version and be looked for as another.
      if (bundle.version !== v || bundle.name !== this.opts.name)
        throw new BundleIntegrityError(
          dir,
          `config.json says ${bundle.name} version ${bundle.version}, but the directory is ` +
            `${this.opts.name}/${v} (a copied version must be rewritten, e.g. by ` +
            '`recserve import-ranker`, not renamed)',
        );
      model = await this.opts.build(bundle, previous, signal);
      await this.opts.warm(model);
      signal.throwIfAborted();
      registry.swap(model);
      this.servingBundle = bundle;
      this.failures.delete(v);
      const loadMs = Date.now() - t0;
      this.serving = { version: v, since: new Date().toISOString(), loadMs };
      metrics?.modelLoads.inc({ result: 'loaded' });
      log.info(
        { version: v, previous: from, ms: loadMs, rollback: from !== null && v < from },
        from === null ? 'model version serving' : 'model version swapped in',
      );
      return true;
    } catch (err) {
      if (model) await releaseServingModel(model).catch(() => undefined);
      if (signal.aborted) {
        log.info({ version: v }, 'model version load abandoned: stopping');
        return true;
      }
      // Errors from below the repository's own checks (ONNX Runtime, FAISS) do not say which
      // version they came from.
      const raw = message(err);
      const reason = raw.includes(dir) ? raw : `${dir}: ${raw}`;
      // Retried once the files differ from these. If they changed while it loaded (a copy
      // that finished), or a file was missing (the directory moved away and back while it
      // loaded leaves the same entries behind), the failure may be the moment's, not the
      // files': the next listing tries again, once for a missing file (a version that really
      // lacks one is not hashed again every few seconds).
      const after = await fingerprint(dir);
      const vanished = isMissingFile(err) && !this.failures.get(v)?.vanished;
      this.failures.set(v, {
        reason,
        at: new Date().toISOString(),
        fingerprint: after === before && !vanished ? after : CHANGED_DURING_LOAD,
        vanished: isMissingFile(err),
      });
      metrics?.modelLoads.inc({ result: 'failed' });
      log.error(
        { version: v, serving: from, err: reason },
        from === null
          ? 'model version failed to load'
          : 'model version failed to load; the serving version stays',
      );
      return false;
    } finally {
      this.loading = null;
      this.abort = null;
    }
  }
}
