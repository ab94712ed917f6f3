/**
 * A re-sync after small edits costs a handful of round trips over a long link (issue 17,
 * item 4): the push asks the server once which of its current version's chunks it has
 * (the quick check's query) and asks nothing more about those; a chunk that took the place
 * of another goes as a delta without a `has` query first; a file's current manifest is
 * asked for together with its path's type. Counted at a real server (its request log)
 * behind a relay that adds a round trip of RTT_MS.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startWanRelay, type WanRelay } from '../bench/wan-relay.js';
import { pull, push } from '../src/api.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { pseudoRandom } from './helpers/gen.js';

/** The relay's round trip: long enough to tell serial requests apart, short for a fast test. */
const RTT_MS = 100;
const FILE_BYTES = 3 * 1024 * 1024;
const EDIT_BYTES = 4096;

/** Overwrites EDIT_BYTES at each of `offsets` of the file at `path`. */
async function edit(path: string, offsets: number[], seed: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (const [i, at] of offsets.entries()) await fh.write(pseudoRandom(EDIT_BYTES, seed + i), 0, EDIT_BYTES, at);
  } finally {
    await fh.close();
  }
}

describe('a re-sync after small edits asks about its changed chunks only, in few round trips', () => {
  let dir: string;
  let server: XferServer;
  let relay: WanRelay;
  let url: string;
  /** The server's requests: `METHOD /v1/<endpoint>` (names left out), their status and when each began. */
  let requests: { what: string; status: number; startMs: number; bytesIn: number }[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-resync-requests-'));
    // The manifests kept from pushes (endpoint/pushed.ts) go to this test's own cache.
    process.env.XDG_CACHE_HOME = join(dir, 'cache');
    const logger = {
      debug() {},
      warn() {},
      error() {},
      info(fields: object, message?: string) {
        const f = fields as { method: string; path: string; status: number; ms: number; bytesIn: number };
        if (message !== 'request') return;
        requests.push({ what: `${f.method} ${f.path.replace(/^\/v1\/(manifests|stage|stat|chunks\/missing-of)\/.*/, '/v1/$1/')}`, status: f.status, startMs: performance.now() - f.ms, bytesIn: f.bytesIn });
      },
    };
    server = await createServer({ root: join(dir, 'root'), port: 0, logger });
    relay = await startWanRelay(Number(new URL(server.url).port), { rttMs: RTT_MS, rateBitsPerSecond: 10e9, slowStart: false });
    url = `http://127.0.0.1:${relay.port}`;
  });
  after(async () => {
    await relay?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function counted(op: () => Promise<unknown>): Promise<{ what: string; status: number; startMs: number; bytesIn: number }[]> {
    requests = [];
    await op();
    await new Promise((r) => setTimeout(r, 50)); // a stage is logged after its answer
    return requests;
  }
  const count = (list: { what: string }[], what: string) => list.filter((r) => r.what === what).length;

  it('a file re-sync asks one has query (the current version\'s chunks) and its manifest with the stat', async (t) => {
    const file = join(dir, 'big.bin');
    await writeFile(file, pseudoRandom(FILE_BYTES, 1));
    await push(file, `${url}/big.bin`);
    await edit(file, [FILE_BYTES / 4, FILE_BYTES / 2, (3 * FILE_BYTES) / 4], 100);
    const made = await counted(() => push(file, `${url}/big.bin`));
    t.diagnostic(made.map((r) => r.what).join(', '));
    assert.equal(count(made, 'POST /v1/chunks/missing'), 1, 'has queries');
    assert.ok(count(made, 'POST /v1/chunks/delta') >= 1, 'the changed chunks went as deltas');
    const stat = made.find((r) => r.what === 'GET /v1/stat/')!;
    const manifest = made.find((r) => r.what === 'GET /v1/manifests/')!;
    // Asked one after the other, they would reach the server a round trip apart.
    assert.ok(Math.abs(manifest.startMs - stat.startMs) < RTT_MS / 2, `the manifest was asked ${(manifest.startMs - stat.startMs).toFixed(0)} ms after the stat`);
    const back = join(dir, 'big.out');
    await pull(`${url}/big.bin`, back);
    assert.deepEqual(await readFile(back), await readFile(file));
  });

  it('a tree re-sync with three files edited asks one has query, naming its current version instead of listing its chunks', async (t) => {
    const tree = join(dir, 'tree');
    for (let d = 0; d < 4; d++) {
      await mkdir(join(tree, `d${d}`), { recursive: true });
      for (let i = 0; i < 50; i++) await writeFile(join(tree, `d${d}`, `f${i}.txt`), `file ${d}/${i}\n${'x'.repeat(100 + i)}\n`);
      await writeFile(join(tree, `d${d}`, 'big.bin'), pseudoRandom(512 * 1024, 10 + d));
    }
    await push(tree, `${url}/tree`);
    for (let d = 0; d < 3; d++) await edit(join(tree, `d${d}`, 'big.bin'), [256 * 1024], 200 + d);
    const made = await counted(() => push(tree, `${url}/tree`));
    t.diagnostic(made.map((r) => `${r.what} ${r.bytesIn}`).join(', '));
    // The current version's chunks: asked by its tag, no digest sent (chunks/missing-of);
    // the edited chunks went as deltas, unasked.
    assert.equal(count(made, 'POST /v1/chunks/missing-of/'), 1, 'queries by the manifest');
    assert.equal(made.find((r) => r.what === 'POST /v1/chunks/missing-of/')!.bytesIn, 0);
    assert.equal(count(made, 'POST /v1/chunks/missing'), 0, 'has queries by digest');
    assert.equal(count(made, 'GET /v1/manifests/'), 1);
    // The tree's current manifest is the one this push kept from the last: it did not travel.
    assert.deepEqual(made.filter((r) => r.what === 'GET /v1/manifests/').map((r) => r.status), [304]);
    const back = join(dir, 'tree.out');
    await pull(`${url}/tree`, back);
    for (let d = 0; d < 4; d++) assert.deepEqual(await readFile(join(back, `d${d}`, 'big.bin')), await readFile(join(tree, `d${d}`, 'big.bin')));
  });

  it('a kept manifest that is damaged, or no longer the server\'s current one, is not used: the push fetches the manifest', async (t) => {
    const tree = join(dir, 'tree2');
    await mkdir(tree, { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(tree, `f${i}.txt`), `file ${i}\n`);
    await push(tree, `${url}/tree2`);
    // Damaged: one byte of the kept copy flipped (it no longer reads through).
    const keptDir = join(dir, 'cache', 'xfer', 'pushed');
    const kept = (await readdir(keptDir)).filter((n) => n.endsWith('.manifest'));
    for (const name of kept) {
      const bytes = await readFile(join(keptDir, name));
      bytes[bytes.length - 20]! ^= 0xff;
      await writeFile(join(keptDir, name), bytes);
    }
    await writeFile(join(tree, 'f3.txt'), 'changed once\n');
    let made = await counted(() => push(tree, `${url}/tree2`));
    t.diagnostic(made.map((r) => `${r.what} ${r.status}`).join(', '));
    // Asked about while it was read through (304), then fetched whole when it did not read through.
    assert.deepEqual(made.filter((r) => r.what === 'GET /v1/manifests/').map((r) => r.status), [304, 200]);
    // No longer current: the target pushed from elsewhere (another user's cache) since.
    await writeFile(join(tree, 'f4.txt'), 'changed elsewhere\n');
    process.env.XDG_CACHE_HOME = join(dir, 'other-cache');
    try {
      await push(tree, `${url}/tree2`);
    } finally {
      process.env.XDG_CACHE_HOME = join(dir, 'cache');
    }
    await writeFile(join(tree, 'f5.txt'), 'changed here\n');
    made = await counted(() => push(tree, `${url}/tree2`));
    t.diagnostic(made.map((r) => `${r.what} ${r.status}`).join(', '));
    assert.deepEqual(made.filter((r) => r.what === 'GET /v1/manifests/').map((r) => r.status), [200]);
    const back = join(dir, 'tree2.out');
    await pull(`${url}/tree2`, back);
    for (let i = 0; i < 20; i++) assert.deepEqual(await readFile(join(back, `f${i}.txt`)), await readFile(join(tree, `f${i}.txt`)), `f${i}.txt`);
  });

  it('a tree re-sync commits by naming the body its stage sent: the manifest goes up once', async (t) => {
    const tree = join(dir, 'tree3');
    await mkdir(tree, { recursive: true });
    for (let i = 0; i < 400; i++) await writeFile(join(tree, `file-with-a-longer-name-${i}.txt`), `file ${i}\n`);
    await push(tree, `${url}/tree3`);
    await writeFile(join(tree, 'file-with-a-longer-name-7.txt'), 'changed\n');
    const made = await counted(() => push(tree, `${url}/tree3`));
    t.diagnostic(made.map((r) => `${r.what} ${r.status} ${r.bytesIn}`).join(', '));
    const stage = made.filter((r) => r.what === 'POST /v1/stage/');
    const commits = made.filter((r) => r.what === 'PUT /v1/manifests/');
    assert.equal(stage.length, 1);
    assert.ok(stage[0]!.bytesIn > 40_000, `the stage read the manifest's body (${stage[0]!.bytesIn} bytes)`);
    // The header and trailer (105 bytes), not the body again.
    assert.deepEqual(commits.map((r) => r.status), [200]);
    assert.ok(commits[0]!.bytesIn <= 1024, `the commit sent ${commits[0]!.bytesIn} bytes`);
    const back = join(dir, 'tree3.out');
    await pull(`${url}/tree3`, back);
    for (const i of [0, 7, 399]) assert.deepEqual(await readFile(join(back, `file-with-a-longer-name-${i}.txt`)), await readFile(join(tree, `file-with-a-longer-name-${i}.txt`)));
  });
});
