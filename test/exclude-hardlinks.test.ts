/**
 * Hard links meet --exclude: a name that is transferred while another name of the same file
 * is left out keeps the file's content (rsync -H then sends it as a regular file).
 */
import { strict as assert } from 'node:assert';
import { link, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

function ok(r: { code: number; stdout: string; stderr: string }): void {
  assert.equal(r.code, 0, r.stdout + r.stderr);
}

describe('hard links and --exclude', () => {
  const fx = useServer('xfer-exclude-links-');

  it('pull --exclude of a file\'s first name: its later names are pulled with the content, still linked to each other', async () => {
    const src = join(fx.dir, 'p', 'tree');
    await mkdir(join(src, 'z'), { recursive: true });
    await writeFile(join(src, 'a-first'), 'shared content\n');
    await link(join(src, 'a-first'), join(src, 'b-second'));
    await link(join(src, 'a-first'), join(src, 'z', 'c-third'));
    ok(await runCli(['push', src, `${fx.server.url}/t`, '-q']));
    const out = join(fx.dir, 'p', 'out');
    ok(await runCli(['pull', `${fx.server.url}/t`, out, '-q', '--exclude', 'a-first']));
    await assert.rejects(lstat(join(out, 'a-first')), { code: 'ENOENT' });
    assert.equal(await readFile(join(out, 'b-second'), 'utf8'), 'shared content\n');
    assert.equal(await readFile(join(out, 'z', 'c-third'), 'utf8'), 'shared content\n');
    assert.equal((await lstat(join(out, 'b-second'))).ino, (await lstat(join(out, 'z', 'c-third'))).ino, 'the pulled names are one file');
  });

  it('push --exclude of a later name to a server whose copy has it: that name keeps its content while the first name changes', async () => {
    const src = join(fx.dir, 's', 'tree');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a-first'), 'version 1\n');
    await link(join(src, 'a-first'), join(src, 'b-second'));
    ok(await runCli(['push', src, `${fx.server.url}/s`, '-q']));
    // The source's names part: a-first gets new content; b-second is excluded from the next push.
    await rm(join(src, 'a-first'));
    await writeFile(join(src, 'a-first'), 'version 2\n');
    ok(await runCli(['push', src, `${fx.server.url}/s`, '-q', '--exclude', 'b-second']));
    const copy = join(fx.root, 'files', 's');
    assert.equal(await readFile(join(copy, 'a-first'), 'utf8'), 'version 2\n');
    assert.equal(await readFile(join(copy, 'b-second'), 'utf8'), 'version 1\n', 'the excluded name is kept as it was');
    const out = join(fx.dir, 's', 'out');
    ok(await runCli(['pull', `${fx.server.url}/s`, out, '-q']));
    assert.equal(await readFile(join(out, 'b-second'), 'utf8'), 'version 1\n');
  });
});
