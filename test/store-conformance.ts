/**
 * The one suite every ChunkStore & ManifestStore (local, memory, HTTP, S3) must pass:
 * the contracts of src/store/store.ts, checked through the interfaces only. Errors are
 * recognised by their stable `code` (and `digest`), as a remote client would see them.
 */
import { strict as assert } from 'node:assert';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { isXferError, type ErrorCode } from '../src/core/errors.js';
import { DIGEST_ALGORITHMS, digestToHex, type ChunkId, type DigestAlgorithm } from '../src/core/ids.js';
import { MiB } from '../src/core/sizes.js';
import { digestOf } from '../src/hash/digest.js';
import type { ChunkStore, ManifestStore } from '../src/store/store.js';
import { pseudoRandom } from './helpers/gen.js';

export interface StoreUnderTest {
  store: ChunkStore & ManifestStore;
  cleanup(): Promise<void>;
}

const HAS_BATCH_IDS = 5_000;
const CONCURRENT_PUTS = 20;
const LARGE_CHUNK_BYTES = 16 * MiB;
const INVALID_NAMES = ['..', '/abs', 'a\\b', 'a//b', '', '.xfer/x', 'a/./b', 'a/', 'a\0b'];

/** A chunk of `bytes` pseudo-random bytes (distinct per seed) and its id. */
export function makeChunk(algorithm: DigestAlgorithm, bytes: number, seed: number): { id: ChunkId; data: Buffer } {
  const data = pseudoRandom(bytes, seed);
  if (bytes >= 4) data.writeUInt32LE(seed >>> 0, 0); // tiny chunks stay distinct too
  return { id: { algorithm, digest: digestOf(algorithm, data) }, data };
}

export async function* bytesSource(...pieces: (string | Uint8Array)[]): AsyncGenerator<Uint8Array> {
  for (const piece of pieces) yield typeof piece === 'string' ? Buffer.from(piece) : piece;
}

export async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for await (const piece of stream) pieces.push(Buffer.from(piece));
  return Buffer.concat(pieces);
}

/** Asserts that `promise` rejects with an XferError of `code` (and `digest`, if given). */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, digest?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isXferError(err, code), `expected ${code}, got ${String((err as Error)?.stack ?? err)}`);
    assert.ok(!err.message.includes('\n'), `message is not one line: ${err.message}`);
    if (digest !== undefined) {
      assert.equal((err as unknown as { digest: string }).digest, digest);
      assert.ok(err.message.includes(digest), `message does not name the digest: ${err.message}`);
    }
    return true;
  });
}

export function runStoreConformance(name: string, factory: () => Promise<StoreUnderTest>): void {
  describe(`store conformance: ${name}`, () => {
    let current: StoreUnderTest;
    let store: ChunkStore & ManifestStore;
    beforeEach(async () => {
      current = await factory();
      store = current.store;
    });
    afterEach(async () => {
      await current.store.close();
      await current.cleanup();
    });

    describe('chunks', () => {
      it('has() on an empty store answers false for every id', async () => {
        const ids = DIGEST_ALGORITHMS.flatMap((alg) => [1, 2, 3].map((seed) => makeChunk(alg, 100, seed).id));
        assert.deepEqual(await store.has(ids), ids.map(() => false));
        assert.deepEqual(await store.has([]), []);
      });

      for (const algorithm of DIGEST_ALGORITHMS) {
        it(`put/get round trip (${algorithm})`, async () => {
          const { id, data } = makeChunk(algorithm, 65_536, 7);
          assert.equal(await store.put(id, data), true);
          assert.deepEqual(await store.has([id]), [true]);
          assert.ok((await store.get(id)).equals(data));
        });
      }

      it('a chunk set aside no longer counts as present, get says it is damaged, and the next put stores it again (stores with setAside)', async (t) => {
        // Not t.skip(): on Node 20 a test skipped from inside does not run afterEach, and the
        // store's server would keep the process alive.
        if (store.setAside === undefined) return t.diagnostic('this store has no setAside: nothing to check');
        const { id, data } = makeChunk('blake3', 20_000, 31);
        const other = makeChunk('blake3', 20_000, 32);
        await store.put(id, data);
        await store.put(other.id, other.data);
        await store.flush();
        await store.setAside(id);
        assert.deepEqual(await store.has([id, other.id]), [false, true]);
        await rejectsWith(store.get(id), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
        assert.equal(await store.put(id, data), true);
        await store.flush();
        assert.deepEqual(await store.has([id]), [true]);
        assert.ok((await store.get(id)).equals(data));
        // A chunk not stored: nothing to do.
        await store.setAside(makeChunk('blake3', 100, 33).id);
      });

      it('keys chunks by algorithm and digest: the same digest under the other algorithm is absent', async () => {
        const { id, data } = makeChunk('blake3', 1000, 8);
        await store.put(id, data);
        const other: ChunkId = { algorithm: 'sha256', digest: id.digest };
        assert.deepEqual(await store.has([id, other]), [true, false]);
        await rejectsWith(store.get(other), 'XFER_CHUNK_MISSING', digestToHex(id.digest));
      });

      it(`answers a has() batch of ${HAS_BATCH_IDS} mixed ids in order`, async () => {
        const expected: boolean[] = [];
        const ids: ChunkId[] = [];
        const present: { id: ChunkId; data: Buffer }[] = [];
        let x = 12345;
        for (let i = 0; i < HAS_BATCH_IDS; i++) {
          x = (x * 1103515245 + 12345) >>> 0;
          const isPresent = (x >>> 16) % 2 === 0;
          const chunk = makeChunk(i % 3 === 0 ? 'sha256' : 'blake3', 32, 1000 + i);
          ids.push(chunk.id);
          expected.push(isPresent);
          if (isPresent) present.push(chunk);
        }
        // Half flushed, half put since: both states must be reported.
        const half = Math.floor(present.length / 2);
        for (const c of present.slice(0, half)) await store.put(c.id, c.data);
        await store.flush();
        for (const c of present.slice(half)) await store.put(c.id, c.data);
        assert.deepEqual(await store.has(ids), expected);
      });

      it('put of a stored id returns false and keeps the chunk', async () => {
        const { id, data } = makeChunk('blake3', 4096, 9);
        assert.equal(await store.put(id, data), true);
        assert.equal(await store.put(id, data), false);
        await store.flush();
        assert.equal(await store.put(id, data), false);
        assert.ok((await store.get(id)).equals(data));
      });

      it(`${CONCURRENT_PUTS} concurrent puts of one id: all resolve, exactly one wrote it`, async () => {
        const { id, data } = makeChunk('blake3', 256 * 1024, 10);
        const puts = Array.from({ length: CONCURRENT_PUTS }, () => store.put(id, Buffer.from(data)));
        const results = await Promise.all(puts);
        assert.equal(results.filter((r) => r).length, 1);
        assert.ok((await store.get(id)).equals(data));
        await store.flush();
        assert.ok((await store.get(id)).equals(data));
      });

      it('put of bytes that do not match the id throws ChunkCorruptError and stores nothing', async () => {
        const { id, data } = makeChunk('blake3', 4096, 11);
        const wrong = Buffer.from(data);
        wrong[100] = wrong[100]! ^ 1;
        await rejectsWith(store.put(id, wrong), 'XFER_CHUNK_CORRUPT', digestToHex(id.digest));
        assert.deepEqual(await store.has([id]), [false]);
        await store.flush();
        assert.deepEqual(await store.has([id]), [false]);
        // The right bytes can still be stored afterwards.
        assert.equal(await store.put(id, data), true);
      });

      it('get of an absent chunk throws ChunkMissingError naming the digest', async () => {
        const { id } = makeChunk('sha256', 100, 12);
        await rejectsWith(store.get(id), 'XFER_CHUNK_MISSING', digestToHex(id.digest));
      });

      it('stores an empty chunk', async () => {
        for (const algorithm of DIGEST_ALGORITHMS) {
          const { id, data } = makeChunk(algorithm, 0, 0);
          assert.equal(await store.put(id, data), true);
          assert.deepEqual(await store.has([id]), [true]);
          await store.flush();
          const back = await store.get(id);
          assert.equal(back.length, 0);
        }
      });

      it('stores a 16 MiB chunk', async () => {
        const { id, data } = makeChunk('blake3', LARGE_CHUNK_BYTES, 13);
        assert.equal(await store.put(id, data), true);
        await store.flush();
        assert.ok((await store.get(id)).equals(data));
      });

      it('keeps its own copy: changing the buffer after put does not change the chunk', async () => {
        const { id, data } = makeChunk('blake3', 4096, 14);
        await store.put(id, data);
        data.fill(0);
        assert.ok((await store.get(id)).equals(makeChunk('blake3', 4096, 14).data));
      });

      it('flush resolves, with and without chunks to flush, and chunks stay readable', async () => {
        await store.flush();
        const chunks = [1, 2, 3].map((seed) => makeChunk('blake3', 10_000, 100 + seed));
        for (const c of chunks) await store.put(c.id, c.data);
        await store.flush();
        await store.flush();
        assert.deepEqual(await store.has(chunks.map((c) => c.id)), [true, true, true]);
        for (const c of chunks) assert.ok((await store.get(c.id)).equals(c.data));
      });
    });

    describe('manifests', () => {
      it('put/get round trip through a stream', async () => {
        const big = pseudoRandom(300_000, 5);
        await store.putManifest('m1', bytesSource('hello ', big, ' world'));
        const back = await readAll(await store.getManifest('m1'));
        assert.ok(back.equals(Buffer.concat([Buffer.from('hello '), big, Buffer.from(' world')])));
      });

      it('put replaces a manifest', async () => {
        await store.putManifest('m', bytesSource('old, and longer than the new one'));
        await store.putManifest('m', bytesSource('new'));
        assert.equal((await readAll(await store.getManifest('m'))).toString(), 'new');
        const list = await store.listManifests('');
        assert.deepEqual(
          list.map((m) => [m.name, m.bytes]),
          [['m', 3]],
        );
      });

      it('accepts names with "/" and lists by prefix, sorted, with sizes and times', async () => {
        const before = Date.now();
        const names = ['daily/2024-01-02', 'daily/2024-01-01', 'daily/x/deep/er', 'dailyish', 'weekly/1', 'a'];
        for (const n of names) await store.putManifest(n, bytesSource(`content of ${n}`));
        const all = await store.listManifests('');
        assert.deepEqual(
          all.map((m) => m.name),
          ['a', 'daily/2024-01-01', 'daily/2024-01-02', 'daily/x/deep/er', 'dailyish', 'weekly/1'],
        );
        for (const m of all) {
          assert.equal(m.bytes, Buffer.byteLength(`content of ${m.name}`));
          assert.ok(m.mtimeMs >= before - 2000 && m.mtimeMs <= Date.now() + 2000, `mtime of ${m.name}`);
        }
        const listed = async (prefix: string): Promise<string[]> =>
          (await store.listManifests(prefix)).map((m) => m.name);
        const daily = ['daily/2024-01-01', 'daily/2024-01-02', 'daily/x/deep/er'];
        assert.deepEqual(await listed('daily/'), daily);
        assert.deepEqual(await listed('daily'), [...daily, 'dailyish']);
        assert.deepEqual(await listed('daily/2024-01-0'), ['daily/2024-01-01', 'daily/2024-01-02']);
        assert.deepEqual(await listed('daily/x/'), ['daily/x/deep/er']);
        assert.deepEqual(await listed('nothing/'), []);
        assert.deepEqual(await listed('zzz'), []);
        const deep = await readAll(await store.getManifest('daily/x/deep/er'));
        assert.equal(deep.toString(), 'content of daily/x/deep/er');
      });

      it('deletes a manifest', async () => {
        await store.putManifest('dir/one', bytesSource('1'));
        await store.putManifest('dir/two', bytesSource('2'));
        await store.deleteManifest('dir/one');
        assert.deepEqual(
          (await store.listManifests('')).map((m) => m.name),
          ['dir/two'],
        );
        await rejectsWith(store.getManifest('dir/one'), 'XFER_NOT_FOUND');
        await rejectsWith(store.deleteManifest('dir/one'), 'XFER_NOT_FOUND');
        await store.deleteManifest('dir/two');
        assert.deepEqual(await store.listManifests(''), []);
      });

      it('get and delete of an absent manifest throw NotFoundError naming it', async () => {
        await store.putManifest('present/x', bytesSource('x'));
        for (const absent of ['absent', 'present', 'present/y']) {
          await assert.rejects(store.getManifest(absent), (err: unknown) => {
            assert.ok(isXferError(err, 'XFER_NOT_FOUND'), String(err));
            assert.ok(err.message.includes(JSON.stringify(absent)), err.message);
            return true;
          });
          await rejectsWith(store.deleteManifest(absent), 'XFER_NOT_FOUND');
        }
      });

      it('rejects invalid names with InvalidArgumentError', async () => {
        for (const bad of INVALID_NAMES) {
          await rejectsWith(store.putManifest(bad, bytesSource('x')), 'XFER_INVALID_ARGUMENT');
          await rejectsWith(store.getManifest(bad), 'XFER_INVALID_ARGUMENT');
          await rejectsWith(store.deleteManifest(bad), 'XFER_INVALID_ARGUMENT');
        }
        for (const bad of ['../', '/x', 'a//']) await rejectsWith(store.listManifests(bad), 'XFER_INVALID_ARGUMENT');
        assert.deepEqual(await store.listManifests(''), []);
      });

      it('a failing source leaves the old manifest in place', async () => {
        await store.putManifest('keep', bytesSource('old'));
        async function* failing(): AsyncGenerator<Uint8Array> {
          yield Buffer.from('partial');
          throw new Error('source broke');
        }
        await assert.rejects(store.putManifest('keep', failing()), /source broke/);
        assert.equal((await readAll(await store.getManifest('keep'))).toString(), 'old');
      });
    });

    it('every method rejects with AbortedError once its signal is aborted', async () => {
      const { id, data } = makeChunk('blake3', 1000, 20);
      await store.put(id, data);
      await store.putManifest('m', bytesSource('m'));
      const controller = new AbortController();
      controller.abort();
      const signal = controller.signal;
      const other = makeChunk('blake3', 1000, 21);
      await rejectsWith(store.has([id], { signal }), 'XFER_ABORTED');
      await rejectsWith(store.get(id, { signal }), 'XFER_ABORTED');
      await rejectsWith(store.put(other.id, other.data, { signal }), 'XFER_ABORTED');
      await rejectsWith(store.flush({ signal }), 'XFER_ABORTED');
      await rejectsWith(store.putManifest('n', bytesSource('n'), { signal }), 'XFER_ABORTED');
      await rejectsWith(store.getManifest('m', { signal }), 'XFER_ABORTED');
      await rejectsWith(store.listManifests('', { signal }), 'XFER_ABORTED');
      await rejectsWith(store.deleteManifest('m', { signal }), 'XFER_ABORTED');
      // Nothing happened.
      assert.deepEqual(await store.has([other.id]), [false]);
      assert.deepEqual(
        (await store.listManifests('')).map((m) => m.name),
        ['m'],
      );
    });

    it('a signal aborted while a manifest is streamed in stops the put', async () => {
      await store.putManifest('m', bytesSource('old'));
      const controller = new AbortController();
      async function* slow(): AsyncGenerator<Uint8Array> {
        yield Buffer.from('a');
        controller.abort();
        yield Buffer.from('b');
      }
      await rejectsWith(store.putManifest('m', slow(), { signal: controller.signal }), 'XFER_ABORTED');
      assert.equal((await readAll(await store.getManifest('m'))).toString(), 'old');
    });
  });
}
