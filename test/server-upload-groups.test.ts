/**
 * Uploads re-hashed in groups off the main thread (server/routes/chunks.ts upload,
 * hash/digest.ts digestsOfAsync over native/blake3_tree.c blake3HashManyAsync): the
 * digests are digestOf's, native or twin, and a group keeps the one-record-at-a-time
 * outcome: records before a bad one stored, the bad one and those after it not.
 */
import { strict as assert } from 'node:assert';
import { connect, createServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { BODY_BACKLOG_BYTES, consumeBody } from '../src/server/body.js';
import { MAX_CHUNK_BYTES } from '../src/server/limits.js';
import { digestOf, digestsOfAsync } from '../src/hash/digest.js';
import { usableAddon } from '../src/native/addon.js';
import { pseudoRandom } from './helpers/gen.js';
import { withTwin } from './helpers/native.js';
import { rawRequest, useServer } from './helpers/server.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Sizes around BLAKE3's chunk and block edges, a frame, a typical chunk, and over a MiB. */
const SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 16 * KiB + 1, 64 * KiB + 3, MiB + 7];

/** One chunk record of an upload body: u32 LE length, 32-byte digest, the bytes. */
function record(data: Buffer, digest = digestOf('blake3', data)): Buffer {
  const head = Buffer.alloc(36);
  head.writeUInt32LE(data.length, 0);
  digest.copy(head, 4);
  return Buffer.concat([head, data]);
}

/** Which of `digests` the server lacks (chunks/missing: bit i set = missing). */
async function missing(url: string, digests: Buffer[]): Promise<boolean[]> {
  const r = await rawRequest(url, 'POST', '/v1/chunks/missing?algorithm=blake3', Buffer.concat(digests));
  assert.equal(r.status, 200);
  return digests.map((_, i) => ((r.body[i >> 3]! >> (i & 7)) & 1) === 1);
}

describe('digestsOfAsync', () => {
  it("gives digestOf's digests, natively and by its twin, for views at any offset and every size", async () => {
    const slab = pseudoRandom(2 * MiB, 11);
    // Views at odd offsets of one slab, as an upload's scratch holds them.
    const list = SIZES.map((n, i) => slab.subarray(3 * i + 1, 3 * i + 1 + n));
    const expected = list.map((d) => digestOf('blake3', d).toString('hex'));
    if (usableAddon()?.blake3HashManyAsync) assert.deepEqual((await digestsOfAsync('blake3', list)).map((d) => d.toString('hex')), expected);
    assert.deepEqual(await withTwin(async () => (await digestsOfAsync('blake3', list)).map((d) => d.toString('hex'))), expected);
    assert.deepEqual((await digestsOfAsync('sha256', list)).map((d) => d.toString('hex')), list.map((d) => digestOf('sha256', d).toString('hex')));
    assert.deepEqual(await digestsOfAsync('blake3', []), []);
  });

  it('is native where the addon is built (CI builds it: XFER_REQUIRE_NATIVE=1)', (t) => {
    if (process.env.XFER_REQUIRE_NATIVE !== '1' && !usableAddon()) return t.diagnostic('no native addon here');
    assert.equal(typeof usableAddon()?.blake3HashManyAsync, 'function');
  });
});

describe('uploads re-hashed in groups', () => {
  const f = useServer('xfer-upload-groups-');

  it('a batch whose middle chunk does not match its digest is 422 naming it: the chunks before it are stored, it and those after are not', async () => {
    // Five 2 KB chunks in one body, one HTTP/2 frame: taken and hashed as one group. (Larger
    // bodies answered early leave the server's close waiting out its grace: not this test's subject.)
    const chunks = [0, 1, 2, 3, 4].map((i) => pseudoRandom(2000, 200 + i));
    const digests = chunks.map((c) => digestOf('blake3', c));
    const claimed = Buffer.from(digests[2]!);
    const body = Buffer.concat(chunks.map((c, i) => record(i === 2 ? pseudoRandom(2000, 999) : c, i === 2 ? claimed : undefined)));
    const r = await rawRequest(f.server.url, 'POST', '/v1/chunks?algorithm=blake3', body);
    assert.equal(r.status, 422, r.body.toString());
    const answer = JSON.parse(r.body.toString()) as { code: string; message: string };
    assert.equal(answer.code, 'XFER_CHUNK_CORRUPT');
    assert.match(answer.message, new RegExp(claimed.toString('hex')));
    assert.deepEqual(await missing(f.server.url, digests), [false, false, true, true, true]);
  });

  it('records before a malformed one in the same frames are stored, and the body is 400', async () => {
    const chunks = [0, 1].map((i) => pseudoRandom(1000, 300 + i));
    const bad = Buffer.alloc(36);
    bad.writeUInt32LE(MAX_CHUNK_BYTES + 1, 0);
    const r = await rawRequest(f.server.url, 'POST', '/v1/chunks?algorithm=blake3', Buffer.concat([...chunks.map((c) => record(c)), bad]));
    assert.equal(r.status, 400, r.body.toString());
    assert.deepEqual(await missing(f.server.url, chunks.map((c) => digestOf('blake3', c))), [false, false]);
  });

  it('a batch of many chunks, some spanning frames and some within one, is stored whole and answered with its counts', async () => {
    const chunks = Array.from({ length: 40 }, (_, i) => pseudoRandom(i % 3 === 0 ? 3000 + i : 70_000 + 1000 * i, 400 + i));
    const body = Buffer.concat([...chunks, chunks[0]!].map((c) => record(c)));
    const r = await rawRequest(f.server.url, 'POST', '/v1/chunks?algorithm=blake3', body);
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(JSON.parse(r.body.toString()), { stored: 40, present: 1 });
    const digests = chunks.map((c) => digestOf('blake3', c));
    assert.deepEqual(await missing(f.server.url, digests), digests.map(() => false));
    // Stored bytes are the chunks' own (a scratch reused too early would mix them up).
    for (const i of [1, 2, 20, 39]) {
      const got = await rawRequest(f.server.url, 'POST', '/v1/chunks/fetch?algorithm=blake3', digests[i]!);
      assert.equal(got.status, 200);
      assert.ok(got.body.subarray(36).equals(chunks[i]!), `chunk ${i}`);
    }
  });
});

describe('consumeBody', () => {
  it('hands the pieces that came while its consumer was busy over in one call, whole and in order, and holds no more than about BODY_BACKLOG_BYTES', async () => {
    const body = pseudoRandom(4 * MiB, 500);
    const calls: number[] = [];
    const got: Buffer[] = [];
    let maxBytesPerCall = 0;
    const server = createServer((req: Http2ServerRequest, res: Http2ServerResponse) => {
      // A consumer that is busy 5 ms after every call: the frames arriving meanwhile queue up.
      consumeBody(req, 8 * MiB, 'test body', (pieces) => {
        calls.push(pieces.length);
        got.push(...pieces);
        maxBytesPerCall = Math.max(maxBytesPerCall, pieces.reduce((n, p) => n + p.length, 0));
        return new Promise((r) => setTimeout(r, 5));
      }).then(() => res.end('ok'), (err: Error) => res.end(err.message));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/' });
        let text = '';
        req.setEncoding('utf8').on('data', (d: string) => (text += d));
        req.on('end', () => resolve(text));
        req.on('error', reject);
        req.end(body);
      });
      assert.equal(answer, 'ok');
      assert.ok(Buffer.concat(got).equals(body), 'every byte, in order');
      assert.ok(Math.max(...calls) > 1, `some call got several pieces (calls: ${calls.length}, most pieces in one: ${Math.max(...calls)})`);
      // Pausing takes effect by the next piece of at most one 16 KiB frame... or a socket read's worth.
      assert.ok(maxBytesPerCall <= BODY_BACKLOG_BYTES + 256 * KiB, `at most about BODY_BACKLOG_BYTES in one call (${maxBytesPerCall})`);
    } finally {
      session.close();
      await new Promise((r) => server.close(r));
    }
  });
});
