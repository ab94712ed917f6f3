import { KiB, MiB, GiB } from '../core/sizes.js';

/** Digests in one `chunks/missing` or `chunks/fetch` request, at most. */
export const MAX_QUERY_DIGESTS = 65536;
/** Bytes of one `POST /v1/chunks` body, at most (holds at least one largest chunk). */
export const MAX_BATCH_BYTES = 32 * MiB;
/** Bytes of one uploaded manifest, at most (a 1 TB file's manifest is about 0.6 GiB). */
export const MAX_MANIFEST_BYTES = 4 * GiB;
/** Largest chunk accepted (the largest any chunker spec can produce). */
export const MAX_CHUNK_BYTES = 16 * MiB;
/** Bytes of request headers, at most (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE). */
export const MAX_HEADER_LIST_BYTES = 16 * KiB;
/** Bytes of a JSON or small request body that is read whole. */
export const MAX_SMALL_BODY_BYTES = 64 * KiB;
/** HTTP/2 flow-control windows: large, so one connection can carry GB/s on loopback or a LAN. */
export const STREAM_WINDOW_BYTES = 16 * MiB;
export const SESSION_WINDOW_BYTES = 256 * MiB;
/** Concurrent streams a client may open on one connection. */
export const MAX_CONCURRENT_STREAMS = 128;
/** Chunks read ahead of the response writer in `chunks/fetch` (64 measured ~5% faster than 16). */
export const FETCH_READ_AHEAD = 64;
