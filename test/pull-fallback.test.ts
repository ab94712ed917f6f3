/*
 * pull --fallback <location>: a chunk the source store holds damaged (or lacks) comes from
 * the fallbacks, tried in order, verified; the pull succeeds bit-identical, and the chunk is
 * put back into the source, which heals it (a local store, a server).
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyManifests } from '../src/transfer/verify.js';
import { runCli } from './helpers/cli.js';
import { damageStoredChunk, openServedStore, storedChunks } from './helpers/damage.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

const FILE_BYTES = 300 * 1024;

/** The damage a verify of the store in `storeDir` finds (chunks only), as `<path>: <kind>`. */
async function damageIn(storeDir: string): Promise<string[]> {
  const store = await openServedStore(storeDir);
  try {
    const names = (await store.listManifests('')).map((m) => m.name);
    return (await verifyManifests(store, store, names)).damaged.map((d) => `${d.manifest}/${d.path}: ${d.kind}`);
  } finally {
    await store.close();
  }
}

describe('pull --fallback', () => {
  let dir = '';
  let data: Buffer;
  let src = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-fallback-'));
    data = pseudoRandom(FILE_BYTES, 7);
    src = join(dir, 'f.bin');
    await writeFile(src, data);
    // A second copy of the same file (the fallback) and a store lacking it (tried first).
    for (const d of ['good', 'other']) await mkdir(join(dir, d));
    assert.equal((await runCli(['push', src, `${dir}/good/`, '--quiet'])).code, 0);
    await writeFile(join(dir, 'o.bin'), pseudoRandom(1000, 8));
    assert.equal((await runCli(['push', join(dir, 'o.bin'), `${dir}/other/`, '--quiet'])).code, 0);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a local source with a damaged chunk: the chunk comes from the second fallback (the first lacks it), the pull is bit-identical, the source is healed', async () => {
    const source = join(dir, 'src-local');
    await mkdir(source);
    assert.equal((await runCli(['push', src, `${source}/`, '--quiet'])).code, 0);
    const storeDir = join(source, '.xfer');
    await damageStoredChunk(storeDir, (await storedChunks(storeDir))[0]!, 50);

    const without = await runCli(['pull', join(source, 'f.bin'), join(dir, 'plain.bin'), '--quiet']);
    assert.notEqual(without.code, 0, 'without a fallback the damaged chunk fails the pull');

    const r = await runCli(['pull', '--fallback', `${dir}/other`, '--fallback', `${dir}/good`, join(source, 'f.bin'), join(dir, 'back.bin'), '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(dir, 'back.bin'))).equals(data));
    assert.match(r.stderr, /^xfer: 1 chunk missing or damaged in the source came from the fallback; 1 put back into the source\n$/);
    assert.deepEqual(await damageIn(storeDir), [], 'the source store is whole again');
  });

  describe('from a server', () => {
    const fx = useServer('xfer-fallback-server-');

    it('a chunk the server holds damaged (served unverified, found by the client) is taken from the fallback and put back: the server is healed', async () => {
      const url = `${fx.server.url}/f.bin`;
      assert.equal((await runCli(['push', src, url, '--quiet'])).code, 0);
      const storeDir = join(fx.root, 'store');
      await damageStoredChunk(storeDir, (await storedChunks(storeDir))[0]!, 50);

      const r = await runCli(['pull', '--fallback', `${dir}/good`, url, join(dir, 'from-server.bin'), '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok((await readFile(join(dir, 'from-server.bin'))).equals(data));
      assert.deepEqual(JSON.parse(r.stdout).fallback, { chunksFromFallback: 1, chunksHealed: 1, healFailures: 0 });
      assert.deepEqual(await damageIn(storeDir), [], 'the server stored the chunk again');
    });
  });
});
