/*
 * `xfer forget` (retention by policy) and `xfer rm` (a target, its versions and its copy)
 * on a local destination, a server and a store object; a target whose real name has an '@';
 * the versions' namespace closed to commits and stages on a server.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { forget, MemoryStore, pull, push, remove, versions, type LocationSpec } from '../src/index.js';
import { versionName } from '../src/store/versions.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest, useServer } from './helpers/server.js';

const KiB = 1024;
const exists = (p: string) => stat(p).then(() => true, () => false);

/** Pushes `n` different contents of `dir/<name>` to `dest`, a few ms apart; returns them. */
async function pushVersions(dir: string, name: string, dest: LocationSpec, n: number, seed: number): Promise<Buffer[]> {
  const contents: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const c = pseudoRandom(50 * KiB + i, seed + i);
    await writeFile(join(dir, name), c);
    await push(join(dir, name), dest);
    contents.push(c);
    await sleep(3);
  }
  return contents;
}

describe('forget and rm on a local destination', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-forget-rm-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('forget --keep-last 2 keeps the two newest, reports both lists as JSON, and the kept ones still pull', async () => {
    const dest = join(dir, 'dest');
    const contents = await pushVersions(dir, 'f.bin', `${dest}/`, 4, 100);
    let r = await runCli(['forget', join(dest, 'f.bin'), '--keep-last', '2', '--dry-run', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const dry = JSON.parse(r.stdout);
    assert.equal(dry.dryRun, true);
    assert.deepEqual([dry.keep.length, dry.remove.length], [2, 2]);
    assert.equal((await versions(join(dest, 'f.bin'))).versions.length, 4, 'a dry run removes nothing');

    r = await runCli(['forget', join(dest, 'f.bin'), '--keep-last', '2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const done = JSON.parse(r.stdout);
    assert.deepEqual(done.keep.map((v: { reasons: string[] }) => v.reasons), [['last'], ['current', 'last']]);
    assert.deepEqual(done.remove.map((v: { id: string }) => v.id), dry.remove.map((v: { id: string }) => v.id));
    const left = (await versions(join(dest, 'f.bin'))).versions;
    assert.deepEqual(left.map((v) => v.id), done.keep.map((v: { id: string }) => v.id));
    await pull(`${join(dest, 'f.bin')}@${left[0]!.id}`, join(dir, 'older.bin'));
    assert.ok((await readFile(join(dir, 'older.bin'))).equals(contents[2]!));
    assert.ok((await readFile(join(dest, 'f.bin'))).equals(contents[3]!), 'the current copy is untouched');

    r = await runCli(['forget', join(dest, 'f.bin')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^xfer: forget needs a policy/);
  });

  it('rm removes the target, its versions and its copy; --dry-run removes nothing; an unpushed file is refused', async () => {
    const dest = join(dir, 'dest2');
    await pushVersions(dir, 'g.bin', `${dest}/`, 2, 200);
    await writeFile(join(dest, 'mine.txt'), 'not pushed');
    let r = await runCli(['rm', join(dest, 'g.bin'), '--dry-run', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { dryRun: true, removed: [{ target: join(dest, 'g.bin'), versions: 2 }] });
    assert.ok(await exists(join(dest, 'g.bin')));

    r = await runCli(['rm', join(dest, 'g.bin')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `removed ${join(dest, 'g.bin')} (2 versions)\n`);
    assert.ok(!(await exists(join(dest, 'g.bin'))));
    assert.ok(!(await exists(join(dest, '.xfer', 'manifests', 'g.bin'))));
    assert.ok(!(await exists(join(dest, '.xfer', 'manifests', '.xfer', 'versions'))), 'no version is left (nor their folders)');

    r = await runCli(['rm', join(dest, 'mine.txt')]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^xfer: .*mine\.txt: no such target\n$/);
    assert.equal(await readFile(join(dest, 'mine.txt'), 'utf8'), 'not pushed');
  });

  it("a target whose real name has an '@' is pulled by its name; its versions as <name>@<version>", async () => {
    const dest = join(dir, 'dest3');
    const name = 'report@2026-12-06';
    await mkdir(join(dir, 'at'), { recursive: true });
    const contents = await pushVersions(join(dir, 'at'), name, `${dest}/`, 2, 300);
    await pull(join(dest, name), join(dir, 'at-current.bin'));
    assert.ok((await readFile(join(dir, 'at-current.bin'))).equals(contents[1]!));
    const listed = (await versions(join(dest, name))).versions;
    assert.equal(listed.length, 2);
    await pull(`${join(dest, name)}@${listed[0]!.id}`, join(dir, 'at-first.bin'));
    assert.ok((await readFile(join(dir, 'at-first.bin'))).equals(contents[0]!));
    // Without the target 'report', 'report@<time>' is read as a version of 'report': none.
    await assert.rejects(pull(join(dest, 'report@2026-12-07'), join(dir, 'x')), /no versions stored/);
  });
});

describe('forget and rm on a server', () => {
  const s = useServer('xfer-forget-rm-server-');

  it('forget keeps by policy; rm removes the target, its versions and the copy the server rebuilt; a folder needs -r', async () => {
    const src = join(s.dir, 'src');
    await mkdir(src, { recursive: true });
    await pushVersions(src, 'a.bin', `${s.server.url}/team/`, 3, 400);
    await pushVersions(src, 'b.bin', `${s.server.url}/team/`, 1, 500);
    const r = await forget(`${s.server.url}/team/a.bin`, { last: 1 });
    assert.deepEqual([r.keep.length, r.remove.length], [1, 2]);
    assert.equal((await versions(`${s.server.url}/team/a.bin`)).versions.length, 1);

    const files = join(s.root, 'files', 'team');
    assert.ok(await exists(join(files, 'a.bin')));
    let out = await runCli(['rm', `${s.server.url}/team`]);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /^xfer: .*team.* is a folder of 2 targets: use rm -r/);
    const gone = await remove(`${s.server.url}/team/a.bin`);
    assert.deepEqual(gone.removed, [{ target: `${s.server.url}/team/a.bin`, versions: 1 }]);
    assert.ok(!(await exists(join(files, 'a.bin'))), "the server's copy goes");
    assert.ok(await exists(join(files, 'b.bin')));
    out = await runCli(['rm', '-r', `${s.server.url}/team`, '--json']);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(JSON.parse(out.stdout).removed, [{ target: `${s.server.url}/team/b.bin`, versions: 1 }]);
    assert.ok(!(await exists(files)));
    // No manifest is left in the server's store, version or current.
    const left = (await readdir(join(s.root, 'store', 'manifests'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
    assert.deepEqual(left.map((e) => e.name), []);
  });

  it('refuses commits and stages into the versions namespace, and serves versions as manifests', async () => {
    await writeFile(join(s.dir, 'ns.bin'), pseudoRandom(10 * KiB, 800));
    await push(join(s.dir, 'ns.bin'), `${s.server.url}/ns.bin`);
    const [stored] = (await versions(`${s.server.url}/ns.bin`)).versions;
    const got = await rawRequest(s.server.url, 'GET', `/v1/manifests/${stored!.manifest.split('/').map(encodeURIComponent).join('/')}`);
    assert.equal(got.status, 200);
    const v = versionName('x', '2026-12-06T15:04:05.123Z-1a2b3c4d');
    const path = `/v1/manifests/${v.split('/').map(encodeURIComponent).join('/')}`;
    let r = await rawRequest(s.server.url, 'PUT', path, Buffer.from('x'));
    assert.equal(r.status, 400, r.body.toString());
    assert.match(r.body.toString(), /reserved segment/);
    r = await rawRequest(s.server.url, 'POST', `/v1/stage/${v}?kind=file`, Buffer.from('x'));
    assert.equal(r.status, 400, r.body.toString());
    r = await rawRequest(s.server.url, 'GET', path);
    assert.equal(r.status, 404);
  });
});

describe('rm in a store object', () => {
  it('removes the manifest and every version, nothing else', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-rm-store-'));
    try {
      const store = new MemoryStore();
      await pushVersions(dir, 'a.bin', { store, path: 'a.bin' } , 2, 600);
      await pushVersions(dir, 'b.bin', { store, path: 'b.bin' }, 1, 700);
      const r = await remove({ store, path: 'a.bin' });
      assert.deepEqual(r.removed, [{ target: 'a.bin', versions: 2 }]);
      assert.deepEqual((await store.listManifests('')).map((m) => m.name).filter((n) => !n.startsWith('.xfer/')), ['b.bin']);
      assert.equal((await store.listManifests('.xfer/versions/')).length, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
