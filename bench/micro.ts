import { createHash } from 'node:crypto';
import b from 'benny';
import { blake3 } from '@napi-rs/blake-hash';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { loadNativeBinding } from '../src/chunker/native.js';
import { pseudoRandom } from '../test/helpers/gen.js';

export interface MicroResult {
  readonly suite: string;
  readonly name: string;
  readonly value: number;
  readonly unit: 'MB/s' | 'records/s' | 'ids/s';
}

const CHUNKER_INPUT_BYTES = 64 * 1024 * 1024;

/** benny suites: chunker (native, TypeScript) and hashers by chunk size; results in MB/s (10^6). */
export async function runMicro(log: (s: string) => void): Promise<MicroResult[]> {
  const results: MicroResult[] = [];
  const data = pseudoRandom(CHUNKER_INPUT_BYTES, 11);
  const out = new Uint32Array(4096);
  const cutAll = (impl: 'native' | 'typescript') => {
    const c = createChunker(DEFAULT_CHUNKER, { implementation: impl });
    return () => {
      let pos = 0;
      while (pos < data.length) {
        const n = c.cut(data, pos, data.length, true, Infinity, out);
        for (let i = 0; i < n; i++) pos += out[i]!;
      }
    };
  };
  const collect = (suite: string, bytesPerOp: (name: string) => number) =>
    b.complete((summary) => {
      for (const r of summary.results) {
        const mbs = (r.ops * bytesPerOp(r.name)) / 1e6;
        results.push({ suite, name: r.name, value: mbs, unit: 'MB/s' });
        log(`  ${suite.padEnd(24)} ${r.name.padEnd(24)} ${mbs.toFixed(0).padStart(7)} MB/s`);
      }
    });

  const chunkerCases = [b.add('typescript', cutAll('typescript'))];
  if (loadNativeBinding()) chunkerCases.unshift(b.add('native', cutAll('native')));
  await b.suite('chunker (FastCDC 16/64/256K, one core)', ...chunkerCases, collect('chunker', () => CHUNKER_INPUT_BYTES));

  const sizes = [4096, 16384, 65536, 262144, 1048576];
  const hashCases = sizes.flatMap((size) => {
    const buf = data.subarray(0, size);
    return [
      b.add(`blake3 ${size / 1024}K`, () => blake3(buf)),
      b.add(`sha256 ${size / 1024}K`, () => createHash('sha256').update(buf).digest()),
    ];
  });
  await b.suite('hashers by chunk size (one core)', ...hashCases, collect('hash', (name) => Number(name.split(' ')[1]!.replace('K', '')) * 1024));
  return results;
}

const RECORDS = 100_000;

/** Manifest encode/decode (chunk records per second) and local store put/has, in a temp directory. */
export async function runMicroStorage(log: (s: string) => void): Promise<MicroResult[]> {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { ManifestWriter } = await import('../src/manifest/writer.js');
  const { openManifestFile } = await import('../src/manifest/reader.js');
  const { LocalStore } = await import('../src/store/local.js');
  const { digestOf } = await import('../src/hash/digest.js');
  const results: MicroResult[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'xfer-micro-'));
  try {
    const digest = Buffer.alloc(32, 7);
    const batch = Array.from({ length: 4096 }, (_, i) => ({ length: 65536, digest: digestOf('blake3', Buffer.from([i & 255, i >> 8])) }));
    const manifest = join(dir, 'm');
    let t = performance.now();
    const w = await ManifestWriter.create(manifest, { kind: 'file', digestAlgorithm: 'blake3', chunker: DEFAULT_CHUNKER });
    await w.beginEntry({ type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: -1 });
    let written = 0;
    while (written < RECORDS) {
      const n = Math.min(batch.length, RECORDS - written);
      await w.addChunks(n === batch.length ? batch : batch.slice(0, n));
      written += n;
    }
    await w.endEntry(RECORDS * 65536, digest);
    await w.finish();
    const enc = RECORDS / ((performance.now() - t) / 1000);
    t = performance.now();
    let read = 0;
    for await (const ev of (await openManifestFile(manifest)).events()) if (ev.kind === 'chunks') read += ev.records.length;
    const dec = read / ((performance.now() - t) / 1000);
    results.push({ suite: 'manifest', name: 'encode', value: enc, unit: 'records/s' }, { suite: 'manifest', name: 'decode', value: dec, unit: 'records/s' });
    log(`  ${'manifest'.padEnd(24)} ${'encode'.padEnd(24)} ${enc.toFixed(0).padStart(9)} records/s`);
    log(`  ${'manifest'.padEnd(24)} ${'decode'.padEnd(24)} ${dec.toFixed(0).padStart(9)} records/s`);

    const store = await LocalStore.open(join(dir, 'store'), { create: true });
    const chunks = Array.from({ length: 4096 }, (_, i) => {
      const data = pseudoRandom(65536, i + 1);
      return { id: { algorithm: 'blake3' as const, digest: digestOf('blake3', data) }, data };
    });
    t = performance.now();
    await Promise.all(chunks.map((c) => store.put(c.id, c.data, { trusted: true })));
    await store.flush();
    const put = (chunks.length * 65536) / ((performance.now() - t) / 1000) / 1e6;
    t = performance.now();
    await store.has(chunks.map((c) => c.id));
    const has = chunks.length / ((performance.now() - t) / 1000);
    await store.close();
    results.push({ suite: 'local store', name: 'put 64K + flush', value: put, unit: 'MB/s' }, { suite: 'local store', name: 'has (present)', value: has, unit: 'ids/s' });
    log(`  ${'local store'.padEnd(24)} ${'put 64K + flush'.padEnd(24)} ${put.toFixed(0).padStart(9)} MB/s`);
    log(`  ${'local store'.padEnd(24)} ${'has (present)'.padEnd(24)} ${has.toFixed(0).padStart(9)} ids/s`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}
