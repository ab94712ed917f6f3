/**
 * A tree of many small files costs a handful of requests to a server, not one or more per
 * file (issue 17, item 4): its chunks are asked about and uploaded in batches, its
 * target's manifest is read once per push, and a pull into a new directory fetches its
 * chunks in a few large requests. Counted at a real server (its request log) behind a
 * relay that adds a round trip of RTT_MS, as a long link would: per-file requests then
 * also show as time.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startWanRelay, type WanRelay } from '../bench/wan-relay.js';
import { pull, push } from '../src/api.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { pseudoRandom } from './helpers/gen.js';

const FILES = 500;
const DIRS = 10;
/** The relay's round trip: long enough that requests cost time, short enough for a fast test. */
const RTT_MS = 40;
/** Requests a whole push or pull of the tree may make, at most: far fewer than one per file. */
const MAX_REQUESTS = 20;

/** `<dir>/d<k>/f<i>.txt`: FILES small files of distinct content. */
async function writeTree(root: string): Promise<void> {
  for (let d = 0; d < DIRS; d++) {
    await mkdir(join(root, `d${d}`), { recursive: true });
    for (let i = 0; i < FILES / DIRS; i++) await writeFile(join(root, `d${d}`, `f${i}.txt`), `file ${d}/${i}\n${'x'.repeat(100 + i)}\n`);
  }
}

describe('a tree of many small files costs a handful of requests, not one per file', () => {
  let dir: string;
  let server: XferServer;
  let relay: WanRelay;
  let url: string;
  /** The server's requests, as `METHOD /v1/<endpoint>` (names left out). */
  let requests: string[] = [];
  /** Bytes the server answered to chunks/fetch requests. */
  let fetchedBytes = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-tree-requests-'));
    const logger = {
      debug() {},
      warn() {},
      error(fields: object) {
        const f = fields as { method?: string; path?: string };
        if (f.path) requests.push(`${f.method} ${f.path}`);
      },
      info(fields: object, message?: string) {
        const f = fields as { method: string; path: string; bytesOut: number };
        if (message !== 'request') return;
        requests.push(`${f.method} ${f.path.replace(/^\/v1\/(manifests|stage|stat)\/.*/, '/v1/$1/')}`);
        if (f.path === '/v1/chunks/fetch') fetchedBytes += f.bytesOut;
      },
    };
    server = await createServer({ root: join(dir, 'root'), port: 0, logger });
    relay = await startWanRelay(Number(new URL(server.url).port), { rttMs: RTT_MS, rateBitsPerSecond: 10e9, slowStart: false });
    url = `http://127.0.0.1:${relay.port}`;
    await writeTree(join(dir, 'tree'));
  });
  after(async () => {
    await relay?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The requests `op` made, once the server has logged them all (a stage is logged after its answer). */
  async function counted(op: () => Promise<unknown>): Promise<string[]> {
    requests = [];
    fetchedBytes = 0;
    await op();
    await new Promise((r) => setTimeout(r, 50));
    return requests;
  }
  const count = (list: string[], what: string) => list.filter((r) => r === what).length;

  it(`a first push of ${FILES} files makes at most ${MAX_REQUESTS} requests, and reads the target's manifest once`, async (t) => {
    const made = await counted(() => push(join(dir, 'tree'), `${url}/tree`));
    t.diagnostic(`${made.length} requests: ${made.join(', ')}`);
    assert.ok(made.length <= MAX_REQUESTS, `${made.length} requests for ${FILES} files`);
    assert.equal(count(made, 'GET /v1/manifests/'), 1);
    assert.equal(count(made, 'PUT /v1/manifests/'), 1);
  });

  it('a push of the tree again with one file changed reads the target\'s manifest once', async (t) => {
    await writeFile(join(dir, 'tree', 'd3', 'f7.txt'), 'changed\n');
    const made = await counted(() => push(join(dir, 'tree'), `${url}/tree`));
    t.diagnostic(`${made.length} requests: ${made.join(', ')}`);
    assert.equal(count(made, 'GET /v1/manifests/'), 1);
    assert.ok(made.length <= MAX_REQUESTS, `${made.length} requests for ${FILES} files`);
  });

  it(`a pull of the tree into a new directory makes at most ${MAX_REQUESTS} requests and rebuilds it`, async (t) => {
    const out = join(dir, 'out');
    const made = await counted(() => pull(`${url}/tree`, out));
    t.diagnostic(`${made.length} requests: ${made.join(', ')}`);
    assert.ok(made.length <= MAX_REQUESTS, `${made.length} requests for ${FILES} files`);
    for (let d = 0; d < DIRS; d++) {
      for (let i = 0; i < FILES / DIRS; i++) {
        const rel = join(`d${d}`, `f${i}.txt`);
        assert.deepEqual(await readFile(join(out, rel)), await readFile(join(dir, 'tree', rel)), rel);
      }
    }
  });

  it('a pull of a tree into a new directory that was cut short resumes from its partial tree, fetching only the rest', async (t) => {
    const FILE_BYTES = 256 * 1024;
    const big = join(dir, 'big');
    await mkdir(big);
    for (let i = 0; i < 40; i++) await writeFile(join(big, `part${String(i).padStart(2, '0')}.bin`), pseudoRandom(FILE_BYTES, 700 + i));
    const total = 40 * FILE_BYTES;
    await push(big, `${url}/big`);
    const out = join(dir, 'big-out');
    const cut = new AbortController();
    await assert.rejects(
      pull(`${url}/big`, out, { signal: cut.signal, onProgress: (p) => p.bytesDone >= total / 2 && cut.abort() }),
      (err: Error & { code?: string }) => err.code === 'XFER_ABORTED',
    );
    // The partial tree is there to resume from: the second pull must not ask for what it holds.
    await counted(() => pull(`${url}/big`, out));
    t.diagnostic(`the resumed pull fetched ${fetchedBytes} of ${total} bytes`);
    assert.ok(fetchedBytes < total * 0.75, `the resumed pull fetched ${fetchedBytes} of ${total} bytes`);
    for (let i = 0; i < 40; i++) {
      const name = `part${String(i).padStart(2, '0')}.bin`;
      assert.deepEqual(await readFile(join(out, name)), await readFile(join(big, name)), name);
    }
  });
});
