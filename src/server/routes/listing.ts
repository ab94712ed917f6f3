/** GET /v1/stat/<path> and GET /v1/list (docs/PROTOCOL.md): what is stored, by name. */
import type { Http2ServerResponse } from 'node:http2';
import { isXferError } from '../../core/errors.js';
import { digestToHex } from '../../core/ids.js';
import type { ManifestHeader } from '../../manifest/types.js';
import type { ListEntry } from '../../protocol/routes.js';
import { validateManifestPrefix } from '../../store/names.js';
import { scrubIdentity, sendJson } from '../answer.js';
import { committedOf } from '../committed.js';
import type { RouteContext } from '../context.js';

/** The listing endpoints over `rc`. */
export function listingRoutes(rc: RouteContext) {
  const { ctx, log, hidePaths } = rc;
  const { storedHeader } = committedOf(ctx);
  return { stat, list };

  async function stat(res: Http2ServerResponse, name: string): Promise<void> {
    try {
      return sendJson(res, 200, { type: (await storedHeader(name)).kind });
    } catch (err) {
      if (!isXferError(err, 'XFER_NOT_FOUND')) throw err;
    }
    const under = await ctx.store.listManifests(`${name}/`, { signal: ctx.signal });
    sendJson(res, 200, { type: under.length > 0 ? 'dir' : 'none' });
  }

  async function list(res: Http2ServerResponse, prefixRaw: string): Promise<void> {
    const prefix = validateManifestPrefix(prefixRaw);
    const entries: ListEntry[] = [];
    for (const m of await ctx.store.listManifests(prefix, { signal: ctx.signal })) {
      let h: ManifestHeader;
      try {
        h = await storedHeader(m.name);
      } catch (err) {
        // One unreadable manifest does not hide the others: it is listed as damaged, saying why.
        if (!isXferError(err) || err.code === 'XFER_ABORTED') throw err;
        log.warn({ path: m.name, code: err.code, error: err.message }, 'a stored manifest is damaged');
        entries.push({ path: m.name, kind: 'damaged', bytes: 0, manifestBytes: m.bytes, mtimeMs: m.mtimeMs, digest: '', error: scrubIdentity(hidePaths(err.message)) });
        continue;
      }
      entries.push({ path: m.name, kind: h.kind, bytes: h.totalBytes, manifestBytes: m.bytes, mtimeMs: m.mtimeMs, digest: digestToHex(h.digest) });
    }
    sendJson(res, 200, { entries });
  }
}
