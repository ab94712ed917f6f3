import { readFileSync } from 'node:fs';
import { KiB, MiB } from '../core/sizes.js';

/*
 * The server's own limits. Those a client must know too (sizes of bodies and records) are
 * part of the protocol: protocol/limits.ts, re-exported here.
 */
export { MAX_BATCH_BYTES, MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, MAX_QUERY_DIGESTS, MAX_SMALL_BODY_BYTES, MAX_SUMS_ANSWER_BYTES } from '../protocol/limits.js';

/** Bytes of request headers, at most (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE). */
export const MAX_HEADER_LIST_BYTES = 16 * KiB;
/**
 * HTTP/2 flow-control windows: what a client may send ahead of the server's processing,
 * which the server holds in memory meanwhile (its frames in the C library's heap). Per
 * stream, room for a stream to fill 1 Gbit/s over a 30 ms round trip, and a connection for
 * eight such streams side by side (uploads go six at once; longer links get more
 * connections, --connections). They were 16 and 256 MiB: a 64 GiB sparse image's first
 * push to a fresh server peaked at 262-266 MiB with those and 247-271 MiB with these, and
 * a 2 GiB push took the same time (bench/server-busy.ts: 10.83 s against 10.96 s).
 */
export const STREAM_WINDOW_BYTES = 4 * MiB;
export const SESSION_WINDOW_BYTES = 32 * MiB;
/**
 * Allocations of at least this size get a mapping of their own, returned to the system when
 * freed (io/sys.ts mallocMmapThreshold, set by `xfer serve`): the server's Buffers of a few
 * MiB (stage slabs, pack blocks, read-ahead windows) come and go by the hundred per GiB,
 * and from glibc's heap their freed pages stayed resident. Above the 16 KiB frames and 256
 * KiB reads that come and go fastest, for which a mapping each would cost a system call.
 */
export const MALLOC_MMAP_THRESHOLD_BYTES = 1 * MiB;
/** Concurrent streams a client may open on one connection. */
export const MAX_CONCURRENT_STREAMS = 128;
/** Chunks read ahead of the response writer in `chunks/fetch` (64 measured ~5% faster than 16). */
export const FETCH_READ_AHEAD = 64;
/**
 * Bytes of chunks read ahead of the response writer in one `chunks/fetch`, at most (one
 * chunk is always read, whatever its size). Without it, 64 chunks of up to MAX_CHUNK_BYTES
 * were read at once for every fetch, however slowly its client read: two fetches of a
 * 16 MiB chunk by a client that took nothing held 1.5 GiB of the server's memory.
 */
export const FETCH_READ_AHEAD_BYTES = 16 * MiB;
/**
 * Connections served at once; beyond, requests are answered 503 (see MAX_BUSY_CONNECTIONS).
 * Idle and slow connections are shed by the timeouts; the cap stays far above what a crowd
 * of them held at once in `npm run siege` (1,200), and below the process's descriptor limit
 * (defaultMaxConnections), so a flood meets a 503, never EMFILE.
 */
export const MAX_CONNECTIONS = 4096;
/** Descriptors kept free of connections for the store, staging files and the listener. */
export const RESERVED_DESCRIPTORS = 256;
/**
 * Connections beyond MAX_CONNECTIONS that are still accepted, only to answer their first
 * request 503 with Retry-After and close; past these, new connections are closed at once.
 */
export const MAX_BUSY_CONNECTIONS = 64;
/** Requests in progress on the whole server; beyond, a request is answered 503 with Retry-After. */
export const MAX_STREAMS_TOTAL = 1024;
/** Seconds a client is told to wait (Retry-After) when the server is at a limit. */
export const BUSY_RETRY_AFTER_S = 2;

/** A connection with no request open for this long is closed (GOAWAY). */
export const IDLE_TIMEOUT_MS = 120_000;
/**
 * A new connection must have sent its first request's headers within this (TLS handshake
 * and HTTP/2 preface included), or it is closed.
 */
export const HEADERS_TIMEOUT_MS = 20_000;
/**
 * A request body that, while the server is ready for it, brings fewer than
 * BODY_MIN_PROGRESS_BYTES in this long is cut with 408 (a stalled or trickling upload).
 * Stage bodies are exempt: they are paced by the push and bounded by STAGE_IDLE_TIMEOUT_MS.
 */
export const BODY_TIMEOUT_MS = 60_000;
export const BODY_MIN_PROGRESS_BYTES = 1 * KiB;
/**
 * A stage that makes no progress (no list bytes read, no chunk received or read) for this
 * long is discarded with its staging copy and answered 408; the commit then rebuilds the
 * ordinary way. Bounds a stage waiting for a chunk that never comes.
 */
export const STAGE_IDLE_TIMEOUT_MS = 120_000;

/**
 * MAX_CONNECTIONS, lowered to fit the process's soft limit of open files (Linux:
 * /proc/self/limits) with RESERVED_DESCRIPTORS and MAX_BUSY_CONNECTIONS to spare, and
 * at least 16. Where the limit cannot be read, MAX_CONNECTIONS.
 */
export function defaultMaxConnections(limitsText?: string): number {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return MAX_CONNECTIONS;
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
  if (!m || m[1] === 'unlimited') return MAX_CONNECTIONS;
  return Math.max(16, Math.min(MAX_CONNECTIONS, Number(m[1]) - RESERVED_DESCRIPTORS - MAX_BUSY_CONNECTIONS));
}

/**
 * Bytes of recent chunks a server's rebuild keeps for repeats later in the file
 * (ReconstructOptions.recentChunkBytes; a client keeps 32 MiB). Uploaded chunks are views
 * of the arrival slabs (server/arrivals.ts), so what it keeps holds whole slabs: at 32
 * MiB, they were 36 of the server's ~270 MiB peak during a 512 MiB push (issue 14's bar
 * is 300 MiB). A repeat it no longer has is read back from the store.
 */
export const SERVER_RECENT_CHUNK_BYTES = 8 * MiB;

/**
 * Bytes of chunks a server's rebuild (a stage, a commit) has read and not yet written and
 * hashed, at most (ReconstructOptions.inFlightBytes): its store is on local disk, and a
 * held file's chunks are views of read-ahead windows that each pin a whole window until
 * released. With a pull's 96 MiB, a 512 MiB push whose chunks the server already held
 * peaked at 315-331 MiB; with 16 MiB, 243-244 MiB and no slower (2.23-2.27 s against
 * 2.34-2.99 s); a first push's rebuild from its uploads is as fast (4.26-4.28 s against
 * 4.36-4.63 s).
 */
export const SERVER_REBUILD_INFLIGHT_BYTES = 16 * MiB;

/**
 * After the last client's session closes, the server gives back the large buffers it kept
 * for reuse (io/sys.ts trimLargeBuffers) once this much later, if no session came meanwhile.
 */
export const LAST_SESSION_TRIM_DELAY_MS = 50;
