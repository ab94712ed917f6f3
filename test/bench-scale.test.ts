import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { createChunker } from '../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { MiB } from '../src/core/sizes.js';
import { digestOf } from '../src/hash/digest.js';
import { ScanPool } from '../src/scan/pool.js';
import { measureStreamScan, rssFlatness, rssGrowth, runScale, sampleIntervalBytes, SCALE_SEED, type ScaleSample } from '../bench/scale.js';
import { diskImage } from '../fixtures/disk-image.js';
import { readAll } from '../fixtures/source.js';
import { cutAll } from './helpers/chunks.js';

/** The scale run's code path (bench/scale.ts) at a small scale: what `--scale 1T` runs, on 96 MiB. */
const SIZE_BYTES = 96 * MiB;
const SAMPLE_BYTES = 8 * MiB;

function checkSamples(samples: readonly ScaleSample[], sizeBytes: number, every: number): void {
  assert.ok(samples.length >= Math.floor(sizeBytes / every), `a sample per ${every} bytes (${samples.length})`);
  let prev = { bytes: 0, seconds: 0 };
  let sum = 0;
  for (const s of samples) {
    assert.ok(s.bytes > prev.bytes, 'bytes grow from sample to sample');
    assert.ok(s.seconds >= prev.seconds, 'time does not go back');
    assert.ok(s.mbPerSecond > 0 && Number.isFinite(s.mbPerSecond), 'interval throughput is a positive number');
    assert.ok(s.rssMiB > 10 && s.rssMiB < 64 * 1024, `RSS is plausible (${s.rssMiB} MiB)`);
    sum += s.bytes - prev.bytes;
    prev = s;
  }
  assert.equal(sum, sizeBytes, 'intervals add up to the input');
  assert.equal(samples.at(-1)!.bytes, sizeBytes, 'the last sample is at the end');
}

describe('scale run (bench/scale.ts) at a small scale', () => {
  let pool: ScanPool;
  before(() => {
    pool = new ScanPool({ threads: 2 });
  });
  after(async () => {
    await pool.close();
  });

  it('measureStreamScan reports the chunks and digest of a direct sequential scan of the same bytes', async () => {
    const image = diskImage({ sizeBytes: SIZE_BYTES, seed: SCALE_SEED });
    const seen: ScaleSample[] = [];
    const m = await measureStreamScan(image.stream(), { pool, sampleEveryBytes: SAMPLE_BYTES }, (s) => seen.push(s));
    assert.deepEqual(seen, m.samples, 'every sample is reported as it is taken');
    checkSamples(m.samples, SIZE_BYTES, SAMPLE_BYTES);
    assert.equal(m.bytes, SIZE_BYTES);
    assert.ok(Math.abs(m.mbPerSecond - SIZE_BYTES / m.seconds / 1e6) < 1e-6);
    assert.ok(m.cpuSeconds > 0, 'CPU time is measured');

    const bytes = readAll(image.stream());
    const lengths = cutAll(createChunker(DEFAULT_CHUNKER), bytes);
    assert.equal(m.chunks, lengths.length, 'chunk count of one sequential pass');
    assert.equal(m.digest, digestOf('blake3', bytes).toString('hex'), 'whole-content BLAKE3');
  });

  it('runScale reports throughput over time, RSS flatness and the ratio to the small-scale run', async () => {
    const lines: string[] = [];
    const r = await runScale({ sizeBytes: SIZE_BYTES, push: true, log: (s) => lines.push(s), warmUpBytes: 8 * MiB, smallBytes: 32 * MiB, sampleEveryBytes: SAMPLE_BYTES, threads: 2 });
    assert.equal(r.sizeBytes, SIZE_BYTES);
    assert.equal(r.smallSizeBytes, 32 * MiB);
    checkSamples(r.samples, SIZE_BYTES, SAMPLE_BYTES);
    assert.equal(r.rssFromBytes, Math.floor(SIZE_BYTES / 10));
    assert.equal(r.rssFlatness, rssFlatness(r.samples, r.rssFromBytes));
    assert.ok(r.rssFlatness >= 1);
    assert.equal(r.rssGrowth, rssGrowth(r.samples, r.rssFromBytes));
    assert.ok(Math.abs(r.throughputVsSmall - r.mbPerSecond / r.smallMbPerSecond) < 1e-9);
    assert.ok(Math.abs(r.cpuNsPerByte - (r.cpuSeconds * 1e9) / SIZE_BYTES) < 1e-9);
    assert.ok(r.peakRssMiB >= r.maxSampledRssMiB * 0.99, 'the peak is at least what was sampled');
    assert.match(String(r.push), /not run/, 'a push it cannot do is reported, not faked');
    assert.equal(lines.filter((l) => /MB\/s\s+rss \d+ MiB$/.test(l)).length, r.samples.length, 'a log line per sample');
    assert.match(lines.at(-1)!, /^scale: /);
    // The same bytes as the measured core: the image of a size is a prefix of any larger one.
    const again = await measureStreamScan(diskImage({ sizeBytes: SIZE_BYTES, seed: SCALE_SEED }).stream(), { pool, sampleEveryBytes: SIZE_BYTES });
    assert.equal(r.chunks, again.chunks);
    assert.equal(r.digest, again.digest);
  });

  it('helpers: sampling interval and flatness', () => {
    assert.equal(sampleIntervalBytes(2 ** 40), 8 * 2 ** 30, '1 TiB: every 8 GiB');
    assert.equal(sampleIntervalBytes(4 * 2 ** 30), 256 * MiB, 'small runs: every 256 MiB');
    const s = (bytes: number, rssMiB: number): ScaleSample => ({ bytes, seconds: bytes, mbPerSecond: 1, rssMiB });
    assert.equal(rssFlatness([s(1, 500), s(10, 100), s(20, 110)], 10), 1.1, 'samples before fromBytes are not judged');
    assert.equal(rssFlatness([s(1, 100), s(2, 150)], 10), 1.5, 'all samples when none is that far');
    const noisy = Array.from({ length: 40 }, (_, i) => s(10 + i, 100 + (i % 2) * 20 + (i >= 30 ? 10 : 0)));
    assert.equal(rssGrowth(noisy, 10), 120 / 110, 'median of the last tenth over the first');
  });
});
