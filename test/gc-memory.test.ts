import { strict as assert } from 'node:assert';
import { it } from 'node:test';
import { gc } from '../src/gc.js';
import { MemoryStore } from '../src/store/memory.js';
import { encodeManifestToFile } from '../src/manifest/index.js';
import { makeChunk } from './store-conformance.js';

const HOUR_MS = 3_600_000;

it('MemoryStore gc: marks unreferenced chunks (absent for has), deletes them after the grace, recovers those a manifest refers to again, keeps referenced ones', async () => {
  const store = new MemoryStore();
  const used = makeChunk('blake3', 5000, 1);
  const garbage = makeChunk('blake3', 7000, 2);
  const revived = makeChunk('blake3', 3000, 3);
  for (const c of [used, garbage, revived]) await store.put(c.id, c.data);
  const manifest = async (name: string, chunks: (typeof used)[]) => {
    const bytes = await manifestBytes(chunks);
    await store.putManifest(name, (async function* () { yield bytes; })());
  };
  await manifest('keep', [used]);
  const now = Date.now();
  const dry = await gc(store, { graceMs: HOUR_MS, nowMs: now, dryRun: true });
  assert.deepEqual(await store.has([used.id, garbage.id, revived.id]), [true, true, true], 'a dry run marks nothing');
  const marking = await gc(store, { graceMs: HOUR_MS, nowMs: now });
  assert.deepEqual({ ...dry, dryRun: false }, marking);
  assert.equal(marking.markedPacks, 2);
  assert.deepEqual(await store.has([used.id, garbage.id, revived.id]), [true, false, false], 'marked chunks count as absent');
  await manifest('late', [revived]); // a push that relied on it commits after the mark
  const early = await gc(store, { graceMs: HOUR_MS, nowMs: now + HOUR_MS / 2 });
  assert.equal(early.deletedChunks, 0, 'nothing deleted within the grace');
  assert.equal(early.recoveredPacks, 1, 'the chunk a manifest refers to again is back');
  const late = await gc(store, { graceMs: HOUR_MS, nowMs: now + 2 * HOUR_MS });
  assert.equal(late.deletedChunks, 1);
  assert.equal(late.freedBytes, 7000);
  assert.deepEqual(await store.has([used.id, garbage.id, revived.id]), [true, false, true]);
  assert.ok((await store.get(revived.id)).equals(revived.data));
});

/** A file manifest of these chunks (their bytes are not needed: gc reads chunk records only). */
async function manifestBytes(chunks: { id: { digest: Uint8Array }; data: Uint8Array }[]): Promise<Buffer> {
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'xfer-gc-mem-'));
  try {
    const file = join(dir, 'm');
    await encodeManifestToFile(file, { kind: 'file', digestAlgorithm: 'blake3', chunker: { algorithm: 'fastcdc2020', minBytes: 2048, avgBytes: 8192, maxBytes: 65536 } }, [
      { type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: chunks.reduce((n, c) => n + c.data.length, 0), chunks: chunks.map((c) => ({ length: c.data.length, digest: c.id.digest })), digest: Buffer.alloc(32) },
    ] as never);
    return await readFile(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
