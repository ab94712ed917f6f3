import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { isZeroBytesView, zeroBytes } from '../src/chunker/zero.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { CvStack, holeCover, spanCv, spanCvWithHoles, treeBinding, TreeHasher, TREE_SPAN_BYTES, TREE_SPANS_IN_FLIGHT, TREE_SPARE_SPANS, type TreeBinding } from '../src/hash/tree.js';
import { rememberZeroCv, setZeroCvCacheDir } from '../src/hash/zero-cvs.js';
import { ChunkColumns, chunkerFor, cutAndHash, scanSegment } from '../src/scan/segment.js';
import { pull, push } from '../src/index.js';
import { DIGEST_THREAD_MIN_BYTES } from '../src/scan/digest-thread.js';
import { ScanPool } from '../src/scan/pool.js';
import { scanFile, SEGMENT_BYTES } from '../src/scan/scanner.js';
import { pseudoRandom } from './helpers/gen.js';
import { withNative } from './helpers/native.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// The hashing itself is what is tested here: no zero CVs from the user's cache
// (zero-cv-cache.test.ts tests those), and none planted into it.
setZeroCvCacheDir(null);

/** The one-shot BLAKE3 digest (@napi-rs/blake-hash), hex. */
function oneShot(data: Uint8Array): string {
  const h = new Blake3Hasher();
  h.update(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return h.digest('hex');
}

/** A deterministic generator for layouts. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** `size` bytes of data and zero runs in a random layout (about half zeros, runs of up to 3 MiB). */
function layout(size: number, seed: number): Buffer {
  const r = rng(seed);
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; ) {
    const run = Math.min(size - at, 1 + Math.floor(r() * r() * 3 * MiB));
    if (r() < 0.5) pseudoRandom(run, seed + at).copy(out, at);
    at += run;
  }
  return out;
}

const SIZES = [1, 1023, 1024, 1025, 8 * MiB - 1, 8 * MiB, 8 * MiB + 1, 3 * 8 * MiB + 5];

describe('the BLAKE3 digest merged from subtree CVs is the one-shot digest', () => {
  const tree = treeBinding();
  let b: TreeBinding;
  before(() => {
    if (tree) b = tree;
  });

  it('the native subtree functions are built (CI requires the addon)', (t) => {
    if (!tree && process.env.XFER_REQUIRE_NATIVE !== '1') return t.diagnostic('native addon not built: the TypeScript path is used');
    assert.ok(tree, 'blake3Cv, blake3CvAsync and blake3Parent are exported by the addon');
  });

  it('spans of 1, 4 and 64 KiB merged in order give the digest, for sizes around chunk and span edges', (t) => {
    if (!tree) return t.diagnostic('no native addon');
    for (const span of [KiB, 4 * KiB, 64 * KiB]) {
      for (const size of [span + 1, 2 * span - 1, 2 * span, 2 * span + 1, 3 * span + 5, 7 * span, 8 * span, 9 * span + 1023, 33 * span + 1]) {
        const data = layout(size, size + span);
        const stack = new CvStack(b);
        for (let at = 0; at < size; at += span) {
          const piece = data.subarray(at, Math.min(size, at + span));
          const zeros = piece.every((x) => x === 0);
          stack.push(spanCv(b, zeros ? null : piece, piece.length, at));
        }
        assert.equal(stack.digest().toString('hex'), oneShot(data), `size ${size} in spans of ${span}`);
      }
    }
  });

  it('a run of zeros hashed without input has the CV of the same zero bytes hashed as data', (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const zeros = new Uint8Array(8 * MiB);
    for (const [length, counter] of [[1, 0], [1000, 7], [1024, 3], [1025, 2], [64 * KiB, 64], [5 * MiB + 3, 8192], [8 * MiB, 8192 * 5]] as const) {
      const a = spanCv(b, null, length, counter * KiB);
      const d = spanCv(b, zeros, length, counter * KiB);
      assert.equal(Buffer.from(a).toString('hex'), Buffer.from(d).toString('hex'), `${length} zero bytes at chunk ${counter}`);
    }
  });

  it('holeCover tells a range inside a hole, clear of the holes, or partly in one', () => {
    const holes = [0, 100, 300, 400, 1000, 4096];
    assert.deepEqual(
      [[0, 100], [10, 50], [100, 300], [150, 200], [99, 101], [250, 350], [300, 400], [400, 1000], [1000, 4096], [4095, 4097], [5000, 6000], [200, 2000]].map(([a, b]) => holeCover(holes, a!, b!)),
      ['hole', 'hole', 'data', 'data', 'mixed', 'mixed', 'hole', 'data', 'hole', 'mixed', 'data', 'mixed'],
    );
    assert.equal(holeCover([], 0, 10), 'data');
  });

  it('a span\'s holes, wherever they start and end, are hashed without their bytes: the CV of the bytes with the holes zeroed', (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const span = 8 * MiB;
    const layouts: number[][] = [
      [3 * MiB + 512, span], // from mid-span (mid-chunk) to the end
      [0, 5 * MiB], // a head hole ending mid-span
      [KiB, 2 * KiB, 4 * MiB + 100, 4 * MiB + 9000, 6 * MiB, 7 * MiB + 4096], // small, mid-chunk, aligned
      [0, span], // all hole
      [4096, span - 4096], // all but the edges
    ];
    for (const [i, holes] of layouts.entries()) {
      for (const length of [span, 5 * MiB + 77]) {
        const clipped: number[] = [];
        for (let k = 0; k < holes.length; k += 2) if (holes[k]! < length) clipped.push(holes[k]!, Math.min(length, holes[k + 1]!));
        // The holes' bytes here are NOT zero: were they read, the CV would differ.
        const dirty = pseudoRandom(length, 70 + i);
        const zeroed = Buffer.from(dirty);
        for (let k = 0; k < clipped.length; k += 2) zeroed.fill(0, clipped[k]!, clipped[k + 1]!);
        const offset = 3 * span;
        assert.equal(
          Buffer.from(spanCvWithHoles(b, dirty, length, offset, clipped)).toString('hex'),
          Buffer.from(spanCv(b, zeroed, length, offset)).toString('hex'),
          `layout ${i}, ${length} bytes`,
        );
      }
    }
  });

  it('a span that is not a subtree (misaligned position) is refused', (t) => {
    if (!tree) return t.diagnostic('no native addon');
    assert.throws(() => spanCv(b, null, 2 * KiB, KiB), /not a subtree/);
    assert.throws(() => spanCv(b, new Uint8Array(10), 11, 0), /exceeds the data/);
  });

  for (const size of [0, ...SIZES]) {
    it(`TreeHasher fed pieces of data and known zeros gives the digest (${size} bytes)`, async (t) => {
      if (!tree) return t.diagnostic('no native addon');
      const data = layout(size, size + 1);
      const h = new TreeHasher(b, isZeroBytesView);
      try {
        const r = rng(size + 2);
        for (let at = 0; at < size; ) {
          const n = Math.min(size - at, 1 + Math.floor(r() * 300 * KiB));
          const piece = data.subarray(at, at + n);
          // Zero pieces as the rebuild hands them over: views of zeroBytes().
          h.update(piece.every((x) => x === 0) ? zeroBytes(n) : piece);
          await h.ready();
          at += n;
        }
        assert.equal((await h.digest()).toString('hex'), oneShot(data));
      } finally {
        await h.close();
      }
    });
  }

  it('TreeHasher: zero runs that fill, start inside, end inside or cross the 8 MiB zero grid, between data, give the digest', async (t) => {
    // Zeros with no buffer grow into one 8 MiB subtree where they start on the grid, and
    // are cut into 2 MiB spans where data comes first (TreeHasherOptions.zeroSpanBytes).
    if (!tree) return t.diagnostic('no native addon');
    const grid = 8 * MiB;
    for (let seed = 1; seed <= 3; seed++) {
      const r = rng(seed * 31);
      const parts: Uint8Array[] = [];
      let size = 0;
      for (let i = 0; i < 6; i++) {
        const zeros = Math.floor(r() * 2 * grid) + (r() < 0.3 ? grid - (size % grid) : 0);
        parts.push(new Uint8Array(zeros));
        size += zeros;
        const data = r() < 0.2 ? 0 : 1 + Math.floor(r() * 3 * MiB);
        const piece = new Uint8Array(data).map((_, k) => (k * 7 + seed) | 1);
        parts.push(piece);
        size += data;
      }
      const h = new TreeHasher(b, isZeroBytesView);
      try {
        for (const part of parts) {
          const zero = part.length > 0 && part[0] === 0;
          for (let at = 0; at < part.length; ) {
            const n = Math.min(part.length - at, MiB);
            h.update(zero ? zeroBytes(n) : part.subarray(at, at + n));
            await h.ready();
            at += n;
          }
        }
        const all = new Uint8Array(size);
        let at = 0;
        for (const part of parts) {
          all.set(part, at);
          at += part.length;
        }
        assert.equal((await h.digest()).toString('hex'), oneShot(all), `seed ${seed}, ${size} bytes`);
      } finally {
        await h.close();
      }
    }
  });

  it('TreeHasher: zeros that follow data take the 8 MiB grid\'s CVs again (no buffer for them)', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const grid = 8 * MiB;
    const content = new Uint8Array(300_000 + 24 * MiB + 1000);
    content.fill(3, 0, 300_000);
    content.fill(5, 300_000 + 24 * MiB);
    const feed = async (): Promise<string> => {
      const h = new TreeHasher(b, isZeroBytesView);
      try {
        h.update(content.subarray(0, 300_000));
        for (let at = 0; at < 24 * MiB; at += MiB) h.update(zeroBytes(MiB));
        h.update(content.subarray(300_000 + 24 * MiB));
        return (await h.digest()).toString('hex');
      } finally {
        await h.close();
      }
    };
    const truth = spanCv(b, null, grid, 2 * grid);
    try {
      rememberZeroCv(2 * grid, grid, new Uint8Array(32).fill(9)); // not the zeros' CV: seen in the digest if used
      assert.notEqual(await feed(), oneShot(content), 'the grid span [16, 24) MiB was looked up');
    } finally {
      rememberZeroCv(2 * grid, grid, truth);
    }
    assert.equal(await feed(), oneShot(content));
  });

  it('CvStack: a subtree pushed whole equals its spans pushed one by one', (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const cvs = Array.from({ length: 16 }, (_, i) => spanCv(b, null, KiB, i * KiB));
    const parent = (l: Uint8Array, r: Uint8Array) => {
      const out = new Uint8Array(32);
      b.blake3Parent(l, r, false, out);
      return out;
    };
    const four = (i: number) => parent(parent(cvs[i]!, cvs[i + 1]!), parent(cvs[i + 2]!, cvs[i + 3]!));
    const one = new CvStack(b);
    for (const cv of cvs.slice(0, 13)) one.push(cv);
    const mixed = new CvStack(b);
    for (const cv of cvs.slice(0, 3)) mixed.push(cv);
    mixed.push(cvs[3]!);
    mixed.pushSubtree(four(4), 4);
    mixed.pushSubtree(four(8), 4);
    mixed.push(cvs[12]!);
    assert.equal(mixed.digest().toString('hex'), one.digest().toString('hex'));
    const misplaced = new CvStack(b);
    misplaced.push(cvs[0]!);
    assert.throws(() => misplaced.pushSubtree(four(1), 4), /subtree of 4 spans after 1/);
  });

  it('TreeHasher: callers waiting in ready() at once merge the spans in file order', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const data = layout(6 * TREE_SPAN_BYTES + 77, 5);
    const h = new TreeHasher(b, isZeroBytesView);
    try {
      const waits: Promise<void>[] = [];
      // As a rebuild's chunk jobs do: each feeds its bytes, then waits for room.
      for (let at = 0; at < data.length; at += 2 * MiB) {
        h.update(data.subarray(at, Math.min(data.length, at + 2 * MiB)));
        waits.push(h.ready());
      }
      await Promise.all(waits);
      assert.equal((await h.digest()).toString('hex'), oneShot(data));
    } finally {
      await h.close();
    }
  });

  it('TreeHasher: a feeder that waits in ready() never has more than TREE_SPANS_IN_FLIGHT spans being hashed', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    // The real subtree functions, each hash held a little longer so that spans would pile
    // up if ready() let the feeder run ahead of them.
    let hashing = 0;
    let most = 0;
    const slow: TreeBinding = {
      ...b,
      blake3CvAsync: async (...args: Parameters<TreeBinding['blake3CvAsync']>) => {
        most = Math.max(most, ++hashing);
        try {
          await b.blake3CvAsync(...args);
          await new Promise((r) => setTimeout(r, 20));
        } finally {
          hashing--;
        }
      },
    };
    const data = layout(8 * TREE_SPAN_BYTES + 5, 9);
    const h = new TreeHasher(slow, isZeroBytesView);
    try {
      for (let at = 0; at < data.length; at += MiB) {
        h.update(data.subarray(at, Math.min(data.length, at + MiB)));
        await h.ready();
      }
      assert.equal((await h.digest()).toString('hex'), oneShot(data));
    } finally {
      await h.close();
    }
    assert.equal(most, TREE_SPANS_IN_FLIGHT, 'spans hashed at once');
  });

  it('TreeHasher reuses the buffers of hashed spans when fed in bursts', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    // A fresh 8 MiB span is page-faulted in as it fills. A rebuild feeds spans in bursts
    // (chunks queued behind a slow fetch complete at once): the buffers of a burst's spans
    // serve the next burst instead of new ones (kept as spares, or given back to the
    // process's pool and taken from it again: the same memory either way).
    const buffers = new Set<ArrayBufferLike>();
    const counting: TreeBinding = {
      ...b,
      blake3CvAsync: async (...args: Parameters<TreeBinding['blake3CvAsync']>) => {
        if (args[0]) buffers.add(args[0].buffer);
        await b.blake3CvAsync(...args);
      },
    };
    const bursts = 6;
    const burst = 3 * TREE_SPAN_BYTES;
    const data = layout(bursts * burst + 5, 9);
    const h = new TreeHasher(counting, isZeroBytesView);
    try {
      for (let at = 0; at < data.length; at += burst) {
        for (let p = at; p < Math.min(data.length, at + burst); p += MiB) h.update(data.subarray(p, Math.min(data.length, p + MiB, at + burst)));
        await h.ready();
        await new Promise((r) => setTimeout(r, 50)); // every span of the burst hashed
      }
      assert.equal((await h.digest()).toString('hex'), oneShot(data));
    } finally {
      await h.close();
    }
    // A burst's three spans are out at once, and the next one fills meanwhile: four.
    assert.ok(buffers.size <= Math.max(4, TREE_SPARE_SPANS + 1), `${buffers.size} span buffers for ${bursts * 3 + 1} spans`);
  });

  it('TreeHasher takes a zero span\'s CV remembered by a scan of the same holes instead of hashing it again', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const offset = 5 * TREE_SPAN_BYTES;
    const truth = spanCv(b, null, TREE_SPAN_BYTES, offset);
    const feed = async (): Promise<string> => {
      const h = new TreeHasher(b, isZeroBytesView);
      try {
        for (let at = 0; at < 6 * TREE_SPAN_BYTES; at += 256 * KiB) h.update(zeroBytes(256 * KiB));
        h.update(Buffer.from([1]));
        return (await h.digest()).toString('hex');
      } finally {
        await h.close();
      }
    };
    try {
      rememberZeroCv(offset, TREE_SPAN_BYTES, new Uint8Array(32).fill(7)); // not the zeros' CV: seen in the digest if used
      assert.notEqual(await feed(), oneShot(Buffer.concat([new Uint8Array(6 * TREE_SPAN_BYTES), Buffer.from([1])])));
    } finally {
      rememberZeroCv(offset, TREE_SPAN_BYTES, truth);
    }
    assert.equal(await feed(), oneShot(Buffer.concat([new Uint8Array(6 * TREE_SPAN_BYTES), Buffer.from([1])])));
  });

  it('TreeHasher: a file of zeros only, several spans, is hashed without buffers', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const size = 3 * TREE_SPAN_BYTES + 4097;
    const h = new TreeHasher(b, isZeroBytesView);
    try {
      for (let at = 0; at < size; at += 256 * KiB) h.update(zeroBytes(Math.min(256 * KiB, size - at)));
      assert.equal((await h.digest()).toString('hex'), oneShot(new Uint8Array(size)));
    } finally {
      await h.close();
    }
  });
});

describe('holes anywhere in a segment are neither compared nor hashed from memory', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-b3holes-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('cutAndHash takes windows inside the reported holes as zeros without looking at their bytes', () => {
    const chunker = chunkerFor(DEFAULT_CHUNKER, 'typescript');
    const size = 6 * MiB;
    const holes = [MiB + 3000, 3 * MiB + 5, 4 * MiB, 5 * MiB + 1];
    const max = chunker.maxChunkBytes;
    const zeroed = pseudoRandom(size, 80);
    for (let k = 0; k < holes.length; k += 2) zeroed.fill(0, holes[k]!, holes[k + 1]!);
    // The reader zeroes holes, and cuts near their edges read those zeros (a chunk that starts
    // before a hole or ends after it); a window inside one is not looked at: here its bytes
    // are NOT zero, more than a chunk's length from the hole's edges.
    const dirty = Buffer.from(zeroed);
    for (let k = 0; k < holes.length; k += 2) dirty.fill(0xa5, holes[k]! + max, holes[k + 1]! - max);
    const cut = (data: Uint8Array, known?: number[]) => {
      const cols = new ChunkColumns();
      cutAndHash(chunker, 'blake3', data, 0, size, true, size, cols, undefined, known);
      return { lengths: [...cols.lengths.subarray(0, cols.count)], digests: Buffer.from(cols.digests.subarray(0, cols.count * 32)).toString('hex') };
    };
    // With the holes reported, the chunks are those of the file with its holes read as zeros.
    assert.deepEqual(cut(dirty, holes), cut(zeroed));
  });

  it('a scan of a file whose holes start and end mid-segment: the chunks of its dense copy, b3sum\'s digest, and the holes reported by its segments', async (t) => {
    if (!treeBinding()) return t.diagnostic('no native addon');
    const size = 4 * SEGMENT_BYTES;
    // Data and holes that start and end inside segments (none on a segment edge).
    const extents = [[SEGMENT_BYTES / 2 + 1000, MiB], [SEGMENT_BYTES - 2 * MiB, MiB], [SEGMENT_BYTES + 3 * MiB, 10 * MiB], [3 * SEGMENT_BYTES + 5 * MiB + 7, 4097]] as const;
    const sparse = join(dir, 'mid.img');
    const dense = join(dir, 'mid-dense.img');
    const fh = await open(sparse, 'w');
    try {
      await fh.truncate(size);
      for (const [i, [at, n]] of extents.entries()) await fh.write(pseudoRandom(n, 90 + i), 0, n, at);
    } finally {
      await fh.close();
    }
    execFileSync('cp', ['--sparse=never', sparse, dense]);
    const pool = new ScanPool({ threads: 2 });
    try {
      const scanOf = async (path: string) => {
        const scan = await scanFile(path, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3', implementation: 'typescript' });
        const chunks: string[] = [];
        for await (const batch of scan.batches()) {
          for (let i = 0; i < batch.count; i++) chunks.push(`${batch.lengths[i]}:${Buffer.from(batch.digests.subarray(i * 32, i * 32 + 32)).toString('hex')}`);
          batch.release();
        }
        return { chunks, digest: Buffer.from(scan.result.digest).toString('hex'), dataBytes: scan.result.dataBytes };
      };
      const a = await scanOf(sparse);
      const d = await scanOf(dense);
      assert.deepEqual(a.chunks, d.chunks, 'the same chunks as the dense copy');
      assert.equal(a.digest, await fileDigest(sparse));
      assert.equal(a.digest, d.digest);
      assert.ok(a.dataBytes < 13 * MiB, `dataBytes ${a.dataBytes}: the extents, not the holes`);
    } finally {
      await pool.close();
    }
    // Segment 1 (8-16 MiB) of the sparse file: a hole up to 11 MiB, then data; its CV is
    // that of its bytes, its hole reported (as the data's, not from the segment's start only).
    const r = scanSegment({
      kind: 'file', path: sparse, start: SEGMENT_BYTES, end: 2 * SEGMENT_BYTES, fileSize: size, chunker: DEFAULT_CHUNKER,
      implementation: 'typescript', digestAlgorithm: 'blake3', wholeFile: false, segmentCv: true,
    });
    assert.deepEqual(r.holes?.slice(0, 2), [0, 3 * MiB], 'the head hole');
    const s0 = scanSegment({
      kind: 'file', path: sparse, start: 0, end: SEGMENT_BYTES, fileSize: size, chunker: DEFAULT_CHUNKER,
      implementation: 'typescript', digestAlgorithm: 'blake3', wholeFile: false, segmentCv: true,
    });
    // Segment 0 (and the next segment's head it reads): hole, data, hole, data, hole. The
    // file system keeps extents in blocks: edges within 4 KiB of where the data was written.
    const holes = s0.holes ?? [];
    const near = (got: number | undefined, want: number) => got !== undefined && Math.abs(got - want) < 4 * KiB;
    assert.equal(holes.length, 6, `three holes: ${holes}`);
    assert.ok(holes[0] === 0 && near(holes[1], SEGMENT_BYTES / 2 + 1000), `the head hole: ${holes}`);
    assert.ok(near(holes[2], SEGMENT_BYTES / 2 + 1000 + MiB) && near(holes[3], SEGMENT_BYTES - 2 * MiB), `the hole between the data extents: ${holes}`);
    assert.ok(near(holes[4], SEGMENT_BYTES - MiB), `the tail hole: ${holes}`);
    const bytes = Buffer.alloc(SEGMENT_BYTES);
    const rfh = await open(sparse, 'r');
    try {
      await rfh.read(bytes, 0, SEGMENT_BYTES, 0);
    } finally {
      await rfh.close();
    }
    assert.equal(Buffer.from(s0.segmentCv!).toString('hex'), Buffer.from(spanCv(b3(), bytes, SEGMENT_BYTES, 0)).toString('hex'));
  });
});

function b3(): TreeBinding {
  const t = treeBinding();
  if (!t) throw new Error('no native addon');
  return t;
}

/** A sparse file: holes, data at odd offsets and across segment edges, zeros written as data. */
async function sparseFile(path: string, size: number, seed: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    const r = rng(seed);
    for (let k = 0; k < 6; k++) {
      const at = Math.floor(r() * size);
      const n = Math.min(size - at, 1 + Math.floor(r() * 2 * MiB));
      await fh.write(k === 3 ? Buffer.alloc(n) : pseudoRandom(n, seed + k), 0, n, at);
    }
    await fh.write(pseudoRandom(3, seed), 0, 3, size - 3); // data up to the end
  } finally {
    await fh.close();
  }
}

/** b3sum of a file (its logical content), or the one-shot digest where b3sum is not installed. */
async function fileDigest(path: string): Promise<string> {
  try {
    return execFileSync('b3sum', ['--no-names', path], { encoding: 'utf8' }).trim();
  } catch {
    const fh = await open(path, 'r');
    try {
      const h = new Blake3Hasher();
      const buf = Buffer.alloc(8 * MiB);
      for (let pos = 0; ; ) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      return h.digest('hex');
    } finally {
      await fh.close();
    }
  }
}


describe('a scan of several segments merges the workers\' segment CVs into the file digest', () => {
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-b3tree-'));
    pool = new ScanPool({ threads: 2 });
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  const cases = [
    { name: 'one byte over a segment', size: SEGMENT_BYTES + 1 },
    { name: '3 segments and 5 bytes', size: 3 * SEGMENT_BYTES + 5 },
    { name: 'whole holes between data', size: 6 * SEGMENT_BYTES + 12345 },
  ];
  for (const c of cases) {
    for (const native of [true, false]) {
      it(`${c.name}: the digest is b3sum's, ${native ? 'with the addon' : 'TypeScript path (XFER_NO_NATIVE=1)'}`, async (t) => {
        if (native && !treeBinding()) return t.diagnostic('no native addon');
        const file = join(dir, `f-${c.size}.img`);
        await sparseFile(file, c.size, c.size);
        const digest = await withNative(native, async () => {
          const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3', implementation: 'typescript' });
          for await (const batch of scan.batches()) batch.release();
          return Buffer.from(scan.result.digest).toString('hex');
        });
        const expected = await fileDigest(file);
        assert.equal(digest, expected);
      });
    }
  }
});

describe('a large rebuilt file is verified against its digest computed in spans', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-b3tree-rebuild-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Over the size where the rebuild hashes alongside its writes; holes, data and odd edges.
  const SIZE = DIGEST_THREAD_MIN_BYTES + 3 * SEGMENT_BYTES + 5;
  for (const native of [true, false]) {
    it(`a local push and a pull of a sparse image rebuild it exactly, ${native ? 'with the addon' : 'TypeScript path (XFER_NO_NATIVE=1)'}`, async (t) => {
      if (native && !treeBinding()) return t.diagnostic('no native addon');
      const src = join(dir, `image-${native}.img`);
      await sparseFile(src, SIZE, native ? 11 : 12);
      const expected = await fileDigest(src);
      const pushed = await withNative(native, () => push(src, join(dir, `store-${native}`) + '/'));
      assert.equal(Buffer.from(pushed.digest, 'hex').toString('hex'), expected, 'the scan\'s digest');
      const copy = join(dir, `store-${native}`, `image-${native}.img`);
      assert.equal(await fileDigest(copy), expected, 'the pushed copy');
      const back = join(dir, `back-${native}.img`);
      await withNative(native, () => pull(copy, back));
      assert.equal(await fileDigest(back), expected, 'the pulled copy');
    });
  }
});
