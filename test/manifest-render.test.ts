/** `xfer manifest show`: renderManifest's text and JSON forms, streamed through `write`. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ManifestCorruptError } from '../src/core/errors.js';
import { digestOf } from '../src/hash/digest.js';
import { READ_BATCH_RECORDS, openManifest, renderManifest, type ManifestEntry, type ManifestInit } from '../src/manifest/index.js';
import { FILE_BLAKE3, TREE_SHA256, dirEntry, encode, fileEntry, pieces, symlinkEntry } from './manifest-helpers.js';

const HW = 'a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447';
const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const TREE: ManifestEntry[] = [
  dirEntry('docs', 0o755, 1_700_000_000_000),
  fileEntry('docs/a.txt', Buffer.from('hello world\n'), 'sha256', { mtimeMs: 1_700_000_001_000 }),
  fileEntry('empty', Buffer.alloc(0), 'sha256', { mode: 0o600, mtimeMs: 1_700_000_002_000 }),
  symlinkEntry('link', 'docs/a.txt', 1_700_000_003_000),
];

/** Renders the manifest of `entries`, returning every piece passed to `write`. */
async function render(init: ManifestInit, entries: readonly ManifestEntry[], json: boolean): Promise<string[]> {
  const { bytes } = await encode(init, entries);
  const reader = await openManifest(pieces(bytes, 1000));
  const writes: string[] = [];
  // An asynchronous sink: renderManifest must await each write, in order.
  await renderManifest(reader, async (text) => {
    await new Promise((resolve) => setImmediate(resolve));
    writes.push(text);
  }, { json });
  return writes;
}

describe('renderManifest', () => {
  it('text: a header block, then one line per entry and indented chunk lines', async () => {
    const text = (await render(TREE_SHA256, TREE, false)).join('');
    assert.equal(text, [
      'format version:   1',
      'kind:             tree',
      'digest algorithm: sha256',
      'chunker:          fixed 4096',
      'total size:       12 bytes',
      'entries:          4',
      'chunks:           1',
      'body digest:      d2cc166ed36712c6a9e97d2f35d59cd111ce7e7b89dd49c5fa26a4ce16a8d7e4',
      '',
      'dir     0755            - 2023-11-14T22:13:20.000Z docs',
      'file    0644           12 2023-11-14T22:13:21.000Z docs/a.txt',
      `               0       12 ${HW}`,
      `    size 12 digest ${HW}`,
      'file    0600            0 2023-11-14T22:13:22.000Z empty',
      `    size 0 digest ${EMPTY}`,
      'symlink 0777            - 2023-11-14T22:13:23.000Z link -> docs/a.txt',
      '',
    ].join('\n'));
  });

  it('text: file manifests, unknown sizes, sizes in KiB and paths that need quoting', async () => {
    const content = Buffer.alloc(5000, 1);
    const file = await render(FILE_BLAKE3, [fileEntry('', content, 'blake3', { lengths: [4000, 1000], size: -1, mtimeMs: 0 })], false);
    const text = file.join('');
    assert.match(text, /^total size: {7}5000 bytes \(4\.88 KiB\)$/m);
    assert.match(text, /^file digest: {6}[0-9a-f]{64}$/m);
    assert.match(text, /^file    0644            \? 1970-01-01T00:00:00\.000Z ""$/m);
    assert.match(text, /^ {12}4000 {5}1000 [0-9a-f]{64}$/m);

    const odd = (await render(TREE_SHA256, [dirEntry('line\nbreak')], false)).join('');
    assert.match(odd, /^dir .* "line\\nbreak"$/m);
  });

  it('JSON: one valid object with the header fields and every entry', async () => {
    const writes = await render(TREE_SHA256, TREE, true);
    assert.ok(writes.length > 1, 'written in pieces');
    assert.deepEqual(JSON.parse(writes.join('')), {
      formatVersion: 1,
      kind: 'tree',
      digestAlgorithm: 'sha256',
      chunker: { algorithm: 'fixed', sizeBytes: 4096 },
      totalBytes: 12,
      entryCount: 4,
      chunkCount: 1,
      digest: 'd2cc166ed36712c6a9e97d2f35d59cd111ce7e7b89dd49c5fa26a4ce16a8d7e4',
      entries: [
        { type: 'dir', path: 'docs', mode: 0o755, mtimeMs: 1_700_000_000_000, size: 0 },
        { type: 'file', path: 'docs/a.txt', mode: 0o644, mtimeMs: 1_700_000_001_000, size: 12, digest: HW, chunks: [{ offset: 0, length: 12, digest: HW }] },
        { type: 'file', path: 'empty', mode: 0o600, mtimeMs: 1_700_000_002_000, size: 0, digest: EMPTY, chunks: [] },
        { type: 'symlink', path: 'link', mode: 0o777, mtimeMs: 1_700_000_003_000, size: 0, linkTarget: 'docs/a.txt' },
      ],
    });
  });

  it('JSON: an empty tree, and unicode that needs escaping', async () => {
    assert.deepEqual(JSON.parse((await render(TREE_SHA256, [], true)).join('')).entries, []);
    const parsed = JSON.parse((await render(TREE_SHA256, [dirEntry('"quoted"'), symlinkEntry('日本\n', 'a\\b')], true)).join(''));
    assert.deepEqual(parsed.entries.map((e: { path: string }) => e.path), ['"quoted"', '日本\n']);
    assert.equal(parsed.entries[1].linkTarget, 'a\\b');
  });

  it('JSON: a file with many chunks is streamed batch by batch with running offsets', async () => {
    const count = 2 * READ_BATCH_RECORDS + 5;
    const lengths = Array.from({ length: count }, (_, i) => 1 + (i % 10));
    const content = Buffer.alloc(lengths.reduce((a, b) => a + b, 0), 3);
    const writes = await render(TREE_SHA256, [fileEntry('f', content, 'sha256', { lengths })], true);
    const all = writes.join('');
    // One write per batch of records: the output is never built whole.
    assert.equal(writes.filter((w) => w.includes('"offset"')).length, 3);
    const chunks = JSON.parse(all).entries[0].chunks as { offset: number; length: number }[];
    assert.equal(chunks.length, count);
    let offset = 0;
    for (const [i, c] of chunks.entries()) {
      assert.deepEqual([c.offset, c.length], [offset, lengths[i]]);
      offset += c.length;
    }
  });

  it('propagates corruption found while rendering', async () => {
    const { bytes } = await encode(TREE_SHA256, [dirEntry('d')]);
    const reader = await openManifest(pieces(bytes.subarray(0, bytes.length - 1), 64));
    let out = '';
    await assert.rejects(renderManifest(reader, (t) => void (out += t), { json: true }), ManifestCorruptError);
    assert.match(out, /"entries":\[/);
  });

  it('a whole-file digest equals the digest of the content', async () => {
    const content = Buffer.from('some content');
    const json = JSON.parse((await render(FILE_BLAKE3, [fileEntry('', content, 'blake3')], true)).join(''));
    assert.equal(json.digest, digestOf('blake3', content).toString('hex'));
    assert.equal(json.entries[0].digest, json.digest);
  });
});
