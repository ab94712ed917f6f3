import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, startServeProcess } from './helpers/server.js';

const TOKEN = 'do-not-log-me-7c1f';

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('xfer serve logs', () => {
  it('one JSON line per request (method, path, status, bytes in and out, ms) and per commit; never the token', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-log-'));
    const serve = await startServeProcess(['--root', join(dir, 'root'), '--port', '0', '--log-format', 'json', '--token', TOKEN]);
    t.after(async () => {
      await serve.stop();
      await rm(dir, { recursive: true, force: true });
    });
    const body = Buffer.alloc(64, 1);
    const r = await rawRequest(serve.url, 'POST', '/v1/chunks/missing?algorithm=blake3', body, { authorization: `Bearer ${TOKEN}` });
    assert.equal(r.status, 200);
    const denied = await rawRequest(serve.url, 'GET', '/v1/list', undefined, { authorization: 'Bearer wrong' });
    assert.equal(denied.status, 401);
    await writeFile(join(dir, 'a.bin'), pseudoRandom(300_000, 3));
    const p = await runCli(['push', join(dir, 'a.bin'), `${serve.url}/logged/a.bin`], { env: { XFER_TOKEN: TOKEN } });
    assert.equal(p.code, 0, p.stderr);
    const records = () => serve.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    await until(() => records().some((x) => x.msg === 'commit') && records().filter((x) => x.path === '/v1/list').length > 0);

    const missing = records().filter((x) => x.msg === 'request' && x.path === '/v1/chunks/missing');
    assert.ok(missing.length >= 1, serve.stderr());
    const m = missing[0]!;
    assert.equal(m.method, 'POST');
    assert.equal(m.status, 200);
    assert.equal(m.bytesIn, 64);
    assert.equal(m.bytesOut, 1); // a bitmap of 2 digests
    assert.equal(typeof m.ms, 'number');
    const refused = records().find((x) => x.path === '/v1/list')!;
    assert.equal(refused.status, 401);
    assert.equal(refused.code, 'XFER_UNAUTHORIZED');
    const commit = records().find((x) => x.msg === 'commit')!;
    assert.equal(commit.path, 'logged/a.bin');
    assert.equal(commit.bytes, 300_000);
    assert.ok(!serve.stderr().includes(TOKEN), 'the token is never logged');
    assert.ok(!/authorization/i.test(serve.stderr()), 'nor the Authorization header');
  });

  it('by default, one readable line per request on stderr', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-log-'));
    const serve = await startServeProcess(['--root', join(dir, 'root'), '--port', '0']);
    t.after(async () => {
      await serve.stop();
      await rm(dir, { recursive: true, force: true });
    });
    assert.equal((await rawRequest(serve.url, 'GET', '/v1/nothing')).status, 404);
    await until(() => serve.stderr().includes('/v1/nothing'));
    assert.match(serve.stderr(), /^\S+Z INFO request method=GET path=\/v1\/nothing status=404 bytesIn=0 bytesOut=\d+ ms=\d+ code=XFER_NOT_FOUND$/m);
  });

  it('--quiet leaves out the request lines', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-log-'));
    const serve = await startServeProcess(['--root', join(dir, 'root'), '--port', '0', '--quiet']);
    t.after(async () => {
      await serve.stop();
      await rm(dir, { recursive: true, force: true });
    });
    assert.equal((await rawRequest(serve.url, 'GET', '/v1/info')).status, 200);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(serve.stderr(), '');
  });
});
