import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ChunkId } from '../src/core/ids.js';
import { mapBounded } from '../src/core/window.js';
import { digestOf } from '../src/hash/digest.js';
import { sysIsNative, trimLargeBuffers } from '../src/io/sys.js';
import { LocalStore } from '../src/store/local.js';
import { PACK_WINDOW_IDLE_MS } from '../src/store/local/pack-reader.js';
import { processIo } from './helpers/proc-io.js';

const CHUNKS = 16;
const CHUNK_BYTES = 64 * 1024;

/**
 * A committed pack of CHUNKS chunks, opened again; chunks 0 and 1 read in order (the rest
 * of the pack is read ahead then), chunk 10 damaged on disk afterwards: served from a
 * window kept, it comes back intact; read again from the disk, it is found corrupt.
 */
async function storeReadAheadOverDamage(dir: string): Promise<{ store: LocalStore; ids: ChunkId[]; data: Buffer[] }> {
  const data = Array.from({ length: CHUNKS }, () => randomBytes(CHUNK_BYTES));
  const ids: ChunkId[] = data.map((d) => ({ algorithm: 'blake3', digest: digestOf('blake3', d) }));
  const writer = await LocalStore.open(dir, { create: true });
  for (let i = 0; i < CHUNKS; i++) await writer.put(ids[i]!, data[i]!);
  await writer.close();
  const store = await LocalStore.open(dir, { create: false });
  assert.deepEqual(await store.get(ids[0]!), data[0]);
  assert.deepEqual(await store.get(ids[1]!), data[1]);
  const where = (await store.chunkLocation(ids[10]!))!;
  const fh = await open(where.file, 'r+');
  await fh.write(Buffer.alloc(where.length), 0, where.length, where.offset);
  await fh.close();
  return { store, ids, data };
}

describe('a local store reads a committed pack ahead for readers that go through it in order', () => {
  it('after two chunks read in order, the following ones come from one read made then, not one read each', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      // Chunk 10 is damaged on disk after the reads of 0 and 1: the window read then has it intact.
      const { store, ids, data } = await storeReadAheadOverDamage(dir);
      try {
        for (let i = 2; i < CHUNKS; i++) assert.deepEqual(await store.get(ids[i]!), data[i], `chunk ${i}, from the window read ahead`);
      } finally {
        await store.close();
      }
      // The damage is real: a store that has read nothing ahead finds it.
      const fresh = await LocalStore.open(dir, { create: false });
      try {
        await assert.rejects(fresh.get(ids[10]!), { code: 'XFER_CHUNK_CORRUPT' });
      } finally {
        await fresh.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a pack read in order is read about once, though records lie across the ends of the windows read ahead', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      // 160 records of 64 KiB + 1 byte (about 10 MiB): nearly every 4 MiB window ends inside one.
      const data = Array.from({ length: 160 }, () => randomBytes(CHUNK_BYTES + 1));
      const ids: ChunkId[] = data.map((d) => ({ algorithm: 'blake3', digest: digestOf('blake3', d) }));
      const writer = await LocalStore.open(dir, { create: true });
      for (let i = 0; i < data.length; i++) await writer.put(ids[i]!, data[i]!);
      await writer.close();
      const store = await LocalStore.open(dir, { create: false });
      try {
        const stored = data.reduce((n, d) => n + d.length, 0);
        const before = processIo('rchar');
        for (let i = 0; i < data.length; i++) assert.deepEqual(await store.get(ids[i]!), data[i], `chunk ${i}`);
        const read = processIo('rchar') - before;
        // Once, plus the window read ahead past the last record and the records across window ends (twice: 2x).
        assert.ok(read < stored * 1.5, `read ${read} bytes to serve ${stored}`);
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a pack whose records of several batches are interleaved (uploads side by side) is read about once, in few large reads, by readers going through it batch by batch', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      // Six batches of 64 chunks stored as six uploads side by side leave them so: one
      // record of each in turn (24 MiB). A pull asks for them in the file's order, batch by
      // batch, in two fetches side by side, each with reads in flight (as chunks/fetch).
      const BATCHES = 6;
      const PER_BATCH = 64;
      const data = Array.from({ length: BATCHES * PER_BATCH }, () => randomBytes(CHUNK_BYTES));
      const ids: ChunkId[] = data.map((d) => ({ algorithm: 'blake3', digest: digestOf('blake3', d) }));
      const writer = await LocalStore.open(dir, { create: true });
      for (let k = 0; k < PER_BATCH; k++) for (let b = 0; b < BATCHES; b++) await writer.put(ids[b * PER_BATCH + k]!, data[b * PER_BATCH + k]!);
      await writer.close();
      const store = await LocalStore.open(dir, { create: false });
      try {
        const stored = data.length * CHUNK_BYTES;
        const bytesBefore = processIo('rchar');
        const callsBefore = processIo('syscr');
        const half = data.length / 2;
        const fetch = (from: number, to: number) =>
          mapBounded(Array.from({ length: to - from }, (_, k) => from + k), 16, undefined, async (i) => assert.deepEqual(await store.get(ids[i]!), data[i], `chunk ${i}`));
        await Promise.all([fetch(0, half), fetch(half, data.length)]);
        const read = processIo('rchar') - bytesBefore;
        const calls = processIo('syscr') - callsBefore;
        assert.ok(read < stored * 1.25, `read ${read} bytes to serve ${stored}`);
        assert.ok(calls < data.length / 4, `${calls} reads to serve ${data.length} chunks`);
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('scattered chunks of such an interleaved pack (the bases of a delta push) are read one by one, not a window each', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      const BATCHES = 6;
      const PER_BATCH = 64;
      const data = Array.from({ length: BATCHES * PER_BATCH }, () => randomBytes(CHUNK_BYTES));
      const ids: ChunkId[] = data.map((d) => ({ algorithm: 'blake3', digest: digestOf('blake3', d) }));
      const writer = await LocalStore.open(dir, { create: true });
      for (let k = 0; k < PER_BATCH; k++) for (let b = 0; b < BATCHES; b++) await writer.put(ids[b * PER_BATCH + k]!, data[b * PER_BATCH + k]!);
      await writer.close();
      const store = await LocalStore.open(dir, { create: false });
      try {
        // Every seventh chunk in the file's order, each read twice (its block sums, then its delta).
        const wanted = Array.from({ length: Math.ceil(data.length / 7) }, (_, k) => 7 * k);
        const before = processIo('rchar');
        for (const i of wanted) for (let twice = 0; twice < 2; twice++) assert.deepEqual(await store.get(ids[i]!), data[i], `chunk ${i}`);
        const read = processIo('rchar') - before;
        const served = 2 * wanted.length * CHUNK_BYTES;
        assert.ok(read < served * 1.5, `read ${read} bytes to serve ${served}`);
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it(`a window nobody read from for PACK_WINDOW_IDLE_MS (${PACK_WINDOW_IDLE_MS} ms) is let go: a later read goes to the disk`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      const { store, ids, data } = await storeReadAheadOverDamage(dir);
      try {
        assert.deepEqual(await store.get(ids[2]!), data[2], 'from the window, within the idle time');
        await new Promise((r) => setTimeout(r, PACK_WINDOW_IDLE_MS + 100));
        await assert.rejects(store.get(ids[10]!), { code: 'XFER_CHUNK_CORRUPT' });
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an idle process lets the windows go at once (the keepers of large buffers are told to give them back)', async (t) => {
    if (!sysIsNative()) return t.diagnostic('the native addon is not built: no idle give-back');
    const dir = await mkdtemp(join(tmpdir(), 'xfer-read-ahead-'));
    try {
      const { store, ids } = await storeReadAheadOverDamage(dir);
      try {
        trimLargeBuffers(0);
        await assert.rejects(store.get(ids[10]!), { code: 'XFER_CHUNK_CORRUPT' });
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
