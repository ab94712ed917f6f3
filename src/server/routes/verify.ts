/** POST /v1/verify (docs/PROTOCOL.md): the server verifies its own store and rebuilt files. */
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { AbortedError, isXferError, XferError } from '../../core/errors.js';
import { flagParam, PARAMS, type VerifyAnswerLine } from '../../protocol/routes.js';
import { validateManifestPrefix } from '../../store/names.js';
import { parseReadDataSubset, type VerifyProgress, type VerifyReport } from '../../transfer/verify.js';
import { drained, scrubIdentity } from '../answer.js';
import type { RouteContext } from '../context.js';
import { runVerifyJob } from '../verify-job.js';

/** How often a verify answer carries a progress line: also what keeps an idle-looking answer alive. */
export const VERIFY_PROGRESS_LINE_MS = 1000;
/** Progress lines are left out while this much of the answer is unread (a slow reader holds no more). */
export const MAX_UNSENT_PROGRESS_BYTES = 64 * 1024;

/** The verify endpoint over `rc`. */
export function verifyRoutes(rc: RouteContext) {
  const { ctx, log, hidePaths, sendTimeoutMs } = rc;
  return { verify };

  /**
   * Runs a verify job for the client (one at a time per server: 503 while another runs;
   * 404 if no target is under the prefix) and streams its progress and report as NDJSON.
   * The job stops when the client goes away or the server stops.
   */
  async function verify(req: Http2ServerRequest, res: Http2ServerResponse, params: URLSearchParams): Promise<void> {
    const rawPath = params.get(PARAMS.prefix) ?? '';
    const path = rawPath === '' ? '' : validateManifestPrefix(rawPath).replace(/\/+$/, '');
    const readData = flagParam(params, PARAMS.readData);
    const chunksOnly = flagParam(params, PARAMS.chunksOnly);
    const subsetText = params.get(PARAMS.subset);
    const subset = subsetText === null ? undefined : parseReadDataSubset(subsetText);
    req.resume(); // the request has no body: whatever comes is dropped
    const gone = new AbortController();
    const onClose = () => gone.abort(new AbortedError('the client went away'));
    res.once('close', onClose);
    const signal = AbortSignal.any([ctx.signal, gone.signal]);
    const started = performance.now();
    let latest: VerifyProgress | undefined;
    let timer: NodeJS.Timeout | undefined;
    const line = (value: VerifyAnswerLine) => `${JSON.stringify(value)}\n`;
    try {
      const report = await runVerifyJob({
        store: ctx.store, filesDir: ctx.storeOnly ? undefined : ctx.filesDir, path, readData, subset, chunksOnly, signal,
        onProgress: (p) => (latest = p),
        onStart: () => {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          timer = setInterval(() => {
            if (latest && res.writableLength < MAX_UNSENT_PROGRESS_BYTES && !res.writableEnded) res.write(line({ progress: latest }));
          }, VERIFY_PROGRESS_LINE_MS);
        },
      });
      clearInterval(timer);
      const clean = scrubReport(report, (m) => scrubIdentity(hidePaths(m)));
      log.info({ path, readData: report.readData, manifests: report.manifests, chunks: report.chunks, chunksRead: report.chunksRead, damaged: report.damaged.length, ms: Math.round(performance.now() - started) }, 'verify done');
      if (!res.write(line({ report: clean }))) await drained(res, sendTimeoutMs);
      res.end();
    } catch (err) {
      clearInterval(timer);
      if (!res.headersSent) throw err; // answered as any failure (handler.ts)
      if (gone.signal.aborted) return log.info({ path }, 'verify stopped: the client went away');
      const e = isXferError(err) ? err : new XferError('XFER_INTERNAL', `internal error: ${(err as Error)?.message ?? String(err)}`);
      log.error({ path, code: e.code, error: e.message }, 'verify failed');
      res.end(line({ error: { code: e.code, message: scrubIdentity(hidePaths(e.message)) } }));
    } finally {
      res.off('close', onClose);
    }
  }
}

/** The report with every message scrubbed of where the server runs. */
function scrubReport(report: VerifyReport, scrub: (message: string) => string): VerifyReport {
  return {
    ...report,
    damaged: report.damaged.map((d) => ({ ...d, message: scrub(d.message) })),
    damagedChunks: report.damagedChunks.map((c) => ({ ...c, message: scrub(c.message) })),
  };
}
