import { strict as assert } from 'node:assert';
import { constants as h2constants, createServer, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { HttpStore } from '../src/store/http.js';
import { isOneLineError, runCli } from './helpers/cli.js';

const INFO = { protocol: 1, maxBatchBytes: 64 << 20, maxQueryDigests: 65536, maxChunkBytes: 4 << 20 };
const ENTRY = { path: 'study/series', kind: 'tree', bytes: 1234, mtimeMs: Date.UTC(2026, 0, 2), digest: '00'.repeat(32) };

/**
 * A stand-in server whose `GET /v1/list` misbehaves as told for its first answers, then
 * answers properly: what retries are for, made to happen on cue.
 */
type Misstep = 'break-after-headers' | 'reset' | 'refuse' | '503' | '404' | 'slow';

/** How long a 'slow' answer, and every manifest commit, takes: longer than SHORT_TIMEOUT_MS. */
const SLOW_MS = 600;
const SHORT_TIMEOUT_MS = 200;

describe('requests that fail for a passing reason are tried again', () => {
  let server: Http2Server;
  let url: string;
  let plan: Misstep[] = [];
  let listRequests = 0;
  let commits = 0;
  let sessions = 0;

  before(async () => {
    server = createServer();
    server.on('session', () => sessions++);
    server.on('stream', (stream: ServerHttp2Stream, headers) => {
      stream.on('error', () => {}); // the resets and breaks this server makes itself
      const path = String(headers[':path']);
      if (path === '/v1/info') return json(stream, 200, INFO);
      if (path.startsWith('/v1/manifests/') && headers[':method'] === 'PUT') {
        commits++;
        stream.resume();
        stream.on('end', () => setTimeout(() => json(stream, 200, { kind: 'file', totalBytes: 0, digest: '00'.repeat(32) }), SLOW_MS));
        return;
      }
      if (!path.startsWith('/v1/list')) return json(stream, 404, { code: 'XFER_NOT_FOUND', message: `no such endpoint: ${path}` });
      listRequests++;
      const step = plan.shift();
      if (step === 'break-after-headers') {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.write('{"entries":[');
        setTimeout(() => stream.session?.destroy(), 20);
      } else if (step === 'reset') stream.close(0x2);
      // As Node's server refuses a stream over its limit (CanAddStream).
      else if (step === 'refuse') stream.close(h2constants.NGHTTP2_ENHANCE_YOUR_CALM);
      else if (step === '503') {
        stream.respond({ ':status': 503 });
        stream.end('busy');
      } else if (step === '404') json(stream, 404, { code: 'XFER_NOT_FOUND', message: 'nothing here' });
      else if (step === 'slow') setTimeout(() => json(stream, 200, { entries: [ENTRY] }), SLOW_MS);
      else json(stream, 200, { entries: [ENTRY] });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  const cases: [string, Misstep[]][] = [
    ['a connection that breaks while the answer is read', ['break-after-headers', 'break-after-headers']],
    ['a stream reset before any answer', ['reset']],
    ['a 503 answer', ['503', '503']],
  ];
  for (const [name, steps] of cases) {
    it(`${name}: the request is sent again and the command succeeds`, async () => {
      plan = [...steps];
      listRequests = 0;
      const r = await runCli(['ls', `${url}/`, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).entries, [ENTRY]);
      assert.equal(listRequests, steps.length + 1);
    });
  }

  it('a lasting failure (404) is not sent again', async () => {
    plan = ['404'];
    listRequests = 0;
    const r = await runCli(['ls', `${url}/`]);
    assert.equal(r.code, 3, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.equal(listRequests, 1);
  });

  it('an answer slower than the answer timeout counts as a break and is asked again', async () => {
    plan = ['slow'];
    listRequests = 0;
    const store = await HttpStore.connect(url, { answerTimeoutMs: SHORT_TIMEOUT_MS });
    try {
      assert.deepEqual(await store.list(''), [ENTRY]);
      assert.equal(listRequests, 2);
      assert.equal(store.retriesMade, 1);
    } finally {
      await store.close();
    }
  });

  it('a request the server refuses (stream reset) is tried again on the same connection; the request beside it goes on', async () => {
    plan = ['slow', 'refuse'];
    listRequests = 0;
    const store = await HttpStore.connect(url);
    try {
      const before = sessions;
      const slow = store.list('');
      await new Promise((r) => setTimeout(r, 50)); // the slow one is in progress
      assert.deepEqual(await store.list(''), [ENTRY]);
      assert.deepEqual(await slow, [ENTRY]);
      assert.equal(listRequests, 3, 'the slow request once, the refused one twice');
      assert.equal(store.retriesMade, 1);
      assert.equal(sessions, before, 'no new connection: the refusal was not taken for a broken connection');
    } finally {
      await store.close();
    }
  });

  it('a manifest commit waits for its answer however long the rebuild takes', async () => {
    commits = 0;
    const store = await HttpStore.connect(url, { answerTimeoutMs: SHORT_TIMEOUT_MS });
    try {
      const answer = await store.client.commitManifest('slow.bin', () => Readable.from([Buffer.from('manifest bytes')]));
      assert.equal(answer.kind, 'file');
      assert.equal(commits, 1, 'sent once: no timeout, no retry');
      assert.equal(store.retriesMade, 0);
    } finally {
      await store.close();
    }
  });

  it('--timeout must be a positive number of seconds', async () => {
    const r = await runCli(['ls', `${url}/`, '--timeout', 'soon']);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /--timeout: expected seconds/);
  });

  it('retries spent: one line saying so, with the last failure', async () => {
    plan = ['break-after-headers', 'break-after-headers', 'break-after-headers'];
    listRequests = 0;
    const r = await runCli(['ls', `${url}/`, '--retries', '2']);
    assert.equal(r.code, 14, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /the connection to http:\/\/127\.0\.0\.1:\d+ broke: .* \(gave up after 2 retries\)$/m);
    assert.equal(listRequests, 3);
  });
});

function json(stream: ServerHttp2Stream, status: number, body: unknown): void {
  if (stream.destroyed || stream.closed) return; // a slow answer the client gave up on
  stream.respond({ ':status': status, 'content-type': 'application/json' });
  stream.end(JSON.stringify(body));
}
