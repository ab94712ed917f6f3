/**
 * The body of POST /v1/stage/<path> (docs/PROTOCOL.md), shared by the client that writes
 * it (endpoint/http-stage.ts, through store/http/client.ts) and the server that reads it (server/stage.ts). Integers big-endian.
 */
import { DIGEST_BYTES, type ChunkerSpec, type DigestAlgorithm } from '../core/ids.js';
import type { EntryMeta } from '../manifest/types.js';
import { PARAMS } from './routes.js';

/** One chunk of the list: u32 length (1..maxChunkBytes) + digest. */
export const STAGE_RECORD_BYTES = 4 + DIGEST_BYTES;
/** The end of the list: u32 0 + u64 file size + whole-file digest. */
export const STAGE_END_BYTES = 4 + 8 + DIGEST_BYTES;

/**
 * A tree stage's chunker, as query parameters: `chunker=fastcdc2020&min=&avg=&max=` or
 * `chunker=fixed&size=` (bytes). The server reads them back with chunkerOfQuery.
 */
export function chunkerQuery(spec: ChunkerSpec): string {
  return spec.algorithm === 'fixed' ? `chunker=fixed&size=${spec.sizeBytes}` : `chunker=fastcdc2020&min=${spec.minBytes}&avg=${spec.avgBytes}&max=${spec.maxBytes}`;
}

/** The chunker chunkerQuery wrote, or undefined if the parameters are not one (unvalidated sizes). */
export function chunkerOfQuery(params: URLSearchParams): ChunkerSpec | undefined {
  const int = (name: string): number => {
    const v = params.get(name);
    return v !== null && /^[0-9]{1,9}$/.test(v) ? Number(v) : NaN;
  };
  const algorithm = params.get('chunker');
  if (algorithm === 'fixed') {
    const sizeBytes = int('size');
    return Number.isNaN(sizeBytes) ? undefined : { algorithm, sizeBytes };
  }
  if (algorithm !== 'fastcdc2020') return undefined;
  const [minBytes, avgBytes, maxBytes] = [int('min'), int('avg'), int('max')];
  return [minBytes, avgBytes, maxBytes].some(Number.isNaN) ? undefined : { algorithm, minBytes, avgBytes, maxBytes };
}

/**
 * The query of a stage: a file's (`what`: its entry, whose mode, mtime and size the server
 * checks against what it builds) or a tree's (its chunker); `checksum`: see PROTOCOL.md.
 */
export function stageQuery(algorithm: DigestAlgorithm, what: Pick<EntryMeta, 'mode' | 'mtimeMs' | 'size'> | { readonly tree: ChunkerSpec }, checksum: boolean): string {
  const kind = 'tree' in what
    ? `${PARAMS.kind}=tree&${chunkerQuery(what.tree)}`
    : `${PARAMS.mode}=${what.mode}&${PARAMS.mtimeMs}=${what.mtimeMs}&${PARAMS.size}=${what.size}`;
  return `${PARAMS.algorithm}=${algorithm}&${kind}${checksum ? `&${PARAMS.checksum}=1` : ''}`;
}
