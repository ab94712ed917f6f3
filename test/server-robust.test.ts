import { strict as assert } from 'node:assert';
import { connect } from 'node:http2';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, startServeProcess } from './helpers/server.js';
import { stageList } from './helpers/stage.js';

const MiB = 1024 * 1024;


function stagePath(name: string, size: number): string {
  return `/v1/stage/${name}?algorithm=blake3&mode=420&mtimeMs=1700000000000&size=${size}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('xfer serve survives what clients do to it', () => {
  let dir: string;
  let serve: Awaited<ReturnType<typeof startServeProcess>>;
  let data: Buffer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-robust-'));
    serve = await startServeProcess(['--root', join(dir, 'root'), '--port', '0']);
    // Chunks the stages below find in the store, so that they read them from it (the
    // store read paths) when the stream is reset.
    data = pseudoRandom(48 * MiB, 5);
    await writeFile(join(dir, 'warm.bin'), data);
    const p = await runCli(['push', join(dir, 'warm.bin'), `${serve.url}/warm.bin`]);
    assert.equal(p.code, 0, p.stderr);
  });
  after(async () => {
    await serve?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function stillServes(): Promise<void> {
    assert.equal(serve.child.exitCode, null, 'the server process is still running');
    assert.equal(serve.child.signalCode, null);
    const r = await rawRequest(serve.url, 'GET', '/v1/info');
    assert.equal(r.status, 200);
    // `xfer serve` logs and survives a rejection that escaped; none may have.
    assert.doesNotMatch(serve.stderr(), /unhandled/i);
  }

  it('a stage reset while it reads its chunks from the store does not stop the server', async () => {
    const list = stageList(data);
    for (let round = 0; round < 8; round++) {
      const session = connect(serve.url);
      session.on('error', () => {});
      const req = session.request({ ':method': 'POST', ':path': stagePath(`copy-${round}.bin`, data.length) });
      req.on('error', () => {});
      req.write(list);
      await sleep(20 + 15 * round);
      req.close(0x8); // CANCEL
      session.destroy();
      await sleep(50);
    }
    await sleep(300);
    await stillServes();
  });

  it('a second stage for the same path discards the first without stopping the server', async () => {
    const list = stageList(data);
    const session = connect(serve.url);
    session.on('error', () => {});
    for (let round = 0; round < 8; round++) {
      const req = session.request({ ':method': 'POST', ':path': stagePath('same.bin', data.length) });
      req.on('error', () => {});
      req.write(list);
      await sleep(30 + 10 * round);
    }
    session.destroy();
    await sleep(300);
    await stillServes();
  });
});
