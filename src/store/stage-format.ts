/**
 * The body of POST /v1/stage/<path> (docs/PROTOCOL.md), shared by the client that writes
 * it (store/http.ts) and the server that reads it (server/stage.ts). Integers big-endian.
 */
import { DIGEST_BYTES } from '../core/ids.js';

/** One chunk of the list: u32 length (1..maxChunkBytes) + digest. */
export const STAGE_RECORD_BYTES = 4 + DIGEST_BYTES;
/** The end of the list: u32 0 + u64 file size + whole-file digest. */
export const STAGE_END_BYTES = 4 + 8 + DIGEST_BYTES;
