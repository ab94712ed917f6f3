import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { mallocMmapThreshold, sysIsNative } from '../src/io/sys.js';

const SYS = fileURLToPath(new URL('../src/io/sys.js', import.meta.url));
const MiB = 1024 * 1024;

/**
 * Run in a child with --expose-gc: frees one 4 MiB Buffer first (glibc then raises its
 * mmap threshold above 4 MiB), calls mallocMmapThreshold(1 MiB) unless told not to, then
 * fills 32 Buffers of 4 MiB, each followed by a 64 KiB one that stays (what a live
 * server's other allocations do: from the heap, they pin the pages around the big ones),
 * drops the big ones and collects. Prints the resident size with them and after, in bytes.
 */
const CHILD = `
import { readFileSync } from 'node:fs';
const { mallocMmapThreshold } = await import(${JSON.stringify(SYS)});
const rss = () => Number(/VmRSS:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); } };
let first = Buffer.allocUnsafeSlow(4 << 20).fill(1);
first = undefined;
await settle();
const set = process.argv.includes('set') ? mallocMmapThreshold(1 << 20) : false;
let big = [];
const pins = [];
for (let i = 0; i < 32; i++) {
  big.push(Buffer.allocUnsafeSlow(4 << 20).fill(i));
  pins.push(Buffer.allocUnsafeSlow(64 << 10).fill(i));
}
const high = rss();
big = undefined;
await settle();
console.log(JSON.stringify({ set, high, low: rss(), pins: pins.length }));
`;

function freedResident(mode: 'set' | 'unset'): { set: boolean; high: number; low: number } {
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD, mode], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { set: boolean; high: number; low: number };
}

it('with the mmap threshold at 1 MiB, freed 4 MiB Buffers leave the resident size (glibc, native addon)', (t) => {
  if (!sysIsNative()) return t.diagnostic('the native addon is not built: the twin cannot reach the allocator');
  const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime;
  if (glibc === undefined) return t.diagnostic('not glibc: there is no mallopt to call');
  const r = freedResident('set');
  assert.equal(r.set, true, 'mallopt(M_MMAP_THRESHOLD) was not set');
  // 128 MiB were filled and dropped: at most a quarter of it may stay resident.
  assert.ok(r.high - r.low > 96 * MiB, `resident ${(r.high / MiB).toFixed(0)} MiB with the buffers, ${(r.low / MiB).toFixed(0)} MiB after they were freed`);
});

it('mallocMmapThreshold refuses what is not a positive number of bytes, and the twin sets nothing', () => {
  assert.throws(() => mallocMmapThreshold(0), TypeError);
  assert.throws(() => mallocMmapThreshold(1.5), TypeError);
  const saved = process.env.XFER_NO_NATIVE;
  process.env.XFER_NO_NATIVE = '1';
  try {
    assert.equal(mallocMmapThreshold(MiB), false);
  } finally {
    if (saved === undefined) delete process.env.XFER_NO_NATIVE;
    else process.env.XFER_NO_NATIVE = saved;
  }
});
