/** POST /v1/stage/<path> (docs/PROTOCOL.md): a file or tree rebuilt while its chunks arrive (server/stage.ts). */
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { validateChunkerSpec } from '../../chunker/params.js';
import { AbortedError, InvalidArgumentError } from '../../core/errors.js';
import type { EntryMeta } from '../../manifest/types.js';
import { PARAMS } from '../../protocol/routes.js';
import { chunkerOfQuery } from '../../protocol/stage-format.js';
import { sendJson } from '../answer.js';
import { limitedBody } from '../body.js';
import { committedOf } from '../committed.js';
import type { RouteContext } from '../context.js';
import { MAX_MANIFEST_BYTES } from '../limits.js';
import { algorithmOf, intParam } from '../params.js';
import { materializedPath } from '../paths.js';
import { UnchangedError, type Stage } from '../stage.js';

/** The stage endpoint over `rc`. */
export function stageRoutes(rc: RouteContext) {
  const { ctx, stages, checksumStages, stageBodies } = rc;
  const { committedFile, committedVersion } = committedOf(ctx);
  return { stageFile };

  /**
   * POST /v1/stage/<path>: what a push of a file (its chunk list) or a tree (its manifest's
   * body) streams while its chunks are uploaded; the target is rebuilt as it comes
   * (server/stage.ts). Answers once the manifest commit of the same path has swapped the
   * staged copy in, or with why the stage was discarded (the commit then rebuilds the
   * ordinary way). With `checksum` (checksumParam) a tree's stage links no file of the
   * committed tree by its size and mtime. A file's stage trusts no metadata either way: it
   * compares its list with the committed one by digests, and what it builds is verified
   * whole; an unchanged list leaves the target to the commit, which re-hashes it.
   */
  async function stageFile(req: Http2ServerRequest, res: Http2ServerResponse, name: string, url: URL, checksum: boolean): Promise<void> {
    // GET /v1/info says stage: false on such a server; a client that stages anyway is told why.
    if (ctx.storeOnly) throw new InvalidArgumentError('this server stores chunks and manifests only (xfer serve --no-files): it rebuilds no files, so it takes no stages');
    const algorithm = algorithmOf(url);
    const target = await materializedPath(ctx.filesDir, name, ctx.store, ctx.signal);
    const kind = url.searchParams.get(PARAMS.kind) ?? 'file';
    // A tree's body is a manifest body, a file's list is smaller than its manifest.
    const body = limitedBody(req, MAX_MANIFEST_BYTES, 'stage body');
    let stage: Stage;
    let release = async () => {};
    if (kind === 'tree') {
      const chunker = chunkerOfQuery(url.searchParams);
      if (!chunker) throw new InvalidArgumentError('a tree stage needs chunker=fastcdc2020&min=&avg=&max= or chunker=fixed&size=');
      validateChunkerSpec(chunker);
      const committed = checksum ? undefined : await committedVersion(name);
      // Kept for the commit, which then names it instead of sending it again (server/stage-body.ts).
      const kept = await stageBodies.keep(name, body);
      release = kept.release;
      stage = stages.begin({ kind, name, algorithm, target, confineTo: ctx.filesDir, chunker, targetDigest: committed?.digest, previousFiles: committed?.files }, kept.body, ctx.signal);
      kept.attach(stage);
    } else if (kind === 'file') {
      const meta: EntryMeta = {
        type: 'file',
        path: '',
        mode: intParam(url, PARAMS.mode, 0o7777),
        mtimeMs: intParam(url, PARAMS.mtimeMs, Number.MAX_SAFE_INTEGER),
        size: intParam(url, PARAMS.size, Number.MAX_SAFE_INTEGER),
      };
      stage = stages.begin({ kind, name, algorithm, meta, target, confineTo: ctx.filesDir }, body, ctx.signal, await committedFile(name));
    } else throw new InvalidArgumentError(`unknown stage kind "${kind}" (file or tree)`);
    if (checksum) checksumStages.add(stage);
    let settled = false;
    res.once('close', () => {
      if (!settled) stage.abort(new AbortedError('the client closed the stage'));
    });
    try {
      const r = await stage.result.catch((err) => {
        if (err instanceof UnchangedError) return undefined;
        throw err;
      });
      sendJson(res, 200, r ? { digest: r.digest } : { unchanged: true });
    } finally {
      settled = true;
      await release();
    }
  }
}
