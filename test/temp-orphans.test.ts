import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OWNER_HOST } from '../src/io/owner.js';
import { runCli } from './helpers/cli.js';

/** The pid of a process that has exited (not running now). */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['-e', '']);
    c.on('exit', () => resolve(c.pid!));
  });
}

describe("xfer's temporary directories", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-temp-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a run removes those left by killed xfer processes of this host, and its own; no others', async () => {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const dead = await deadPid();
    const orphans = [`xfer-push-${OWNER_HOST}~${dead}-a1B2c3`, `xfer-pull-${OWNER_HOST}~${dead}-d4E5f6`];
    const kept = [
      `xfer-push-${OWNER_HOST}~${process.pid}-g7H8i9`, // a live process's
      `xfer-push-elsewhere~${dead}-j1K2l3`, // another host's
      'xfer-push-Mn4Op5', // an older xfer's: whose, unknown
      `other-${OWNER_HOST}~${dead}-q6R7s8`, // not xfer's
    ];
    for (const name of [...orphans, ...kept]) {
      await mkdir(join(tmp, name));
      await writeFile(join(tmp, name, 'manifest'), 'partial');
    }
    const src = join(dir, 'file.txt');
    await writeFile(src, 'hello\n');
    const r = await runCli(['push', src, join(dir, 'backup/'), '-q'], { env: { TMPDIR: tmp } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readdir(tmp)).sort(), [...kept].sort());
    const p = await runCli(['pull', join(dir, 'backup', 'file.txt'), join(dir, 'pulled.txt')], { env: { TMPDIR: tmp } });
    assert.equal(p.code, 0, p.stderr);
    assert.deepEqual((await readdir(tmp)).sort(), [...kept].sort(), 'a pull leaves nothing either');
  });
});
