import { strict as assert } from 'node:assert';
import { createServer as createH2Server, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startWanRelay } from '../bench/wan-relay.js';
import { push } from '../src/api.js';
import { H2CClient } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import { XferClient } from '../src/store/http/client.js';
import { Connections, MAX_QUEUED_BODY_BYTES } from '../src/store/http/connections.js';
import { isOneLineError, runCli, sha256File, writeRandomFile } from './helpers/cli.js';
import { startRelay, useServer } from './helpers/server.js';

const MiB = 1024 * 1024;

describe('several connections per transfer (--connections)', () => {
  const f = useServer('xfer-connections-');

  /**
   * A stand-in server that answers /v1/info, and every other request 150 ms after its body
   * ended, counting the requests open at once (`most`, which the caller may reset) and the
   * sessions.
   */
  async function standIn(): Promise<{ url: string; most: () => number; reset: () => void; sessions: () => number; close: () => Promise<void> }> {
    const info = { protocol: 1, maxBatchBytes: 64 << 20, maxQueryDigests: 65536, maxChunkBytes: 4 << 20 };
    let open = 0;
    let most = 0;
    let sessions = 0;
    const server: Http2Server = createH2Server();
    server.on('session', () => sessions++);
    server.on('stream', (stream: ServerHttp2Stream, headers) => {
      stream.on('error', () => {});
      if (String(headers[':path']) === '/v1/info') {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        return stream.end(JSON.stringify(info));
      }
      open++;
      most = Math.max(most, open);
      stream.resume();
      stream.on('end', () => setTimeout(() => {
        open--;
        stream.respond({ ':status': 200 });
        stream.end();
      }, 150));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      most: () => most,
      reset: () => {
        most = 0;
      },
      sessions: () => sessions,
      close: () => new Promise<void>((r) => server.close(() => r())),
    };
  }

  it('requests run side by side on one connection: uploads do not wait for each other', async () => {
    const server = await standIn();
    const client = await XferClient.connect(server.url, { connections: 1 });
    try {
      await Promise.all([1, 2, 3, 4].map((i) => client.upload('blake3', Buffer.alloc(1000, i))));
      assert.equal(server.sessions(), 1);
      assert.equal(server.most(), 4, 'four uploads were open at once on the one connection');
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('the bodies a connection holds unanswered stay within MAX_QUEUED_BODY_BYTES; a request waiting for room can be aborted', async () => {
    // Node counts bytes queued on a client's streams against its session memory (10 MB),
    // and over it refuses answers (upload-session-memory).
    const server = await standIn();
    const client = await XferClient.connect(server.url, { connections: 1 });
    try {
      const body = Math.floor(MAX_QUEUED_BODY_BYTES / 2.5); // two fit, a third does not
      await Promise.all([1, 2, 3, 4].map((i) => client.upload('blake3', Buffer.alloc(body, i))));
      assert.equal(server.most(), 2, 'two uploads at most were open at once');
      // One waiting for room, aborted: it fails as an abort, and holds no room afterwards.
      server.reset();
      const first = client.upload('blake3', Buffer.alloc(body, 5));
      const second = client.upload('blake3', Buffer.alloc(body, 6));
      const stop = new AbortController();
      const third = client.upload('blake3', Buffer.alloc(body, 7), stop.signal);
      stop.abort();
      await assert.rejects(third, (err: Error & { code?: string }) => err.code === 'XFER_ABORTED');
      await Promise.all([first, second]);
      await Promise.all([8, 9].map((i) => client.upload('blake3', Buffer.alloc(body, i))));
      assert.equal(server.most(), 2);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('--connections N: a push and a pull spread their requests over N connections', async () => {
    const src = join(f.dir, 'spread.bin');
    await writeRandomFile(src, 12 * MiB, 31);
    const relay = await startRelay(f.server.url);
    try {
      const up = await runCli(['push', src, `${relay.url}/spread.bin`, '--json', '--connections', '3']);
      assert.equal(up.code, 0, up.stderr);
      // A file push also has its stage's connection, beside those of its requests.
      assert.equal(relay.connections(), 3 + 1);
      const out = join(f.dir, 'spread.out');
      const down = await runCli(['pull', `${relay.url}/spread.bin`, out, '--json', '--connections', '3']);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(relay.connections(), 4 + 3);
      assert.equal(await sha256File(out), await sha256File(src));
    } finally {
      await relay.close();
    }
  });

  it('--bwlimit is one total over all the connections, each way', async () => {
    const src = join(f.dir, 'limited.bin');
    await writeRandomFile(src, 16 * MiB, 32);
    const relay = await startRelay(f.server.url);
    try {
      // 16 MiB at 8 MiB/s, less the burst (2 MiB): at least 1.75 s however many connections.
      const up = await runCli(['push', src, `${relay.url}/limited.bin`, '--json', '--bwlimit', '8M', '--connections', '4']);
      assert.equal(up.code, 0, up.stderr);
      assert.ok(relay.connections() >= 4, `${relay.connections()} connections`);
      assert.ok(JSON.parse(up.stdout).seconds >= 1.6, `push took ${JSON.parse(up.stdout).seconds} s`);
      const out = join(f.dir, 'limited.out');
      const before = relay.connections();
      const down = await runCli(['pull', `${relay.url}/limited.bin`, out, '--json', '--bwlimit', '8M', '--connections', '4']);
      assert.equal(down.code, 0, down.stderr);
      assert.equal(relay.connections() - before, 4);
      assert.ok(JSON.parse(down.stdout).seconds >= 1.6, `pull took ${JSON.parse(down.stdout).seconds} s`);
      assert.equal(await sha256File(out), await sha256File(src));
    } finally {
      await relay.close();
    }
  });

  for (const how of ['kill', 'freeze'] as const) {
    it(`a connection that ${how === 'kill' ? 'breaks' : 'stops answering'} mid-transfer is replaced, and the transfer completes`, async () => {
      const src = join(f.dir, `${how}.bin`);
      await writeRandomFile(src, 16 * MiB, how === 'kill' ? 35 : 36);
      const relay = await startRelay(f.server.url);
      try {
        relay.breakOne(how, 3 * MiB);
        const up = await runCli(['push', src, `${relay.url}/${how}.bin`, '--json', '--connections', '2', '--timeout', '2']);
        assert.equal(up.code, 0, up.stderr);
        assert.equal(relay.broken(), 1);
        assert.equal(await sha256File(join(f.root, 'files', `${how}.bin`)), await sha256File(src));
        // Two connections, the stage's, and (at least) the one that took the broken one's place.
        assert.ok(relay.connections() >= 4, `${relay.connections()} connections`);
      } finally {
        await relay.close();
      }
    });
  }

  it('automatic: more connections on a long link whose window holds one connection back, one on loopback', async () => {
    const src = join(f.dir, 'auto.bin');
    await writeRandomFile(src, 10 * MiB, 34);
    // 60 ms round trip; a window of 128 KiB carries about 2 MiB/s per connection: the push
    // lasts past the third sample (the first growth, about 3 s in).
    const wan = await startWanRelay(Number(new URL(f.server.url).port), { rttMs: 60, rateBitsPerSecond: 400_000_000, windowBytes: 128 * 1024, slowStart: false });
    const local = await startRelay(f.server.url);
    try {
      const far = await runCli(['push', src, `http://127.0.0.1:${wan.port}/auto-far.bin`, '--json']);
      assert.equal(far.code, 0, far.stderr);
      // One connection and the stage's, then more.
      assert.ok(wan.connections > 2, `${wan.connections} connections over the long link`);
      const near = await runCli(['push', src, `${local.url}/auto-near.bin`, '--json']);
      assert.equal(near.code, 0, near.stderr);
      assert.equal(local.connections(), 2, 'one connection and the stage\'s on loopback');
    } finally {
      await wan.close();
      await local.close();
    }
  });

  it('refuses a count that is not a whole number from 1 to 8, and a local transfer', async () => {
    const cases: [string[], RegExp][] = [
      [['push', '/etc/hostname', `${f.server.url}/h`, '--connections', '0'], /--connections: expected a whole number from 1 to 8, or auto, got "0"/],
      [['pull', `${f.server.url}/h`, join(f.dir, 'h'), '--connections', 'many'], /--connections: expected a whole number from 1 to 8, or auto, got "many"/],
      [['push', '/etc/hostname', `${f.server.url}/h`, '--connections', '9'], /--connections: expected a whole number from 1 to 8, or auto, got "9"/],
      [['push', '/etc/hostname', join(f.dir, 'local/'), '--connections', '2'], /--connections applies to transfers to or from a server/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, re);
    }
    for (const connections of [0, Number.NaN, 9, 1.5]) {
      await assert.rejects(push('/etc/hostname', `${f.server.url}/h`, { connections }), { name: 'InvalidOptionError', message: 'options.connections must be an integer from 1 to 8' });
    }
  });
});

describe('the automatic count of connections', () => {
  it('doubles only on a long round trip, with more data waiting than the link holds, below the rate limit', async () => {
    // Real undici clients that are never asked for anything (so never connect): the policy alone.
    const made: H2CClient[] = [];
    const make = () => {
      const c = new H2CClient('http://127.0.0.1:9');
      made.push(c);
      return c;
    };
    const MB = 1e6;
    const cases = {
      long: { rttMs: 100, waiting: 8 * MB, delivered: 1 * MB, limit: undefined, expect: 2 },
      short: { rttMs: 2, waiting: 8 * MB, delivered: 1 * MB, limit: undefined, expect: 1 },
      // 64 KB waiting against 10 MB/s x 100 ms: the transfer waits for its own data.
      noBacklog: { rttMs: 100, waiting: 64 * 1024, delivered: 10 * MB, limit: undefined, expect: 1 },
      // 1 MB in the one-second sample against a limit of 1 MB/s.
      atLimit: { rttMs: 100, waiting: 8 * MB, delivered: 1 * MB, limit: 1 * MB, expect: 1 },
    };
    const pools = Object.entries(cases).map(([name, c]) => {
      const pool = new Connections(make, { limitBytesPerSecond: c.limit });
      pool.roundTrip(c.rttMs);
      pool.begin(pool.pick(), c.waiting); // starts the first sample (MIN_SAMPLE_MS: 1 s); two are let pass
      pool.delivered(c.delivered);
      return { name, pool, expect: c.expect };
    });
    try {
      await sleep(1300);
      for (let sample = 2; sample <= 3; sample++) {
        for (const p of pools) p.pool.delivered(cases[p.name as keyof typeof cases].delivered);
        await sleep(1000);
      }
      assert.deepEqual(Object.fromEntries(pools.map((p) => [p.name, p.pool.count])), Object.fromEntries(pools.map((p) => [p.name, p.expect])));
    } finally {
      for (const p of pools) p.pool.destroy();
      await Promise.all(made.map((c) => c.destroy().catch(() => {})));
    }
  });
});
