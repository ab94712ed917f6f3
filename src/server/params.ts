/** Query parameters of requests, read and checked (docs/PROTOCOL.md; names in protocol/routes.ts). */
import { parseDigestAlgorithm, type DigestAlgorithm } from '../core/ids.js';
import { flagParam, intParam as intParamOf, PARAMS } from '../protocol/routes.js';

/**
 * `checksum=1` on a stage or a manifest commit (a push with --checksum): decide by content
 * only. The server then trusts no size or mtime of its own materialized copy (the quick
 * check) and re-hashes what it would otherwise keep. Absent or `0`: the quick check.
 */
export function checksumParam(url: URL): boolean {
  return flagParam(url.searchParams, PARAMS.checksum);
}

/** A required integer query parameter in [0, max]. */
export function intParam(url: URL, key: string, max: number): number {
  return intParamOf(url.searchParams, key, max);
}

export function algorithmOf(url: URL): DigestAlgorithm {
  return parseDigestAlgorithm(url.searchParams.get(PARAMS.algorithm) ?? '');
}
