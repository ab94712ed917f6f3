import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AbortedError, createServer, pull, push, type XferServer } from '../src/index.js';
import { pseudoRandom } from './helpers/gen.js';

const MiB = 1024 * 1024;

describe('library API: push, pull, createServer', () => {
  let dir: string;
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-api-'));
    server = await createServer({ root: join(dir, 'root'), port: 0 });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('pushes to a server and pulls back, reporting progress', async () => {
    const src = join(dir, 'scan.bin');
    const data = pseudoRandom(24 * MiB, 9);
    await writeFile(src, data);
    const seen: number[] = [];
    const r = await push(src, `${server.url}/api/`, { onProgress: (p) => seen.push(p.bytesScanned) });
    assert.equal(r.target, `${server.url}/api/scan.bin`);
    assert.equal(r.bytesSent, data.length);
    assert.ok(seen.length > 1 && seen.at(-1) === data.length, 'progress reaches the total');
    assert.ok(seen.every((v, i) => i === 0 || v >= seen[i - 1]!), 'progress never goes back');
    const done: number[] = [];
    const p = await pull(`${server.url}/api/scan.bin`, join(dir, 'back.bin'), { onProgress: (x) => done.push(x.bytesDone) });
    assert.equal(p.bytesReceived, data.length);
    assert.equal(done.at(-1), data.length);
    assert.ok((await readFile(join(dir, 'back.bin'))).equals(data));
  });

  it('pushes a stream to a local directory', async () => {
    const data = pseudoRandom(3 * MiB, 4);
    const r = await push({ stream: [data.subarray(0, 1000), data.subarray(1000)], name: 'from-stream.bin' }, join(dir, 'local') + '/');
    assert.equal(r.bytesTotal, data.length);
    assert.ok((await readFile(join(dir, 'local', 'from-stream.bin'))).equals(data));
  });

  it('an aborted push rejects with AbortedError and leaves the destination as it was', async () => {
    const src = join(dir, 'abort.bin');
    await writeFile(src, pseudoRandom(64 * MiB, 2));
    const controller = new AbortController();
    const pending = push(src, join(dir, 'abort-dest') + '/', {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.bytesScanned > 8 * MiB) controller.abort();
      },
    });
    await assert.rejects(pending, (err: unknown) => err instanceof AbortedError || (err as { code?: string }).code === 'XFER_ABORTED');
    await assert.rejects(stat(join(dir, 'abort-dest', 'abort.bin')), /ENOENT/);
    const left = await readdir(join(dir, 'abort-dest'));
    assert.deepEqual(left.filter((n) => n.startsWith('.xfer-')), [], 'no staging files left');
  });
});
