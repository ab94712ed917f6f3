/**
 * POST /v1/chunks/missing-of/<path> (docs/PROTOCOL.md): which chunks of the tree committed
 * at a path the store lacks, asked by the manifest instead of by listing its digests.
 */
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { isZeroChunk } from '../../chunker/zero.js';
import { isXferError, NotFoundError, TooLargeError } from '../../core/errors.js';
import { digestKey, type ChunkId } from '../../core/ids.js';
import { openManifest } from '../../manifest/reader.js';
import { manifestTag } from '../../manifest/tag.js';
import type { RouteContext } from '../context.js';
import { MAX_QUERY_DIGESTS } from '../limits.js';

/** Digests a missing-of answer names at most (32 bytes each: 2 MiB); more is 413, and the client asks by digest. */
export const MISSING_OF_ANSWER_DIGESTS_MAX = MAX_QUERY_DIGESTS;

/** The endpoint over `rc`. */
export function knownRoutes(rc: RouteContext) {
  const { ctx } = rc;
  return { missingOf };

  /**
   * The quick check's query of a re-sync (transfer/known.ts): a push asks which chunks of
   * the target's current version the store lacks, to trust the rest. By digest list that is
   * 32 bytes a chunk up (135 KB for a tree of 7,643 files, several round trips at the start
   * of a connection); the server has the manifest, so the client names it: `If-Match` with
   * the tree's tag (manifest/tag.ts), which must be the committed manifest's (404 otherwise,
   * or if there is none: the client then lists the digests). Answers the digests of the
   * distinct chunks the store lacks, 32 bytes each (zero chunks are in no store: never), at
   * most MISSING_OF_ANSWER_DIGESTS_MAX.
   */
  async function missingOf(req: Http2ServerRequest, res: Http2ServerResponse, name: string): Promise<void> {
    req.resume(); // no body
    const wanted = req.headers['if-match'];
    const reader = await openManifest(await ctx.store.getManifest(name, { signal: ctx.signal }), { signal: ctx.signal }).catch((err: unknown) => {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      throw new NotFoundError(`no readable manifest of ${name}`);
    });
    const missing: Uint8Array[] = [];
    try {
      const tag = manifestTag(reader.header);
      if (tag === undefined || typeof wanted !== 'string' || wanted.trim() !== `"${tag}"`) throw new NotFoundError(`the manifest committed at ${name} is not the one named`);
      const algorithm = reader.header.digestAlgorithm;
      // Only what is missing is remembered (a chunk repeated in the tree is asked again):
      // memory is bounded by the answer's limit, not by the tree.
      const missingKeys = new Set<string>();
      let batch: ChunkId[] = [];
      const check = async () => {
        const present = await ctx.store.has(batch, { signal: ctx.signal });
        present.forEach((p, i) => {
          const k = p ? undefined : digestKey(batch[i]!.digest);
          if (k === undefined || missingKeys.has(k)) return;
          if (missingKeys.size === MISSING_OF_ANSWER_DIGESTS_MAX) throw new TooLargeError(`more than ${MISSING_OF_ANSWER_DIGESTS_MAX} chunks of ${name} are missing: ask by digest`);
          missingKeys.add(k);
          missing.push(batch[i]!.digest);
        });
        batch = [];
      };
      for await (const ev of reader.events()) {
        if (ev.kind !== 'chunks') continue;
        for (const r of ev.records) {
          if (isZeroChunk(algorithm, r.length, r.digest)) continue;
          batch.push({ algorithm, digest: r.digest });
          if (batch.length === MAX_QUERY_DIGESTS) await check();
        }
      }
      if (batch.length) await check();
    } finally {
      await reader.close();
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(Buffer.concat(missing));
  }
}
