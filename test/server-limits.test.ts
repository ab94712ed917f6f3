import { strict as assert } from 'node:assert';
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { SUMS_REQUEST_RECORD_BYTES } from '../src/protocol/delta.js';
import { STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../src/protocol/stage-format.js';
import { createServer, type ServerOptions, type XferServer } from '../src/server/server.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest } from './helpers/server.js';
import { defaultMaxConnections, MAX_BUSY_CONNECTIONS, MAX_CONNECTIONS, RESERVED_DESCRIPTORS, SESSION_WINDOW_BYTES, STREAM_WINDOW_BYTES } from '../src/server/limits.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A server with the given (test-shortened) limits in a temporary root, for one describe(). */
function useLimitedServer(options: Omit<ServerOptions, 'root' | 'port'>): { readonly root: string; readonly server: XferServer } {
  const f = {} as { dir: string; root: string; server: XferServer };
  before(async () => {
    f.dir = await mkdtemp(join(tmpdir(), 'xfer-limits-'));
    f.root = join(f.dir, 'root');
    f.server = await createServer({ root: f.root, port: 0, ...options });
  });
  after(async () => {
    await f.server?.close(1000);
    if (f.dir) await rm(f.dir, { recursive: true, force: true });
  });
  return f;
}

/** Resolves with the ms it took the server to close `socket`; fails after `withinMs`. */
function closedWithin(socket: Socket, withinMs: number): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server left the connection open for ${withinMs} ms`)), withinMs);
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

function tcp(url: string): Promise<Socket> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = netConnect(Number(u.port), u.hostname, () => resolve(s));
    s.on('error', reject);
  });
}

/** A request left open with its headers sent; resolves with its response status, if any. */
function openRequest(session: ClientHttp2Session, path: string, method = 'POST'): { req: ClientHttp2Stream; answer: Promise<{ status: number; headers: Record<string, unknown>; body: string }> } {
  const req = session.request({ ':method': method, ':path': path });
  const answer = new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    let status = 0;
    let headers: Record<string, unknown> = {};
    let body = '';
    req.on('response', (h) => {
      status = Number(h[':status']);
      headers = h;
    });
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => resolve({ status, headers, body }));
    req.on('close', () => resolve({ status, headers, body }));
    req.on('error', reject);
  });
  return { req, answer };
}

describe('connections are bounded in time', () => {
  const fx = useLimitedServer({ headersTimeoutMs: 300, idleTimeoutMs: 400, bodyTimeoutMs: 400 });

  it('a connection that sends nothing, or half a preface, is closed by the server', async () => {
    const silent = await tcp(fx.server.url);
    const partial = await tcp(fx.server.url);
    partial.write('PRI * HTTP/2.0\r\n');
    const [a, b] = await Promise.all([closedWithin(silent, 3000), closedWithin(partial, 3000)]);
    assert.ok(a >= 250 && b >= 250, `closed after ${a} and ${b} ms`);
  });

  it('a connection idle after its requests is closed; a new one serves again', async () => {
    const session = connect(fx.server.url);
    session.on('error', () => {});
    const closed = new Promise<number>((r) => {
      const t0 = Date.now();
      session.on('close', () => r(Date.now() - t0));
    });
    const { req, answer } = openRequest(session, '/v1/list', 'GET');
    req.end();
    assert.equal((await answer).status, 200);
    const ms = await Promise.race([closed, sleep(3000).then(() => -1)]);
    assert.ok(ms >= 0, 'the idle connection was not closed');
    assert.equal((await rawRequest(fx.server.url, 'GET', '/v1/info')).status, 200);
  });

  it('an upload trickling a byte at a time is answered 408 and cut', async () => {
    const session = connect(fx.server.url);
    session.on('error', () => {});
    try {
      const { req, answer } = openRequest(session, '/v1/chunks?algorithm=blake3');
      req.on('error', () => {});
      const trickle = setInterval(() => req.write(Buffer.from([0])), 100);
      const t0 = Date.now();
      const r = await Promise.race([answer, sleep(4000).then(() => undefined)]);
      clearInterval(trickle);
      assert.ok(r, 'the trickling upload was still open after 4 s');
      assert.equal(r.status, 408, r.body);
      assert.equal(JSON.parse(r.body).code, 'XFER_TIMEOUT');
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      session.destroy();
    }
  });
});

describe('an answer the client stops reading', () => {
  const fx = useLimitedServer({ bodyTimeoutMs: 400 });

  it('is reset once it has taken nothing for the body timeout', { timeout: 8000 }, async () => {
    const chunks = [1, 2, 3, 4].map((seed) => pseudoRandom(256 * 1024, 600 + seed));
    const records = chunks.map((c) => {
      const head = Buffer.alloc(36);
      head.writeUInt32LE(c.length, 0);
      digestOf('blake3', c).copy(head, 4);
      return Buffer.concat([head, c]);
    });
    assert.equal((await rawRequest(fx.server.url, 'POST', '/v1/chunks?algorithm=blake3', Buffer.concat(records))).status, 200);
    const session = connect(fx.server.url);
    session.on('error', () => {});
    try {
      const req = session.request({ ':method': 'POST', ':path': '/v1/chunks/fetch?algorithm=blake3' });
      req.on('error', () => {});
      req.pause(); // reads nothing: the server's flow-control window stays shut
      req.end(Buffer.concat(chunks.map((c) => digestOf('blake3', c))));
      const t0 = Date.now();
      const code = await new Promise<number>((r) => req.on('close', () => r(req.rstCode ?? -1)));
      assert.equal(code, 8, 'reset with CANCEL');
      assert.ok(Date.now() - t0 < 4000);
    } finally {
      session.destroy();
    }
  });
});

describe('a stage waiting for a chunk that never comes', () => {
  const fx = useLimitedServer({ stageTimeoutMs: 300 });

  it('is answered 408 and its staging copy removed', { timeout: 5000 }, async () => {
    const data = pseudoRandom(100_000, 31);
    const record = Buffer.alloc(STAGE_RECORD_BYTES);
    record.writeUInt32BE(data.length, 0);
    digestOf('blake3', data).copy(record, 4); // never uploaded
    const end = Buffer.alloc(STAGE_END_BYTES);
    end.writeBigUInt64BE(BigInt(data.length), 4);
    digestOf('blake3', data).copy(end, 12);
    const r = await rawRequest(fx.server.url, 'POST', `/v1/stage/dir/never.bin?algorithm=blake3&mode=420&mtimeMs=0&size=${data.length}`, Buffer.concat([record, end]));
    assert.equal(r.status, 408, r.body.toString());
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_TIMEOUT');
    const left = await readdir(join(fx.root, 'files', 'dir')).catch(() => [] as string[]);
    assert.deepEqual(left, [], 'no staging copy is left');
  });
});

describe('connection and request caps', () => {
  const fx = useLimitedServer({ maxConnections: 2, maxStreams: 2, headersTimeoutMs: 0, idleTimeoutMs: 0 });

  it('a connection over the cap is answered 503 with Retry-After; once the idle ones go, requests are served', async () => {
    const idle = [await tcp(fx.server.url), await tcp(fx.server.url)];
    await sleep(50);
    const over = await rawRequest(fx.server.url, 'GET', '/v1/info');
    assert.equal(over.status, 503, over.body.toString());
    assert.equal(JSON.parse(over.body.toString()).code, 'XFER_BUSY');
    for (const s of idle) s.destroy();
    await sleep(100);
    assert.equal((await rawRequest(fx.server.url, 'GET', '/v1/info')).status, 200);
  });

  it('requests beyond the server-wide cap are answered 503 with Retry-After', { timeout: 5000 }, async () => {
    const session = connect(fx.server.url);
    session.on('error', () => {});
    try {
      const held = [openRequest(session, '/v1/chunks?algorithm=blake3'), openRequest(session, '/v1/chunks?algorithm=blake3')];
      for (const h of held) h.req.on('error', () => {});
      await sleep(100);
      const third = openRequest(session, '/v1/chunks/missing?algorithm=blake3');
      third.req.end(Buffer.alloc(32));
      const r = await third.answer;
      assert.equal(r.status, 503, r.body);
      assert.equal(r.headers['retry-after'], '2');
      for (const h of held) h.req.end();
      for (const h of held) assert.equal((await h.answer).status, 200);
    } finally {
      session.destroy();
    }
  });
});

describe('answers are bounded by their requests', () => {
  const fx = useLimitedServer({});

  it('block sums of 8192 largest chunks (a 360 KiB request, a 1 GiB answer) are refused with 413', async () => {
    const records = 8192;
    const body = Buffer.alloc(records * SUMS_REQUEST_RECORD_BYTES);
    for (let i = 0; i < records; i++) body.writeUInt32LE(16 * 1024 * 1024, i * SUMS_REQUEST_RECORD_BYTES + 32 + 8);
    const r = await rawRequest(fx.server.url, 'POST', '/v1/chunks/sums?algorithm=blake3', body);
    assert.equal(r.status, 413, `${r.status}, ${r.body.length} bytes`);
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_TOO_LARGE');
  });
});

describe('what a client may send ahead of the server', () => {
  const fx = useLimitedServer({});

  it('is at most 4 MiB per stream and 32 MiB per connection (HTTP/2 flow control): data the server has not processed yet is held in its memory', async () => {
    const session = connect(fx.server.url);
    try {
      await new Promise<void>((resolve, reject) => {
        session.once('remoteSettings', () => resolve());
        session.once('error', reject);
      });
      // A ping's answer comes after the connection's WINDOW_UPDATE the server sent with its settings.
      await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
      const stream = session.remoteSettings.initialWindowSize!;
      const connection = session.state.remoteWindowSize!;
      assert.equal(stream, STREAM_WINDOW_BYTES);
      assert.equal(connection, SESSION_WINDOW_BYTES);
      assert.ok(stream <= 4 * 1024 * 1024 && stream >= 1024 * 1024, `stream window ${stream}`);
      assert.ok(connection <= 32 * 1024 * 1024 && connection >= 4 * stream, `connection window ${connection}`);
    } finally {
      session.close();
    }
  });
});

describe('the default connection cap', () => {
  it('fits the open-files limit with descriptors to spare, and is MAX_CONNECTIONS where the limit is high or unreadable', () => {
    const limits = (soft: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 524288               files\n`;
    assert.equal(defaultMaxConnections(limits('1024')), 1024 - RESERVED_DESCRIPTORS - MAX_BUSY_CONNECTIONS);
    assert.equal(defaultMaxConnections(limits('1048576')), MAX_CONNECTIONS);
    assert.equal(defaultMaxConnections(limits('unlimited')), MAX_CONNECTIONS);
    assert.equal(defaultMaxConnections(limits('100')), 16);
    assert.equal(defaultMaxConnections('nothing here'), MAX_CONNECTIONS);
  });
});
