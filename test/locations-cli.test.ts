import { strict as assert } from 'node:assert';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { push } from '../src/index.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

/**
 * ls, manifest show and verify take any registered location (issue 15): a server URL and a
 * local destination alike, through the one registry, where they used to test for http(s)://
 * by hand (ls took URLs only; manifest show and verify local paths only).
 */
describe('locations through the CLI: ls, manifest show and verify', () => {
  const fx = useServer('xfer-locations-cli-');
  const data = pseudoRandom(200 * 1024, 5);
  before(async () => {
    await writeFile(join(fx.dir, 'f.bin'), data);
    await mkdir(join(fx.dir, 'tree'));
    await writeFile(join(fx.dir, 'tree', 'x.txt'), 'x');
    await push(join(fx.dir, 'f.bin'), `${fx.server.url}/docs/`);
    await push(join(fx.dir, 'tree'), `${fx.server.url}/docs/`);
    await push(join(fx.dir, 'f.bin'), join(fx.dir, 'local/'));
  });

  it('ls lists a server and a local destination the same way', async () => {
    const remote = await runCli(['ls', `${fx.server.url}/docs/`, '--json']);
    assert.equal(remote.code, 0, remote.stderr);
    assert.deepEqual(JSON.parse(remote.stdout).entries.map((e: { path: string; kind: string }) => [e.path, e.kind]), [['docs/f.bin', 'file'], ['docs/tree', 'tree']]);
    const local = await runCli(['ls', join(fx.dir, 'local'), '--json']);
    assert.equal(local.code, 0, local.stderr);
    const [entry] = JSON.parse(local.stdout).entries;
    const remoteEntry = JSON.parse(remote.stdout).entries[0];
    assert.deepEqual([entry.path, entry.kind, entry.bytes, entry.digest], ['f.bin', 'file', data.length, remoteEntry.digest]);
  });

  it("manifest show reads a server's manifest", async () => {
    const r = await runCli(['manifest', 'show', `${fx.server.url}/docs/tree`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const shown = JSON.parse(r.stdout);
    assert.equal(shown.kind, 'tree');
    assert.deepEqual(shown.entries.map((e: { path: string }) => e.path), ['', 'x.txt']);
    const text = await runCli(['manifest', 'show', `${fx.server.url}/docs/f.bin`]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`${data.length}`));
  });

  it('verify of a server is done by the server (its chunks and rebuilt files); a missing target is a one-line error', async () => {
    const r = await runCli(['verify', `${fx.server.url}/docs/`, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual([report.manifests, report.files, report.filesChecked, report.damaged], [2, 2, 2, []]);
    const none = await runCli(['verify', `${fx.server.url}/nothing`]);
    assert.equal(none.code, 3, none.stderr);
    assert.ok(isOneLineError(none.stderr), none.stderr);
  });
});
