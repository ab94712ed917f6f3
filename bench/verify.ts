/**
 * Verify's two bars (issue 16, "Measured"), on local stores built here, synthetically:
 *
 *   node dist/bench/verify.js [--dir DIR] [--gib 2] [--chunks 1000000]
 *
 * - `verify --read-data` of a store of `--gib` GiB of distinct 64 KiB chunks (one file
 *   target), page cache warm (one unmeasured run first): bar 1 GB/s.
 * - `verify` (existence only, from the index) of a store of `--chunks` distinct small
 *   chunks referred to by one manifest: bar under 5 s.
 *
 * Each is the library's verify() of a local destination (what `xfer verify DIR` runs, less
 * the process start), rebuilt files left out (chunksOnly): the store is what is measured.
 * Prints one JSON object. The stores are removed at the end unless --keep.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
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

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { dir: { type: 'string' }, gib: { type: 'string', default: '2' }, chunks: { type: 'string', default: '1000000' }, keep: { type: 'boolean' } } });
  const dir = values.dir ?? (await mkdtemp(join(tmpdir(), 'xfer-bench-verify-')));
  const out: Record<string, unknown> = { dir };
  try {
    // 1. --read-data of a store of distinct 64 KiB chunks, page cache warm.
    const dataDest = join(dir, 'data');
    const chunks = Math.round((Number(values.gib) * GiB) / DATA_CHUNK_BYTES);
    const built = await timed(() => buildStore(dataDest, 'big.bin', chunks, () => randomBytes(DATA_CHUNK_BYTES)));
    await verify(dataDest, { readData: true, chunksOnly: true }); // warms the page cache
    const runs = [];
    for (let i = 0; i < 2; i++) runs.push(await timed(() => verify(dataDest, { readData: true, chunksOnly: true })));
    const best = runs.reduce((a, b) => (a.seconds <= b.seconds ? a : b));
    if (best.result.damaged.length !== 0 || best.result.chunksRead !== chunks) throw new Error('the data store did not verify clean');
    out.readData = { bytes: best.result.bytesRead, chunks, buildSeconds: +built.seconds.toFixed(1), seconds: runs.map((r) => +r.seconds.toFixed(3)), cpuSeconds: runs.map((r) => +r.cpuSeconds.toFixed(3)), bestGBps: +(best.result.bytesRead / best.seconds / 1e9).toFixed(2), GBpsPerCpuSecond: +(best.result.bytesRead / best.cpuSeconds / 1e9).toFixed(2), bar: '>= 1 GB/s' };
    await rm(dataDest, { recursive: true, force: true });

    // 2. Existence of a million distinct small chunks, from the index.
    const manyDest = join(dir, 'many');
    const n = Number(values.chunks);
    const chunk = Buffer.alloc(32);
    const builtMany = await timed(() => buildStore(manyDest, 'many.bin', n, (i) => {
      chunk.writeUInt32LE(i, 0);
      return chunk;
    }));
    const exist = [];
    for (let i = 0; i < 2; i++) exist.push(await timed(() => verify(manyDest, { chunksOnly: true })));
    for (const e of exist) if (e.result.damaged.length !== 0 || e.result.chunks !== n) throw new Error('the store of many chunks did not verify clean');
    out.existence = { chunks: n, buildSeconds: +builtMany.seconds.toFixed(1), seconds: exist.map((e) => +e.seconds.toFixed(3)), cpuSeconds: exist.map((e) => +e.cpuSeconds.toFixed(3)), bar: '< 5 s' };
  } finally {
    if (!values.keep) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

await main();
