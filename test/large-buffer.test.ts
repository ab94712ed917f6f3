import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { largeBuffer, LARGE_BUFFER_MIN_BYTES, sysIsNative } from '../src/io/sys.js';
import { loadAddon } from '../src/native/addon.js';
import { withNative } from './helpers/native.js';

const SYS = fileURLToPath(new URL('../src/io/sys.js', import.meta.url));
const MiB = 1024 * 1024;

/** Transparent huge pages as this kernel offers them: 'always', 'madvise' or 'never' (undefined: no THP). */
function thpMode(): string | undefined {
  try {
    return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * Run in a child with --expose-gc: fills 16 large Buffers of 8 MiB (128 MiB), drops them and
 * collects (their mappings go to the addon's pool, at most poolMaxBytes of them), takes 8 of that
 * length again, gives one back by recycleLargeBuffer (twice) and takes two more, then drops
 * everything and trims. Prints resident sizes (bytes) and the addon's counters along the way.
 */
const CHILD = `
import { readFileSync } from 'node:fs';
const { largeBuffer, largeBufferStats, recycleLargeBuffer, trimLargeBuffers } = await import(${JSON.stringify(SYS)});
const rollup = (name) => Number(new RegExp('^' + name + ':\\\\s+(\\\\d+) kB', 'm').exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) * 1024;
const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); } };
await settle();
const hugeBefore = rollup('AnonHugePages');
let big = [];
for (let i = 0; i < 16; i++) big.push(largeBuffer(8 << 20).fill(i + 1));
const ok = big.every((b, i) => b.length === 8 << 20 && b[0] === i + 1 && b[b.length - 1] === i + 1);
const high = rollup('Rss');
const huge = rollup('AnonHugePages') - hugeBefore;
big = undefined;
await settle();
const collected = largeBufferStats();
const mid = rollup('Rss');
let again = [];
for (let i = 0; i < 8; i++) again.push(largeBuffer(8 << 20));
const retaken = largeBufferStats();
const given = again.pop();
recycleLargeBuffer(given);
recycleLargeBuffer(given); // a second time: ignored
recycleLargeBuffer(given.subarray(4096)); // a view of part: ignored
const first = largeBuffer(8 << 20);
const second = largeBuffer(8 << 20);
const recycledSame = first.buffer === given.buffer && second.buffer !== given.buffer;
again = undefined;
await settle();
trimLargeBuffers(0);
// Given back and idle: their pages go back at the trim, before any collection (the test
// keeps references to see that: the buffers' own code would not).
const kept = [];
for (let i = 0; i < 4; i++) kept.push(largeBuffer(8 << 20).fill(9));
const withKept = rollup('Rss');
for (const k of kept) recycleLargeBuffer(k);
trimLargeBuffers(0);
const discarded = withKept - rollup('Rss');
console.log(JSON.stringify({ ok, high, huge, mid, collected, retaken, recycledSame, low: rollup('Rss'), trimmed: largeBufferStats(), discarded }));
`;

interface Stats { mapped: number; reused: number; unmapped: number; pooledBytes: number; liveBytes: number; poolMaxBytes: number }
interface ChildReport { ok: boolean; high: number; huge: number; mid: number; collected: Stats; retaken: Stats; recycledSame: boolean; low: number; trimmed: Stats; discarded: number }

function child(): ChildReport {
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', CHILD], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as ChildReport;
}

it('largeBuffer: a mapping of its own, 2 MiB-aligned, in huge pages where the kernel gives them; collected, its mapping is reused (up to the pool bound), given back it is the next one, trimmed it is unmapped (native addon)', (t) => {
  if (!sysIsNative()) return t.diagnostic('the native addon is not built: largeBuffer is Buffer.allocUnsafeSlow');
  const b = largeBuffer(4 * MiB + 4096);
  assert.equal(b.length, 4 * MiB + 4096);
  assert.equal(loadAddon()!.addressMod!(b, 2 * MiB), 0, 'starts on a 2 MiB boundary (so on an O_DIRECT one too)');
  const r = child();
  assert.ok(r.ok, 'the buffers hold what was written');
  // 128 MiB were filled and dropped: the pool's bound of mappings kept for reuse, the rest unmapped.
  const pooled = r.collected.poolMaxBytes / (8 * MiB);
  assert.ok(pooled >= 1 && pooled < 16, `the pool holds ${pooled} of 16`);
  assert.equal(r.collected.pooledBytes, r.collected.poolMaxBytes, `pooled after collection: ${r.collected.pooledBytes}`);
  assert.equal(r.collected.unmapped, 16 - pooled, `unmapped after collection: ${r.collected.unmapped}`);
  assert.ok(r.high - r.mid > 48 * MiB, `resident ${(r.high / MiB).toFixed(0)} MiB with the buffers, ${(r.mid / MiB).toFixed(0)} MiB after they were collected`);
  // The next 8 of that length are the pooled mappings first, fresh ones only once it is empty.
  assert.equal(r.retaken.reused - r.collected.reused, Math.min(8, pooled), 'taken from the pool');
  assert.equal(r.retaken.mapped - r.collected.mapped, Math.max(0, 8 - pooled), 'no fresh mapping while the pool has one');
  assert.ok(r.recycledSame, 'a buffer given back is the next of its length, once');
  // Trimmed, nothing stays pooled, and the 128 MiB are given back (at most a quarter may stay).
  assert.equal(r.trimmed.pooledBytes, 0);
  assert.ok(r.discarded > 24 * MiB, `32 MiB given back and trimmed: ${(r.discarded / MiB).toFixed(0)} MiB of pages released at once`);
  assert.ok(r.high - r.low > 96 * MiB, `resident ${(r.high / MiB).toFixed(0)} MiB with the buffers, ${(r.low / MiB).toFixed(0)} MiB after the trim`);
  const mode = thpMode();
  if (mode !== 'always' && mode !== 'madvise') return t.diagnostic(`transparent huge pages are '${mode ?? 'absent'}' here: small pages are all there is`);
  // Advised, a filled 8 MiB mapping is mostly 2 MiB pages (the kernel may fall back when
  // it has none free: at least half of the 128 MiB is asked).
  assert.ok(r.huge >= 64 * MiB, `${(r.huge / MiB).toFixed(0)} MiB of the 128 MiB filled came in huge pages`);
});

it('largeBuffer below LARGE_BUFFER_MIN_BYTES, and the twin (XFER_NO_NATIVE=1), are ordinary Buffers of the size asked', async () => {
  const small = largeBuffer(LARGE_BUFFER_MIN_BYTES - 1);
  assert.equal(small.length, LARGE_BUFFER_MIN_BYTES - 1);
  const twin = await withNative(false, async () => largeBuffer(8 * MiB));
  assert.equal(twin.length, 8 * MiB);
  twin.fill(7);
  assert.equal(twin[8 * MiB - 1], 7);
});
