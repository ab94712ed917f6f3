import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HTTP_STATUS } from '../src/core/errors.js';
import { digestOf } from '../src/hash/digest.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { ManifestWriter } from '../src/manifest/writer.js';
import { createServer } from '../src/server/server.js';
import { STAGE_RECORD_BYTES } from '../src/protocol/stage-format.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

function chunkRecord(data: Buffer): Buffer {
  const head = Buffer.alloc(4 + 32);
  head.writeUInt32LE(data.length, 0);
  digestOf('blake3', data).copy(head, 4);
  return Buffer.concat([head, data]);
}

function errorOf(r: { status: number; body: Buffer }): { status: number; code: string; message: string } {
  const b = JSON.parse(r.body.toString()) as { code: string; message: string };
  return { status: r.status, code: b.code, message: b.message };
}

describe('the server answers what clients get wrong with the documented 4xx', () => {
  const fx = useServer('xfer-status-');

  it('an empty chunk record is stored under the empty content\'s digest; under another it is 422, not an internal error', async () => {
    const wrong = await rawRequest(fx.server.url, 'POST', '/v1/chunks?algorithm=blake3', Buffer.alloc(4 + 32));
    assert.deepEqual([wrong.status, errorOf(wrong).code], [422, 'XFER_CHUNK_CORRUPT'], wrong.body.toString());
    const empty = chunkRecord(Buffer.alloc(0));
    const r = await rawRequest(fx.server.url, 'POST', '/v1/chunks?algorithm=blake3', empty);
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(JSON.parse(r.body.toString()), { stored: 1, present: 0 });
  });

  it('a stage list without its end record is answered 400 at once, even while it waits for a chunk', { timeout: 8000 }, async () => {
    const record = Buffer.alloc(STAGE_RECORD_BYTES);
    record.writeUInt32BE(1000, 0);
    digestOf('blake3', pseudoRandom(1000, 404)).copy(record, 4); // never uploaded
    const r = await rawRequest(fx.server.url, 'POST', '/v1/stage/noend.bin?algorithm=blake3&mode=420&mtimeMs=0&size=1000', record);
    assert.deepEqual([r.status, errorOf(r).code], [400, 'XFER_INVALID_ARGUMENT'], r.body.toString());
  });

  it('a manifest whose chunk length disagrees with the stored chunk is 422 XFER_VERIFY_FAILED', async () => {
    const chunk = pseudoRandom(1000, 405);
    const up = await rawRequest(fx.server.url, 'POST', '/v1/chunks?algorithm=blake3', chunkRecord(chunk));
    assert.equal(up.status, 200, up.body.toString());
    const file = join(fx.dir, 'liar.manifest');
    const claimed = Buffer.concat([chunk, Buffer.alloc(1)]);
    const w = await ManifestWriter.create(file, { kind: 'file', digestAlgorithm: 'blake3', chunker: DEFAULT_CHUNKER });
    await w.beginEntry({ type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: claimed.length });
    await w.addChunks([{ length: claimed.length, digest: digestOf('blake3', chunk) }]);
    await w.endEntry(claimed.length, digestOf('blake3', claimed));
    await w.finish();
    const r = await rawRequest(fx.server.url, 'PUT', '/v1/manifests/liar.bin', await readFile(file));
    assert.deepEqual([r.status, errorOf(r).code], [422, 'XFER_VERIFY_FAILED'], r.body.toString());
  });
});

describe('authentication', () => {
  it('the Bearer scheme is case-insensitive (RFC 7235), the token is not', async (t) => {
    const dir = join((await import('node:os')).tmpdir(), `xfer-auth-${process.pid}`);
    const server = await createServer({ root: dir, port: 0, token: 'Tok3n' });
    t.after(async () => {
      await server.close();
      await (await import('node:fs/promises')).rm(dir, { recursive: true, force: true });
    });
    for (const auth of ['Bearer Tok3n', 'bearer Tok3n', 'BEARER Tok3n']) {
      assert.equal((await rawRequest(server.url, 'GET', '/v1/list', undefined, { authorization: auth })).status, 200, auth);
    }
    for (const auth of ['bearer tok3n', 'Basic Tok3n', 'Tok3n', '']) {
      assert.equal((await rawRequest(server.url, 'GET', '/v1/list', undefined, { authorization: auth })).status, 401, auth);
    }
  });

  it('an empty token is refused instead of serving without authentication', async () => {
    await assert.rejects(createServer({ root: '/nonexistent-never-created', port: 0, token: '' }), { code: 'XFER_INVALID_ARGUMENT' });
    const r = await runCli(['serve', '--root', '/nonexistent-never-created', '--port', '0', '--token', '']);
    assert.equal(r.code, 2, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /token is empty/);
  });
});

describe('docs/PROTOCOL.md', () => {
  it('its error table lists every code with the status HTTP_STATUS gives it', async () => {
    const doc = await readFile(new URL('../../docs/PROTOCOL.md', import.meta.url), 'utf8');
    const rows = doc.split('\n').filter((l) => /^\| \d{3} \|/.test(l));
    for (const [code, status] of Object.entries(HTTP_STATUS)) {
      assert.ok(rows.some((row) => row.startsWith(`| ${status} |`) && row.includes(`\`${code}\``)), `${code} -> ${status} is not in the table`);
    }
    for (const row of rows) {
      const status = Number(row.slice(2, 5));
      for (const m of row.matchAll(/`(XFER_[A-Z_]+)`/g)) assert.equal(HTTP_STATUS[m[1] as keyof typeof HTTP_STATUS], status, row);
    }
  });
});
