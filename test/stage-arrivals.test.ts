import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { ChunkId } from '../src/core/ids.js';
import { openManifestFile } from '../src/manifest/reader.js';
import { reconstruct } from '../src/reconstruct/reconstruct.js';
import { RecentChunks } from '../src/reconstruct/recent.js';
import type { ChunkStore, GetOptions, OpOptions, PutOptions } from '../src/store/store.js';
import { putChunksOf, writeFileManifest } from './helpers/chunks.js';
import { ArrivalSlabs } from '../src/server/arrivals.js';
import { StageHub } from '../src/server/stage.js';
import { MemoryStore } from '../src/store/memory.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

const KiB = 1024;
const MiB = 1024 * KiB;

describe('arrival slabs: the buffers of uploaded chunks are reused, never under a holder', () => {
  it('released slabs are carved again, and at most the bound of them is kept free', () => {
    const slabs = new ArrivalSlabs(64 * KiB, 2);
    const buffers = new Set<ArrayBufferLike>();
    const held: Buffer[] = [];
    for (let i = 0; i < 64; i++) {
      const b = slabs.take(16 * KiB);
      buffers.add(b.buffer);
      slabs.release(b);
    }
    assert.ok(buffers.size <= 3, `${buffers.size} slabs for 64 chunks released at once`);
    // Held chunks keep their slabs out: new slabs are made meanwhile.
    for (let i = 0; i < 16; i++) held.push(slabs.take(16 * KiB));
    for (const b of held) slabs.release(b);
    assert.ok(slabs.freeSlabs <= 2, `${slabs.freeSlabs} free slabs kept`);
    // A chunk over a quarter of a slab is a buffer of its own, not lent.
    const big = slabs.take(32 * KiB);
    assert.equal(big.buffer.byteLength, 32 * KiB);
    assert.equal(slabs.hold(big), false);
  });

  it('a chunk RecentChunks remembers keeps its bytes while the rest of its slab is released and carved again', async () => {
    const slabs = new ArrivalSlabs(64 * KiB, 8);
    const recent = new RecentChunks(MiB, slabs);
    const a = slabs.take(4 * KiB).fill(0xaa);
    const digest = Buffer.alloc(32, 1);
    const first = await recent.get(digest, async () => a);
    assert.equal(first.fetched, true);
    slabs.release(first.data); // the rebuild wrote and hashed it
    for (let i = 0; i < 64; i++) slabs.release(slabs.take(16 * KiB).fill(i));
    const free = slabs.freeSlabs;
    const again = await recent.get(digest, () => assert.fail('fetched a second time'));
    assert.ok(again.data.equals(Buffer.alloc(4 * KiB, 0xaa)), 'the remembered chunk saw its slab carved again');
    slabs.release(again.data);
    // A hit is kept as a copy of its own (the chunk may keep recurring): the slab is free again.
    assert.notEqual(again.data.buffer, a.buffer);
    assert.equal(slabs.freeSlabs, free + 1, 'the slab came back once nothing held it');
  });

  it('a second occurrence waiting for the first fetch holds the bytes too', async () => {
    const slabs = new ArrivalSlabs(64 * KiB, 2);
    const recent = new RecentChunks(0, slabs); // remembers nothing: only the two callers hold it
    const a = slabs.take(4 * KiB).fill(0xbb);
    let deliver!: (b: Buffer) => void;
    const digest = Buffer.alloc(32, 2);
    const one = recent.get(digest, () => new Promise<Buffer>((r) => (deliver = r)));
    const two = recent.get(digest, () => assert.fail('fetched twice'));
    deliver(a);
    const [x, y] = await Promise.all([one, two]);
    slabs.release(x.data);
    for (let i = 0; i < 64; i++) slabs.release(slabs.take(16 * KiB).fill(i));
    assert.ok(y.data.equals(Buffer.alloc(4 * KiB, 0xbb)), 'the waiting occurrence saw its slab carved again');
    slabs.release(y.data);
  });
});

describe('a chunk handed to the stages waiting for it', () => {
  it('keeps its bytes after the upload that brought it is done and more uploads fill reused slabs', () => {
    const hub = new StageHub(new MemoryStore(), undefined, 0, new ArrivalSlabs(64 * KiB, 2));
    const digest = Buffer.alloc(32, 3);
    const got: Buffer[] = [];
    hub.wait('blake3', digest, (b) => got.push(b));
    hub.wait('blake3', digest, (b) => got.push(b));
    // The upload route's part: assemble, store, hand on, release (routes/chunks.ts).
    const data = hub.buffer(4 * KiB).fill(0xcc);
    hub.arrived('blake3', digest, data, true);
    hub.release(data);
    for (let i = 0; i < 64; i++) {
      const other = hub.buffer(16 * KiB).fill(i);
      hub.release(other);
    }
    assert.equal(got.length, 2);
    for (const b of got) assert.ok(b.equals(Buffer.alloc(4 * KiB, 0xcc)), 'a waiter saw its chunk carved over');
    // The first waiter is done: the second still holds it.
    hub.release(got[0]!);
    for (let i = 0; i < 64; i++) hub.release(hub.buffer(16 * KiB).fill(i));
    assert.ok(got[1]!.equals(Buffer.alloc(4 * KiB, 0xcc)), 'the second waiter saw its chunk carved over');
    hub.release(got[1]!);
  });
});

/** A store whose get() answers with buffers `slabs` lends (as the stages' WaitingStore does). */
class LendingStore implements ChunkStore {
  constructor(private readonly store: ChunkStore, private readonly slabs: ArrivalSlabs) {}
  has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    return this.store.has(ids, options);
  }
  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    const data = await this.store.get(id, options);
    const lent = this.slabs.take(data.length);
    lent.set(data);
    return lent;
  }
  put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    return this.store.put(id, data, options);
  }
  flush(options?: OpOptions): Promise<void> {
    return this.store.flush(options);
  }
  async close(): Promise<void> {}
}

describe('a rebuild from lent chunks', () => {
  it('releases every chunk it was lent once written and hashed, repeats and all', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-lent-'));
    try {
      const part = pseudoRandom(3 * MiB, 17);
      const data = Buffer.concat([part, part, pseudoRandom(2 * MiB, 18), part.subarray(0, MiB)]);
      const store = new MemoryStore();
      const records = await putChunksOf(store, data);
      const manifest = join(dir, 'manifest');
      await writeFileManifest(manifest, data, records);
      const slabs = new ArrivalSlabs(MiB, 2);
      const target = join(dir, 'out.bin');
      await reconstruct(await openManifestFile(manifest), new LendingStore(store, slabs), target, { lender: slabs, reuseTarget: false, resumable: false });
      assert.ok((await readFile(target)).equals(data));
      assert.equal(slabs.heldChunks, 0, 'chunks still held after the rebuild');
      assert.ok(slabs.freeSlabs > 0, 'no slab came back');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a rebuild\'s chunks in flight', () => {
  it('are at most inFlightBytes read and not yet written and hashed (one chunk alone may pass it)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-inflight-'));
    try {
      const data = pseudoRandom(24 * MiB, 19);
      const store = new MemoryStore();
      const records = await putChunksOf(store, data);
      const manifest = join(dir, 'manifest');
      await writeFileManifest(manifest, data, records);
      // Every chunk the store gives is lent and counted until the rebuild releases it; the
      // first chunk's read is held back a while, so that the reads behind it pile up as far
      // as the bound lets them.
      const lent = new Set<Uint8Array>();
      let lentBytes = 0;
      let peak = 0;
      const lender = {
        hold: (b: Uint8Array) => lent.has(b),
        release(b: Uint8Array) {
          if (lent.delete(b)) lentBytes -= b.length;
        },
      };
      let first = true;
      const counting: ChunkStore = {
        has: (ids, options) => store.has(ids, options),
        async get(id, options) {
          const wait = first;
          first = false;
          if (wait) await new Promise((r) => setTimeout(r, 200));
          const b = Buffer.from(await store.get(id, options));
          lent.add(b);
          lentBytes += b.length;
          peak = Math.max(peak, lentBytes);
          return b;
        },
        put: (id, bytes, options) => store.put(id, bytes, options),
        flush: (options) => store.flush(options),
        close: async () => {},
      };
      const target = join(dir, 'out.bin');
      await reconstruct(await openManifestFile(manifest), counting, target, { lender, inFlightBytes: 2 * MiB, recentChunkBytes: 0, reuseTarget: false, resumable: false });
      assert.ok((await readFile(target)).equals(data));
      assert.ok(peak <= 2 * MiB + Math.max(...records.map((r) => r.length)), `${peak} bytes read and not yet written and hashed`);
      assert.ok(peak >= MiB, `the reads piled up behind the first as far as the bound: ${peak} bytes`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a staged push whose chunks repeat', () => {
  const fx = useServer('xfer-arrivals-');

  it('is built by its stage, byte for byte, its chunks kept in reused slabs', async () => {
    // 20 MiB, then its first 3 MiB again: about six slabs of arrivals, carved again as the
    // rebuild releases them. A chunk seen with another's bytes would fail the whole-file
    // digest, and the commit would rebuild the ordinary way instead (commitsStaged).
    // (A file's repeats are read back from its staged copy, not from RecentChunks: the
    // holds of RecentChunks are covered by the cases above.)
    const head = pseudoRandom(20 * MiB, 5);
    const data = Buffer.concat([head, head.subarray(0, 3 * MiB)]);
    const src = join(fx.dir, 'repeats.bin');
    await writeFile(src, data);
    await utimes(src, 1_600_000_000, 1_600_000_000);
    const before = fx.server.stats();
    const r = await runCli(['push', src, `${fx.server.url}/repeats.bin`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(fx.root, 'files', 'repeats.bin'))).equals(data));
    assert.equal(fx.server.stats().commitsStaged - before.commitsStaged, 1, 'the commit swapped in the staged file');
  });
});
