import { strict as assert } from 'node:assert';
import { connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { describe, it } from 'node:test';
import { NODE_MAX_SESSION_INVALID_FRAMES } from './harness/fuzz.js';
import { rawRequest, useServer } from './helpers/server.js';

/** Requests at once (the server allows 128 streams per connection). */
const BATCH = 100;

/** A request HTTP/2 forbids (RFC 9113 section 8.3.1: no space in :path); resolves with its stream's reset code. */
function malformed(session: ClientHttp2Session): Promise<number> {
  return new Promise((resolve) => {
    const s = session.request({ ':method': 'GET', ':path': '/v1/info x' });
    s.on('error', () => {});
    s.on('close', () => resolve(s.rstCode ?? -1));
    s.end();
  });
}

function info(session: ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':method': 'GET', ':path': '/v1/info' });
    s.on('response', (h) => resolve(Number(h[':status'])));
    s.on('error', reject);
    s.resume();
    s.end();
  });
}

describe('malformed HTTP/2 requests (what the fuzzer sends on purpose)', () => {
  const fx = useServer('xfer-invalid-frames-');

  it(`each is reset with PROTOCOL_ERROR; past ${NODE_MAX_SESSION_INVALID_FRAMES} on one connection, Node's http2 closes that connection (GOAWAY INTERNAL_ERROR) and the server serves new ones`, async () => {
    const session = connect(fx.server.url);
    session.on('error', () => {});
    let goaway: { code: number; after: number } | undefined;
    let sent = 0;
    session.on('goaway', (code: number) => (goaway ??= { code, after: sent }));
    try {
      while (sent < NODE_MAX_SESSION_INVALID_FRAMES) {
        const n = Math.min(BATCH, NODE_MAX_SESSION_INVALID_FRAMES - sent);
        sent += n;
        const codes = await Promise.all(Array.from({ length: n }, () => malformed(session)));
        assert.deepEqual([...new Set(codes)], [h2.NGHTTP2_PROTOCOL_ERROR]);
      }
      assert.equal(goaway, undefined, `the connection stays open up to ${NODE_MAX_SESSION_INVALID_FRAMES} malformed requests`);
      assert.equal(await info(session), 200, 'and still serves');
      for (let i = 0; i < 10 && !goaway; i++) {
        sent++;
        await malformed(session);
      }
      const closed = goaway as { code: number; after: number } | undefined; // set by the listener
      assert.ok(closed, `a few more close it (after ${sent})`);
      assert.equal(closed.code, h2.NGHTTP2_INTERNAL_ERROR, 'with the code the fuzzer recognizes');
      assert.ok(closed.after > NODE_MAX_SESSION_INVALID_FRAMES, 'not before the limit');
    } finally {
      session.destroy();
    }
    assert.equal((await rawRequest(fx.server.url, 'GET', '/v1/info')).status, 200);
  });
});
