import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { Worker } from 'node:worker_threads';
import type { ChunkerSpec } from '../src/core/ids.js';
import { INLINE_SCAN_BYTES, ScanPool } from '../src/scan/pool.js';
import { scanFile } from '../src/scan/scanner.js';
import { pseudoRandom } from './helpers/gen.js';

const SMALL: ChunkerSpec = { algorithm: 'fastcdc2020', minBytes: 1024, avgBytes: 4096, maxBytes: 16384 };

/** The id the process's next thread gets: ids count every thread started so far. */
async function nextThreadId(): Promise<number> {
  const w = new Worker('', { eval: true });
  const id = w.threadId;
  await w.terminate();
  return id;
}

it('a scan pool made to start on its first task (a pull\'s, which often scans nothing) starts no thread before it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xfer-pool-start-'));
  const pool = new ScanPool({ threads: 2, startOnFirstTask: true, inlineBytes: 0 });
  try {
    const first = await nextThreadId();
    assert.equal(await nextThreadId(), first + 1, 'no thread started while the pool had no task');
    const path = join(dir, 'f.bin');
    const data = pseudoRandom(100_000, 7);
    await writeFile(path, data);
    const scan = await scanFile(path, pool, { chunker: SMALL, digestAlgorithm: 'blake3' });
    let bytes = 0;
    for await (const b of scan.batches()) bytes += b.lengths.slice(0, b.count).reduce((a, n) => a + n, 0);
    assert.equal(bytes, data.length, 'the file was scanned');
    assert.ok((await nextThreadId()) >= first + 2 + 2, 'the first task started the pool\'s two threads');
  } finally {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  }
});

it('a scan pool that scans nothing inline starts its threads when made, to boot while its caller walks the source', async () => {
  const first = await nextThreadId();
  const pool = new ScanPool({ threads: 2, inlineBytes: 0 });
  try {
    assert.ok((await nextThreadId()) >= first + 1 + 2, 'the two threads started with the pool');
  } finally {
    await pool.close();
  }
});

it('a scan pool scans its first INLINE_SCAN_BYTES on the caller\'s thread, starting no thread, with the results the threads give; the first task beyond starts them', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'xfer-pool-inline-'));
  const pool = new ScanPool({ threads: 2 });
  const threaded = new ScanPool({ threads: 2, inlineBytes: 0 });
  const scanAll = async (path: string, p: ScanPool) => {
    const scan = await scanFile(path, p, { chunker: SMALL, digestAlgorithm: 'blake3' });
    const lengths: number[] = [];
    const digests: string[] = [];
    for await (const b of scan.batches()) {
      for (let i = 0; i < b.count; i++) {
        lengths.push(b.lengths[i]!);
        digests.push(Buffer.from(b.digests.subarray(i * 32, i * 32 + 32)).toString('hex'));
      }
      b.release();
    }
    return { lengths, digests, fileDigest: Buffer.from(scan.result.digest).toString('hex') };
  };
  try {
    // Files that together stay within the budget: a small one and one of several segments.
    const small = join(dir, 'small.bin');
    const medium = join(dir, 'medium.bin');
    await writeFile(small, pseudoRandom(100_000, 7));
    await writeFile(medium, pseudoRandom(INLINE_SCAN_BYTES / 2, 8));
    const first = await nextThreadId();
    for (const path of [small, medium]) assert.deepEqual(await scanAll(path, pool), await scanAll(path, threaded), `${path}: the same chunks and digests inline`);
    const after = await nextThreadId();
    assert.ok(!pool.started, 'the pool started no thread');
    // The threaded pool's two threads started before `first`; only the probes' threads since.
    assert.ok(after <= first + 2, `threads started while scanning within the budget: ${after - first - 1}`);
    // Beyond the budget: the threads start, and the results are still the same.
    const large = join(dir, 'large.bin');
    await writeFile(large, pseudoRandom(INLINE_SCAN_BYTES, 9));
    assert.deepEqual(await scanAll(large, pool), await scanAll(large, threaded));
    assert.ok(pool.started, 'a task beyond the budget started the threads');
  } finally {
    await Promise.all([pool.close(), threaded.close()]);
    await rm(dir, { recursive: true, force: true });
  }
});

it('a scan pool told to expect more than it scans inline (a push of a large file) starts its threads at once', async () => {
  const pool = new ScanPool({ threads: 2 });
  try {
    pool.expect(INLINE_SCAN_BYTES);
    assert.ok(!pool.started, 'what fits in the budget starts nothing');
    const first = await nextThreadId();
    pool.expect(INLINE_SCAN_BYTES + 1);
    assert.ok(pool.started);
    assert.ok((await nextThreadId()) >= first + 1 + 2, 'the two threads started');
  } finally {
    await pool.close();
  }
});

it('a scan thread does not load node:child_process (with net and dgram) or node:util\'s module facade: only io/sys.ts\'s twin and its errors need them', async () => {
  // A thread of its own, as the pool's: the modules a worker imports, and what Node loads for them.
  const worker = new URL('../src/scan/worker.js', import.meta.url).href;
  const w = new Worker(
    `import(${JSON.stringify(worker)}).then(() => require('node:worker_threads').parentPort.postMessage(process.moduleLoadList));`,
    { eval: true },
  );
  try {
    const loaded = await new Promise<string[]>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    for (const m of ['NativeModule child_process', 'NativeModule net', 'NativeModule dgram', 'NativeModule internal/util/parse_args/parse_args']) {
      assert.ok(!loaded.includes(m), `${m} loaded by a scan thread`);
    }
    assert.ok(loaded.some((m) => m.includes('worker_threads')), 'the list is the thread\'s modules');
  } finally {
    await w.terminate();
  }
});
