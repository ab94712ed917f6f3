/**
 * Verify's two bars (issue 16, "Measured"), on local stores built here, synthetically:
 *
 *   node dist/bench/verify.js [--dir DIR] [--gib 2] [--chunks 1000000] [--runs 3] [--only read-data|existence]
 *
 * - `verify --read-data` of a store of `--gib` GiB of distinct 64 KiB chunks (one file
 *   target), page cache warm (one unmeasured run first): bar 1 GB/s.
 * - `verify` (existence only, from the index) of a store of `--chunks` distinct small
 *   chunks referred to by one manifest: bar under 5 s.
 *
 * Each is the library's verify() of a local destination (what `xfer verify DIR` runs, less
 * the process start), rebuilt files left out (chunksOnly): the store is what is measured.
 * Each is measured `--runs` times after the warm-up; the report gives every run's seconds,
 * the best and the median. Prints one JSON object. The stores are removed at the end
 * unless --keep; a store kept in `--dir` is measured again as it is, not built anew.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { GiB, KiB } from '../src/core/sizes.js';
import { createHasher, digestOf } from '../src/hash/digest.js';
import { verify } from '../src/inspect.js';
import { ManifestWriter } from '../src/manifest/writer.js';
import { LocalStore } from '../src/store/local.js';

const DATA_CHUNK_BYTES = 64 * KiB;
/** Records handed to the manifest writer at once. */
const RECORD_BATCH = 4096;

async function buildStore(dest: string, name: string, chunks: number, chunkOf: (i: number) => Buffer): Promise<number> {
  const storeDir = join(dest, '.xfer');
  await mkdir(dest, { recursive: true });
  const store = await LocalStore.open(storeDir, { create: true });
  const manifestPath = join(dest, `${name}.manifest`);
  const w = await ManifestWriter.create(manifestPath, { kind: 'file', digestAlgorithm: 'blake3', chunker: DEFAULT_CHUNKER });
  let size = 0;
  const whole = createHasher('blake3');
  const records: { length: number; digest: Buffer }[] = [];
  const sizes: number[] = [];
  for (let i = 0; i < chunks; i++) sizes.push(chunkOf(i).length);
  const total = sizes.reduce((a, b) => a + b, 0);
  await w.beginEntry({ type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: total });
  for (let i = 0; i < chunks; i++) {
    const data = chunkOf(i);
    const digest = digestOf('blake3', data);
    await store.put({ algorithm: 'blake3', digest }, data, { trusted: true });
    whole.update(data);
    size += data.length;
    records.push({ length: data.length, digest });
    if (records.length >= RECORD_BATCH) await w.addChunks(records.splice(0));
  }
  await w.addChunks(records.splice(0));
  await w.endEntry(size, whole.digest());
  await w.finish();
  await store.flush();
  await store.putManifest(name, createReadStream(manifestPath));
  await store.close();
  await rm(manifestPath);
  return size;
}

/**
 * Wall time, and this process's CPU time (user + system): on a machine shared with other
 * work the wall time is pessimistic, and the CPU time tells what the run itself cost.
 */
async function timed<T>(f: () => Promise<T>): Promise<{ seconds: number; cpuSeconds: number; result: T }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const result = await f();
  const c = process.cpuUsage(c0);
  return { seconds: (performance.now() - t0) / 1000, cpuSeconds: (c.user + c.system) / 1e6, result };
}

/** Best and median of `runs` by wall time. */
function bestAndMedian<T>(runs: { seconds: number; cpuSeconds: number; result: T }[]): { best: (typeof runs)[number]; median: (typeof runs)[number] } {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds);
  return { best: sorted[0]!, median: sorted[(sorted.length - 1) >> 1]! };
}

/** 1. --read-data of a store of distinct 64 KiB chunks, page cache warm. */
async function readDataBench(dest: string, gib: number, runCount: number, reuse: boolean): Promise<Record<string, unknown>> {
  const chunks = Math.round((gib * GiB) / DATA_CHUNK_BYTES);
  const built = reuse && existsSync(join(dest, '.xfer')) ? undefined : await timed(() => buildStore(dest, 'big.bin', chunks, () => randomBytes(DATA_CHUNK_BYTES)));
  await verify(dest, { readData: true, chunksOnly: true }); // warms the page cache
  const runs = [];
  for (let i = 0; i < runCount; i++) runs.push(await timed(() => verify(dest, { readData: true, chunksOnly: true })));
  for (const r of runs) if (r.result.damaged.length !== 0 || r.result.chunksRead !== chunks) throw new Error('the data store did not verify clean');
  const { best, median } = bestAndMedian(runs);
  const bytes = best.result.bytesRead;
  return {
    bytes, chunks, buildSeconds: built ? +built.seconds.toFixed(1) : 'reused',
    seconds: runs.map((r) => +r.seconds.toFixed(3)), cpuSeconds: runs.map((r) => +r.cpuSeconds.toFixed(3)),
    bestGBps: +(bytes / best.seconds / 1e9).toFixed(2), medianGBps: +(bytes / median.seconds / 1e9).toFixed(2),
    GBpsPerCpuSecond: +(bytes / best.cpuSeconds / 1e9).toFixed(2), bar: '>= 1 GB/s',
  };
}

/** 2. Existence of `n` distinct small chunks, from the index. */
async function existenceBench(dest: string, n: number, runCount: number, reuse: boolean): Promise<Record<string, unknown>> {
  const chunk = Buffer.alloc(32);
  const built = reuse && existsSync(join(dest, '.xfer')) ? undefined : await timed(() => buildStore(dest, 'many.bin', n, (i) => {
    chunk.writeUInt32LE(i, 0);
    return chunk;
  }));
  const runs = [];
  for (let i = 0; i < runCount; i++) runs.push(await timed(() => verify(dest, { chunksOnly: true })));
  for (const e of runs) if (e.result.damaged.length !== 0 || e.result.chunks !== n) throw new Error('the store of many chunks did not verify clean');
  const { best, median } = bestAndMedian(runs);
  return {
    chunks: n, buildSeconds: built ? +built.seconds.toFixed(1) : 'reused',
    seconds: runs.map((e) => +e.seconds.toFixed(3)), cpuSeconds: runs.map((e) => +e.cpuSeconds.toFixed(3)),
    bestSeconds: +best.seconds.toFixed(3), medianSeconds: +median.seconds.toFixed(3), bar: '< 5 s',
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' }, gib: { type: 'string', default: '2' }, chunks: { type: 'string', default: '1000000' },
      runs: { type: 'string', default: '3' }, only: { type: 'string' }, keep: { type: 'boolean' },
    },
  });
  const runCount = Number(values.runs);
  if (!Number.isInteger(runCount) || runCount < 1) throw new Error('--runs must be a positive integer');
  if (values.only !== undefined && values.only !== 'read-data' && values.only !== 'existence') throw new Error('--only must be read-data or existence');
  // A store kept (--keep) in a --dir is measured again as it is, not built anew.
  const reuse = values.dir !== undefined;
  const dir = values.dir ?? (await mkdtemp(join(tmpdir(), 'xfer-bench-verify-')));
  const out: Record<string, unknown> = { dir };
  try {
    if (values.only !== 'existence') out.readData = await readDataBench(join(dir, 'data'), Number(values.gib), runCount, reuse);
    if (values.only !== 'read-data') out.existence = await existenceBench(join(dir, 'many'), Number(values.chunks), runCount, reuse);
  } finally {
    if (!values.keep) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

await main();
