/**
 * Golden vectors: the exact bytes of two small manifests, field by field, as laid out in
 * docs/FORMAT.md (the file vector is the worked example there). If the writer's output
 * changes, the format changed: that needs a new format version, not a new vector.
 * Both vectors were cross-checked with an independent xxh64 and sha256 implementation.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { decodeManifest, type ManifestEntry } from '../src/manifest/index.js';
import { CDC_DEFAULT, FILE_BLAKE3, RAW_DIR, RAW_FILE, RAW_SYMLINK, TREE_SHA256, buildRaw, encode } from './manifest-helpers.js';

const HELLO = Buffer.from('hello\n');
const HELLO_B3 = '8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99';

const FILE_ENTRIES: ManifestEntry[] = [
  { type: 'file', path: '', mode: 0o644, mtimeMs: 1_700_000_000_000, size: 6, chunks: [{ length: 6, digest: digestOf('blake3', HELLO) }], digest: digestOf('blake3', HELLO) },
];

const FILE_GOLDEN = [
  // header
  '584645524d414e00', // magic "XFERMAN\0"
  '0100', // format version 1
  '01', // kind: file
  '01', // digest algorithm: blake3
  '01', // chunker: fastcdc2020
  '000000', // reserved
  '00400000', // min 16384
  '00000100', // avg 65536
  '00000400', // max 262144
  '00000000', // reserved
  '0600000000000000', // totalBytes 6
  '0100000000000000', // entryCount 1
  '0100000000000000', // chunkCount 1
  HELLO_B3, // digest: the file's blake3
  'dc82bdfcbdde4a55', // xxh64 of the 88 bytes above
  // entry
  '01', // type: file
  'a4010000', // mode 0644
  '0068e5cf8b010000', // mtimeMs 1700000000000
  '0600000000000000', // declared size 6
  '0000', // path length 0: path ""
  '06000000', HELLO_B3, // chunk: length 6, digest
  '00000000', // terminator
  '0600000000000000', // final size 6
  HELLO_B3, // whole-file digest
  // trailer
  'ff', // end marker
  '2fdfa5d9c97576bc', // xxh64 of the body (entry bytes)
].join('');

const HELLO_WORLD = Buffer.from('hello world\n');
const HELLO_WORLD_SHA = 'a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447';
const EMPTY_SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const TREE_ENTRIES: ManifestEntry[] = [
  { type: 'dir', path: 'docs', mode: 0o755, mtimeMs: 1_700_000_000_000, size: 0, chunks: [] },
  {
    type: 'file', path: 'docs/a.txt', mode: 0o644, mtimeMs: 1_700_000_001_000, size: 12,
    chunks: [{ length: 12, digest: digestOf('sha256', HELLO_WORLD) }], digest: digestOf('sha256', HELLO_WORLD),
  },
  { type: 'file', path: 'empty', mode: 0o600, mtimeMs: 1_700_000_002_000, size: 0, chunks: [], digest: digestOf('sha256', Buffer.alloc(0)) },
  { type: 'symlink', path: 'link', mode: 0o777, mtimeMs: 1_700_000_003_000, size: 0, linkTarget: 'docs/a.txt', chunks: [] },
];

const TREE_GOLDEN = [
  // header
  '584645524d414e00', // magic
  '0100', // format version 1
  '02', // kind: tree
  '02', // digest algorithm: sha256
  '02', // chunker: fixed
  '000000', // reserved
  '00100000', '00100000', '00100000', // fixed 4096, stored as min = avg = max
  '00000000', // reserved
  '0c00000000000000', // totalBytes 12
  '0400000000000000', // entryCount 4
  '0100000000000000', // chunkCount 1
  'd2cc166ed36712c6a9e97d2f35d59cd111ce7e7b89dd49c5fa26a4ce16a8d7e4', // sha256 of the body
  '6c8c14e239b2f47a', // header checksum
  // dir "docs"
  '02', 'ed010000', '0068e5cf8b010000', '0000000000000000', '0400', '646f6373',
  // file "docs/a.txt": one chunk
  '01', 'a4010000', 'e86be5cf8b010000', '0c00000000000000', '0a00', '646f63732f612e747874',
  '0c000000', HELLO_WORLD_SHA,
  '00000000', '0c00000000000000', HELLO_WORLD_SHA,
  // file "empty": no chunks
  '01', '80010000', 'd06fe5cf8b010000', '0000000000000000', '0500', '656d707479',
  '00000000', '0000000000000000', EMPTY_SHA,
  // symlink "link" -> "docs/a.txt"
  '03', 'ff010000', 'b873e5cf8b010000', '0000000000000000', '0400', '6c696e6b', '0a00', '646f63732f612e747874',
  // trailer
  'ff', '8845c21517c92dd1',
].join('');

describe('manifest golden vectors', () => {
  it('the writer produces exactly the pinned bytes of a file manifest', async () => {
    const { bytes } = await encode(FILE_BLAKE3, FILE_ENTRIES);
    assert.equal(bytes.toString('hex'), FILE_GOLDEN);
  });

  it('the writer produces exactly the pinned bytes of a tree manifest', async () => {
    const { bytes } = await encode(TREE_SHA256, TREE_ENTRIES);
    assert.equal(bytes.toString('hex'), TREE_GOLDEN);
  });

  it('the pinned bytes decode to the model they were written from', async () => {
    const file = await decodeManifest(Buffer.from(FILE_GOLDEN, 'hex'));
    assert.deepEqual(file.header.chunker, CDC_DEFAULT);
    assert.deepEqual(file.entries, FILE_ENTRIES);
    const tree = await decodeManifest(Buffer.from(TREE_GOLDEN, 'hex'));
    assert.deepEqual(tree.header, {
      formatVersion: 1,
      kind: 'tree',
      digestAlgorithm: 'sha256',
      chunker: { algorithm: 'fixed', sizeBytes: 4096 },
      totalBytes: 12,
      entryCount: 4,
      chunkCount: 1,
      digest: Buffer.from('d2cc166ed36712c6a9e97d2f35d59cd111ce7e7b89dd49c5fa26a4ce16a8d7e4', 'hex'),
    });
    assert.deepEqual(tree.entries, TREE_ENTRIES);
  });

  it('the independent test encoder agrees with the writer', async () => {
    const hw = digestOf('sha256', HELLO_WORLD);
    const raw = await buildRaw([
      { type: RAW_DIR, mode: 0o755, mtimeMs: 1_700_000_000_000n, path: 'docs' },
      { type: RAW_FILE, mode: 0o644, mtimeMs: 1_700_000_001_000n, size: 12n, path: 'docs/a.txt', chunks: [{ length: 12, digest: hw }], digest: hw },
      { type: RAW_FILE, mode: 0o600, mtimeMs: 1_700_000_002_000n, path: 'empty', digest: digestOf('sha256', Buffer.alloc(0)) },
      { type: RAW_SYMLINK, mode: 0o777, mtimeMs: 1_700_000_003_000n, path: 'link', target: 'docs/a.txt' },
    ]);
    assert.equal(raw.toString('hex'), TREE_GOLDEN);
  });
});
