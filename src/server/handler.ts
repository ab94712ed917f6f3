import { createHash, timingSafeEqual } from 'node:crypto';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { dirname, join } from 'node:path';
import { NotFoundError, UnauthorizedError } from '../core/errors.js';
import { DELTA_BLOCK_BYTES } from '../protocol/delta.js';
import { API_PREFIX, ENDPOINTS, flagParam, PARAMS, PROTOCOL_VERSION, remotePathToName, type ServerInfo } from '../protocol/routes.js';
import { sendErrorAnswer, sendJson } from './answer.js';
import type { HandlerContext, RouteContext } from './context.js';
import { BODY_TIMEOUT_MS, MAX_BATCH_BYTES, MAX_CHUNK_BYTES, MAX_QUERY_DIGESTS, MAX_SUMS_ANSWER_BYTES } from './limits.js';
import { silentLogger } from './log.js';
import { validateTargetName } from '../store/names.js';
import { algorithmOf, checksumParam } from './params.js';
import { chunkRoutes } from './routes/chunks.js';
import { gcRoutes } from './routes/gc.js';
import { listingRoutes } from './routes/listing.js';
import { manifestRoutes } from './routes/manifests.js';
import { stageRoutes } from './routes/stages.js';
import { knownRoutes } from './routes/known.js';
import { targetRoutes } from './routes/targets.js';
import { verifyRoutes } from './routes/verify.js';
import { StageHub, type Stage } from './stage.js';
import { StageBodies } from './stage-body.js';

export { PROTOCOL_VERSION } from '../protocol/routes.js';
export type { HandlerContext, ServerStore } from './context.js';
export { failureOf, scrubIdentity, sendErrorAnswer } from './answer.js';

/**
 * The request handler of `xfer serve` (docs/PROTOCOL.md). Every failure becomes a JSON
 * `{ code, message }` with the status from HTTP_STATUS; nothing is printed.
 */
export function createHandler(ctx: HandlerContext): (req: Http2ServerRequest, res: Http2ServerResponse) => void {
  const tokenDigest = ctx.token === undefined ? undefined : sha256(ctx.token);
  const commits = new Map<string, Promise<unknown>>();
  const stages = new StageHub(ctx.store, undefined, ctx.stageTimeoutMs);
  /** Stages opened with checksum=1: the only ones a commit with checksum=1 swaps in. */
  const checksumStages = new WeakSet<Stage>();
  const log = ctx.log ?? silentLogger;
  const sendTimeoutMs = ctx.sendTimeoutMs ?? BODY_TIMEOUT_MS;

  // Messages name paths under the server's root: clients are not told where that is.
  const root = dirname(ctx.filesDir);
  const storeNames = [...(ctx.storeName ? [ctx.storeName] : []), join(root, 'store')];
  const hidePaths = (message: string) => {
    for (const name of storeNames) message = message.split(name).join("the server's store");
    return message.split(root).join("the server's root");
  };
  const rc: RouteContext = { ctx, stages, checksumStages, stageBodies: new StageBodies(ctx.tmpDir), commits, log, sendTimeoutMs, hidePaths };
  const chunks = chunkRoutes(rc);
  const staging = stageRoutes(rc);
  const known = knownRoutes(rc);
  const manifests = manifestRoutes(rc);
  const listing = listingRoutes(rc);
  const targets = targetRoutes(rc);
  const verifying = verifyRoutes(rc);
  const gc = gcRoutes(rc);

  return (req, res) => {
    handle(req, res).catch((err) => sendErrorAnswer(res, err, {}, hidePaths));
  };

  async function handle(req: Http2ServerRequest, res: Http2ServerResponse): Promise<void> {
    if (tokenDigest) {
      const auth = req.headers.authorization ?? '';
      // The scheme is case-insensitive (RFC 7235 section 2.1); the token is not.
      const given = /^bearer /i.test(auth) ? auth.slice(7) : '';
      if (!timingSafeEqual(sha256(given), tokenDigest)) throw new UnauthorizedError();
    }
    // The raw path, never URL-normalized: `new URL` would resolve `%2e%2e` and `..` before
    // remotePathToName could refuse them.
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    const url = new URL(`http://x/?${q < 0 ? '' : req.url.slice(q + 1)}`);
    if (!path.startsWith(API_PREFIX)) throw new NotFoundError(`no such endpoint: ${path}`);
    const rest = path.slice(API_PREFIX.length);
    const method = req.method;
    if (method === 'GET' && rest === ENDPOINTS.info) {
      return sendJson(res, 200, {
        protocol: PROTOCOL_VERSION,
        maxBatchBytes: MAX_BATCH_BYTES,
        maxQueryDigests: MAX_QUERY_DIGESTS,
        maxChunkBytes: MAX_CHUNK_BYTES,
        maxSumsAnswerBytes: MAX_SUMS_ANSWER_BYTES,
        deltaBlockBytes: DELTA_BLOCK_BYTES,
        // A store-only server rebuilds nothing, so it takes no stages: pushes send chunks and commit.
        stage: !ctx.storeOnly,
        stageTrees: !ctx.storeOnly,
        commitStaged: !ctx.storeOnly,
        missingOf: true,
        manifestStore: true,
        verify: true,
      } satisfies ServerInfo);
    }
    if (method === 'POST' && rest === ENDPOINTS.missing) return chunks.missing(req, res, algorithmOf(url));
    if (method === 'POST' && rest.startsWith(ENDPOINTS.missingOf)) return known.missingOf(req, res, remotePathToName(rest.slice(ENDPOINTS.missingOf.length)));
    if (method === 'POST' && rest === ENDPOINTS.chunks) return chunks.upload(req, res, algorithmOf(url));
    if (method === 'POST' && rest === ENDPOINTS.fetch) return chunks.fetchChunks(req, res, algorithmOf(url));
    if (method === 'POST' && rest === ENDPOINTS.sums) return chunks.blockSums(req, res, algorithmOf(url));
    if (method === 'POST' && rest === ENDPOINTS.delta) return chunks.uploadDeltas(req, res, algorithmOf(url));
    // A stage or a commit rebuilds files under the name: a target's name only, never one of
    // the store's versions (which the manifest routes read, store raw and delete).
    if (method === 'POST' && rest.startsWith(ENDPOINTS.stage)) return staging.stageFile(req, res, validateTargetName(remotePathToName(rest.slice(ENDPOINTS.stage.length))), url, checksumParam(url));
    if (rest.startsWith(ENDPOINTS.manifests)) {
      const name = remotePathToName(rest.slice(ENDPOINTS.manifests.length));
      if (method === 'GET') return manifests.getManifest(req, res, name);
      if (method === 'PUT' && flagParam(url.searchParams, PARAMS.raw)) return manifests.storeManifest(req, res, name);
      if (method === 'PUT') return manifests.putManifest(req, res, validateTargetName(name), checksumParam(url), flagParam(url.searchParams, 'in-place'), flagParam(url.searchParams, PARAMS.staged));
      if (method === 'DELETE') return manifests.deleteManifest(res, name);
    }
    if (method === 'GET' && rest.startsWith(ENDPOINTS.stat)) return listing.stat(res, remotePathToName(rest.slice(ENDPOINTS.stat.length)));
    if (method === 'DELETE' && rest.startsWith(ENDPOINTS.targets)) return targets.removeTarget(res, validateTargetName(remotePathToName(rest.slice(ENDPOINTS.targets.length))), flagParam(url.searchParams, PARAMS.recursive));
    if (method === 'GET' && rest === ENDPOINTS.list) return listing.list(res, url.searchParams.get(PARAMS.prefix) ?? '');
    if (method === 'POST' && rest === ENDPOINTS.verify) return verifying.verify(req, res, url.searchParams);
    if (method === 'POST' && rest === ENDPOINTS.gc) return gc.gc(req, res, url);
    throw new NotFoundError(`no such endpoint: ${method} ${path}`);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
