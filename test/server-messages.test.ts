import { strict as assert } from 'node:assert';
import { createServer as createH2Server } from 'node:http2';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { IoError } from '../src/core/errors.js';
import { DELTA_HEADER_BYTES } from '../src/protocol/delta.js';
import { sendErrorAnswer } from '../src/server/handler.js';
import { createServer } from '../src/server/server.js';
import { rawRequest } from './helpers/server.js';

describe('error messages tell clients nothing about the server machine', () => {
  it('host name and process id (in staging and temp names) are scrubbed where errors become answers', async (t) => {
    const staging = `/srv/files/.xfer-a.bin.${hostname()}~${process.pid}-0a1b2c3d4e5f.tmp`;
    const temp = `/srv/store/tmp/${process.pid}-0a1b2c3d4e5f-7.tmp`;
    const server = createH2Server((_req, res) => sendErrorAnswer(res, new IoError(`${staging}: write failed; ${temp}: rename failed`)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    const r = await rawRequest(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'GET', '/');
    assert.equal(r.status, 500);
    const { message } = JSON.parse(r.body.toString()) as { message: string };
    assert.ok(!message.includes(`${hostname()}~`), message);
    assert.ok(!message.includes(String(process.pid)), message);
    assert.match(message, /\.xfer-a\.bin\.<host>~<pid>-0a1b2c3d4e5f\.tmp: write failed; .*<pid>-0a1b2c3d4e5f-7\.tmp/);
  });

  it('with a relative root, no path built from the working directory reaches a client', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-messages-'));
    const server = await createServer({ root: relative(process.cwd(), join(dir, 'root')), port: 0 });
    t.after(async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    });
    // A delta against a base the server never stored: 404 XFER_CHUNK_MISSING naming its store.
    const record = Buffer.concat([Buffer.alloc(DELTA_HEADER_BYTES), Buffer.alloc(1), Buffer.alloc(2048)]);
    record.fill(7, 32, 64);
    record.writeUInt32LE(2048, 72);
    const r = await rawRequest(server.url, 'POST', '/v1/chunks/delta?algorithm=blake3', record);
    assert.equal(r.status, 404, r.body.toString());
    const { message } = JSON.parse(r.body.toString()) as { message: string };
    assert.ok(!message.includes(dir) && !message.includes(process.cwd()), message);
    assert.match(message, /the server's store/);
  });
});
