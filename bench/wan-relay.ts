/**
 * A TCP relay on 127.0.0.1 that makes loopback look like a long fat link (issue 17's WAN
 * scenario, bench/wan.ts): every byte is delayed by half the round trip each way, each
 * direction of the link carries at most `rateBitsPerSecond` (shared by every connection,
 * as one link is), and each connection has a TCP-like window: at most `windowBytes` (and
 * at most its congestion window) sent and not yet acknowledged, an acknowledgement coming
 * back one round trip after the byte left. The congestion window starts at
 * INITIAL_WINDOW_SEGMENTS segments and grows by what is acknowledged (slow start), and
 * falls back to that after an idle spell longer than the retransmission timeout (Linux's
 * tcp_slow_start_after_idle, on by default): what request-and-answer protocols pay on a
 * real long link. No loss, no reordering. Bench code only; its unit test is
 * test/bench-wan-relay.test.ts.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';

/** The seeds' cross-border pair: 173 ms round trip. */
export const WAN_RTT_MS = 173;
/** ... at 100 Mbit/s each way. */
export const WAN_RATE_BITS_PER_SECOND = 100_000_000;
/**
 * A connection's window at most: Linux's default largest receive buffer (tcp_rmem, 6 MiB)
 * of which half is advertised as window. Above the link's bandwidth-delay product at the
 * defaults (2.16 MB), so one connection can fill the link once its window has grown.
 */
export const WAN_WINDOW_BYTES = 3 * 1024 * 1024;
/** Bytes per segment put on the link (an Ethernet MSS). */
export const SEGMENT_BYTES = 1448;
/** Linux's initial congestion window (RFC 6928). */
export const INITIAL_WINDOW_SEGMENTS = 10;
/** Linux's least retransmission timeout, added to the round trip for the idle restart. */
const MIN_RTO_MS = 200;
/** Bytes handed to the link in one step (pacing granularity). */
const STEP_BYTES = 16 * 1024;

export interface WanLinkOptions {
  readonly rttMs?: number;
  readonly rateBitsPerSecond?: number;
  readonly windowBytes?: number;
  /** Model slow start and its restart after idle (default true). */
  readonly slowStart?: boolean;
}

export interface WanRelay {
  /** host:port of the relay's end to connect to. */
  readonly port: number;
  /** Bytes delivered client -> server and server -> client since the start or the last reset(). */
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly connections: number;
  reset(): void;
  close(): Promise<void>;
}

/** One direction of the link: when it is free to start sending the next byte. */
class Link {
  freeAtMs = 0;
  constructor(readonly msPerByte: number) {}
}

/** One direction of one connection: its window, the bytes waiting for it, the bytes on the way. */
class Pipe {
  private waiting: Buffer[] = [];
  private waitingBytes = 0;
  private inFlight = 0;
  private cwnd: number;
  private lastSendMs = 0;
  private readonly deliveries: { at: number; data: Buffer }[] = [];
  private readonly acks: { at: number; bytes: number }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly link: Link,
    private readonly o: Required<WanLinkOptions>,
    private readonly count: (n: number) => void,
  ) {
    this.cwnd = o.slowStart ? INITIAL_WINDOW_SEGMENTS * SEGMENT_BYTES : o.windowBytes;
    from.on('data', (d: Buffer) => {
      this.waiting.push(d);
      this.waitingBytes += d.length;
      this.pump();
    });
    from.on('end', () => {
      this.ended = true;
      this.finishIfDone();
    });
  }

  private window(): number {
    return Math.min(this.cwnd, this.o.windowBytes);
  }

  /** Puts waiting bytes on the link while the window allows; pauses the source when it does not. */
  private pump(): void {
    const now = performance.now();
    if (this.o.slowStart && this.inFlight === 0 && this.lastSendMs > 0 && now - this.lastSendMs > this.o.rttMs + MIN_RTO_MS) {
      this.cwnd = Math.min(this.cwnd, INITIAL_WINDOW_SEGMENTS * SEGMENT_BYTES);
    }
    while (this.waitingBytes > 0 && this.inFlight < this.window()) {
      const n = Math.min(STEP_BYTES, this.window() - this.inFlight, this.waiting[0]!.length);
      const head = this.waiting[0]!;
      const data = head.subarray(0, n);
      if (n === head.length) this.waiting.shift();
      else this.waiting[0] = head.subarray(n);
      this.waitingBytes -= n;
      const sent = Math.max(now, this.link.freeAtMs) + n * this.link.msPerByte;
      this.link.freeAtMs = sent;
      this.deliveries.push({ at: sent + this.o.rttMs / 2, data });
      this.acks.push({ at: sent + this.o.rttMs, bytes: n });
      this.inFlight += n;
      this.lastSendMs = now;
    }
    if (this.waitingBytes > 0) this.from.pause();
    else this.from.resume();
    this.arm();
  }

  private arm(): void {
    const next = Math.min(this.deliveries[0]?.at ?? Infinity, this.acks[0]?.at ?? Infinity);
    clearTimeout(this.timer);
    this.timer = undefined;
    if (next === Infinity) return this.finishIfDone();
    this.timer = setTimeout(() => this.fire(), Math.max(0, next - performance.now()));
  }

  private fire(): void {
    const now = performance.now();
    while (this.deliveries.length > 0 && this.deliveries[0]!.at <= now) {
      const { data } = this.deliveries.shift()!;
      this.count(data.length);
      if (!this.to.destroyed) this.to.write(data);
    }
    let acked = 0;
    while (this.acks.length > 0 && this.acks[0]!.at <= now) acked += this.acks.shift()!.bytes;
    if (acked > 0) {
      this.inFlight -= acked;
      if (this.o.slowStart) this.cwnd = Math.min(this.o.windowBytes, this.cwnd + acked);
      this.lastSendMs = now;
    }
    this.pump();
  }

  private finishIfDone(): void {
    if (this.ended && this.waitingBytes === 0 && this.deliveries.length === 0 && !this.to.destroyed) this.to.end();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** Starts a relay on 127.0.0.1 (a free port) to 127.0.0.1:`targetPort`. */
export async function startWanRelay(targetPort: number, options: WanLinkOptions = {}): Promise<WanRelay> {
  const o: Required<WanLinkOptions> = {
    rttMs: options.rttMs ?? WAN_RTT_MS,
    rateBitsPerSecond: options.rateBitsPerSecond ?? WAN_RATE_BITS_PER_SECOND,
    windowBytes: options.windowBytes ?? WAN_WINDOW_BYTES,
    slowStart: options.slowStart ?? true,
  };
  if (!(o.rttMs >= 0) || !(o.rateBitsPerSecond > 0) || !(o.windowBytes >= SEGMENT_BYTES)) throw new Error(`bad WAN link options ${JSON.stringify(o)}`);
  const up = new Link(8000 / o.rateBitsPerSecond);
  const down = new Link(8000 / o.rateBitsPerSecond);
  const stats = { up: 0, down: 0, connections: 0 };
  const sockets = new Set<Socket>();
  const pipes = new Set<Pipe>();
  // Half-open allowed: an end (FIN) from one side is passed on only after the bytes still
  // on the way were delivered; a reset or error cuts both sides at once.
  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    stats.connections++;
    const upstream = connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
    let open = 2;
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', (hadError: boolean) => {
        sockets.delete(s);
        if (hadError) {
          client.destroy();
          upstream.destroy();
        }
        if (--open > 0 && !hadError) return;
        for (const p of pair) {
          p.stop();
          pipes.delete(p);
        }
      });
    }
    const pair = [
      new Pipe(client, upstream, up, o, (n) => (stats.up += n)),
      new Pipe(upstream, client, down, o, (n) => (stats.down += n)),
    ];
    for (const p of pair) pipes.add(p);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get bytesUp() {
      return stats.up;
    },
    get bytesDown() {
      return stats.down;
    },
    get connections() {
      return stats.connections;
    },
    reset() {
      stats.up = 0;
      stats.down = 0;
      stats.connections = 0;
    },
    async close() {
      for (const p of pipes) p.stop();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
