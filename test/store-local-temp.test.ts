import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OWNER_HOST } from '../src/io/owner.js';
import { LocalStore } from '../src/store/local.js';

/** The pid of a process that has exited (not running now). */
function deadPid(): Promise<number> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ['-e', '']);
    c.on('exit', () => resolve(c.pid!));
  });
}

const LOCAL_STORE_MODULE = new URL('../src/store/local.js', import.meta.url).href;

describe("LocalStore: a dead writer's temp files", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'xfer-store-temp-'));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("open removes at once the fresh temp files of a dead process of this host, and no one else's", async () => {
    const dir = path.join(root, 'planted', '.xfer');
    await (await LocalStore.open(dir, { create: true })).close();
    const dead = await deadPid();
    const gone = [`${OWNER_HOST}~${dead}-0123456789ab-1.tmp`, `${OWNER_HOST}~${dead}-0123456789ab-17.tmp`];
    const kept = [
      `${OWNER_HOST}~${process.pid}-0123456789ab-1.tmp`, // a live writer's (this one)
      `${OWNER_HOST}~${process.ppid}-0123456789ab-1.tmp`, // a live writer's (another process)
      `elsewhere~${dead}-0123456789ab-1.tmp`, // another host's: its pid says nothing here
      `${dead}-0123456789ab-1.tmp`, // an older xfer's name: whose, unknown
      `${OWNER_HOST}~${dead}-notours.tmp`, // not our pattern
      'leftover',
    ];
    for (const name of [...gone, ...kept]) await writeFile(path.join(dir, 'tmp', name), 'partial');
    await (await LocalStore.open(dir, { create: false })).close();
    assert.deepEqual((await readdir(path.join(dir, 'tmp'))).sort(), [...kept].sort());
  });

  it('a store process killed while writing a manifest leaves a temp file the next open removes', async () => {
    const dir = path.join(root, 'killed', '.xfer');
    // The child opens the store and starts a manifest whose bytes never end, then says so.
    const script = `
      const { LocalStore } = await import(${JSON.stringify(LOCAL_STORE_MODULE)});
      const store = await LocalStore.open(${JSON.stringify(dir)}, { create: true });
      async function* endless() { yield Buffer.from('partial'); console.log('writing'); await new Promise(() => {}); }
      await store.putManifest('m', endless());
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', () => resolve());
      child.on('exit', (code) => reject(new Error(`child exited (${code}) before writing`)));
    });
    const left = await readdir(path.join(dir, 'tmp'));
    assert.equal(left.length, 1, `the child's temp file: ${left.join(', ')}`);
    child.kill('SIGKILL');
    await exited;
    await (await LocalStore.open(dir, { create: false })).close();
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });
});
