/**
 * A push's repair round. A destination that rebuilds its target from its store (a server)
 * may find, at the commit, a chunk it had answered present to be damaged: its store sets
 * the chunk aside (ChunkStore.setAside) and the commit fails with ChunkCorruptError, or
 * ManifestIncompleteError when the chunk was set aside before. The pushing client still
 * has the data: every chunk of the pushed manifest the destination now lacks is read again
 * from the source at its place, re-hashed, and sent, and the commit is tried again. So a
 * push never fails on a stored chunk that was damaged before it (issue 16: "every later
 * push that needs it fails, even with --checksum").
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { throwIfAborted } from '../core/abort.js';
import { isZeroChunk } from '../chunker/zero.js';
import { fromSystemError, isXferError, SourceChangedError } from '../core/errors.js';
import { digestKey, type ChunkId } from '../core/ids.js';
import { digestEquals, digestOf } from '../hash/digest.js';
import { openManifestFile } from '../manifest/reader.js';
import type { ChunkStore } from '../store/store.js';

/** Chunk ids asked about in one has() while looking for what to send again. */
const RESEND_QUERY_CHUNKS = 4096;

/** Whether a failed commit is one a repair round may mend: a stored chunk found damaged or missing. */
export function isRepairable(err: unknown): boolean {
  return isXferError(err, 'XFER_CHUNK_CORRUPT') || isXferError(err, 'XFER_CHUNK_MISSING') || isXferError(err, 'XFER_MANIFEST_INCOMPLETE');
}

interface Place {
  readonly id: ChunkId;
  readonly file: string;
  readonly offset: number;
  readonly length: number;
}

/**
 * Sends again, from `source` (the pushed file or tree root), every chunk of the manifest at
 * `manifestPath` that `chunks` does not have, and flushes. Throws SourceChangedError if a
 * chunk's bytes are no longer at their place in the source. Resolves with the chunks sent.
 */
export async function resendMissing(manifestPath: string, source: string, chunks: ChunkStore, signal?: AbortSignal): Promise<number> {
  const reader = await openManifestFile(manifestPath, { signal });
  const algorithm = reader.header.digestAlgorithm;
  const tree = reader.header.kind === 'tree';
  const asked = new Set<string>();
  let batch: Place[] = [];
  let sent = 0;
  let fh: { path: string; handle: FileHandle } | undefined;
  const readAt = async (p: Place): Promise<Buffer> => {
    if (fh?.path !== p.file) {
      await fh?.handle.close();
      fh = undefined;
      try {
        fh = { path: p.file, handle: await open(p.file, 'r') };
      } catch (err) {
        throw fromSystemError(err, p.file, 'read again for the push');
      }
    }
    const data = Buffer.alloc(p.length);
    const { bytesRead } = await fh.handle.read(data, 0, p.length, p.offset);
    return data.subarray(0, bytesRead);
  };
  const sendMissing = async (): Promise<void> => {
    const present = await chunks.has(batch.map((p) => p.id), { signal });
    for (let i = 0; i < batch.length; i++) {
      if (present[i]) continue;
      const p = batch[i]!;
      throwIfAborted(signal);
      const data = await readAt(p);
      if (!digestEquals(digestOf(algorithm, data), p.id.digest)) {
        throw new SourceChangedError(`${p.file} changed since it was pushed: the chunk at offset ${p.offset} is not what was sent`);
      }
      await chunks.put(p.id, data, { trusted: true, signal });
      sent++;
    }
    batch = [];
  };
  try {
    let file = source;
    let offset = 0;
    for await (const ev of reader.events()) {
      if (ev.kind === 'entry') {
        file = tree ? join(source, ev.meta.path) : source;
        offset = 0;
      } else if (ev.kind === 'chunks') {
        for (const r of ev.records) {
          const at = offset;
          offset += r.length;
          if (isZeroChunk(algorithm, r.length, r.digest)) continue; // in no store (chunker/zero.ts)
          const key = digestKey(r.digest);
          if (asked.has(key)) continue;
          asked.add(key);
          batch.push({ id: { algorithm, digest: Buffer.from(r.digest) }, file, offset: at, length: r.length });
          if (batch.length >= RESEND_QUERY_CHUNKS) await sendMissing();
        }
      }
    }
    if (batch.length > 0) await sendMissing();
    await chunks.flush({ signal });
  } finally {
    await fh?.handle.close().catch(() => undefined);
    await reader.close();
  }
  return sent;
}
