/**
 * The connections of one XferClient to its server (issue 17 item 3). On a long fat link one
 * TCP connection carries at most its window per round trip (and starts from a small one),
 * so a transfer may use several: requests go to the connection with the fewest bytes
 * outstanding, and the count is either fixed (ClientOptions.connections) or grown as the
 * transfer shows it helps (see Connections.consider). Each connection is an undici
 * dispatcher that reconnects on its next request after a break; one whose connection broke
 * or stopped answering is replaced at once (replace), so that its other requests fail and
 * are retried (client.ts) on whichever connection then has the fewest bytes outstanding.
 * The bandwidth limit stays the client's, one total however many connections there are.
 */
import type { Dispatcher } from 'undici';
import { KiB } from '../../core/sizes.js';
import { Slots } from '../../core/window.js';

/** Connections of one client to its server, at most (ClientOptions.connections). */
export const MAX_CONNECTIONS = 8;
/**
 * Below this round trip, more connections are never opened automatically: even a window
 * of 1 MiB carries 50 MB/s at 20 ms, and on a LAN or loopback each connection only adds
 * work for both ends.
 */
export const LONG_LINK_RTT_MS = 20;
/**
 * A throughput sample spans at least this long, and at least SAMPLE_ROUND_TRIPS round
 * trips: uploads count when answered, a few MiB at a time. Connections added are judged
 * by the sample after next: a new connection's window grows for several round trips.
 */
const MIN_SAMPLE_MS = 1000;
const SAMPLE_ROUND_TRIPS = 6;
/**
 * Connections are added only while the last ones raised the rate by this much (25%): on a
 * link one connection fills, more connections cost (measured through the WAN relay, 256
 * MiB: one 88-89% of the link, four 73-75%), and upload samples are lumpy.
 */
const MIN_GAIN = 0.25;
/**
 * More connections can only help while the requests waiting for answers hold more than
 * this many round trips of data at the measured rate; otherwise the transfer is waiting
 * for its own data (the disk, the hashing), not for the link.
 */
const BACKLOG_ROUND_TRIPS = 2;
/** Under a rate limit, no more connections once the rate reaches this share of it. */
const NEAR_LIMIT = 0.8;
/** Requests moving at least this much count as bulk: the samples start with the first. */
const BULK_REQUEST_BYTES = 64 * KiB;

/**
 * Request body bytes handed to one connection and not yet answered, at most (unless one
 * body alone is larger). Node counts the bytes queued on a client's HTTP/2 streams against
 * the session's memory (10 MB by default, which undici gives no way to raise): over it, the
 * session refuses the headers of an answer, resetting that request with ENHANCE_YOUR_CALM
 * though the server answered it, and the request (an upload: 4 MiB) is sent again. That
 * happened when the uploads cut by a break all went again at once on a new connection,
 * whose windows start small. An answer comes after its body was read, so counting bodies
 * until their answer bounds what can be queued.
 */
export const MAX_QUEUED_BODY_BYTES = 8 * 1024 * KiB;

/** One connection and the requests on it. */
export class Lane {
  /** Bytes of the requests on it not yet answered, sent and expected back (the spread's measure). */
  outstandingBytes = 0;
  /**
   * Body bytes of its requests not yet answered (MAX_QUEUED_BODY_BYTES): a request with a
   * body of bytes acquires its length before it is sent and releases it at the answer. As
   * many requests as fit, and one larger than the bound alone.
   */
  readonly bodies = new Slots(Number.MAX_SAFE_INTEGER, MAX_QUEUED_BODY_BYTES);
  constructor(public dispatcher: Dispatcher) {}
}

export interface ConnectionsOptions {
  /** A fixed number of connections (1..MAX_CONNECTIONS); automatic if not given. */
  readonly count?: number;
  /** The client's rate limit, if any (bytes per second each way). */
  readonly limitBytesPerSecond?: number;
  /** Told when a connection is added automatically (a test's or a log's hook). */
  readonly onGrow?: (count: number, why: { rttMs: number; bytesPerSecond: number }) => void;
}

export class Connections {
  private readonly lanes: Lane[];
  /** The least time to an answer of a small request seen: the round trip, and a little. */
  private rttMs = Infinity;
  private growing: boolean;
  private sampleStartMs = 0;
  /** Chunk bytes delivered in this sample. */
  private sampleBytes = 0;
  /**
   * Samples to let pass before the next judgement: the first two (the first connection's
   * window is still growing: more connections then seem to help wherever they do not, and
   * on a link one connection fills, more only queue on it and idle between requests,
   * starting small again each time), and the one after connections were added.
   */
  private settling = 2;
  private sampler: NodeJS.Timeout | undefined;
  /** The rate of the sample before the connections were last added (bytes per second). */
  private rateBeforeGrowth: number | undefined;
  private replaced = 0;
  /** Where pick() starts looking (see there). */
  private turn = -1;

  constructor(private readonly make: () => Dispatcher, private readonly options: ConnectionsOptions = {}) {
    this.lanes = [];
    for (let i = 0; i < (options.count ?? 1); i++) this.lanes.push(new Lane(this.make()));
    this.growing = options.count === undefined;
  }

  /** Connections now (each reconnects on its next request after a break). */
  get count(): number {
    return this.lanes.length;
  }

  /** Connections replaced after a break or a timeout so far. */
  get replacements(): number {
    return this.replaced;
  }

  /**
   * The lane for the next request: the one with the fewest bytes outstanding; of equals,
   * the next in turn, so that every connection carries some (a connection left idle longer
   * than a retransmission timeout starts from a small window again).
   */
  pick(): Lane {
    const n = this.lanes.length;
    this.turn = (this.turn + 1) % n;
    let best = this.lanes[this.turn]!;
    for (let i = 1; i < n; i++) {
      const lane = this.lanes[(this.turn + i) % n]!;
      if (lane.outstandingBytes < best.outstandingBytes) best = lane;
    }
    return best;
  }

  /** A request of `bytes` (sent and expected back) starts on `lane`; end() it with the same. */
  begin(lane: Lane, bytes: number): void {
    lane.outstandingBytes += bytes;
    if (this.growing && !this.sampler && bytes >= BULK_REQUEST_BYTES) this.startSample();
  }

  end(lane: Lane, bytes: number): void {
    lane.outstandingBytes -= bytes;
  }

  /** A small request on an idle connection was answered after `ms`: a round trip, at most. */
  roundTrip(ms: number): void {
    this.rttMs = Math.min(this.rttMs, ms);
  }

  /** `bytes` of chunk data arrived (a fetch) or were taken (an upload's answer). */
  delivered(bytes: number): void {
    this.sampleBytes += bytes;
  }

  /** Starts a sample, ended by consider() after its span (a timer that keeps no process alive). */
  private startSample(): void {
    this.sampleStartMs = performance.now();
    this.sampleBytes = 0;
    const spanMs = Math.max(MIN_SAMPLE_MS, SAMPLE_ROUND_TRIPS * (Number.isFinite(this.rttMs) ? this.rttMs : 0));
    this.sampler = setTimeout(() => {
      this.sampler = undefined;
      this.consider();
      if (this.growing) this.startSample();
    }, spanMs);
    this.sampler.unref();
  }

  private stopSampling(): void {
    this.growing = false;
    clearTimeout(this.sampler);
    this.sampler = undefined;
  }

  /**
   * `broken` (the dispatcher of `lane`) failed as a connection does (it broke, or an answer
   * did not come in time): it is dropped, which fails its other requests at once, and a new
   * connection takes its place. Once per broken dispatcher, however many requests it failed.
   */
  replace(lane: Lane, broken: Dispatcher): void {
    if (lane.dispatcher !== broken) return;
    lane.dispatcher = this.make();
    this.replaced++;
    void broken.destroy().catch(() => {});
  }

  /**
   * The automatic count: at the end of each sample, connections are doubled (up to
   * MAX_CONNECTIONS) when the round trip is long (LONG_LINK_RTT_MS), the requests waiting
   * hold more than BACKLOG_ROUND_TRIPS round trips of data at the measured rate (so the
   * link, not the transfer's own data, is what it waits for), the rate is not held by the
   * rate limit, and the last connections added raised the rate by MIN_GAIN. Once they did
   * not, the link itself is the limit, and the count stays.
   */
  private consider(): void {
    if (!this.growing) return;
    if (this.rttMs < LONG_LINK_RTT_MS) return this.stopSampling();
    const rate = (this.sampleBytes * 1000) / (performance.now() - this.sampleStartMs);
    if (this.settling > 0) {
      this.settling--;
      return;
    }
    if (this.rateBeforeGrowth !== undefined && rate < this.rateBeforeGrowth * (1 + MIN_GAIN)) return this.stopSampling();
    const limit = this.options.limitBytesPerSecond;
    if (limit !== undefined && rate >= NEAR_LIMIT * limit) return;
    let outstanding = 0;
    for (const lane of this.lanes) outstanding += lane.outstandingBytes;
    if (outstanding <= (BACKLOG_ROUND_TRIPS * rate * this.rttMs) / 1000) {
      this.rateBeforeGrowth = undefined;
      return;
    }
    const target = Math.min(MAX_CONNECTIONS, this.lanes.length * 2);
    if (target === this.lanes.length) return this.stopSampling();
    while (this.lanes.length < target) this.lanes.push(new Lane(this.make()));
    // Judged by the sample after next, unless nothing was delivered yet (slow start).
    this.rateBeforeGrowth = rate;
    this.settling = rate > 0 ? 1 : 0;
    this.options.onGrow?.(this.lanes.length, { rttMs: this.rttMs, bytesPerSecond: rate });
  }

  /** Closes every connection once its requests are done. */
  async close(): Promise<void> {
    this.stopSampling();
    await Promise.all(this.lanes.map((lane) => lane.dispatcher.close().catch(() => {})));
  }

  /** Drops every connection and whatever it carries. */
  destroy(): void {
    this.stopSampling();
    for (const lane of this.lanes) void lane.dispatcher.destroy().catch(() => {});
  }
}
