import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isXferError, list, MemoryStore, NotFoundError, pull, push, readManifest, registerScheme, storeScheme, unregisterScheme, verify, type ManifestReader, type Scheme } from '../src/index.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;
/** A whole-second mtime, kept exactly by utimes. */
const MTIME_S = 1_700_000_000;

/** The paths of a manifest's entries, read to its end (which checks it whole). */
async function entryPaths(reader: ManifestReader): Promise<string[]> {
  const paths: string[] = [];
  for await (const ev of reader.events()) if (ev.kind === 'entry') paths.push(ev.meta.path);
  return paths;
}

/**
 * A library user's store object is a location like any other (issue 15): push a file and a
 * tree into a MemoryStore, list, verify, show and pull back out of it, without a local path
 * or a server anywhere.
 */
describe('locations: a ChunkStore & ManifestStore object', () => {
  let dir: string;
  const file = pseudoRandom(300 * KiB, 1);
  const a = pseudoRandom(200 * KiB, 2);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-locations-store-'));
    await writeFile(join(dir, 'f.bin'), file);
    await mkdir(join(dir, 'tree', 'sub'), { recursive: true });
    await writeFile(join(dir, 'tree', 'a.bin'), a);
    await writeFile(join(dir, 'tree', 'sub', 'b.txt'), 'hello');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('takes a pushed file and tree under their names, lists, verifies, shows them and gives them back', async () => {
    const store = new MemoryStore();
    const f = await push(join(dir, 'f.bin'), store);
    assert.equal(f.target, 'f.bin');
    assert.ok(f.chunksSent > 0);
    const t = await push(join(dir, 'tree'), store);
    assert.equal(t.target, 'tree');

    const entries = await list(store);
    assert.deepEqual(entries.map((e) => [e.path, e.kind, e.bytes]), [['f.bin', 'file', file.length], ['tree', 'tree', a.length + 5]]);
    assert.deepEqual((await list({ store, path: 'tr' })).map((e) => e.path), ['tree'], 'a path is a prefix');

    const report = await verify(store);
    assert.equal(report.manifests, 2);
    assert.deepEqual(report.damaged, []);
    assert.equal(report.rebuilt, false, 'a store holds no rebuilt files to read');

    const reader = await readManifest({ store, path: 'tree' });
    assert.equal(reader.header.kind, 'tree');
    assert.deepEqual(await entryPaths(reader), ['', 'a.bin', 'sub', 'sub/b.txt']);

    await pull({ store, path: 'f.bin' }, join(dir, 'f.back'));
    assert.ok((await readFile(join(dir, 'f.back'))).equals(file));
    await pull({ store, path: 'tree/' }, join(dir, 'tree.back'));
    assert.ok((await readFile(join(dir, 'tree.back', 'a.bin'))).equals(a));
    assert.equal(await readFile(join(dir, 'tree.back', 'sub', 'b.txt'), 'utf8'), 'hello');
  });

  it('verify finds a damaged chunk of a store object', async () => {
    const store = new MemoryStore();
    await push(join(dir, 'f.bin'), store);
    for await (const id of store.listChunks()) {
      store.corruptChunk(id);
      break;
    }
    const report = await verify({ store, path: 'f.bin' }, { readData: true });
    assert.equal(report.damaged.length, 1);
    assert.equal(report.damaged[0]!.kind, 'corrupt');
  });

  it('a second push reads no unchanged file: the quick check trusts the store\'s manifest, as rsync trusts size and mtime', async () => {
    const store = new MemoryStore();
    const tree = join(dir, 'quick');
    const path = join(tree, 'a.bin');
    await mkdir(tree);
    await writeFile(path, a);
    await utimes(path, MTIME_S, MTIME_S);
    await push(tree, store);
    // Other bytes, same size and mtime: only reading the file would tell.
    await writeFile(path, pseudoRandom(a.length, 9));
    await utimes(path, MTIME_S, MTIME_S);
    const again = await push(tree, store);
    assert.equal(again.target, 'quick', 'the tree is updated, not nested as quick/quick');
    assert.equal(again.chunksSent, 0);
    await pull({ store, path: 'quick' }, join(dir, 'quick.back'));
    assert.ok((await readFile(join(dir, 'quick.back', 'a.bin'))).equals(a), 'the file was not read again');
  });

  it('what is not a location is refused with a clear error, not "dest.endsWith is not a function"', async () => {
    for (const bad of [{}, 42, { store: {} }, { store: new MemoryStore(), path: 7 }]) {
      await assert.rejects(push(join(dir, 'f.bin'), bad as never), (err: unknown) => isXferError(err, 'XFER_INVALID_ARGUMENT') && /must be a local path, a URL/.test(err.message));
    }
    await assert.rejects(pull(new MemoryStore(), join(dir, 'x')), /name a remote path to pull/);
    await assert.rejects(pull({ store: new MemoryStore(), path: 'nothing' }, join(dir, 'x')), NotFoundError);
  });
});

/**
 * Adding a store is its file, one registered scheme and one conformance line
 * (test/store-memory.test.ts runs test/store-conformance.ts against MemoryStore): here the
 * memory store, registered in-process as `mem:<name>/<path>`, is a location of the library.
 */
describe('locations: a scheme registered in-process (mem:)', () => {
  let dir: string;
  const stores = new Map<string, MemoryStore>();
  let scheme: Scheme;
  const file = pseudoRandom(300 * KiB, 3);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-locations-mem-'));
    await writeFile(join(dir, 'f.bin'), file);
    await mkdir(join(dir, 'tree'));
    await writeFile(join(dir, 'tree', 'c.txt'), 'see');
    scheme = storeScheme('mem', 'mem:', async (name) => {
      const store = stores.get(name);
      if (!store) throw new NotFoundError(`no memory store named ${name}`);
      return store;
    }, { wire: false });
    registerScheme(scheme);
    stores.set('a', new MemoryStore());
  });
  after(async () => {
    unregisterScheme(scheme);
    await rm(dir, { recursive: true, force: true });
  });

  it('push, ls, verify, manifest show and pull through mem:name/path locations', async () => {
    const f = await push(join(dir, 'f.bin'), 'mem:a/backups/');
    assert.equal(f.target, 'mem:a/backups/f.bin');
    const t = await push(join(dir, 'tree/'), 'mem:a/backups/t');
    assert.equal(t.target, 'mem:a/backups/t');
    // Every manifest: the targets and, in the store's namespace, a version of each (issue 16).
    assert.deepEqual((await stores.get('a')!.listManifests('')).map((m) => m.name.replace(/^\.xfer\/versions\/[0-9a-f]{32}\/[^/]+$/, '.xfer/versions/<key>/<id>')), ['.xfer/versions/<key>/<id>', '.xfer/versions/<key>/<id>', 'backups/f.bin', 'backups/t']);

    assert.deepEqual((await list('mem:a/backups/')).map((e) => [e.path, e.kind]), [['backups/f.bin', 'file'], ['backups/t', 'tree']]);
    assert.deepEqual((await verify('mem:a')).damaged, []);
    assert.equal((await verify('mem:a/backups/t')).manifests, 1);
    const reader = await readManifest('mem:a/backups/f.bin');
    assert.equal(reader.header.totalBytes, file.length);
    await reader.close();

    await pull('mem:a/backups/f.bin', join(dir, 'f.back'));
    assert.ok((await readFile(join(dir, 'f.back'))).equals(file));
    await pull('mem:a/backups/t', join(dir, 'out/'));
    assert.equal(await readFile(join(dir, 'out', 't', 'c.txt'), 'utf8'), 'see');
  });

  it('a mem: location is no wire: --bwlimit is refused, and an unknown store is not found', async () => {
    await assert.rejects(push(join(dir, 'f.bin'), 'mem:a/x', { bwlimitBytesPerSecond: 1024 * KiB }), /--bwlimit applies to transfers to or from a server/);
    await assert.rejects(list('mem:nope/'), NotFoundError);
    await assert.rejects(verify('mem:a/missing'), NotFoundError);
  });
});
