/**
 * Bench (issue 17 item 5): the server's disk use, `du -sb <root>`, against the bars. Not
 * part of `npm test`.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/bench/server-disk.js [--size 2G] [--versions-size 256M] [--versions 10] [--dir /var/tmp] [--no-files]
 *
 * first: a --size file of random bytes pushed once to a fresh `xfer serve`: the root's
 * bytes over the file's (bar: at most 1.05x). versions: a --versions-size file pushed, then
 * edited (three 4 KiB writes at seeded places) and pushed again, --versions pushes in all:
 * the root's bytes over the current file plus the old versions' unique chunk bytes (as
 * push cuts them; bar: within 5%). --no-files serves store-only, for comparison.
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { formatBytes, KiB, MiB, parseSize } from '../src/core/sizes.js';
import { digestOf } from '../src/hash/digest.js';
import { duBytes, startServe, stop, XFER } from './harness.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

/** Random bytes (AES-CTR keystream, seeded): nothing deduplicates by accident. */
function keystream(seed: string): (n: number) => Buffer {
  const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update(seed).digest().subarray(0, 16), Buffer.alloc(16));
  return (n) => cipher.update(Buffer.alloc(n));
}

async function randomFile(path: string, size: number, seed: string): Promise<void> {
  const bytes = keystream(seed);
  const fh = await open(path, 'w');
  try {
    for (let o = 0; o < size; o += 16 * MiB) await fh.write(bytes(Math.min(16 * MiB, size - o)));
  } finally {
    await fh.close();
  }
}

function push(file: string, url: string): void {
  const r = spawnSync(process.execPath, [XFER, 'push', file, url, '--quiet'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`push ${file}: exit ${r.status}: ${r.stderr}`);
}

/** Chunk digests (hex) and lengths of `data`, as push cuts it. */
function chunksOf(data: Buffer): Map<string, number> {
  const chunker = createChunker(DEFAULT_CHUNKER);
  const out = new Uint32Array(1024);
  const m = new Map<string, number>();
  let pos = 0;
  while (pos < data.length) {
    const n = chunker.cut(data, pos, data.length, true, Infinity, out);
    for (let i = 0; i < n; i++) {
      m.set(digestOf('blake3', data.subarray(pos, pos + out[i]!)).toString('hex'), out[i]!);
      pos += out[i]!;
    }
  }
  return m;
}

const ratio = (a: number, b: number) => `${(a / b).toFixed(4)}x`;

async function main(): Promise<void> {
  const size = parseSize(arg('--size', '2G'), '--size');
  const versionsSize = parseSize(arg('--versions-size', '256M'), '--versions-size');
  const versions = Number(arg('--versions', '10'));
  const serveArgs = process.argv.includes('--no-files') ? ['--quiet', '--no-files'] : ['--quiet'];
  // mkdtemp's own directory, never a bare or empty path: the only thing removed at the end.
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-server-disk-'));
  try {
    {
      const root = join(dir, 'root-first');
      const file = join(dir, 'first.bin');
      await randomFile(file, size, 'first');
      const s = await startServe(root, serveArgs);
      try {
        push(file, `${s.url}/first.bin`);
      } finally {
        await stop(s.child);
      }
      const used = duBytes(root);
      console.log(`first push of ${formatBytes(size)}: du -sb root ${used} bytes = ${ratio(used, size)} the file (bar: at most 1.05x)`);
      await rm(file);
      await rm(root, { recursive: true, force: true });
    }
    {
      const root = join(dir, 'root-versions');
      const file = join(dir, 'versions.bin');
      await randomFile(file, versionsSize, 'versions');
      const s = await startServe(root, serveArgs);
      const old = new Map<string, number>();
      let data = await readFile(file);
      try {
        push(file, `${s.url}/v.bin`);
        const edits = keystream('edits');
        for (let v = 1; v < versions; v++) {
          for (const [d, n] of chunksOf(data)) old.set(d, n);
          data = Buffer.from(data);
          for (let k = 0; k < 3; k++) {
            const at = edits(4).readUInt32LE(0) % (data.length - 4 * KiB);
            edits(4 * KiB).copy(data, at);
          }
          await writeFile(file, data);
          push(file, `${s.url}/v.bin`);
        }
      } finally {
        await stop(s.child);
      }
      for (const d of chunksOf(data).keys()) old.delete(d);
      const unique = [...old.values()].reduce((a, b) => a + b, 0);
      const expected = data.length + unique;
      const used = duBytes(root);
      console.log(`${versions} versions of ${formatBytes(versionsSize)}: du -sb root ${used} bytes; file + old versions' unique chunks ${expected} bytes (${unique} unique): ${ratio(used, expected)} (bar: within 5%)`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
