import { strict as assert } from 'node:assert';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DigestAlgorithm } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import {
  HEADER_BYTES,
  ManifestWriter,
  READ_BATCH_RECORDS,
  comparePaths,
  decodeManifest,
  openManifestFile,
  type ChunkRecord,
  type ManifestEntry,
  type ManifestEvent,
} from '../src/manifest/index.js';
import {
  CDC_DEFAULT,
  FILE_BLAKE3,
  FIXED_4K,
  TREE_SHA256,
  dirEntry,
  encode,
  fileEntry,
  readEvents,
  symlinkEntry,
  withTempDir,
} from './manifest-helpers.js';

/** Rebuilds entries from events, the way any streaming consumer would. */
function entriesFromEvents(events: readonly ManifestEvent[]): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  for (const e of events) {
    if (e.kind === 'entry') out.push({ ...e.meta, chunks: [] });
    else if (e.kind === 'chunks') (out.at(-1)!.chunks as ChunkRecord[]).push(...e.records);
    else out[out.length - 1] = { ...out.at(-1)!, size: e.size, digest: e.digest };
  }
  return out;
}

/** Entries as plain data, so Buffer and Uint8Array digests compare equal. */
function plain(entries: readonly ManifestEntry[]): unknown {
  return entries.map((e) => ({
    ...e,
    chunks: e.chunks.map((c) => ({ length: c.length, digest: Buffer.from(c.digest).toString('hex') })),
    digest: e.digest && Buffer.from(e.digest).toString('hex'),
  }));
}

function treeEntries(algorithm: DigestAlgorithm): ManifestEntry[] {
  const big = Buffer.alloc(3 * 4096 + 17, 7);
  const entries: ManifestEntry[] = [
    dirEntry('a'),
    dirEntry('a/b'),
    dirEntry('a/b/c'),
    fileEntry('a/b/c/deep.txt', Buffer.from('deep'), algorithm),
    fileEntry('a/big.bin', big, algorithm, { lengths: [4096, 4096, 4096, 17] }),
    fileEntry('a/empty', Buffer.alloc(0), algorithm, { mode: 0o600 }),
    symlinkEntry('a/link', '../outside/ü'),
    dirEntry('a-sibling'),
    dirEntry('empty-dir', 0o700, -86_400_000),
    fileEntry('\uFEFFbom', Buffer.from('bom'), algorithm),
    dirEntry('日本'),
    fileEntry('日本/語.txt', Buffer.from('にほんご'), algorithm, { mode: 0o7777 }),
    fileEntry('e\u0301', Buffer.from('decomposed'), algorithm),
    fileEntry('\u00e9', Buffer.from('composed'), algorithm),
    symlinkEntry('🎉', '/absolute/target with spaces'),
  ];
  return entries.sort((x, y) => comparePaths(x.path, y.path));
}

describe('manifest round trips', () => {
  it('comparePaths orders a pre-order walk with siblings sorted by name bytes', () => {
    const paths = ['a-c', 'a/b', 'a', 'b', 'a/b/c', 'a.d', 'a/a', 'é', 'z'];
    assert.deepEqual(paths.sort(comparePaths), ['a', 'a/a', 'a/b', 'a/b/c', 'a-c', 'a.d', 'b', 'z', 'é']);
  });

  for (const algorithm of ['blake3', 'sha256'] as const) {
    it(`a tree with nested dirs, empty files and dirs, symlinks and unicode paths (${algorithm})`, async () => {
      const init = { kind: 'tree', digestAlgorithm: algorithm, chunker: FIXED_4K } as const;
      const entries = treeEntries(algorithm);
      const { bytes, header } = await encode(init, entries);

      assert.equal(header.kind, 'tree');
      assert.equal(header.entryCount, entries.length);
      assert.equal(header.chunkCount, 9);
      assert.equal(header.totalBytes, 4 + 3 * 4096 + 17 + 3 + 12 + 10 + 8);
      // The header digest of a tree is the digest of the body: the bytes between header and trailer.
      assert.deepEqual(header.digest, digestOf(algorithm, bytes.subarray(HEADER_BYTES, bytes.length - 9)));

      const decoded = await decodeManifest(bytes);
      assert.deepEqual(decoded.header, header);
      assert.deepEqual(plain(decoded.entries), plain(entries));
    });
  }

  it('a file manifest: one entry with path "", header digest = whole-file digest', async () => {
    const content = Buffer.from('x'.repeat(1000));
    const entry = fileEntry('', content, 'blake3', { lengths: [100, 400, 500] });
    const { bytes, header } = await encode(FILE_BLAKE3, [entry]);
    assert.deepEqual(header, {
      formatVersion: 2,
      kind: 'file',
      digestAlgorithm: 'blake3',
      chunker: CDC_DEFAULT,
      totalBytes: 1000,
      entryCount: 1,
      chunkCount: 3,
      digest: digestOf('blake3', content),
    });
    const decoded = await decodeManifest(bytes);
    assert.deepEqual(decoded.header, header);
    assert.deepEqual(plain(decoded.entries), plain([entry]));
  });

  it('an empty file and an empty tree', async () => {
    const empty = fileEntry('', Buffer.alloc(0), 'blake3');
    const file = await encode(FILE_BLAKE3, [empty]);
    assert.deepEqual(plain((await decodeManifest(file.bytes)).entries), plain([empty]));
    assert.equal(file.header.chunkCount, 0);

    const tree = await encode(TREE_SHA256, []);
    const decoded = await decodeManifest(tree.bytes);
    assert.deepEqual(decoded.entries, []);
    assert.equal(decoded.header.entryCount, 0);
    assert.deepEqual(decoded.header.digest, digestOf('sha256', Buffer.alloc(0)));
    assert.equal(tree.bytes.length, HEADER_BYTES + 9);
  });

  it('a file of unknown size (declared -1, as from stdin) reads back with its final size', async () => {
    const entry = fileEntry('', Buffer.from('streamed'), 'blake3', { size: -1 });
    const { bytes } = await encode(FILE_BLAKE3, [entry]);
    const { events } = await readEvents(bytes);
    const [first, last] = [events[0]!, events.at(-1)!];
    assert.equal(first.kind === 'entry' && first.meta.size, -1);
    assert.equal(last.kind === 'entryEnd' && last.size, 8);
  });

  it('reads the same events whatever pieces the bytes arrive in', async () => {
    const { bytes } = await encode(TREE_SHA256, treeEntries('sha256'));
    const whole = entriesFromEvents((await readEvents(bytes)).events);
    for (const size of [1, 2, 3, 7, 35, 36, 37, 96, 4096]) {
      assert.deepEqual(plain(entriesFromEvents((await readEvents(bytes, size)).events)), plain(whole), `pieces of ${size}`);
    }
  });

  it('yields chunk records in batches of at most READ_BATCH_RECORDS whose digests stay valid', async () => {
    const count = 2 * READ_BATCH_RECORDS + 100;
    const records = Array.from({ length: count }, (_, i) => ({ length: 1 + (i % 4096), digest: digestOf('sha256', Buffer.from(String(i))) }));
    const size = records.reduce((s, r) => s + r.length, 0);
    await withTempDir(async (dir) => {
      const path = join(dir, 'batches.xfm');
      const writer = await ManifestWriter.create(path, TREE_SHA256);
      await writer.beginEntry({ type: 'file', path: 'f', mode: 0o644, mtimeMs: 0, size });
      for (let i = 0; i < count; i += 1000) await writer.addChunks(records.slice(i, i + 1000));
      await writer.endEntry(size, digestOf('sha256', Buffer.from('whole')));
      await writer.finish();

      const reader = await openManifestFile(path);
      const batches: (readonly ChunkRecord[])[] = [];
      for await (const e of reader.events()) if (e.kind === 'chunks') batches.push(e.records);
      assert.deepEqual(batches.map((b) => b.length), [READ_BATCH_RECORDS, READ_BATCH_RECORDS, 100]);
      // Checked after the iteration has moved on: earlier batches were not overwritten.
      assert.deepEqual(
        batches.flat().map((r) => [r.length, Buffer.from(r.digest).toString('hex')]),
        records.map((r) => [r.length, r.digest.toString('hex')]),
      );
    });
  });

  it('keeps extreme but valid metadata: negative and large mtimes, all mode bits', async () => {
    const entries = [
      { ...dirEntry('old', 0o7777, -(2 ** 53 - 1)) },
      { ...dirEntry('young', 0, 2 ** 53 - 1) },
    ];
    const { bytes } = await encode({ ...TREE_SHA256, chunker: CDC_DEFAULT }, entries);
    assert.deepEqual(plain((await decodeManifest(bytes)).entries), plain(entries));
  });
});
