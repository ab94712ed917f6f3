/**
 * Bench (issue 16): what gc leaves of a store after many versions. Ten successive edited
 * versions of a disk image (random data, each version `--edits` scattered 4 KiB writes
 * after the previous one) are pushed to one local store; all but the last are removed;
 * `xfer gc --grace 0` runs; the store's pack bytes are then compared with those of a fresh
 * push of the last version alone (the bar: within 5%). The last version is pulled
 * back and compared, and `xfer verify` must be clean. Not part of `npm test`.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/gc.js [--size 1G] [--versions 10] [--edits 200] [--dir /var/tmp] [--forget]
 *
 * Until `xfer forget` exists the versions are pushed as targets img-1..img-N and the old
 * ones removed with deleteManifest (what forget does to a version's manifest); with
 * `--forget` they are pushed as one target `img` and `xfer forget --keep-last 1` removes them.
 */
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatBytes, MiB, parseSize } from '../src/core/sizes.js';
import { LocalStore } from '../src/store/local.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function xfer(args: string[]): string {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`xfer ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

async function packBytes(dest: string): Promise<number> {
  const dir = join(dest, '.xfer', 'packs');
  let n = 0;
  for (const f of await readdir(dir)) if (f.endsWith('.pack')) n += (await stat(join(dir, f))).size;
  return n;
}

function digestOfFile(path: string): string {
  const r = spawnSync('sha256sum', [path], { encoding: 'utf8' });
  return r.stdout.split(' ')[0]!;
}

async function main(): Promise<void> {
  const size = parseSize(arg('--size', '1G'), '--size');
  const versions = Number(arg('--versions', '10'));
  const edits = Number(arg('--edits', '200'));
  const useForget = process.argv.includes('--forget');
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-gc-bench-'));
  try {
    const image = join(dir, 'img');
    const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update('gc-bench').digest().subarray(0, 16), Buffer.alloc(16));
    const fh = await open(image, 'w');
    for (let o = 0; o < size; o += 16 * MiB) await fh.write(cipher.update(Buffer.alloc(Math.min(16 * MiB, size - o))));
    const dest = join(dir, 'store');
    const t0 = Date.now();
    for (let v = 1; v <= versions; v++) {
      if (v > 1) {
        for (let e = 0; e < edits; e++) {
          const at = Math.floor(Math.random() * (size / 4096)) * 4096;
          await fh.write(cipher.update(Buffer.alloc(4096)), 0, 4096, at);
        }
        await fh.sync();
      }
      xfer(['push', image, useForget ? join(dest, 'img') : join(dest, `img-${v}`)]);
    }
    await fh.close();
    const pushedMs = Date.now() - t0;
    const before = await packBytes(dest);
    if (useForget) xfer(['forget', join(dest, 'img'), '--keep-last', '1']);
    else {
      const store = await LocalStore.open(join(dest, '.xfer'), { create: false });
      for (let v = 1; v < versions; v++) await store.deleteManifest(`img-${v}`);
      await store.close();
    }
    const t1 = Date.now();
    const report = JSON.parse(xfer(['gc', dest, '--grace', '0', '--json'])) as Record<string, number>;
    const gcMs = Date.now() - t1;
    const after = await packBytes(dest);
    const verifyOut = xfer(['verify', dest, '--chunks-only']);
    const last = useForget ? join(dest, 'img') : join(dest, `img-${versions}`);
    const pulled = join(dir, 'pulled');
    xfer(['pull', last, pulled]);
    const identical = digestOfFile(pulled) === digestOfFile(image);
    await rm(pulled);
    const fresh = join(dir, 'fresh');
    xfer(['push', image, join(fresh, 'img')]);
    const freshBytes = await packBytes(fresh);
    const ratio = after / freshBytes;
    const result = {
      size, versions, editsPerVersion: edits, storeBytesBefore: before, storeBytesAfterGc: after, freshPushBytes: freshBytes,
      overFreshPercent: Number(((ratio - 1) * 100).toFixed(2)), withinFivePercent: ratio <= 1.05, lastVersionIdentical: identical,
      verify: verifyOut.trim(), pushSeconds: pushedMs / 1000, gcSeconds: gcMs / 1000, gc: report,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`store ${formatBytes(before)} -> ${formatBytes(after)} after gc; fresh push ${formatBytes(freshBytes)} (${result.overFreshPercent}% over); last version ${identical ? 'identical' : 'DIFFERS'}\n`);
    if (!result.withinFivePercent || !identical) process.exitCode = 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
