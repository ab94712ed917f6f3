/**
 * The scale run: `npm run bench -- --scale 1T` streams a generated disk image (fixtures/
 * disk-image.ts, base version) through the parallel StreamScan, chunking (FastCDC, default
 * parameters) and hashing (BLAKE3) every byte without writing anything to disk, and reports
 * throughput over time and RSS. A short run of the same code on a prefix of the same image
 * comes first (after a shorter, unmeasured warm-up): the small-scale reference the large
 * run's throughput is compared with.
 *
 * The bar (benchmark issue, item 4): RSS flat within 10% from 10 GiB on (rssFlatness, max
 * over min, <= 1.1; rssGrowth is the trend without the sampling noise) and throughput
 * within 10% of the small-scale figure (throughputVsSmall >= 0.9).
 *
 * measureStreamScan() is the measured core; test/bench-scale.test.ts runs it, and runScale(),
 * at a small scale.
 */
import { DEFAULT_AVG_BYTES, DEFAULT_CHUNKER, DEFAULT_MAX_BYTES, DEFAULT_MIN_BYTES } from '../src/chunker/params.js';
import type { ChunkerSpec, DigestAlgorithm } from '../src/core/ids.js';
import { digestToHex } from '../src/core/ids.js';
import { formatBytes, GiB, MiB } from '../src/core/sizes.js';
import { ScanPool } from '../src/scan/pool.js';
import { StreamScan, type StreamSource } from '../src/scan/scanner.js';
import { diskImage } from '../fixtures/disk-image.js';
import type { ScaleSample } from './report.js';

export type { ScaleSample };

/** The generated image's seed: any fixed value; the image of a size is a prefix of every larger one. */
export const SCALE_SEED = 20261122;
/** Size of the small-scale reference run (or the whole size, if smaller). */
export const SMALL_SCALE_BYTES = 2 * GiB;
/** Scanned, unmeasured, before the reference run: worker start-up, JIT, first buffers. */
export const WARM_UP_BYTES = 256 * MiB;
/** RSS flatness is judged from this many bytes on (or from a tenth of a smaller input). */
export const RSS_FLAT_FROM_BYTES = 10 * GiB;
/** About this many samples per run, at a power-of-two interval of at least MIN_SAMPLE_BYTES. */
const SAMPLES_TARGET = 100;
const MIN_SAMPLE_BYTES = 256 * MiB;
/** Pieces the generator hands out (each freshly allocated, copied into segment buffers). */
const PIECE_BYTES = MiB;

const CHUNKER_LABEL = `${DEFAULT_CHUNKER.algorithm} ${DEFAULT_MIN_BYTES / 1024}K/${DEFAULT_AVG_BYTES / 1024}K/${DEFAULT_MAX_BYTES / 1024}K`;

export interface MeasureOptions {
  readonly pool: ScanPool;
  readonly sampleEveryBytes: number;
  readonly chunker?: ChunkerSpec;
  readonly digestAlgorithm?: DigestAlgorithm;
  readonly signal?: AbortSignal;
}

export interface MeasuredScan {
  readonly bytes: number;
  readonly seconds: number;
  readonly mbPerSecond: number;
  readonly chunks: number;
  /**
   * CPU time of the whole process (all threads) during the scan: on a shared machine a
   * steadier figure than wall time.
   */
  readonly cpuSeconds: number;
  /** Whole-content digest, hex. */
  readonly digest: string;
  /** At least one; the last is taken at the end of the input. */
  readonly samples: ScaleSample[];
}

/**
 * Scans `source` with a parallel StreamScan, consuming batches as a sink that discards them
 * would (each batch released at once, so buffers are recycled), and samples progress every
 * `sampleEveryBytes` and at the end. A sample's `bytes` is the total scanned so far (taken
 * at a batch boundary: at or just past a multiple of the interval), `mbPerSecond` the
 * throughput (10^6 bytes/s) since the previous sample, `rssMiB` the resident set of the
 * whole process, whose threads include the pool's workers.
 */
export async function measureStreamScan(source: StreamSource, o: MeasureOptions, onSample?: (s: ScaleSample) => void): Promise<MeasuredScan> {
  if (!Number.isSafeInteger(o.sampleEveryBytes) || o.sampleEveryBytes <= 0) throw new RangeError('sampleEveryBytes must be a positive integer');
  const scan = new StreamScan(source, {
    chunker: o.chunker ?? DEFAULT_CHUNKER,
    digestAlgorithm: o.digestAlgorithm ?? 'blake3',
    pool: o.pool,
    signal: o.signal,
  });
  const samples: ScaleSample[] = [];
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  let bytes = 0;
  let chunks = 0;
  let last = { bytes: 0, seconds: 0 };
  let nextSampleAt = o.sampleEveryBytes;
  const sample = () => {
    const seconds = (performance.now() - started) / 1000;
    const s: ScaleSample = {
      bytes,
      seconds,
      mbPerSecond: (bytes - last.bytes) / Math.max(seconds - last.seconds, 1e-9) / 1e6,
      rssMiB: process.memoryUsage.rss() / MiB,
    };
    samples.push(s);
    onSample?.(s);
    last = { bytes, seconds };
  };
  for await (const b of scan.batches()) {
    bytes += b.data.length;
    chunks += b.count;
    b.release();
    if (bytes >= nextSampleAt) {
      sample();
      nextSampleAt = (Math.floor(bytes / o.sampleEveryBytes) + 1) * o.sampleEveryBytes;
    }
  }
  if (samples.length === 0 || last.bytes !== bytes) sample();
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStarted);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return { bytes, seconds, mbPerSecond: bytes / seconds / 1e6, chunks, cpuSeconds, digest: digestToHex(scan.result.digest), samples };
}

/** The sampling interval for a run of `sizeBytes`: a power of two near size / SAMPLES_TARGET. */
export function sampleIntervalBytes(sizeBytes: number): number {
  const target = Math.max(1, sizeBytes / SAMPLES_TARGET);
  return Math.max(MIN_SAMPLE_BYTES, 2 ** Math.floor(Math.log2(target)));
}

/** max / min RSS over the samples taken from `fromBytes` on (all samples if none is that far). */
export function rssFlatness(samples: readonly ScaleSample[], fromBytes: number): number {
  const judged = samples.filter((s) => s.bytes >= fromBytes);
  const rss = (judged.length ? judged : samples).map((s) => s.rssMiB);
  return Math.max(...rss) / Math.min(...rss);
}

/**
 * The trend under the noise: median RSS of the last tenth of the samples taken from
 * `fromBytes` on, over the median of the first tenth (1 = no growth). Max/min (rssFlatness)
 * also counts garbage-collection sawtooth (dead generator pieces, young generations).
 */
export function rssGrowth(samples: readonly ScaleSample[], fromBytes: number): number {
  const judged = samples.filter((s) => s.bytes >= fromBytes);
  const rss = (judged.length ? judged : samples).map((s) => s.rssMiB);
  const tenth = Math.max(1, Math.floor(rss.length / 10));
  return median(rss.slice(-tenth)) / median(rss.slice(0, tenth));
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The process's peak resident set so far (getrusage; includes the worker threads), in MiB. */
function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

export interface ScaleOptions {
  readonly sizeBytes: number;
  /** Also push to a loopback server with a discarding store: not available (see below). */
  readonly push: boolean;
  readonly log: (s: string) => void;
  /** For tests: the warm-up and reference runs' sizes (defaults WARM_UP_BYTES, SMALL_SCALE_BYTES) and the sampling interval. */
  readonly warmUpBytes?: number;
  readonly smallBytes?: number;
  readonly sampleEveryBytes?: number;
  readonly threads?: number;
}

/** `npm run bench -- --scale SIZE`: the reference run, then the streaming run of SIZE; results.scale. */
export async function runScale(o: ScaleOptions) {
  const { sizeBytes, log } = o;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new RangeError('sizeBytes must be a positive integer');
  // A push needs `xfer serve` with a store that hashes and discards chunks; the server
  // opens its LocalStore itself (src/server/server.ts), so that is not possible without
  // changing server code. The run measures chunking and hashing only.
  const pushNote = o.push ? 'not run: xfer serve cannot take a discarding store yet; scan only' : undefined;
  if (pushNote) log(`--scale-push: ${pushNote}`);
  const pool = new ScanPool(o.threads ? { threads: o.threads } : {});
  const image = (size: number) => diskImage({ sizeBytes: size, seed: SCALE_SEED }).stream({ pieceBytes: PIECE_BYTES });
  const line = (s: ScaleSample) =>
    log(`  ${formatBytes(s.bytes).padStart(11)}  ${s.seconds.toFixed(1).padStart(7)} s  ${s.mbPerSecond.toFixed(0).padStart(5)} MB/s  rss ${s.rssMiB.toFixed(0)} MiB`);
  try {
    const smallBytes = Math.min(o.smallBytes ?? SMALL_SCALE_BYTES, sizeBytes);
    log(`scale run: disk image (seed ${SCALE_SEED}), ${CHUNKER_LABEL} + BLAKE3, ${pool.threads} worker threads, nothing written`);
    const warmUpBytes = Math.min(o.warmUpBytes ?? WARM_UP_BYTES, sizeBytes);
    await measureStreamScan(image(warmUpBytes), { pool, sampleEveryBytes: warmUpBytes });
    log(`small-scale reference: ${formatBytes(smallBytes)} (after an unmeasured ${formatBytes(warmUpBytes)} warm-up)`);
    const small = await measureStreamScan(image(smallBytes), { pool, sampleEveryBytes: o.sampleEveryBytes ?? sampleIntervalBytes(smallBytes) });
    log(`  ${small.mbPerSecond.toFixed(0)} MB/s over ${small.seconds.toFixed(2)} s, ${((small.cpuSeconds * 1e9) / smallBytes).toFixed(2)} ns of CPU per byte`);
    const sampleEveryBytes = o.sampleEveryBytes ?? sampleIntervalBytes(sizeBytes);
    log(`streaming ${formatBytes(sizeBytes)}; one line per ${formatBytes(sampleEveryBytes)} (interval throughput, process RSS including worker threads)`);
    const big = await measureStreamScan(image(sizeBytes), { pool, sampleEveryBytes }, line);
    const rssFromBytes = Math.min(RSS_FLAT_FROM_BYTES, Math.floor(sizeBytes / 10));
    const result = {
      sizeBytes,
      seed: SCALE_SEED,
      source: 'disk-image base',
      chunker: CHUNKER_LABEL,
      digestAlgorithm: 'blake3',
      threads: pool.threads,
      ...(pushNote ? { push: pushNote } : {}),
      seconds: big.seconds,
      mbPerSecond: big.mbPerSecond,
      cpuSeconds: big.cpuSeconds,
      cpuNsPerByte: (big.cpuSeconds * 1e9) / sizeBytes,
      peakRssMiB: peakRssMiB(),
      maxSampledRssMiB: Math.max(...big.samples.map((s) => s.rssMiB)),
      chunks: big.chunks,
      digest: big.digest,
      rssFromBytes,
      rssFlatness: rssFlatness(big.samples, rssFromBytes),
      rssGrowth: rssGrowth(big.samples, rssFromBytes),
      smallSizeBytes: smallBytes,
      smallMbPerSecond: small.mbPerSecond,
      smallCpuNsPerByte: (small.cpuSeconds * 1e9) / smallBytes,
      throughputVsSmall: big.mbPerSecond / small.mbPerSecond,
      samples: big.samples,
    };
    log(
      `scale: ${formatBytes(sizeBytes)} in ${result.seconds.toFixed(1)} s, ${result.mbPerSecond.toFixed(0)} MB/s ` +
        `(${(result.throughputVsSmall * 100).toFixed(1)}% of the ${formatBytes(smallBytes)} run), ${result.cpuNsPerByte.toFixed(2)} ns of CPU per byte, ${result.chunks} chunks, ` +
        `peak RSS ${result.peakRssMiB.toFixed(0)} MiB, RSS from ${formatBytes(rssFromBytes)} on: max/min ${result.rssFlatness.toFixed(3)}, ` +
        `last/first tenth ${result.rssGrowth.toFixed(3)}`,
    );
    return result;
  } finally {
    await pool.close();
  }
}
