/**
 * A staged commit (`PUT /v1/manifests/<path>?staged=1`, docs/PROTOCOL.md) sends a tree
 * manifest's header and trailer only, the body being the one the path's tree stage read.
 * The server commits only a manifest whose body its stage read, whole, with the header's
 * digest; otherwise it answers 404 and commits nothing, and the client sends the manifest.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { push } from '../src/api.js';
import { isXferError } from '../src/core/errors.js';
import { END_MARKER, HEADER_BYTES, TRAILER_BYTES } from '../src/manifest/format.js';
import { openManifestFile } from '../src/manifest/reader.js';
import { stageQuery } from '../src/protocol/stage-format.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { HttpStore } from '../src/store/http/store.js';

describe('a staged commit names the body its stage read, and nothing else', () => {
  let dir: string;
  let server: XferServer;
  let store: HttpStore;
  /** The manifests of trees `a` and `b` pushed before (kept by the pushes, endpoint/pushed.ts), whole. */
  const manifests = new Map<string, { path: string; bytes: Buffer }>();
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-commit-staged-'));
    process.env.XDG_CACHE_HOME = join(dir, 'cache');
    server = await createServer({ root: join(dir, 'root'), port: 0 });
    const keptDir = join(dir, 'cache', 'xfer', 'pushed');
    for (const t of ['a', 'b']) {
      const tree = join(dir, t);
      await mkdir(tree, { recursive: true });
      for (let i = 0; i < 30; i++) await writeFile(join(tree, `f${i}.txt`), `tree ${t} file ${i}\n`);
      await push(tree, `${server.url}/${t}`);
      const kept = (await readdir(keptDir)).filter((n) => n.endsWith('.manifest') && ![...manifests.values()].some((m) => m.path === join(keptDir, n)));
      assert.equal(kept.length, 1);
      manifests.set(t, { path: join(keptDir, kept[0]!), bytes: await readFile(join(keptDir, kept[0]!)) });
    }
    store = await HttpStore.connect(server.url, { retry: undefined });
  });
  after(async () => {
    await store?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const ends = (m: Buffer) => Buffer.concat([m.subarray(0, HEADER_BYTES), m.subarray(m.length - TRAILER_BYTES)]);
  const commitStaged = (name: string, m: Buffer) =>
    store.client.commitManifest(name, async function* () {
      yield ends(m);
    }, { staged: true });
  const notFound = (err: unknown) => isXferError(err, 'XFER_NOT_FOUND');

  it('without a stage of the path: 404, nothing committed', async () => {
    await assert.rejects(commitStaged('nostage', manifests.get('a')!.bytes), notFound);
    await assert.rejects(store.client.getManifest('nostage').then(async (body) => {
      for await (const _ of body);
    }), notFound);
  });

  it('with a stage: another manifest\'s header gets 404; its own is committed, byte for byte the client\'s manifest', async () => {
    const mine = manifests.get('a')!;
    const other = manifests.get('b')!;
    const header = (await openManifestFile(mine.path)).header;
    const body = Buffer.concat([mine.bytes.subarray(HEADER_BYTES, mine.bytes.length - TRAILER_BYTES), Buffer.from([END_MARKER])]);
    const stage = store.client.stage('copy', stageQuery(header.digestAlgorithm, { tree: header.chunker }, false), (async function* () {
      yield body;
    })());
    stage.catch(() => {});
    // Time for the stage to read its (small) body whole: the wrong header is then refused
    // for being another manifest's, not for a body still on its way (404 either way).
    await new Promise((resolve) => setTimeout(resolve, 300));
    await assert.rejects(commitStaged('copy', other.bytes), notFound);
    const answer = await commitStaged('copy', mine.bytes);
    assert.equal(answer.kind, 'tree');
    await stage;
    const stored: Buffer[] = [];
    for await (const piece of await store.client.getManifest('copy')) stored.push(Buffer.from(piece));
    assert.deepEqual(Buffer.concat(stored), mine.bytes);
    assert.equal(await readFile(join(dir, 'root', 'files', 'copy', 'f7.txt'), 'utf8'), 'tree a file 7\n');
  });
});
