import { strict as assert } from 'node:assert';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { push } from '../src/api.js';
import { startCli, writeRandomFile } from './helpers/cli.js';
import { startRelay, useServer } from './helpers/server.js';

const MiB = 1024 * 1024;
/** How long a client may take to exit after a signal. */
const EXIT_WITHIN_MS = 5_000;

describe('a push to a server stops promptly when interrupted', () => {
  const f = useServer('xfer-interrupt-');

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} during a rate-limited upload: exit 130 within seconds, no temporary directories left`, async () => {
      const src = join(f.dir, `${signal}.bin`);
      await writeRandomFile(src, 16 * MiB, 7);
      const tmp = join(f.dir, `tmp-${signal}`);
      await mkdir(tmp);
      // Through a relay that counts the bytes going up, to signal once the upload is under way.
      const relay = await startRelay(f.server.url);
      const { child, exit, stderr } = startCli(['push', src, `${relay.url}/${signal}.bin`, '--bwlimit', '1M', '-q'], { env: { TMPDIR: tmp } });
      try {
        for (let i = 0; i < 500 && relay.bytesUp() < 512 * 1024 && child.exitCode === null; i++) await sleep(20);
        assert.ok(relay.bytesUp() >= 512 * 1024, `the upload started (${relay.bytesUp()} bytes up): ${stderr()}`);
        child.kill(signal);
        const code = await Promise.race([exit, sleep(EXIT_WITHIN_MS).then(() => 'still running' as const)]);
        assert.equal(code, 130, `exit after ${signal}: ${stderr()}`);
        assert.match(stderr(), /^xfer: .*interrupted\n$/);
        assert.deepEqual(await readdir(tmp), [], 'temporary directories are removed');
      } finally {
        child.kill('SIGKILL');
        await relay.close();
      }
    });
  }

  it('SIGINT during a rate-limited pull: exit 130 within seconds, no temporary directories left', async () => {
    const src = join(f.dir, 'pulled-from.bin');
    await writeRandomFile(src, 16 * MiB, 8);
    await push(src, `${f.server.url}/pull-me.bin`);
    const tmp = join(f.dir, 'tmp-pull');
    await mkdir(tmp);
    const out = join(f.dir, 'out');
    await mkdir(out);
    const { child, exit, stderr } = startCli(['pull', `${f.server.url}/pull-me.bin`, join(out, 'pulled.bin'), '--bwlimit', '1M', '-q'], { env: { TMPDIR: tmp } });
    try {
      // The pull's partial file (kept for the next run to resume) is made as fetching starts.
      const partial = join(out, '.xfer-pulled.bin.partial');
      const started = async () => (await stat(partial).catch(() => undefined)) !== undefined;
      for (let i = 0; i < 500 && !(await started()) && child.exitCode === null; i++) await sleep(20);
      assert.ok(await started(), `the download started: ${stderr()}`);
      await sleep(500); // under way: past the first quarter second's burst
      child.kill('SIGINT');
      const code = await Promise.race([exit, sleep(EXIT_WITHIN_MS).then(() => 'still running' as const)]);
      assert.equal(code, 130, `exit after SIGINT: ${stderr()}`);
      assert.deepEqual(await readdir(tmp), [], 'temporary directories are removed');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
