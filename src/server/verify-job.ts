/**
 * The server's verify jobs: one at a time per store, asked for by a client (POST
 * /v1/verify, routes/verify.ts) or run on a schedule (`xfer serve --verify-every`), both
 * through runVerifyJob. The job is transfer/verify.ts over the server's store, with the
 * rebuilt files under `files/` checked too.
 */
import { join } from 'node:path';
import { BusyError, isXferError } from '../core/errors.js';
import { formatReadDataSubset, hasRebuiltCopy, manifestsAt, verifyManifests, type ReadDataSubset, type VerifyProgress, type VerifyReport } from '../transfer/verify.js';
import type { ServerStore } from './context.js';
import type { ServerLogger } from './log.js';

/** What a store-only server's verify report says of rebuilt files (VerifyReport.rebuiltSkipped). */
export const STORE_ONLY_NO_FILES = 'the server stores chunks and manifests only (xfer serve --no-files) and rebuilds no files';

/** Stores a verify job runs on now: a second one is refused (BusyError), not queued. */
const busy = new WeakSet<ServerStore>();

export interface VerifyJob {
  readonly store: ServerStore;
  /** `<root>/files`, where targets are rebuilt; undefined on a store-only server (nothing rebuilt: the report says so). */
  readonly filesDir: string | undefined;
  /** '' (every target), a target or a folder of them. */
  readonly path: string;
  readonly readData?: boolean;
  readonly subset?: ReadDataSubset;
  /** Check no rebuilt file. */
  readonly chunksOnly?: boolean;
  readonly signal: AbortSignal;
  readonly onProgress?: (progress: VerifyProgress) => void;
  /**
   * Called once the job holds the store and knows its manifests (NotFoundError before if
   * there is none under `path`): a route sends its answer's headers only then, so that
   * busy and not-found are plain error answers.
   */
  readonly onStart?: () => void;
}

/** Runs a verify job (BusyError if one is running on the store). */
export async function runVerifyJob(job: VerifyJob): Promise<VerifyReport> {
  if (busy.has(job.store)) throw new BusyError('a verify is already running on this server: try again later');
  busy.add(job.store);
  try {
    const names = await manifestsAt(job.store, job.path, { signal: job.signal });
    job.onStart?.();
    const filesDir = job.filesDir;
    const targetOf = job.chunksOnly || filesDir === undefined ? undefined : (name: string) => (hasRebuiltCopy(name) ? join(filesDir, ...name.split('/')) : undefined);
    const report = await verifyManifests(job.store, job.store, names, { signal: job.signal, readData: job.readData, subset: job.subset, targetOf, onProgress: job.onProgress });
    // Asked for or not (--chunks-only), a store-only server has no rebuilt file to check: said, not left to guess.
    return filesDir === undefined ? { ...report, rebuiltSkipped: STORE_ONLY_NO_FILES } : report;
  } finally {
    busy.delete(job.store);
  }
}

/** Damage lines a scheduled verify writes to the log, at most (the count is always logged). */
export const MAX_DAMAGE_LOGGED = 100;

/** `xfer serve --verify-every`: what to check, how often. */
export interface VerifySchedule {
  /** Time between the end of one verify and the start of the next; the first starts this long after the server. */
  readonly everyMs: number;
  /** Read this part of the data (`--verify-subset`); without it, chunks are checked for existence only. */
  readonly subset?: ReadDataSubset;
}

/**
 * Runs the verify of every target of `store` on `schedule`, in the background, each
 * result in `log` (info when intact, a warning per damage, at most MAX_DAMAGE_LOGGED, and
 * an error line with the count when damaged). A verify a client runs at that time makes
 * this one skip its turn. stop() ends the schedule and aborts a verify in progress.
 */
export function scheduleVerify(
  store: ServerStore, filesDir: string | undefined, schedule: VerifySchedule, log: ServerLogger,
): { stop(): Promise<void> } {
  const controller = new AbortController();
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    if (controller.signal.aborted) return;
    timer = setTimeout(() => {
      running = once().finally(() => {
        running = undefined;
        arm();
      });
    }, schedule.everyMs);
    timer.unref();
  };
  const once = async () => {
    const started = performance.now();
    const readData = schedule.subset ? formatReadDataSubset(schedule.subset) : 'none';
    log.info({ readData }, 'scheduled verify started');
    let report: VerifyReport;
    try {
      report = await runVerifyJob({ store, filesDir, path: '', subset: schedule.subset, signal: controller.signal });
    } catch (err) {
      if (controller.signal.aborted) return;
      if (isXferError(err, 'XFER_BUSY')) return log.info({}, 'scheduled verify skipped: another verify is running');
      log.error({ code: isXferError(err) ? err.code : 'XFER_INTERNAL', error: (err as Error)?.message ?? String(err) }, 'scheduled verify failed');
      return;
    }
    const fields = {
      readData,
      manifests: report.manifests,
      files: report.files,
      chunks: report.chunks,
      chunksRead: report.chunksRead,
      bytesRead: report.bytesRead,
      filesChecked: report.filesChecked,
      ...(report.rebuiltSkipped ? { rebuiltSkipped: report.rebuiltSkipped } : {}),
      ms: Math.round(performance.now() - started),
    };
    if (report.damaged.length === 0) return log.info(fields, 'scheduled verify: all intact');
    for (const d of report.damaged.slice(0, MAX_DAMAGE_LOGGED)) {
      log.warn({ target: d.manifest, path: d.path, kind: d.kind, ...(d.digest ? { digest: d.digest } : {}), error: d.message }, 'verify found damage');
    }
    log.error({ ...fields, damaged: report.damaged.length, damagedChunks: report.damagedChunks.length }, 'scheduled verify: DAMAGE found');
  };
  arm();
  return {
    async stop() {
      clearTimeout(timer);
      controller.abort();
      await running;
    },
  };
}
