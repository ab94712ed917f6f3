/**
 * The bench's WAN relay (bench/wan-relay.ts) delays, paces and windows what it carries as
 * configured: a round trip takes the configured delay, a stream is carried at the
 * configured rate, and one connection's window caps it at a window per round trip. The
 * relay must never be faster than configured (tight lower bounds); timers fire late on a
 * loaded machine (seen: +33% at a load average of 28 on 2 cores), so the upper bounds are
 * twice the configured figure.
 */
import { strict as assert } from 'node:assert';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startWanRelay } from '../bench/wan-relay.js';

/** A TCP server on 127.0.0.1 with `handler` for each connection. */
async function listen(handler: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Sends `bytes` through a relay to a counting server; resolves with the ms until the server had them all. */
async function timeToCarry(port: number, bytes: number, sinkDone: Promise<number>): Promise<number> {
  const started = performance.now();
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.end(Buffer.alloc(bytes, 7));
  const done = await sinkDone;
  socket.destroy();
  return done - started;
}

describe('the bench WAN relay', () => {
  let echo: { server: Server; port: number };
  let sink: { server: Server; port: number };
  let sinkDone: (ms: number) => void = () => {};
  before(async () => {
    echo = await listen((s) => s.pipe(s));
    sink = await listen((s) => {
      s.resume();
      s.on('end', () => {
        sinkDone(performance.now());
        s.end();
      });
    });
  });
  after(async () => {
    for (const { server } of [echo, sink]) {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a one-byte round trip takes the configured round-trip time', async () => {
    const relay = await startWanRelay(echo.port, { rttMs: 100, slowStart: false });
    try {
      const socket = connect(relay.port, '127.0.0.1');
      await new Promise<void>((r) => socket.once('connect', () => r()));
      const times: number[] = [];
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        socket.write('x');
        await new Promise<void>((r) => socket.once('data', () => r()));
        times.push(performance.now() - started);
      }
      socket.destroy();
      const shown = `round trips of ${times.map(Math.round).join(', ')} ms`;
      assert.ok(Math.min(...times) >= 99, shown);
      assert.ok(Math.min(...times) < 200, shown);
    } finally {
      await relay.close();
    }
  });

  it('carries a stream at the configured rate', async () => {
    const relay = await startWanRelay(sink.port, { rttMs: 20, rateBitsPerSecond: 8_000_000, slowStart: false, windowBytes: 8 * 1024 * 1024 });
    try {
      const done = new Promise<number>((r) => (sinkDone = r));
      const ms = await timeToCarry(relay.port, 1_000_000, done);
      // 1 MB at 1 MB/s, plus half a round trip.
      assert.ok(ms >= 1000 && ms < 2000, `1 MB at 8 Mbit/s took ${Math.round(ms)} ms`);
      assert.equal(relay.bytesUp, 1_000_000);
    } finally {
      await relay.close();
    }
  });

  it('caps one connection at a window per round trip', async () => {
    const relay = await startWanRelay(sink.port, { rttMs: 100, rateBitsPerSecond: 1e9, windowBytes: 64 * 1024, slowStart: false });
    try {
      const done = new Promise<number>((r) => (sinkDone = r));
      const ms = await timeToCarry(relay.port, 10 * 64 * 1024, done);
      // Ten windows: the tenth leaves after nine round trips and arrives half a round trip later.
      assert.ok(ms >= 940 && ms < 1900, `10 windows of 64 KiB at 100 ms took ${Math.round(ms)} ms`);
    } finally {
      await relay.close();
    }
  });
});
