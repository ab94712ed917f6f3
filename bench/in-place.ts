/**
 * Bench (issue 14): a 4 KiB edit in a disk image on a loop device, brought up to date in
 * place by `xfer pull` and by `rsync --inplace --no-whole-file`. Reports, for each, the
 * bytes the kernel wrote to the device (/sys/block/loopN/stat field 7, sectors x 512) and
 * the wall time. Needs root, losetup and rsync; not part of `npm test`.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/in-place.js [--size 4G] [--rounds N] [--dir /var/tmp] [--drop-caches]
 *
 * The image is random data (so nothing deduplicates by accident); the device and the
 * backing file are removed afterwards. Both tools start from the same old content on the
 * device (fsynced), and write the same new version.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createCipheriv } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSize, formatBytes, KiB, MiB } from '../src/core/sizes.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
}

async function sectorsWritten(device: string): Promise<number> {
  return Number((await readFile(`/sys/block/${basename(device)}/stat`, 'utf8')).trim().split(/\s+/)[6]);
}

/** Random bytes (AES-CTR keystream) into `path`, `size` bytes. */
async function randomFile(path: string, size: number): Promise<void> {
  const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update('in-place-bench').digest().subarray(0, 16), Buffer.alloc(16));
  const fh = await open(path, 'w');
  const piece = Buffer.alloc(16 * MiB);
  try {
    for (let o = 0; o < size; o += piece.length) await fh.write(cipher.update(piece.subarray(0, Math.min(piece.length, size - o))));
  } finally {
    await fh.close();
  }
}

async function copyInto(from: string, to: string, size: number): Promise<void> {
  run('dd', [`if=${from}`, `of=${to}`, 'bs=16M', `count=${Math.ceil(size / (16 * MiB))}`, 'conv=fsync', 'status=none']);
}

async function main(): Promise<void> {
  const size = parseSize(arg('--size', '4G'), '--size');
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-in-place-bench-'));
  let device: string | undefined;
  try {
    const old = join(dir, 'old.img');
    const img = join(dir, 'img');
    await randomFile(old, size);
    run('cp', ['--reflink=auto', old, img]);
    // The edit: 4 KiB in the middle, not aligned to a page.
    const fh = await open(img, 'r+');
    await fh.write(Buffer.alloc(4 * KiB, 0x5a), 0, 4 * KiB, Math.floor(size / 2) + 123);
    await fh.close();
    await mkdir(join(dir, 'store'));
    run(process.execPath, [BIN, 'push', old, join(dir, 'store', 'img'), '-q']);
    run(process.execPath, [BIN, 'push', img, join(dir, 'store', 'img'), '-q']);
    const backing = join(dir, 'backing');
    await writeFile(backing, '');
    run('truncate', ['-s', String(size), backing]);
    const r = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`losetup: ${r.stderr}`);
    device = r.stdout.trim();
    const rows: string[] = [];
    const measure = async (label: string, cmd: string, args: string[]) => {
      await copyInto(old, device!, size);
      // --drop-caches: start both cold (system-wide: it slows everything else on the machine).
      if (process.argv.includes('--drop-caches')) run('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
      const before = await sectorsWritten(device!);
      const t0 = performance.now();
      run(cmd, args);
      const seconds = (performance.now() - t0) / 1000;
      const bytes = ((await sectorsWritten(device!)) - before) * 512;
      run('cmp', ['-n', String(size), img, device!]);
      rows.push(`${label.padEnd(44)} ${String(bytes).padStart(12)} B (${formatBytes(bytes)})  ${seconds.toFixed(2)} s`);
    };
    const xfer = () => measure('xfer pull (device: in place)', process.execPath, [BIN, 'pull', join(dir, 'store', 'img'), device!, '-q']);
    const rsync = () => measure('rsync --inplace --no-whole-file', 'rsync', ['--inplace', '--no-whole-file', '--copy-devices', '--write-devices', img, device!]);
    // --rounds N: N of each, alternating which goes first (the first after the setup meets
    // a page cache full of the setup's files).
    const rounds = Number(arg('--rounds', '1'));
    for (let round = 0; round < rounds; round++) {
      if (round % 2 === 0) {
        await xfer();
        await rsync();
      } else {
        await rsync();
        await xfer();
      }
    }
    process.stdout.write(`4 KiB edit in a ${formatBytes(size)} image on ${device}: bytes written to the device, wall time\n${rows.join('\n')}\n`);
  } finally {
    if (device) spawnSync('losetup', ['-d', device]);
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
