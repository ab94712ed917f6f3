import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isOneLineError, runCli } from './helpers/cli.js';

/**
 * Locations xfer does not support are refused, not taken as local paths (a push to
 * ssh://host/x used to create a directory named "ssh:"). rsync's rule: a colon before any
 * slash means a remote location; ./a:b is a local path.
 */
describe('locations: local paths, http://, https:// and s3://, nothing else', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-locations-'));
    await writeFile(join(dir, 'f'), 'hello');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // s3:// is a registered scheme now (test/locations-s3.test.ts).
  const foreign = ['host:/path', 'remote:path', 'ssh://host/x', 'sftp://host/x', 'file:///tmp/x'];
  const commands = (spec: string): [string, string[]][] => [
    ['push to it', ['push', 'f', spec]],
    ['push from it', ['push', spec, 'out/']],
    ['pull from it', ['pull', spec, 'out']],
    ['pull to it', ['pull', 'backup/f', spec]],
    ['ls', ['ls', spec]],
    ['verify', ['verify', spec]],
    ['manifest show', ['manifest', 'show', spec]],
    ['chunk', ['chunk', spec]],
  ];
  for (const spec of foreign) {
    it(`${spec} is refused by every command, exit 2, and nothing is created`, async () => {
      const runs = commands(spec).map(async ([what, args]) => [what, await runCli(args, { cwd: dir })] as const);
      for (const [what, r] of await Promise.all(runs)) {
        assert.equal(r.code, 2, `${what}: ${r.stderr}`);
        assert.ok(isOneLineError(r.stderr), `${what}: ${r.stderr}`);
        assert.match(r.stderr, /local paths, http:\/\/, https:\/\/ and s3:\/\//, what);
      }
      assert.deepEqual(await readdir(dir), ['f'], 'no directory named after the scheme or host');
    });
  }

  it('a colon after a slash is a local path: ./a:b/ and /abs/a:b work', async () => {
    const work = join(dir, 'colon');
    await mkdir(work);
    await writeFile(join(work, 'f'), 'hello');
    const p = await runCli(['push', 'f', './a:b/', '--json'], { cwd: work });
    assert.equal(p.code, 0, p.stderr);
    assert.equal(await readFile(join(work, 'a:b', 'f'), 'utf8'), 'hello');
    const q = await runCli(['pull', join(work, 'a:b', 'f'), './c:d', '--json'], { cwd: work });
    assert.equal(q.code, 0, q.stderr);
    assert.equal(await readFile(join(work, 'c:d'), 'utf8'), 'hello');
    const v = await runCli(['verify', './a:b'], { cwd: work });
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
