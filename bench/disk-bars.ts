/**
 * Bench (issue 14): the measured bars of disk images, each beside the command it is held
 * against. Needs root for `reflink` (loop mounts); rsync, e2fsprogs; not part of `npm test`.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/bench/disk-bars.js sparse  [--size 64G] [--data 512M] [--extents 64] [--rounds 2] [--dir /var/tmp]
 *   node dist/bench/disk-bars.js ext4    [--size 1G] [--files 100] [--file-size 64K] [--chunkings default,fixed:4K,cdc:4K/16K/64K] [--dir /var/tmp]
 *   node dist/bench/disk-bars.js reflink [--fs xfs|btrfs] [--size 1G] [--bin dist/src/cli/bin.js] [--dir /var/tmp]
 *   node dist/bench/disk-bars.js zeros   [--size 4G]
 *
 * sparse: a file of --size holding --data of random bytes in --extents extents (the rest
 * holes), and a dense file of --data bytes. Every xfer it runs shares a fresh user cache
 * (XDG_CACHE_HOME): round 1 hashes the holes' zeros (the first sparse push computes the
 * zero spans' CVs, and its server and pull find them kept), later rounds find them. Each of: push to a local directory, push to a
 * server (`xfer serve`, started once), pull from the server, is run on both files and
 * `rsync -S` makes the same copy locally (rsync has no server here: the local copy is its
 * best case), alternating, --rounds times. Reports wall time, the allocated size of every
 * result (st_blocks x 512) and peak RSS: the xfer client's from /usr/bin/time, the server's
 * during each command to it (its VmHWM from /proc, reset before the command through
 * /proc/PID/clear_refs), and the server's highest over the sparse file's commands and over all.
 *
 * ext4: `mke2fs -t ext4 -d <tree> image.img --size` (a tree of small random files), pushed
 * to a server and copied with rsync; then `debugfs -w` writes --files new files of
 * --file-size into the image, and the image is pushed again and rsynced again
 * (`rsync --no-whole-file --inplace --ignore-times --stats`: rsync skips a file of the
 * same size and mtime second otherwise): xfer's bytes sent against rsync's "Literal data", for
 * each of --chunkings (a fresh image and edit each); also the manifest's size (it goes up
 * whole with every push) and rsync's total bytes sent and received (its checksums too);
 * `e2fsck -fn` on the server's copy, a pull of it and rsync's copy.
 *
 * reflink: a --size file of random bytes on a loop-mounted XFS or btrfs image is pulled
 * from a local store onto its old version after a 4 KiB edit (an atomic rebuild): bytes the
 * kernel wrote to the loop device (/sys/block/loopN/stat field 7) and disk blocks used
 * (`df`) by the rebuild while the old version is still held (a hard link). --bin runs
 * another build (a checkout before this change) for the before/after comparison.
 *
 * zeros: the native BLAKE3 hasher's rate over zeros in buffers of several sizes, and with
 * the buffers hashed in worker threads in parallel: the floor of a sparse file's
 * whole-file digest, which must hash its holes as zeros.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { link, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createHasher } from '../src/hash/digest.js';
import { startServe } from './harness.js';
import { formatBytes, GiB, KiB, MiB, parseSize } from '../src/core/sizes.js';

const DEFAULT_BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 * MiB });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

interface Timed {
  readonly seconds: number;
  readonly rssBytes: number;
  readonly stdout: string;
}

/** Runs a command under /usr/bin/time: wall time and peak RSS (kB -> bytes). */
function timed(cmd: string, args: string[]): Timed {
  const started = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', 'xfer-bench-rss %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 64 * MiB });
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  const m = /xfer-bench-rss (\d+)/.exec(r.stderr);
  return { seconds, rssBytes: m ? Number(m[1]) * 1024 : NaN, stdout: r.stdout };
}

async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

/** Random bytes (AES-CTR keystream, seeded): nothing deduplicates by accident. */
function keystream(seed: string): (n: number) => Buffer {
  const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update(seed).digest().subarray(0, 16), Buffer.alloc(16));
  return (n) => cipher.update(Buffer.alloc(n));
}

/** `size` bytes with `data` random bytes in `extents` equal extents spread evenly; the rest holes. */
async function sparseFile(path: string, size: number, data: number, extents: number, seed: string): Promise<void> {
  const bytes = keystream(seed);
  const fh = await open(path, 'w');
  try {
    const each = Math.floor(data / extents / (64 * KiB)) * 64 * KiB;
    const stride = Math.floor(size / extents / (64 * KiB)) * 64 * KiB;
    for (let e = 0; e < extents; e++) {
      for (let o = 0; o < each; o += 16 * MiB) {
        const n = Math.min(16 * MiB, each - o);
        await fh.write(bytes(n), 0, n, e * stride + o);
      }
    }
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/**
 * Starts `xfer serve <root>` (harness.startServe) with its log discarded: a log piped and
 * never read fills the pipe, and the server then blocks on a write and never exits at SIGTERM.
 */
async function serve(bin: string, root: string): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const { url, child } = await startServe(root, ['--quiet'], { bin, stderr: 'ignore' });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return { url, pid: child.pid!, stop: async () => { child.kill('SIGTERM'); await exited; } };
}

async function peakRss(pid: number): Promise<number> {
  const m = /VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * Resets `pid`'s peak RSS (VmHWM) to its current RSS (proc(5), clear_refs "5"), so that
 * the next peakRss is the peak of what runs in between. Needs root or the same user.
 */
async function resetPeakRss(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5').catch(() => {});
}

const fmt = (n: number) => (Number.isFinite(n) ? formatBytes(n) : '?');

async function sparseBars(): Promise<void> {
  const size = parseSize(arg('--size', '64G'), '--size');
  const data = parseSize(arg('--data', '512M'), '--data');
  const extents = Number(arg('--extents', '64'));
  const rounds = Number(arg('--rounds', '2'));
  const bin = arg('--bin', DEFAULT_BIN);
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-disk-bars-'));
  // A cache of its own for every xfer this runs (the server too): round 1 finds no zero
  // span's CV kept (hash/zero-cvs.ts) and computes them, later rounds find them.
  process.env.XDG_CACHE_HOME = join(dir, 'cache');
  const server = await serve(bin, join(dir, 'root'));
  try {
    const sparse = join(dir, 'sparse.img');
    const dense = join(dir, 'dense.img');
    await sparseFile(sparse, size, data, extents, 'sparse');
    await sparseFile(dense, data, data, 1, 'dense');
    console.log(`sparse: ${fmt(size)} with ${fmt(await allocated(sparse))} allocated in ${extents} extents; dense: ${fmt(data)}`);
    const rows: string[] = [];
    const row = (round: number, what: string, file: string, t: Timed, result: number, serverPeak?: number) =>
      rows.push(`${round}\t${what}\t${basename(file)}\t${t.seconds.toFixed(2)} s\t${fmt(result)} allocated\t${fmt(t.rssBytes)} RSS${serverPeak === undefined ? '' : `\t${fmt(serverPeak)} RSS`}`);
    /** The server's peak during `run`, and the highest so far per file. */
    const serverPeaks = new Map<string, number>();
    const atServer = async (file: string, run: () => Timed): Promise<{ t: Timed; peak: number }> => {
      await resetPeakRss(server.pid);
      const t = run();
      const peak = await peakRss(server.pid);
      serverPeaks.set(file, Math.max(serverPeaks.get(file) ?? 0, peak));
      return { t, peak };
    };
    for (let round = 1; round <= rounds; round++) {
      for (const file of [sparse, dense]) {
        const name = basename(file);
        const local = join(dir, `local-${round}`);
        await mkdir(local, { recursive: true });
        let t = timed(process.execPath, [bin, 'push', '-q', file, `${local}/`]);
        row(round, 'xfer push local', file, t, await allocated(join(local, name)));
        const rs = join(dir, `rsync-${round}`);
        await mkdir(rs, { recursive: true });
        t = timed('rsync', ['-S', file, `${rs}/`]);
        row(round, 'rsync -S local', file, t, await allocated(join(rs, name)));
        const remoteName = `${round}-${name}`;
        const pushed = await atServer(file, () => timed(process.execPath, [bin, 'push', '-q', file, `${server.url}/${remoteName}`]));
        row(round, 'xfer push server', file, pushed.t, await allocated(join(dir, 'root', 'files', remoteName)), pushed.peak);
        const pulled = join(dir, `pulled-${round}-${name}`);
        const fetched = await atServer(file, () => timed(process.execPath, [bin, 'pull', '-q', `${server.url}/${remoteName}`, pulled]));
        row(round, 'xfer pull server', file, fetched.t, await allocated(pulled), fetched.peak);
        for (const p of [local, rs, pulled]) await rm(p, { recursive: true, force: true });
      }
    }
    console.log(['round\tcommand\tfile\twall\tresult\tpeak RSS (client)\tpeak RSS (server, during the command)', ...rows].join('\n'));
    for (const [file, peak] of serverPeaks) console.log(`server peak RSS over the commands on ${basename(file)}: ${fmt(peak)}`);
    console.log(`server peak RSS over all: ${fmt(Math.max(...serverPeaks.values()))}`);
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A tree of `count` random files for mke2fs -d. */
async function makeTree(dir: string, count: number, bytes: number): Promise<void> {
  const random = keystream('ext4-tree');
  for (let i = 0; i < count; i++) {
    const sub = join(dir, `d${i % 10}`);
    await mkdir(sub, { recursive: true });
    await writeFile(join(sub, `f${i}.bin`), random(bytes + (i % 7) * 1000));
  }
}

/**
 * --chunkings: a comma-separated list of `default` (no chunker flag: what a user gets),
 * `fixed:SIZE` (--fixed SIZE) or `cdc:MIN/AVG/MAX` (--min --avg --max).
 */
function chunkingsFrom(text: string): Array<{ label: string; flags: string[] }> {
  return text.split(',').map((c) => {
    const [kind, sizes] = c.split(':');
    if (kind === 'default') return { label: 'default', flags: [] };
    if (kind === 'fixed' && sizes) return { label: `--fixed ${sizes}`, flags: ['--fixed', sizes] };
    const [min, avg, max] = (sizes ?? '').split('/');
    if (kind === 'cdc' && min && avg && max) return { label: `--min ${min} --avg ${avg} --max ${max}`, flags: ['--min', min, '--avg', avg, '--max', max] };
    throw new Error(`--chunkings: "${c}" is not default, fixed:SIZE or cdc:MIN/AVG/MAX`);
  });
}

/** rsync --stats' figure named `what` ("Literal data", "Total bytes sent", ...). */
function rsyncStat(stats: string, what: string): number {
  return Number(new RegExp(`${what}: ([\\d,]+)`).exec(stats)?.[1]?.replace(/,/g, '') ?? NaN);
}

async function ext4Bars(): Promise<void> {
  const size = arg('--size', '1G');
  const files = Number(arg('--files', '100'));
  const fileBytes = parseSize(arg('--file-size', '64K'), '--file-size');
  const chunkings = chunkingsFrom(arg('--chunkings', 'default,fixed:4K'));
  const bin = arg('--bin', DEFAULT_BIN);
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-ext4-bars-'));
  const server = await serve(bin, join(dir, 'root'));
  try {
    const tree = join(dir, 'tree');
    await makeTree(tree, 400, 48 * KiB);
    for (const [n, chunking] of chunkings.entries()) {
      const img = join(dir, 'image.img');
      await rm(img, { force: true });
      run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, img, size]);
      const name = `${n}.img`;
      run(process.execPath, [bin, 'push', '-q', ...chunking.flags, img, `${server.url}/${name}`]);
      const rs = join(dir, `rsync-${name}`);
      run('rsync', ['-S', img, rs]);
      // The edit: a filesystem's own writes, 100 new files through debugfs.
      const random = keystream(`ext4-edit-${name}`);
      const cmds: string[] = ['mkdir edit'];
      for (let i = 0; i < files; i++) {
        const f = join(dir, `new-${i}`);
        await writeFile(f, random(fileBytes));
        cmds.push(`write ${f} edit/new-${i}`);
      }
      await writeFile(join(dir, 'cmds'), cmds.join('\n') + '\n');
      run('debugfs', ['-w', '-f', join(dir, 'cmds'), img]);
      const pushed = JSON.parse(run(process.execPath, [bin, 'push', '--json', ...chunking.flags, img, `${server.url}/${name}`])) as { bytesSent: number; chunksTotal: number; seconds: number };
      const stats = run('rsync', ['--no-whole-file', '--inplace', '--ignore-times', '--stats', img, rs]);
      const literal = rsyncStat(stats, 'Literal data');
      const rsyncWire = rsyncStat(stats, 'Total bytes sent') + rsyncStat(stats, 'Total bytes received');
      const pulled = join(dir, `pulled-${name}`);
      run(process.execPath, [bin, 'pull', '-q', `${server.url}/${name}`, pulled]);
      const clean = (p: string) => (spawnSync('e2fsck', ['-fn', p], { stdio: 'ignore' }).status === 0 ? 'clean' : 'NOT CLEAN');
      // The manifest goes up whole with every push: 36 bytes a chunk record (docs/FORMAT.md).
      const manifestBytes = pushed.chunksTotal * 36;
      console.log(`${chunking.label}: ${files} files of ${fmt(fileBytes)} written with debugfs into a ${size} ext4 image`);
      console.log(`  xfer bytes sent ${pushed.bytesSent} (${fmt(pushed.bytesSent)}) in ${pushed.seconds.toFixed(2)} s; rsync literal data ${literal} (${fmt(literal)}); ratio ${(pushed.bytesSent / literal).toFixed(2)}`);
      console.log(`  xfer manifest ${pushed.chunksTotal} chunks, ~${fmt(manifestBytes)}; rsync total bytes sent+received ${fmt(rsyncWire)}`);
      console.log(`  e2fsck -fn: server copy ${clean(join(dir, 'root', 'files', name))}, pulled ${clean(pulled)}, rsync ${clean(rs)}; server copy equals image: ${spawnSync('cmp', ['-s', img, join(dir, 'root', 'files', name)]).status === 0}`);
      for (const p of [rs, pulled]) await rm(p, { force: true });
    }
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function reflinkBars(): Promise<void> {
  const fs = arg('--fs', 'xfs');
  const size = parseSize(arg('--size', '1G'), '--size');
  const bin = arg('--bin', DEFAULT_BIN);
  const dir = await mkdtemp(join(arg('--dir', '/var/tmp'), 'xfer-reflink-bars-'));
  const img = join(dir, `${fs}.img`);
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  // Room for the store (outside), two versions held at once, and the file system's own.
  run('truncate', ['-s', String(Math.max(512 * MiB, size * 2 + 256 * MiB)), img]);
  run(`mkfs.${fs}`, ['-q', '-f', img]);
  const device = run('losetup', ['-f', '--show', img]).trim();
  try {
    run('mount', [device, mnt]);
    try {
      const src = join(dir, 'src.img');
      const store = join(dir, 'store');
      await mkdir(store);
      const bytes = keystream('reflink');
      const fh = await open(src, 'w');
      for (let o = 0; o < size; o += 16 * MiB) await fh.write(bytes(Math.min(16 * MiB, size - o)));
      await fh.close();
      run(process.execPath, [bin, 'push', '-q', src, `${store}/`]);
      const target = join(mnt, 'img');
      run(process.execPath, [bin, 'pull', '-q', join(store, 'src.img'), target]);
      await link(target, join(mnt, 'old')); // the old version stays: what the new one shares
      const e = await open(src, 'r+');
      await e.write(Buffer.alloc(4 * KiB, 0x5a), 0, 4 * KiB, Math.floor(size / 3));
      await e.close();
      run(process.execPath, [bin, 'push', '-q', src, `${store}/`]);
      const used = () => Number(run('df', ['-B1', '--output=used', mnt]).trim().split('\n')[1]);
      const written = async () => Number((await readFile(`/sys/block/${basename(device)}/stat`, 'utf8')).trim().split(/\s+/)[6]) * 512;
      run('sync', ['-f', mnt]);
      const [w0, u0] = [await written(), used()];
      const t = timed(process.execPath, [bin, 'pull', '-q', join(store, 'src.img'), target]);
      run('sync', ['-f', mnt]);
      const [w1, u1] = [await written(), used()];
      console.log(`${fs}, ${fmt(size)} file, 4 KiB edit, atomic rebuild by ${bin}: ${w1 - w0} bytes (${fmt(w1 - w0)}) written to ${device}, disk used +${fmt(u1 - u0)} with the old version held, ${t.seconds.toFixed(2)} s`);
    } finally {
      run('umount', [mnt]);
    }
  } finally {
    spawnSync('losetup', ['-d', device]);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Hashes `total` bytes of zeros in `piece`-byte updates of one preallocated buffer. */
function hashZeros(total: number, piece: number): number {
  const zeros = Buffer.alloc(piece);
  const h = createHasher('blake3');
  const started = performance.now();
  for (let done = 0; done < total; done += piece) h.update(zeros.subarray(0, Math.min(piece, total - done)));
  h.digest();
  return total / ((performance.now() - started) / 1000);
}

async function zerosBars(): Promise<void> {
  const total = parseSize(arg('--size', '4G'), '--size');
  for (const piece of [64 * KiB, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB]) {
    console.log(`native BLAKE3 over zeros, ${fmt(piece)} updates: ${(hashZeros(total, piece) / GiB).toFixed(2)} GiB/s`);
  }
  // In parallel: independent hashes in workers (what a run of zeros costs a core while
  // the data extents are chunked on others). One BLAKE3 digest of a whole file is one
  // sequential hasher: parallel hashing of its zero runs needs the tree mode's subtree
  // chaining values, which this hasher does not expose.
  const workers = availableParallelism();
  const url = new URL(import.meta.url);
  const started = performance.now();
  await Promise.all(Array.from({ length: workers }, () => new Promise<void>((resolve, reject) => {
    const w = new Worker(url, { argv: ['zeros-worker', '--size', String(total / workers)] });
    w.on('exit', () => resolve());
    w.on('error', reject);
  })));
  console.log(`${workers} workers hashing ${fmt(total / workers)} of zeros each, 4 MiB updates: ${(total / ((performance.now() - started) / 1000) / GiB).toFixed(2)} GiB/s in all`);
}

async function main(): Promise<void> {
  const what = process.argv[2];
  if (what === 'sparse') await sparseBars();
  else if (what === 'ext4') await ext4Bars();
  else if (what === 'reflink') await reflinkBars();
  else if (what === 'zeros') await zerosBars();
  else if (what === 'zeros-worker') hashZeros(parseSize(arg('--size', '1G'), '--size'), 4 * MiB);
  else {
    console.error('usage: node dist/bench/disk-bars.js sparse|ext4|reflink|zeros [options] (see the header of bench/disk-bars.ts)');
    process.exitCode = 2;
  }
}

await main();
