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
      'format version:   2',
      'kind:             tree',
      'digest algorithm: sha256',
      'chunker:          fixed 4096',
      'total size:       12 bytes',
      'entries:          4',
      'chunks:           1',
      'body digest:      6bb68da04f09c3e008a63c8bce3f6dafae352d41124b719c3423e2e971035237',
      '',
      'dir     0755            - 2023-11-14T22:13:20.000000000Z -:- docs',
      'file    0644           12 2023-11-14T22:13:21.000000000Z -:- docs/a.txt',
      `               0       12 ${HW}`,
      `    size 12 digest ${HW}`,
      'file    0600            0 2023-11-14T22:13:22.000000000Z -:- empty',
      `    size 0 digest ${EMPTY}`,
      'symlink 0777            - 2023-11-14T22:13:23.000000000Z -:- link -> docs/a.txt',
      '',
    ].join('\n'));
  });

  it('text: file manifests, unknown sizes, sizes in KiB and paths that need quoting', async () => {
    const content = Buffer.alloc(5000, 1);
    const file = await render(FILE_BLAKE3, [fileEntry('', content, 'blake3', { lengths: [4000, 1000], size: -1, mtimeMs: 0 })], false);
    const text = file.join('');
    assert.match(text, /^total size: {7}5000 bytes \(4\.88 KiB\)$/m);
    assert.match(text, /^file digest: {6}[0-9a-f]{64}$/m);
    assert.match(text, /^file    0644            \? 1970-01-01T00:00:00\.000000000Z -:- ""$/m);
    assert.match(text, /^ {12}4000 {5}1000 [0-9a-f]{64}$/m);

    const odd = (await render(TREE_SHA256, [dirEntry('line\nbreak')], false)).join('');
    assert.match(odd, /^dir .* "line\\nbreak"$/m);
  });

  it('JSON: one valid object with the header fields and every entry', async () => {
    const writes = await render(TREE_SHA256, TREE, true);
    assert.ok(writes.length > 1, 'written in pieces');
    assert.deepEqual(JSON.parse(writes.join('')), {
      formatVersion: 2,
      kind: 'tree',
      digestAlgorithm: 'sha256',
      chunker: { algorithm: 'fixed', sizeBytes: 4096 },
      totalBytes: 12,
      entryCount: 4,
      chunkCount: 1,
      digest: '6bb68da04f09c3e008a63c8bce3f6dafae352d41124b719c3423e2e971035237',
      entries: [
        { type: 'dir', path: 'docs', mode: 0o755, mtimeMs: 1_700_000_000_000, size: 0 },
        { type: 'file', path: 'docs/a.txt', mode: 0o644, mtimeMs: 1_700_000_001_000, size: 12, digest: HW, chunks: [{ offset: 0, length: 12, digest: HW }] },
        { type: 'file', path: 'empty', mode: 0o600, mtimeMs: 1_700_000_002_000, size: 0, digest: EMPTY, chunks: [] },
        { type: 'symlink', path: 'link', mode: 0o777, mtimeMs: 1_700_000_003_000, size: 0, linkTarget: 'docs/a.txt' },
      ],
    });
  });

  it('version 2 attributes: nanoseconds, owners, device numbers, hard links and xattrs, as text and JSON', async () => {
    const attrs = { mtimeExtraNs: 123_456, uid: 1234, gid: 5678, owner: 'alice', group: 'staff', xattrs: [{ name: 'user.bin', value: Buffer.of(0, 0xff) }, { name: 'user.text', value: Buffer.from('hi') }] };
    const entries: ManifestEntry[] = [
      { ...dirEntry('', 0o750, 1_700_000_000_000), uid: 0, gid: 0 },
      { ...fileEntry('a', Buffer.from('x'), 'sha256'), ...attrs },
      { type: 'hardlink', path: 'b', mode: 0o644, mtimeMs: 1_700_000_000_000, size: 0, linkTarget: 'a', chunks: [] },
      { type: 'char', path: 'null', mode: 0o666, mtimeMs: 1_700_000_000_000, size: 0, devMajor: 1, devMinor: 3, chunks: [] },
      { type: 'fifo', path: 'pipe', mode: 0o600, mtimeMs: 1_700_000_000_000, size: 0, chunks: [] },
    ];
    const text = (await render(TREE_SHA256, entries, false)).join('');
    assert.match(text, /^dir     0750            - 2023-11-14T22:13:20\.000000000Z 0:0 ""$/m);
    assert.match(text, /^file    0644            1 2023-11-14T22:13:20\.000123456Z alice\(1234\):staff\(5678\) a\n {4}xattr user\.bin = 0x00ff\n {4}xattr user\.text = "hi"\n/m);
    assert.match(text, /^hardlink 0644            - 2023-11-14T22:13:20\.000000000Z -:- b => a$/m);
    assert.match(text, /^char    0666          1,3 2023-11-14T22:13:20\.000000000Z -:- null$/m);
    assert.match(text, /^fifo    0600            - 2023-11-14T22:13:20\.000000000Z -:- pipe$/m);
    const json = JSON.parse((await render(TREE_SHA256, entries, true)).join(''));
    assert.deepEqual({ ...json.entries[1], chunks: undefined, digest: undefined }, {
      type: 'file', path: 'a', mode: 0o644, mtimeMs: 1_700_000_000_000, mtimeExtraNs: 123_456, uid: 1234, gid: 5678, owner: 'alice', group: 'staff',
      xattrs: [{ name: 'user.bin', value: 'AP8=' }, { name: 'user.text', value: 'aGk=' }], size: 1, chunks: undefined, digest: undefined,
    });
    assert.deepEqual(json.entries[2], { type: 'hardlink', path: 'b', mode: 0o644, mtimeMs: 1_700_000_000_000, size: 0, linkTarget: 'a' });
    assert.deepEqual(json.entries[3], { type: 'char', path: 'null', mode: 0o666, mtimeMs: 1_700_000_000_000, devMajor: 1, devMinor: 3, size: 0 });
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
