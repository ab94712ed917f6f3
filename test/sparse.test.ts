import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { isZeroChunk, MAX_ZERO_CHUNK_BYTES, nonZeroRuns, zeroDigest } from '../src/chunker/zero.js';
import { pull, type PullProgress } from '../src/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import type { ChunkId } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import { blockDeviceSize, seekData, seekHole, sysIsNative } from '../src/io/sys.js';
import { ScanPool } from '../src/scan/pool.js';
import { scanFile } from '../src/scan/scanner.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { storedChunks } from './helpers/damage.js';
import { processIo } from './helpers/proc-io.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The disk image of these tests: 64 MiB, of which 2 MiB of data in two extents, the rest holes. */
const IMAGE_BYTES = 64 * MiB;
const EXTENTS = [{ at: 10 * MiB + 123, bytes: MiB }, { at: 45 * MiB, bytes: MiB }];
const DATA_BYTES = 2 * MiB;
/** Disk space a sparse copy may take: the data, plus a file system block per extent edge and slack. */
const SPARSE_SLACK_BYTES = 4 * MiB;

/** Writes a sparse file of `size` bytes with pseudo-random data at `extents` (holes elsewhere). */
async function sparseFile(path: string, size: number, extents = EXTENTS): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    for (const [i, e] of extents.entries()) await fh.write(pseudoRandom(e.bytes, 40 + i), 0, e.bytes, e.at);
  } finally {
    await fh.close();
  }
}

/** What `b3sum` prints for the file: the BLAKE3 digest of its logical content (holes read as zeros). */
async function b3sum(path: string): Promise<string> {
  const h = new Blake3Hasher();
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(16 * MiB);
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** A stored chunk that is one of the zero chunks these tests cut: 256 KiB (CDC's zero runs) or 64 KiB (--fixed 64K). */
function isZeroChunkOfTheseTests(id: ChunkId): boolean {
  return [64 * KiB, 256 * KiB].some((len) => isZeroChunk(id.algorithm, len, id.digest));
}

/** Disk space the file takes (st_blocks). */
async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/** Every file below `dir` (recursively), with its size. */
async function filesBelow(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

describe('disk images: holes are not read, zero chunks are not stored or sent, copies are sparse', () => {
  let dir: string;
  let image: string;
  let imageDigest: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-sparse-'));
    image = join(dir, 'disk.img');
    await sparseFile(image, IMAGE_BYTES);
    assert.ok((await allocated(image)) < DATA_BYTES + SPARSE_SLACK_BYTES, 'the file system keeps the fixture sparse');
    imageDigest = await b3sum(image);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a zero chunk is recognised by its aligned length and the digest of zeros, nothing else', () => {
    assert.ok(isZeroChunk('blake3', 256 * KiB, digestOf('blake3', Buffer.alloc(256 * KiB))));
    assert.ok(isZeroChunk('sha256', 64 * KiB, digestOf('sha256', Buffer.alloc(64 * KiB))));
    assert.ok(!isZeroChunk('blake3', 256 * KiB + 1, digestOf('blake3', Buffer.alloc(256 * KiB + 1))), 'unaligned length: an ordinary chunk');
    const notZero = Buffer.alloc(64 * KiB);
    notZero[5] = 1;
    assert.ok(!isZeroChunk('blake3', 64 * KiB, digestOf('blake3', notZero)));
    assert.ok(!isZeroChunk('blake3', 64 * KiB, zeroDigest('sha256', 64 * KiB)), 'the digest of the other algorithm');
  });

  it('nonZeroRuns leaves out the all-zero 4 KiB pieces of a write, cut at file offsets', () => {
    const data = Buffer.alloc(20 * KiB);
    // Written at file offset 1000: its pieces are data [0, 3096) (file [1000, 4096)), then
    // 4 KiB each from data offset 3096 on.
    data[100] = 1; // in [0, 3096)
    data[12 * KiB] = 2; // in [11288, 15384)
    const runs = nonZeroRuns(data, 1000);
    assert.deepEqual(runs, [[0, 3096], [11288, 15384]]);
    assert.deepEqual(nonZeroRuns(Buffer.alloc(64 * KiB), 0), []);
  });

  it('SEEK_DATA and SEEK_HOLE find the extents (native), or all of the file is data (twin)', { skip: !sysIsNative() && 'the native addon is not built' }, () => {
    const fd = openSync(image, 'r');
    try {
      const first = seekData(fd, 0);
      assert.ok(first <= EXTENTS[0]!.at && first >= EXTENTS[0]!.at - 64 * KiB, `first data at ${first}`);
      assert.ok(seekHole(fd, first) >= EXTENTS[0]!.at + EXTENTS[0]!.bytes);
      assert.ok(seekHole(fd, first) < EXTENTS[1]!.at);
      assert.equal(seekData(fd, EXTENTS[1]!.at + EXTENTS[1]!.bytes), -1, 'no data after the last extent');
      assert.equal(seekHole(fd, IMAGE_BYTES), -1);
      // The twin knows no holes: all of the file is data (correct, only slower).
      process.env.XFER_NO_NATIVE = '1';
      assert.deepEqual([seekData(fd, 5), seekHole(fd, 5), seekData(fd, IMAGE_BYTES)], [5, IMAGE_BYTES, -1]);
    } finally {
      delete process.env.XFER_NO_NATIVE;
      closeSync(fd);
    }
  });

  it('a scan reads the data extents only, and its digest is that of the logical content', { skip: !sysIsNative() && 'the native addon is not built' }, async () => {
    const pool = new ScanPool();
    try {
      const before = processIo('rchar');
      const scan = await scanFile(image, pool, { chunker: DEFAULT_CHUNKER, digestAlgorithm: 'blake3' });
      let chunks = 0;
      for await (const b of scan.batches()) {
        chunks += b.count;
        b.release();
      }
      const read = processIo('rchar') - before;
      // Reading the holes would be IMAGE_BYTES; the extents (and the odd page around them) are 2 MiB.
      assert.ok(read < DATA_BYTES + 8 * MiB, `read ${read} bytes of a ${IMAGE_BYTES}-byte file holding ${DATA_BYTES}`);
      assert.equal(scan.result.dataBytes < DATA_BYTES + 2 * MiB, true, `dataBytes ${scan.result.dataBytes}`);
      assert.equal(Buffer.from(scan.result.digest).toString('hex'), imageDigest);
      assert.ok(chunks > IMAGE_BYTES / (256 * KiB));
    } finally {
      await pool.close();
    }
  });

  it('a local push stores no zero chunk and rebuilds a sparse target; a pull of it is sparse too', async () => {
    const dest = join(dir, 'local');
    const r = await runCli(['push', image, `${dest}/`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { bytesTotal: number; bytesSent: number; bytesZero: number; bytesAllocated: number };
    assert.equal(j.bytesTotal, IMAGE_BYTES);
    assert.ok(j.bytesSent < DATA_BYTES + MiB, `bytesSent ${j.bytesSent}`);
    assert.ok(j.bytesZero > IMAGE_BYTES - DATA_BYTES - MiB, `bytesZero ${j.bytesZero}`);
    assert.ok(j.bytesAllocated < DATA_BYTES + 2 * MiB, `bytesAllocated ${j.bytesAllocated}`);
    assert.ok((await filesBelow(join(dest, '.xfer'))) < DATA_BYTES + SPARSE_SLACK_BYTES, 'the store holds the data chunks only');
    assert.deepEqual((await storedChunks(join(dest, '.xfer'))).filter(isZeroChunkOfTheseTests), [], 'no zero chunk in the store');
    const target = join(dest, 'disk.img');
    assert.equal((await stat(target)).size, IMAGE_BYTES);
    assert.ok((await allocated(target)) < DATA_BYTES + SPARSE_SLACK_BYTES, `push target takes ${await allocated(target)} bytes`);
    assert.equal(await b3sum(target), imageDigest);

    const pulled = join(dir, 'pulled-local.img');
    const p = await runCli(['pull', target, pulled, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const pj = JSON.parse(p.stdout) as { bytesReceived: number; bytesZero: number; bytesAllocated: number };
    assert.ok(pj.bytesReceived < DATA_BYTES + MiB, `bytesReceived ${pj.bytesReceived}`);
    assert.ok(pj.bytesZero > IMAGE_BYTES - DATA_BYTES - MiB);
    assert.equal(pj.bytesAllocated, await allocated(pulled));
    assert.ok((await allocated(pulled)) < DATA_BYTES + SPARSE_SLACK_BYTES, `pulled copy takes ${await allocated(pulled)} bytes`);
    assert.equal(await b3sum(pulled), imageDigest);
  });

  it('a rebuild takes each run of zero chunks as one piece of work: a progress step per run, not per chunk', async () => {
    const dest = join(dir, 'runs');
    const r = await runCli(['push', image, `${dest}/`]);
    assert.equal(r.code, 0, r.stderr);
    const steps: PullProgress[] = [];
    const pulled = join(dir, 'pulled-runs.img');
    const result = await pull(join(dest, 'disk.img'), pulled, { onProgress: (p) => steps.push(p) });
    assert.equal(await b3sum(pulled), imageDigest);
    assert.ok(result.bytesZero > IMAGE_BYTES - DATA_BYTES - MiB);
    // The data chunks (about 32: 64 KiB on average) and a few zero runs (pieces of at most
    // MAX_ZERO_CHUNK_BYTES), against some 250 zero chunks of 256 KiB taken one by one.
    const runs = Math.ceil((IMAGE_BYTES - DATA_BYTES) / MAX_ZERO_CHUNK_BYTES) + EXTENTS.length + 1;
    assert.ok(steps.length <= 64 + runs, `${steps.length} progress steps`);
    assert.equal(steps.at(-1)!.bytesDone, IMAGE_BYTES);
  });

  describe('with a server', () => {
    let server: XferServer;
    let root: string;
    before(async () => {
      root = join(dir, 'root');
      server = await createServer({ root, port: 0 });
    });
    after(async () => {
      await server?.close();
    });

    for (const chunker of [[], ['--fixed', '64K']]) {
      const name = chunker.length ? 'fixed' : 'cdc';
      it(`zero chunks do not travel either way and the server's file and the pull are sparse (${name} chunks)`, async () => {
        const r = await runCli(['push', image, `${server.url}/${name}.img`, '--json', ...chunker]);
        assert.equal(r.code, 0, r.stderr);
        const j = JSON.parse(r.stdout) as { bytesSent: number; chunksTotal: number; chunksSent: number };
        assert.ok(j.bytesSent < DATA_BYTES + MiB, `bytesSent ${j.bytesSent}`);
        const stored = await storedChunks(join(root, 'store'));
        assert.deepEqual(stored.filter(isZeroChunkOfTheseTests), [], 'no zero chunk in the server store');
        const onServer = join(root, 'files', `${name}.img`);
        assert.ok((await allocated(onServer)) < DATA_BYTES + SPARSE_SLACK_BYTES, `the server's copy takes ${await allocated(onServer)} bytes`);
        assert.equal(await b3sum(onServer), imageDigest);

        const pulled = join(dir, `pulled-${name}.img`);
        const p = await runCli(['pull', `${server.url}/${name}.img`, pulled, '--json']);
        assert.equal(p.code, 0, p.stderr);
        const pj = JSON.parse(p.stdout) as { bytesReceived: number };
        assert.ok(pj.bytesReceived < DATA_BYTES + MiB, `bytesReceived ${pj.bytesReceived}`);
        assert.ok((await allocated(pulled)) < DATA_BYTES + SPARSE_SLACK_BYTES, `the pulled copy takes ${await allocated(pulled)} bytes`);
        assert.equal(await b3sum(pulled), imageDigest);
      });
    }
  });
});

describe('a block device is a source: read whole, recorded as a regular file of its size', () => {
  let dir: string;
  let loop: string | undefined;
  let skip: string | false = false;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-blockdev-'));
    const backing = join(dir, 'backing.img');
    await sparseFile(backing, 48 * MiB, [{ at: 5 * MiB + 7, bytes: 3 * MiB }, { at: 30 * MiB, bytes: MiB }]);
    try {
      loop = execFileSync('losetup', ['-f', '--show', backing], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
    } catch (err) {
      skip = `losetup failed (no loop devices or not root here): ${((err as { stderr?: Buffer }).stderr?.toString() ?? String(err)).trim()}`;
    }
  });
  after(async () => {
    try {
      if (loop) execFileSync('losetup', ['-d', loop]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('push /dev/loopN and pull it back: a regular file equal to the backing file; chunk reads the device too', async (t) => {
    if (skip || !loop) return t.skip(skip || 'no loop device');
    const backing = join(dir, 'backing.img');
    const digest = await b3sum(backing);
    // The device's size, not its st_size (0): the ioctl (native) and /sys/dev/block (twin) agree.
    const fd = openSync(loop, 'r');
    try {
      assert.equal(blockDeviceSize(fd), 48 * MiB);
      process.env.XFER_NO_NATIVE = '1';
      assert.equal(blockDeviceSize(fd), 48 * MiB, 'the twin');
    } finally {
      delete process.env.XFER_NO_NATIVE;
      closeSync(fd);
    }
    const chunked = JSON.parse((await runCli(['chunk', loop, '--json'])).stdout) as { size: number; digest: string };
    assert.deepEqual(chunked, { ...chunked, size: 48 * MiB, digest });

    const dest = join(dir, 'dest');
    const r = await runCli(['push', loop, join(dest, 'disk.img'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { bytesTotal: number; bytesSent: number };
    assert.equal(j.bytesTotal, 48 * MiB);
    assert.ok(j.bytesSent < 5 * MiB, `bytesSent ${j.bytesSent}`);
    const target = join(dest, 'disk.img');
    assert.ok((await stat(target)).isFile());
    assert.equal(await b3sum(target), digest);

    const pulled = join(dir, 'pulled.img');
    const p = await runCli(['pull', target, pulled]);
    assert.equal(p.code, 0, p.stderr);
    assert.ok((await stat(pulled)).isFile());
    assert.equal((await stat(pulled)).size, 48 * MiB);
    assert.equal(await b3sum(pulled), digest);
    assert.ok((await allocated(pulled)) < 8 * MiB, 'zeros of the device land as holes');
  });
});

