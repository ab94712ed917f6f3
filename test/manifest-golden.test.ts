/**
 * Golden vectors: the exact bytes of small manifests, field by field, as laid out in
 * docs/FORMAT.md (the version 2 file vector is the worked example there). If the writer's
 * output changes, the format changed: that needs a new format version, not a new vector.
 * The version 1 vectors were written by the version 1 writer and cross-checked with an
 * independent xxh64 and sha256 implementation; they stay readable. The version 2 vectors
 * are checked against the independent test encoder (manifest-helpers.ts, buildRaw).
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { decodeManifest, type ManifestEntry } from '../src/manifest/index.js';
import { CDC_DEFAULT, FILE_BLAKE3, RAW_CHAR, RAW_DIR, RAW_FIFO, RAW_FILE, RAW_HARDLINK, RAW_SYMLINK, TREE_SHA256, buildRaw, encode } from './manifest-helpers.js';

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

describe('manifest golden vectors, version 1 (still read)', () => {
  it('the pinned version 1 bytes decode to the model they were written from', async () => {
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

  it('the independent test encoder produces the pinned version 1 bytes', async () => {
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

// ---- version 2 ----

const ALICE = { uid: 1000, gid: 1000, owner: 'alice', group: 'alice' };

const FILE_ENTRIES_V2: ManifestEntry[] = [
  {
    type: 'file', path: '', mode: 0o644, mtimeMs: 1_700_000_000_000, mtimeExtraNs: 123_456, size: 6, ...ALICE,
    xattrs: [{ name: 'user.k', value: Buffer.from('v') }],
    chunks: [{ length: 6, digest: digestOf('blake3', HELLO) }], digest: digestOf('blake3', HELLO),
  },
];

const FILE_GOLDEN_V2 = [
  // header
  '584645524d414e00', // magic "XFERMAN\0"
  '0200', // format version 2
  '01', '01', '01', '000000', // kind file, blake3, fastcdc2020, reserved
  '00400000', '00000100', '00000400', '00000000', // min, avg, max, reserved
  '0600000000000000', '0100000000000000', '0100000000000000', // totalBytes 6, entryCount 1, chunkCount 1
  HELLO_B3, // digest: the file's blake3
  '2143bd86ac1a9bab', // xxh64 of the 88 bytes above
  // entry: as in version 1 ...
  '01', 'a4010000', '0068e5cf8b010000', '0600000000000000', '0000',
  // ... then the attribute block
  '40e20100', // mtime ns past the ms: 123456
  'e8030000', 'e8030000', // uid 1000, gid 1000
  '05', '616c696365', // owner "alice"
  '05', '616c696365', // group "alice"
  '0100', // 1 xattr
  '06', '757365722e6b', '01000000', '76', // "user.k" = "v"
  '06000000', HELLO_B3, // chunk: length 6, digest
  '00000000', // terminator
  '0600000000000000', HELLO_B3, // final size 6, whole-file digest
  // trailer
  'ff', 'd72da2b512b0e097', // end marker, xxh64 of the body
].join('');

const ROOT = { uid: 0, gid: 0, owner: 'root', group: 'root' };
const ACL = Buffer.from('0200000001000600ffffffff04000400ffffffff10000400ffffffff20000400ffffffff', 'hex');

const TREE_ENTRIES_V2: ManifestEntry[] = [
  { type: 'dir', path: '', mode: 0o755, mtimeMs: 1_700_000_000_000, mtimeExtraNs: 999_999, size: 0, ...ROOT, chunks: [] },
  { type: 'dir', path: 'docs', mode: 0o2775, mtimeMs: 1_700_000_000_000, size: 0, ...ALICE, xattrs: [{ name: 'system.posix_acl_access', value: ACL }], chunks: [] },
  {
    type: 'file', path: 'docs/a.txt', mode: 0o644, mtimeMs: 1_700_000_001_000, mtimeExtraNs: 1, size: 12, uid: 1234, gid: 5678,
    chunks: [{ length: 12, digest: digestOf('sha256', HELLO_WORLD) }], digest: digestOf('sha256', HELLO_WORLD),
  },
  { type: 'hardlink', path: 'docs/b.txt', mode: 0o644, mtimeMs: 1_700_000_001_000, mtimeExtraNs: 1, size: 0, linkTarget: 'docs/a.txt', uid: 1234, gid: 5678, chunks: [] },
  { type: 'char', path: 'null', mode: 0o666, mtimeMs: 1_700_000_002_000, size: 0, ...ROOT, devMajor: 1, devMinor: 3, chunks: [] },
  { type: 'fifo', path: 'pipe', mode: 0o600, mtimeMs: 1_700_000_003_000, size: 0, ...ROOT, chunks: [] },
];

const ROOT_OWNER = ['00000000', '00000000', '04', '726f6f74', '04', '726f6f74']; // uid 0, gid 0, "root", "root"
const ALICE_OWNER = ['e8030000', 'e8030000', '05', '616c696365', '05', '616c696365'];

const TREE_GOLDEN_V2 = [
  // header
  '584645524d414e00', '0200', '02', '02', '02', '000000', // magic, version 2, tree, sha256, fixed
  '00100000', '00100000', '00100000', '00000000', // fixed 4096
  '0c00000000000000', '0600000000000000', '0100000000000000', // totalBytes 12, entryCount 6, chunkCount 1
  '5080e0e45965c7678374b58a0dddf0ae51eb6f4af3ccbbc441db2e3ab63a5d51', // sha256 of the body
  '10f36c9c12de0e4b', // header checksum
  // the root's own entry: dir, path ""
  '02', 'ed010000', '0068e5cf8b010000', '0000000000000000', '0000',
  '3f420f00', ...ROOT_OWNER, '0000', // 999999 ns; no xattrs
  // dir "docs", setgid, with a POSIX ACL
  '02', 'fd050000', '0068e5cf8b010000', '0000000000000000', '0400', '646f6373',
  '00000000', ...ALICE_OWNER, '0100',
  '17', Buffer.from('system.posix_acl_access').toString('hex'), '24000000', ACL.toString('hex'),
  // file "docs/a.txt": numeric owner only
  '01', 'a4010000', 'e86be5cf8b010000', '0c00000000000000', '0a00', '646f63732f612e747874',
  '01000000', 'd2040000', '2e160000', '00', '00', '0000',
  '0c000000', HELLO_WORLD_SHA, '00000000', '0c00000000000000', HELLO_WORLD_SHA,
  // hardlink "docs/b.txt" => "docs/a.txt"
  '04', 'a4010000', 'e86be5cf8b010000', '0000000000000000', '0a00', '646f63732f622e747874', '0a00', '646f63732f612e747874',
  '01000000', 'd2040000', '2e160000', '00', '00', '0000',
  // char device "null" 1,3
  '06', 'b6010000', 'd06fe5cf8b010000', '0000000000000000', '0400', '6e756c6c',
  '00000000', ...ROOT_OWNER, '01000000', '03000000', '0000',
  // fifo "pipe"
  '05', '80010000', 'b873e5cf8b010000', '0000000000000000', '0400', '70697065',
  '00000000', ...ROOT_OWNER, '0000',
  // trailer
  'ff', 'cfc93ba628368347', // end marker, body checksum
].join('');

describe('manifest golden vectors, version 2 (written)', () => {
  it('the writer produces exactly the pinned bytes of a version 2 file manifest', async () => {
    const { bytes } = await encode(FILE_BLAKE3, FILE_ENTRIES_V2);
    assert.equal(bytes.toString('hex'), FILE_GOLDEN_V2);
  });

  it('the writer produces exactly the pinned bytes of a version 2 tree manifest (root entry, owners, ACL, hard link, device, FIFO)', async () => {
    const { bytes } = await encode(TREE_SHA256, TREE_ENTRIES_V2);
    assert.equal(bytes.toString('hex'), TREE_GOLDEN_V2);
  });

  it('the pinned version 2 bytes decode to the model they were written from', async () => {
    const file = await decodeManifest(Buffer.from(FILE_GOLDEN_V2, 'hex'));
    assert.equal(file.header.formatVersion, 2);
    assert.deepEqual(file.entries, FILE_ENTRIES_V2);
    const tree = await decodeManifest(Buffer.from(TREE_GOLDEN_V2, 'hex'));
    assert.equal(tree.header.entryCount, 6);
    assert.deepEqual(tree.entries, TREE_ENTRIES_V2);
  });

  it('the independent test encoder produces the pinned version 2 bytes', async () => {
    const hw = digestOf('sha256', HELLO_WORLD);
    const root = { uid: 0, gid: 0, owner: 'root', group: 'root' };
    const alice = { uid: 1000, gid: 1000, owner: 'alice', group: 'alice' };
    const raw = await buildRaw([
      { type: RAW_DIR, mode: 0o755, mtimeMs: 1_700_000_000_000n, path: '', attrs: { ...root, extraNs: 999_999 } },
      { type: RAW_DIR, mode: 0o2775, mtimeMs: 1_700_000_000_000n, path: 'docs', attrs: { ...alice, xattrs: [['system.posix_acl_access', ACL]] } },
      { type: RAW_FILE, mode: 0o644, mtimeMs: 1_700_000_001_000n, size: 12n, path: 'docs/a.txt', chunks: [{ length: 12, digest: hw }], digest: hw, attrs: { extraNs: 1, uid: 1234, gid: 5678 } },
      { type: RAW_HARDLINK, mode: 0o644, mtimeMs: 1_700_000_001_000n, path: 'docs/b.txt', target: 'docs/a.txt', attrs: { extraNs: 1, uid: 1234, gid: 5678 } },
      { type: RAW_CHAR, mode: 0o666, mtimeMs: 1_700_000_002_000n, path: 'null', attrs: { ...root, device: [1, 3] } },
      { type: RAW_FIFO, mode: 0o600, mtimeMs: 1_700_000_003_000n, path: 'pipe', attrs: root },
    ], { version: 2 });
    assert.equal(raw.toString('hex'), TREE_GOLDEN_V2);
    const file = await buildRaw([
      { type: RAW_FILE, mode: 0o644, mtimeMs: 1_700_000_000_000n, size: 6n, path: '', chunks: [{ length: 6, digest: digestOf('blake3', HELLO) }], digest: digestOf('blake3', HELLO), attrs: { ...alice, extraNs: 123_456, xattrs: [['user.k', Buffer.from('v')]] } },
    ], { version: 2, kind: 1, digestAlgorithm: 'blake3', chunker: [1, 16384, 65536, 262144] });
    assert.equal(file.toString('hex'), FILE_GOLDEN_V2);
  });
});
