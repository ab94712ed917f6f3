/**
 * The thread of a DigestThread (digest-thread.ts): hashes what it is sent, in order, into
 * one whole-content digest. Loaded with `new Worker` as an ES module (not through piscina).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { zeroBytes } from '../chunker/zero.js';
import type { DigestAlgorithm } from '../core/ids.js';
import { createHasher } from '../hash/digest.js';

/** To the thread: bytes (transferred), a count of zero bytes, or the end. */
export type DigestThreadMessage = { readonly data: Uint8Array } | { readonly zeros: number } | { readonly end: true };
/** From the thread, one per message: data bytes hashed (for the queue bound; 0 for zeros), the hex digest, or a failure. */
export type DigestThreadReply = { readonly hashed: number; readonly buffer?: ArrayBuffer } | { readonly digest: string } | { readonly error: string };

/** Zeros are hashed from a view of this many bytes of zeroBytes() (only those pages are touched). */
const ZERO_PIECE_BYTES = 1024 * 1024;

const port = parentPort!;
const hasher = createHasher((workerData as { algorithm: DigestAlgorithm }).algorithm);

port.on('message', (m: DigestThreadMessage) => {
  try {
    if ('data' in m) {
      hasher.update(m.data);
      // The copy buffer goes back to be filled again.
      port.postMessage({ hashed: m.data.length, buffer: m.data.buffer as ArrayBuffer } satisfies DigestThreadReply, [m.data.buffer as ArrayBuffer]);
    } else if ('zeros' in m) {
      // In pieces of ZERO_PIECE_BYTES: larger ones measured no faster, and would be resident.
      for (let left = m.zeros; left > 0; left -= ZERO_PIECE_BYTES) hasher.update(zeroBytes(Math.min(left, ZERO_PIECE_BYTES)));
      port.postMessage({ hashed: 0 } satisfies DigestThreadReply);
    } else port.postMessage({ digest: hasher.digest().toString('hex') } satisfies DigestThreadReply);
  } catch (err) {
    port.postMessage({ error: err instanceof Error ? err.message : String(err) } satisfies DigestThreadReply);
  }
});
