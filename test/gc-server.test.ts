import { strict as assert } from 'node:assert';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { remove } from '../src/targets.js';
import { rawRequest, useServer } from './helpers/server.js';
import { runCli, sha256File, writeRandomFile } from './helpers/cli.js';

const MiB = 1024 * 1024;

async function packBytes(root: string): Promise<number> {
  let n = 0;
  const dir = join(root, 'store', 'packs');
  for (const f of await readdir(dir)) if (f.endsWith('.pack')) n += (await stat(join(dir, f))).size;
  return n;
}

describe('gc of a server (POST /v1/gc)', () => {
  const f = useServer('xfer-gc-server-');

  it('xfer gc <server URL>: the server deletes what none of its manifests refers to; the rest pulls bit-identical', async () => {
    const a = join(f.dir, 'a.bin');
    const b = join(f.dir, 'b.bin');
    await writeRandomFile(a, 4 * MiB, 11);
    await writeRandomFile(b, 2 * MiB, 12);
    await push(a, `${f.server.url}/t/`);
    await push(b, `${f.server.url}/t/`);
    assert.equal((await remove(`${f.server.url}/t/a.bin`)).removed.length, 1);
    const before = await packBytes(f.root);
    const dry = await runCli(['gc', `${f.server.url}/`, '--grace', '0', '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.equal(await packBytes(f.root), before, 'a dry run changes nothing');
    const r = await runCli(['gc', `${f.server.url}/`, '--grace', '0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { freedBytes: number; deletedPacks: number; manifests: number; dryRun: boolean };
    assert.deepEqual({ ...JSON.parse(dry.stdout), dryRun: false }, report, 'the dry run reported what the run did');
    assert.equal(report.manifests, 2, "b.bin's manifest and its one version");
    assert.ok(report.deletedPacks >= 1);
    // One copy on disk (server/held.ts): b's chunks are held by its rebuilt file, a's were
    // moved into a pack by the rm: that pack goes whole.
    const afterBytes = await packBytes(f.root);
    assert.equal((report as unknown as { storeBytes: number }).storeBytes, afterBytes);
    assert.ok(report.freedBytes >= 4 * MiB && afterBytes < 0.1 * MiB, `freed ${report.freedBytes}, store ${before} -> ${afterBytes}`);
    await pull(`${f.server.url}/t/b.bin`, join(f.dir, 'b1.bin'));
    assert.equal(await sha256File(join(f.dir, 'b1.bin')), await sha256File(b));
  });

  it('refuses bad parameters with 400 and a one-line message, and gc of a target path in one line', async () => {
    for (const q of ['dry-run=2&max-unused=5&grace-ms=0', 'dry-run=0&max-unused=101&grace-ms=0', 'dry-run=0&max-unused=5&grace-ms=-1', 'dry-run=0&max-unused=x&grace-ms=0']) {
      const r = await rawRequest(f.server.url, 'POST', `/v1/gc?${q}`);
      assert.equal(r.status, 400, q);
      assert.match(JSON.parse(r.body.toString()).message as string, /query parameter/);
    }
    const r = await runCli(['gc', `${f.server.url}/t`]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^xfer: .*gc collects a whole store/);
  });
});
