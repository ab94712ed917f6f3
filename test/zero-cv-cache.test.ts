import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { isZeroBytesView, zeroBytes } from '../src/chunker/zero.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { spanCv, treeBinding, TreeHasher } from '../src/hash/tree.js';
import { cachedZeroCv, keepZeroCv, knownZeroCv, setZeroCvCacheDir, shippedZeroCv, useShippedZeroCvs, ZERO_CV_SPAN_BYTES, ZERO_CV_TABLE_ENTRIES } from '../src/hash/zero-cvs.js';
import { ScanPool } from '../src/scan/pool.js';
import { scanFile, SEGMENT_BYTES } from '../src/scan/scanner.js';
import { pseudoRandom } from './helpers/gen.js';

const SPAN = ZERO_CV_SPAN_BYTES;
const MiB = 1024 * 1024;
const FILE_NAME = 'blake3-zero-cv-8MiB-v1.bin';
const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const tree = treeBinding();

function oneShot(data: Uint8Array): string {
  const h = new Blake3Hasher();
  h.update(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return h.digest('hex');
}

/** 3 spans: 1 MiB of data at the start of spans 0 and 2, span 1 all hole. Returns the logical bytes. */
async function sparseImage(path: string): Promise<Uint8Array> {
  const content = new Uint8Array(3 * SPAN);
  const data = pseudoRandom(2 * MiB, 9);
  content.set(data.subarray(0, MiB), 0);
  content.set(data.subarray(MiB), 2 * SPAN);
  const fh = await open(path, 'w');
  try {
    await fh.write(content, 0, MiB, 0);
    await fh.write(content, 2 * SPAN, MiB, 2 * SPAN);
    await fh.truncate(3 * SPAN);
  } finally {
    await fh.close();
  }
  return content;
}

describe('zero spans\' BLAKE3 CVs are kept in the user\'s cache across processes', () => {
  let dir: string;
  let n = 0;
  /** A fresh cache directory, made current (as a new process would find it). */
  const freshCache = (): string => {
    const d = join(dir, `cache-${n++}`);
    setZeroCvCacheDir(d);
    return d;
  };
  before(async () => {
    assert.equal(SPAN, SEGMENT_BYTES, 'the cache holds the scan\'s segments');
    dir = await mkdtemp(join(tmpdir(), 'xfer-zero-cv-'));
    // The cases below are about the user's cache: the shipped table would answer first.
    useShippedZeroCvs(false);
  });
  after(async () => {
    setZeroCvCacheDir(null);
    useShippedZeroCvs(true);
    await rm(dir, { recursive: true, force: true });
  });

  it('the package ships the CVs of the spans of the first 256 GiB: they are BLAKE3\'s, and a scan takes them', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    useShippedZeroCvs(true);
    try {
      for (const k of [0, 1, 2, 1000, 8191, ZERO_CV_TABLE_ENTRIES - 1]) {
        assert.deepEqual(shippedZeroCv(k * SPAN, SPAN), spanCv(tree, null, SPAN, k * SPAN), `span ${k}`);
      }
      assert.equal(shippedZeroCv(ZERO_CV_TABLE_ENTRIES * SPAN, SPAN), undefined, 'past the table');
      assert.equal(shippedZeroCv(SPAN, SPAN / 2), undefined, 'not a whole span');
      // A first scan with an empty user cache finds the hole's CV in the table: it computes
      // none, so it keeps none.
      const file = join(dir, 'shipped.img');
      const content = await sparseImage(file);
      const d = freshCache();
      const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
      try {
        const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3' });
        for await (const batch of scan.batches()) batch.release();
        assert.equal(Buffer.from(scan.result.digest).toString('hex'), oneShot(content));
      } finally {
        await pool.close();
      }
      await assert.rejects(stat(join(d, FILE_NAME)), { code: 'ENOENT' }, 'nothing computed, nothing kept');
    } finally {
      useShippedZeroCvs(false);
    }
  });

  it('a CV kept for an aligned span is found by a later process; other spans are not kept', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const d = freshCache();
    const truth = spanCv(tree, null, SPAN, 3 * SPAN);
    assert.equal(cachedZeroCv(3 * SPAN, SPAN), undefined, 'nothing kept yet');
    keepZeroCv(3 * SPAN, SPAN, truth);
    keepZeroCv(5 * SPAN + 1024, SPAN, truth); // not aligned
    keepZeroCv(6 * SPAN, SPAN / 2, truth); // not a whole span
    assert.deepEqual(cachedZeroCv(3 * SPAN, SPAN), truth, 'the file the keep made is read, though it was missing before');
    setZeroCvCacheDir(d); // a new process: no memo, the file opened again
    assert.deepEqual(cachedZeroCv(3 * SPAN, SPAN), truth);
    assert.deepEqual(knownZeroCv(3 * SPAN, SPAN), truth);
    assert.equal(knownZeroCv(5 * SPAN + 1024, SPAN), undefined);
    assert.equal(knownZeroCv(6 * SPAN, SPAN / 2), undefined);
    assert.equal((await stat(join(d, FILE_NAME))).size, 4 * 64, 'entries up to span 3 only');
  });

  it('a damaged entry, or one never written, is a miss, never a CV', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const d = freshCache();
    keepZeroCv(2 * SPAN, SPAN, spanCv(tree, null, SPAN, 2 * SPAN));
    const fh = await open(join(d, FILE_NAME), 'r+');
    try {
      await fh.write(Buffer.from([0xff]), 0, 1, 2 * 64 + 5); // a byte of the CV
    } finally {
      await fh.close();
    }
    setZeroCvCacheDir(d);
    assert.equal(cachedZeroCv(2 * SPAN, SPAN), undefined, 'damaged');
    assert.equal(cachedZeroCv(SPAN, SPAN), undefined, 'never written (zeros before entry 2)');
    assert.equal(cachedZeroCv(9 * SPAN, SPAN), undefined, 'past the end of the file');
  });

  it('a scan takes an all-hole segment\'s CV from the cache, and keeps those it computes', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const file = join(dir, 'scan.img');
    const content = await sparseImage(file);
    const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
    const digestOfScan = async (): Promise<string> => {
      const scan = await scanFile(file, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3' });
      for await (const batch of scan.batches()) batch.release();
      return Buffer.from(scan.result.digest).toString('hex');
    };
    try {
      const d = freshCache();
      assert.equal(await digestOfScan(), oneShot(content));
      setZeroCvCacheDir(d);
      assert.deepEqual(cachedZeroCv(SPAN, SPAN), spanCv(tree, null, SPAN, SPAN), 'the hole\'s CV was kept');
      // Planted (a valid entry of the wrong CV): seen in the digest, so the scan used it.
      keepZeroCv(SPAN, SPAN, new Uint8Array(32).fill(7));
      setZeroCvCacheDir(d);
      assert.notEqual(await digestOfScan(), oneShot(content));
    } finally {
      await pool.close();
    }
  });

  it('a rebuild\'s check (TreeHasher) takes a zero span\'s CV from the cache, and keeps those it computes', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const content = new Uint8Array(3 * SPAN + 1);
    content[3 * SPAN] = 1;
    const feed = async (): Promise<string> => {
      const h = new TreeHasher(tree, isZeroBytesView);
      try {
        for (let at = 0; at < 3 * SPAN; at += MiB) h.update(zeroBytes(MiB));
        h.update(Buffer.from([1]));
        return (await h.digest()).toString('hex');
      } finally {
        await h.close();
      }
    };
    const d = freshCache();
    assert.equal(await feed(), oneShot(content));
    setZeroCvCacheDir(d);
    for (const k of [0, 1, 2]) assert.deepEqual(cachedZeroCv(k * SPAN, SPAN), spanCv(tree, null, SPAN, k * SPAN), `span ${k} kept`);
    keepZeroCv(2 * SPAN, SPAN, new Uint8Array(32).fill(7));
    setZeroCvCacheDir(d);
    assert.notEqual(await feed(), oneShot(content), 'the planted CV was used');
  });

  it('by default the cache is XDG_CACHE_HOME/xfer/zero-cv: a push fills it, and a second push is the same', async (t) => {
    if (!tree) return t.diagnostic('no native addon');
    const file = join(dir, 'cli.img');
    const content = await sparseImage(file);
    const xdg = join(dir, 'xdg');
    const env: NodeJS.ProcessEnv = { ...process.env, XDG_CACHE_HOME: xdg, XFER_NO_ZERO_CV_TABLE: '1' };
    delete env.XFER_NO_NATIVE;
    const show = (dest: string): string => {
      execFileSync(process.execPath, [BIN, 'push', '-q', file, `${dest}/`], { env });
      return JSON.parse(execFileSync(process.execPath, [BIN, 'manifest', 'show', '--json', join(dest, 'cli.img')], { env, encoding: 'utf8' })).digest;
    };
    await mkdir(join(dir, 'dest-1'));
    assert.equal(show(join(dir, 'dest-1')), oneShot(content));
    const kept = await readFile(join(xdg, 'xfer', 'zero-cv', FILE_NAME));
    assert.deepEqual(new Uint8Array(kept.subarray(64, 96)), spanCv(tree, null, SPAN, SPAN));
    await mkdir(join(dir, 'dest-2'));
    assert.equal(show(join(dir, 'dest-2')), oneShot(content), 'with the cache');
  });
});
