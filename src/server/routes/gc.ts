/** POST /v1/gc (docs/PROTOCOL.md): the server collects its store's garbage and answers the report. */
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { InvalidArgumentError } from '../../core/errors.js';
import { flagParam, intParam, MAX_GC_GRACE_MS, PARAMS } from '../../protocol/routes.js';
import { collectGarbage } from '../../store/gc.js';
import { sendJson } from '../answer.js';
import type { RouteContext } from '../context.js';

/** The gc endpoint over `rc`. One gc runs at a time; a second request waits for the first. */
export function gcRoutes(rc: RouteContext) {
  const { ctx, log } = rc;
  let running: Promise<unknown> = Promise.resolve();
  return { gc };

  async function gc(req: Http2ServerRequest, res: Http2ServerResponse, url: URL): Promise<void> {
    const dryRun = flagParam(url.searchParams, PARAMS.dryRun);
    const rawPercent = url.searchParams.get(PARAMS.maxUnused) ?? '';
    const maxUnusedPercent = /^\d{1,3}(\.\d{1,6})?$/.test(rawPercent) ? Number(rawPercent) : NaN;
    if (!(maxUnusedPercent <= 100)) throw new InvalidArgumentError(`query parameter ${PARAMS.maxUnused} must be a number from 0 to 100`);
    const graceMs = intParam(url.searchParams, PARAMS.graceMs, MAX_GC_GRACE_MS);
    req.resume(); // no body is read: whatever a client sends is discarded
    const run = running.catch(() => undefined).then(() => collectGarbage(ctx.store, { signal: ctx.signal, dryRun, maxUnusedPercent, graceMs }));
    running = run;
    const report = await run;
    log.info({ dryRun, maxUnusedPercent, graceMs, freedBytes: report.freedBytes, deletedPacks: report.deletedPacks, markedPacks: report.markedPacks, repackedPacks: report.repackedPacks }, 'gc');
    sendJson(res, 200, report);
  }
}
