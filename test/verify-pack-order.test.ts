import { strict as assert } from 'node:assert';
import { cp, mkdir, mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isXferError, type XferError } from '../src/core/errors.js';
import { digestToHex, type ChunkId } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import { push, verifyManifests } from '../src/index.js';
import { LocalStore, SET_ASIDE_FILE } from '../src/store/local.js';
import { PACK_CHECK_WINDOW_BYTES } from '../src/store/local/verify-chunks.js';
import type { ChunkCheck, ChunkStore } from '../src/store/store.js';
import { damageStoredChunk } from './helpers/damage.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;

function idOf(data: Buffer): ChunkId {
  return { algorithm: 'blake3', digest: digestOf('blake3', data) };
}

/** Every check verifyChunks tells, by index; fails on a chunk told twice. */
async function checkAll(store: ChunkStore, ids: readonly ChunkId[]): Promise<ChunkCheck[]> {
  const checks = new Array<ChunkCheck>(ids.length);
  await store.verifyChunks!(ids, (i, check) => {
    assert.equal(checks[i], undefined, `chunk ${i} told twice`);
    checks[i] = check;
  });
  return checks;
}

/** A facade over `store` without verifyChunks: verify's path for stores that lack it (get() per chunk). */
function withoutVerifyChunks(store: LocalStore): ChunkStore {
  return {
    has: (ids, o) => store.has(ids, o),
    get: (id, o) => store.get(id, o),
    put: (id, data, o) => store.put(id, data, o),
    flush: (o) => store.flush(o),
    close: () => store.close(),
    setAside: (id, o) => store.setAside(id, o),
  };
}

describe('a local store checks many chunks in pack order (verifyChunks), with the outcome get() has for each', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-verify-pack-order-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('intact chunks over several packs (and one larger than a read window) pass; a flipped byte, a truncated pack, a missing and a set-aside chunk are told as get() tells them', async () => {
    const storeDir = join(dir, 'kinds');
    const writer = await LocalStore.open(storeDir, { create: true, packTargetBytes: 256 * KiB });
    const datas = Array.from({ length: 24 }, (_, i) => pseudoRandom(40 * KiB + i * 1000, 100 + i));
    datas.push(pseudoRandom(PACK_CHECK_WINDOW_BYTES + 300 * KiB, 99)); // its own window, larger than the others
    const ids = datas.map(idOf);
    for (let i = 0; i < datas.length; i++) await writer.put(ids[i]!, datas[i]!);
    await writer.close();

    const store = await LocalStore.open(storeDir, { create: false });
    const locations = await Promise.all(ids.map((id) => store.chunkLocation(id)));
    assert.ok(new Set(locations.map((l) => l!.file)).size >= 4, 'the chunks lie in several packs');
    // The last chunk of the pack holding chunk 5 (the pack is cut short inside it).
    const packOf5 = locations[5]!.file;
    const lastIn = locations.map((l, i) => [l!, i] as const).filter(([l]) => l.file === packOf5).sort((a, b) => b[0].offset - a[0].offset)[0]!;
    const [truncated, corrupt, asideEarlier] = [lastIn[1], 2, 20];
    assert.ok(truncated !== corrupt && truncated !== asideEarlier && truncated !== 24, `#${truncated}`);
    await store.close();
    await damageStoredChunk(storeDir, ids[corrupt]!, 333);
    await truncate(lastIn[0].file, lastIn[0].offset + 100);
    const setter = await LocalStore.open(storeDir, { create: false });
    await setter.setAside(ids[asideEarlier]!);
    await setter.close();

    const checked = await LocalStore.open(storeDir, { create: false });
    try {
      const missing = idOf(pseudoRandom(1000, 7));
      const pending = pseudoRandom(3000, 8);
      await checked.put(idOf(pending), pending); // this opener's, not yet committed
      // Asked out of pack order, and the large chunk first.
      const asked = [ids[24]!, missing, idOf(pending), ...ids.slice(0, 24).reverse()];
      const datasAsked = [datas[24]!, undefined, pending, ...datas.slice(0, 24).reverse()];
      const checks = await checkAll(checked, asked);
      for (let k = 0; k < asked.length; k++) {
        const c = checks[k];
        assert.notEqual(c, undefined, `chunk ${k} told`);
        const i = k >= 3 ? 23 - (k - 3) : -1;
        const what = `chunk ${k} (${i >= 0 ? `stored #${i}` : ['large', 'missing', 'pending'][k]})`;
        if (k === 1) assert.ok(isXferError(c, 'XFER_CHUNK_MISSING'), `${what}: ${String(c)}`);
        else if (i === corrupt) assert.ok(isXferError(c, 'XFER_CHUNK_CORRUPT') && /does not hash to it \(set aside/.test(c.message), `${what}: ${String(c)}`);
        else if (i === truncated) assert.ok(isXferError(c, 'XFER_CHUNK_CORRUPT') && /ends before the chunk does \(truncated; set aside\)/.test(c.message), `${what}: ${String(c)}`);
        else if (i === asideEarlier) assert.ok(isXferError(c, 'XFER_CHUNK_CORRUPT') && /set aside/.test(c.message), `${what}: ${String(c)}`);
        else assert.equal(c, datasAsked[k]!.length, `${what} is intact`);
      }
      // The damage found is set aside as get() sets it aside: absent from then on, recorded.
      assert.deepEqual(await checked.has([ids[corrupt]!, ids[truncated]!, ids[0]!]), [false, false, true]);
      const records = (await readFile(join(storeDir, SET_ASIDE_FILE), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { digest: string }).digest);
      for (const i of [asideEarlier, corrupt, truncated]) assert.ok(records.includes(digestToHex(ids[i]!.digest)), `#${i} recorded as set aside`);
    } finally {
      await checked.close();
    }
  });

  it('verify --read-data through verifyChunks reports what it reports through get() per chunk, and reads no committed chunk through get()', async () => {
    const dest = join(dir, 'same');
    const tree = join(dir, 'same-src', 'tree');
    await mkdir(join(tree, 'sub'), { recursive: true });
    await writeFile(join(tree, 'a.bin'), pseudoRandom(700 * KiB, 1));
    await writeFile(join(tree, 'sub', 'twin.bin'), pseudoRandom(700 * KiB, 1));
    await writeFile(join(tree, 'b.bin'), pseudoRandom(500 * KiB, 2));
    const storeDir = join(dest, '.xfer');
    const s = await LocalStore.open(storeDir, { create: true, packTargetBytes: 300 * KiB });
    await push(tree, s);
    await s.close();
    const damaged = await LocalStore.open(storeDir, { create: false });
    const all: ChunkId[] = [];
    for await (const id of damaged.listChunks()) all.push(id);
    await damaged.close();
    await damageStoredChunk(storeDir, all[1]!, 5);
    await damageStoredChunk(storeDir, all[all.length - 1]!, 50);
    const copy = join(dir, 'same-copy');
    await cp(dest, copy, { recursive: true });

    // Fast: a LocalStore (gets counted); generic: the same store without verifyChunks.
    const fast = await LocalStore.open(storeDir, { create: false });
    let gets = 0;
    const counted = new Proxy(fast, {
      get(target, prop, receiver) {
        if (prop === 'get') gets++;
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    const generic = await LocalStore.open(join(copy, '.xfer'), { create: false });
    try {
      const a = await verifyManifests(fast, counted, ['tree'], { readData: true });
      const b = await verifyManifests(generic, withoutVerifyChunks(generic), ['tree'], { readData: true });
      assert.equal(gets, 0, 'every committed chunk read in pack order');
      const summary = (r: typeof a) => ({
        chunksRead: r.chunksRead,
        bytesRead: r.bytesRead,
        chunks: r.chunks,
        damagedChunks: r.damagedChunks.map((c) => ({ digest: c.digest, kind: c.kind, message: c.message.replace(copy, dest), files: c.files.map((f) => `${f.manifest}:${f.path}`).sort() })).sort((x, y) => x.digest.localeCompare(y.digest)),
        damaged: r.damaged.length,
      });
      assert.deepEqual(summary(a), summary(b));
      assert.equal(a.damagedChunks.length, 2);
      assert.ok(a.damagedChunks.every((c) => c.kind === 'corrupt'));
      assert.ok(a.chunksRead === all.length && a.bytesRead > 0);
    } finally {
      await fast.close();
      await generic.close();
    }
  });

  it('a pack that cannot be read rejects, as get() does, unless a gc deleted it (its chunks are then missing); an aborted check rejects with AbortedError', async () => {
    const storeDir = join(dir, 'unreadable');
    const w = await LocalStore.open(storeDir, { create: true });
    const data = pseudoRandom(50 * KiB, 3);
    await w.put(idOf(data), data);
    await w.close();
    const store = await LocalStore.open(storeDir, { create: false });
    const loc = (await store.chunkLocation(idOf(data)))!;
    try {
      await assert.rejects(store.verifyChunks([idOf(data)], () => {}, { signal: AbortSignal.abort() }), (err) => isXferError(err, 'XFER_ABORTED'));
      await unlink(loc.file);
      const viaGet = await store.get(idOf(data)).then(() => undefined, (err: XferError) => err);
      assert.ok(viaGet !== undefined);
      await assert.rejects(store.verifyChunks([idOf(data)], () => assert.fail('nothing to tell')), (err) => isXferError(err, viaGet.code) && err.message.includes(loc.file));
    } finally {
      await store.close();
    }
    // A gc marked it (and deleted it, its index left): a store opened after counts it dead.
    const packName = basename(loc.file, '.pack');
    await mkdir(join(storeDir, 'gc'), { recursive: true });
    await writeFile(join(storeDir, 'gc', 'marks.json'), JSON.stringify({ format: 'xfer-gc-marks', version: 1, packs: { [packName]: 0 } }));
    const later = await LocalStore.open(storeDir, { create: false });
    try {
      await assert.rejects(later.get(idOf(data)), (err) => isXferError(err, 'XFER_CHUNK_MISSING'));
      const [check] = await checkAll(later, [idOf(data)]);
      assert.ok(isXferError(check, 'XFER_CHUNK_MISSING'), String(check));
    } finally {
      await later.close();
    }
  });
});
