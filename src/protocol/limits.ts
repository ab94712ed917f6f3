/*
 * The protocol's limits (docs/PROTOCOL.md): what a server accepts and a client must stay
 * within. A server says its own values in `GET /v1/info`; clients use those, these are the
 * defaults this implementation serves.
 */
import { KiB, MiB, GiB } from '../core/sizes.js';

/** Digests in one `chunks/missing` or `chunks/fetch` request, at most. */
export const MAX_QUERY_DIGESTS = 65536;
/** Bytes of one `POST /v1/chunks` body, at most (holds at least one largest chunk). */
export const MAX_BATCH_BYTES = 32 * MiB;
/** Bytes of one uploaded manifest, at most (a 1 TB file's manifest is about 0.6 GiB). */
export const MAX_MANIFEST_BYTES = 4 * GiB;
/** Largest chunk accepted (the largest any chunker spec can produce). */
export const MAX_CHUNK_BYTES = 16 * MiB;
/** Bytes of a JSON or small request body that is read whole. */
export const MAX_SMALL_BODY_BYTES = 64 * KiB;
/**
 * Bytes of one `chunks/sums` answer, at most: each record may ask for the sums of a chunk of
 * up to MAX_CHUNK_BYTES (8192 blocks x 16 bytes), so without a bound a 2.8 MiB request could
 * make a 512 GiB answer. This holds the sums of 256 largest chunks (the client asks for at
 * most 256 per request); a request asking for more is refused with 413.
 */
export const MAX_SUMS_ANSWER_BYTES = 48 * MiB;
