/**
 * Every malformation of manifest bytes is rejected with ManifestCorruptError and a
 * one-line message saying what is wrong. Semantic corruptions are built with buildRaw,
 * which computes valid checksums, so each test reaches the check it is about.
 */
import { strict as assert } from 'node:assert';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ManifestCorruptError, NotFoundError } from '../src/core/errors.js';
import { digestOf } from '../src/hash/digest.js';
import { HEADER_BYTES, openManifestFile } from '../src/manifest/index.js';
import {
  RAW_CHAR,
  RAW_DIR,
  RAW_FILE,
  RAW_HARDLINK,
  RAW_SYMLINK,
  TREE_SHA256,
  assertCorrupt,
  buildRaw,
  dirEntry,
  encode,
  fileEntry,
  fixHeaderChecksum,
  readEvents,
  symlinkEntry,
  withTempDir,
  type RawEntry,
} from './manifest-helpers.js';

const D = digestOf('sha256', Buffer.from('chunk'));

/** A small valid tree with every entry type, written by the writer. */
async function smallTree(): Promise<Buffer> {
  const { bytes } = await encode(TREE_SHA256, [
    dirEntry('d'),
    fileEntry('d/f', Buffer.from('0123456789'), 'sha256', { lengths: [4, 6] }),
    fileEntry('e', Buffer.alloc(0), 'sha256'),
    symlinkEntry('l', 'd/f'),
  ]);
  return bytes;
}

/** Bytes of a version 2 attribute block with nothing recorded: ns, uid, gid, two empty names, no xattrs. */
const EMPTY_ATTRIBUTES_BYTES = 12 + 1 + 1 + 2;
/** Offset of the first chunk record of "d/f" in smallTree(). */
const FIRST_CHUNK_OFFSET = HEADER_BYTES + (23 + 1 + EMPTY_ATTRIBUTES_BYTES) + (23 + 3 + EMPTY_ATTRIBUTES_BYTES);

function flip(bytes: Buffer, offset: number, mask = 0x01): Buffer {
  const out = Buffer.from(bytes);
  out[offset]! ^= mask;
  return out;
}

async function treeOf(...entries: RawEntry[]): Promise<Buffer> {
  return buildRaw(entries);
}

describe('manifest corruption is detected', () => {
  it('a valid manifest reads (the baseline of these tests)', async () => {
    const { events } = await readEvents(await smallTree());
    assert.deepEqual(events.map((e) => e.kind), ['entry', 'entry', 'chunks', 'entryEnd', 'entry', 'entryEnd', 'entry']);
    assert.equal((await readEvents(await treeOf({ type: RAW_DIR, path: 'x' }))).events.length, 1);
  });

  it('a flipped bit anywhere in the header', async () => {
    const bytes = await smallTree();
    for (let offset = 0; offset < HEADER_BYTES; offset++) {
      await assertCorrupt(flip(bytes, offset), /magic|version|checksum/);
    }
  });

  it('wrong magic, unknown version, non-zero reserved bytes, unknown codes', async () => {
    const body: RawEntry[] = [{ type: RAW_DIR, path: 'x' }];
    await assertCorrupt(await buildRaw(body, { magic: Buffer.from('XFERMAM\0') }), /^not an xfer manifest \(wrong magic bytes\)$/);
    await assertCorrupt(await buildRaw(body, { version: 3 }), /^unsupported manifest format version 3 \(this xfer reads versions 1 and 2\)$/);
    await assertCorrupt(await buildRaw(body, { version: 0 }), /unsupported manifest format version 0/);
    await assertCorrupt(await buildRaw(body, { reserved: 1 }), /reserved bytes/);
    await assertCorrupt(await buildRaw(body, { kind: 3 }), /unknown manifest kind 3/);
    await assertCorrupt(await buildRaw(body, { digestCode: 9 }), /unknown digest algorithm 9/);
    await assertCorrupt(await buildRaw(body, { chunker: [3, 4096, 4096, 4096] }), /unknown chunker algorithm 3/);
    const patched = Buffer.from(await buildRaw(body));
    patched.writeUInt32LE(1, 28); // second reserved field
    await assertCorrupt(await fixHeaderChecksum(patched), /reserved bytes/);
  });

  it('invalid chunker parameters (validateChunkerSpec) are corruption, not caller misuse', async () => {
    const body: RawEntry[] = [];
    for (const chunker of [
      [1, 65536, 16384, 262144], // min > avg
      [1, 16384, 65536, 32768], // avg > max
      [1, 16, 65536, 262144], // min below the FastCDC limit
      [2, 100, 100, 100], // fixed below 4 KiB
      [2, 4096, 8192, 4096], // fixed sizes differ
    ] as const) {
      await assertCorrupt(await buildRaw(body, { chunker }), /^invalid chunker parameters in manifest header: /);
    }
  });

  it('a flipped byte in a chunk record length', async () => {
    const bytes = await smallTree();
    // High byte: far above the chunker maximum.
    await assertCorrupt(flip(bytes, FIRST_CHUNK_OFFSET + 3, 0x80), /^chunk 0 of entry "d\/f" has length \d+, more than the chunker's maximum 4096$/);
    // Low byte: still a valid length, but the sizes no longer add up.
    await assertCorrupt(flip(bytes, FIRST_CHUNK_OFFSET), /entry "d\/f" has size 10 but its chunks add up to 11|more bytes than its header declares/);
    // Zero length: the list ends early and the rest is misparsed.
    const zeroed = Buffer.from(bytes);
    zeroed.writeUInt32LE(0, FIRST_CHUNK_OFFSET);
    await assertCorrupt(zeroed);
  });

  it('a flipped byte in a digest is caught by the trailer checksum', async () => {
    const bytes = await smallTree();
    await assertCorrupt(flip(bytes, FIRST_CHUNK_OFFSET + 4 + 17), /^manifest checksum mismatch$/);
    // Same for a whole-file digest (the last byte of "e"'s, before symlink "l" and the
    // trailer) and for metadata that stays valid (a byte of the first entry's mtime).
    const symlinkEntryBytes = 23 + 'l'.length + 2 + 'd/f'.length + EMPTY_ATTRIBUTES_BYTES;
    await assertCorrupt(flip(bytes, bytes.length - 9 - symlinkEntryBytes - 1), /^manifest checksum mismatch$/);
    await assertCorrupt(flip(bytes, HEADER_BYTES + 6), /^manifest checksum mismatch$/);
  });

  it('every truncation, in pieces of any size', async () => {
    const bytes = await smallTree();
    for (let length = 0; length < bytes.length; length++) {
      const prefix = bytes.subarray(0, length);
      await assertCorrupt(prefix, length === 0 ? /^manifest is empty$/ : /^manifest truncated in /);
      await assertCorrupt(prefix, /^manifest (truncated|is empty)/, 5);
    }
    await assertCorrupt(bytes.subarray(0, FIRST_CHUNK_OFFSET + 10), /^manifest truncated in chunk records of entry "d\/f"$/);
    await assertCorrupt(bytes.subarray(0, 50), /^manifest truncated in the header$/);
    await assertCorrupt(bytes.subarray(0, bytes.length - 3), /^manifest truncated in the trailer$/);
    await assertCorrupt(bytes.subarray(0, bytes.length - 9), /^manifest truncated in the entry after entry "l"$/);
  });

  it('trailing garbage after the trailer', async () => {
    const bytes = await smallTree();
    await assertCorrupt(Buffer.concat([bytes, Buffer.of(0)]), /^manifest has trailing bytes after its trailer$/);
    await assertCorrupt(Buffer.concat([bytes, bytes]), /trailing bytes/, 100);
  });

  it('header totals that do not match the body', async () => {
    const tree: RawEntry[] = [
      { type: RAW_DIR, path: 'd' },
      { type: RAW_FILE, path: 'd/f', size: 5n, chunks: [{ length: 2, digest: D }, { length: 3, digest: D }] },
    ];
    await assertCorrupt(await buildRaw(tree, { entryCount: 3n }), /^manifest header declares 3 entries but the body has 2$/);
    await assertCorrupt(await buildRaw(tree, { entryCount: 1n }), /^manifest has more entries than its header declares \(1\)$/);
    await assertCorrupt(await buildRaw(tree, { chunkCount: 3n }), /^manifest header declares 3 chunks but the body has 2$/);
    await assertCorrupt(await buildRaw(tree, { chunkCount: 1n }), /^manifest has more chunks than its header declares \(1\)$/);
    await assertCorrupt(await buildRaw(tree, { totalBytes: 6n }), /^manifest header declares 6 bytes but the body has 5$/);
    await assertCorrupt(await buildRaw(tree, { totalBytes: 4n }), /^manifest has more bytes than its header declares \(4\)$/);
    await assertCorrupt(await buildRaw(tree, { totalBytes: 2n ** 60n }), /^manifest header totals are out of range$/);
    await assertCorrupt(await buildRaw(tree, { headerDigest: D }), /^manifest header digest does not match the digest of its body$/);
  });

  it('file manifests: one file entry with path "", header digest = its digest', async () => {
    const file = (over: Partial<RawEntry> = {}): RawEntry => ({ type: RAW_FILE, path: '', size: 1n, chunks: [{ length: 1, digest: D }], digest: D, ...over });
    await readEvents(await buildRaw([file()], { kind: 1 })); // valid
    await assertCorrupt(await buildRaw([file()], { kind: 1, headerDigest: Buffer.alloc(32) }), /^manifest header digest does not match the digest of its file entry$/);
    await assertCorrupt(await buildRaw([file({ path: 'name' })], { kind: 1 }), /must have the path ""/);
    await assertCorrupt(await buildRaw([{ type: RAW_DIR, path: '' }], { kind: 1 }), /must be a file, not a dir/);
    await assertCorrupt(await buildRaw([], { kind: 1, entryCount: 1n }), /^manifest header declares 1 entries but the body has 0$/);
    await assertCorrupt(await buildRaw([file(), file()], { kind: 1, entryCount: 1n }), /more entries than its header declares/);
    await assertCorrupt(await buildRaw([file()], { kind: 1, entryCount: 2n }), /^file manifest header declares 2 entries \(must be 1\)$/);
  });

  it('bad paths', async () => {
    const cases: [string | Uint8Array, RegExp][] = [
      ['..', /has a '\.\.' segment/],
      ['a/../b', /has a '\.\.' segment/],
      ['.', /has a '\.' segment/],
      ['/abs', /is absolute/],
      ['a\\b', /contains a backslash/],
      ['a\0b', /contains a NUL byte/],
      ['a/', /ends with '\/'/],
      ['a//b', /has an empty segment/],
      ['', /^entry path is empty$/],
      [Buffer.of(0x61, 0xff), /^the path of entry 1 is not valid UTF-8$/],
      [Buffer.alloc(4097, 0x61), /has a path of 4097 bytes \(at most 4096\)/],
    ];
    for (const [path, message] of cases) {
      await assertCorrupt(await treeOf({ type: RAW_DIR, path }), message);
    }
  });

  it('duplicates, order, and parents before children', async () => {
    const dir = (path: string): RawEntry => ({ type: RAW_DIR, path });
    const file = (path: string): RawEntry => ({ type: RAW_FILE, path });
    await assertCorrupt(await treeOf(dir('a'), dir('a')), /^duplicate entry path "a"$/);
    await assertCorrupt(await treeOf(file('a'), dir('a')), /^duplicate entry path "a"$/);
    await assertCorrupt(await treeOf(dir('a/b'), dir('a')), /^parent directory "a" of entry "a\/b" is not listed before it$/);
    await assertCorrupt(await treeOf(dir('b'), dir('a')), /^entry "a" is out of order after "b"/);
    // A pre-order walk: "a"'s children come before "a-c" although '-' < '/'.
    await readEvents(await treeOf(dir('a'), dir('a/b'), dir('a-c')));
    await assertCorrupt(await treeOf(dir('a'), dir('a-c'), dir('a/b')), /out of order/);
    await assertCorrupt(await treeOf(file('a'), file('a/b')), /^entry "a\/b" is inside "a", which is not a directory$/);
    await assertCorrupt(
      await treeOf(dir('a'), { type: RAW_SYMLINK, path: 'a/l', target: 'x' }, dir('a/l/x')),
      /inside "a\/l", which is not a directory/,
    );
    await assertCorrupt(await treeOf(dir('a'), dir('a/b'), dir('a/b/c'), file('a/d/e')), /^parent directory "a\/d" of entry "a\/d\/e" is not listed before it$/);
  });

  it('bad entry fields', async () => {
    const chunk = { length: 1, digest: D };
    const cases: [RawEntry, RegExp][] = [
      [{ type: 7, path: 'x' }, /^unknown entry type byte 0x07 after the header$/],
      [{ type: RAW_DIR, path: 'x', mode: 0o10000 }, /^entry "x" has mode 4096 outside 0\.\.0o7777$/],
      [{ type: RAW_DIR, path: 'x', size: 1n }, /^entry "x" is a dir with size 1 \(must be 0\)$/],
      [{ type: RAW_DIR, path: 'x', mtimeMs: 2n ** 60n }, /^entry 1 has a modification time out of range$/],
      [{ type: RAW_FILE, path: 'x', size: -2n }, /^entry "x" has an invalid declared size -2$/],
      [{ type: RAW_FILE, path: 'x', size: 2n ** 62n }, /^entry 1 has a declared size out of range$/],
      [{ type: RAW_FILE, path: 'x', size: 2n, chunks: [chunk] }, /^entry "x" has size 1 but was declared with size 2$/],
      [{ type: RAW_FILE, path: 'x', size: -1n, chunks: [chunk], finalSize: 2n }, /has size 2 but its chunks add up to 1|more bytes than its header/],
      [{ type: RAW_FILE, path: 'x', chunks: [{ length: 4097, digest: D }] }, /has length 4097, more than the chunker's maximum 4096/],
      [{ type: RAW_SYMLINK, path: 'x', target: '' }, /^entry "x" is a symlink without a target$/],
      [{ type: RAW_SYMLINK, path: 'x', target: 'a\0b' }, /symlink target containing a NUL byte/],
      [{ type: RAW_SYMLINK, path: 'x', target: Buffer.of(0xc0) }, /^the symlink target of entry "x" is not valid UTF-8$/],
    ];
    for (const [entry, message] of cases) await assertCorrupt(await treeOf(entry), message);
    const huge = await buildRaw([{ type: RAW_FILE, path: 'x', size: -1n, finalSize: 2n ** 63n }], { totalBytes: 0n });
    await assertCorrupt(huge, /^entry "x" has a final size out of range$/);
  });

  it('openManifestFile names the file in corruption messages and maps fs errors', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'bad.xfm');
      await writeFile(path, (await smallTree()).subarray(0, 200));
      const reader = await openManifestFile(path);
      await assert.rejects(
        (async () => {
          for await (const _ of reader.events());
        })(),
        (err: unknown) => err instanceof ManifestCorruptError && err.message.startsWith(`${path}: manifest truncated in `),
      );
      await assert.rejects(openManifestFile(join(dir, 'missing.xfm')), NotFoundError);
    });
  });

  it('version 2: attribute values out of range, a misplaced root entry and a hardlink to a later path', async () => {
    const v2 = (...entries: RawEntry[]) => buildRaw(entries, { version: 2 });
    const dir = (path: string, attrs: RawEntry['attrs'] = {}): RawEntry => ({ type: RAW_DIR, path, attrs });
    await readEvents(await v2(dir(''), dir('a', { extraNs: 999_999, uid: 0, owner: 'root', xattrs: [['user.a', Buffer.alloc(65_536)]] }))); // valid
    await assertCorrupt(await v2(dir('a', { extraNs: 1_000_000 })), /^entry "a" has mtime nanoseconds 1000000 outside 0\.\.999999$/);
    await assertCorrupt(await v2(dir('a', { xattrs: [['user.a', Buffer.alloc(65_537)]] })), /^xattr "user\.a" of entry "a" has 65537 bytes \(at most 65536\)$/);
    await assertCorrupt(await v2(dir('a', { xattrs: [['', Buffer.alloc(1)]] })), /^xattr 0 of entry "a" has a name of 0 bytes/);
    await assertCorrupt(await v2(dir('a', { xattrCount: 1025 })), /^entry "a" has 1025 xattrs \(at most 1024\)$/);
    await assertCorrupt(await v2(dir('a', { xattrs: [['user.b', Buffer.alloc(0)], ['user.a', Buffer.alloc(0)]] })), /not sorted by name or repeated/);
    await assertCorrupt(await v2(dir('a', { xattrs: Array.from({ length: 5 }, (_, i) => [`user.${i}`, Buffer.alloc(65_536)] as const) })), /more than 262144 bytes of xattrs/);
    await assertCorrupt(await v2(dir('a', { owner: Buffer.of(0xff) })), /^the owner name of entry "a" is not valid UTF-8$/);
    await assertCorrupt(await v2(dir('a'), dir('')), /^the root entry \(path ""\) must be the first entry$/);
    await assertCorrupt(await v2({ type: RAW_FILE, path: '' }), /^the root entry \(path ""\) must be a dir, not a file$/);
    await assertCorrupt(await v2(dir('a'), { type: RAW_HARDLINK, path: 'b', target: 'c' }), /^entry "b" is a hardlink to "c", which is not listed before it$/);
    await assertCorrupt(await v2({ type: RAW_HARDLINK, path: 'b', target: '/etc/passwd' }), /^entry "b" is a hardlink to an invalid path: entry path "\/etc\/passwd" is absolute$/);
    // Version 1 knows neither the new types nor a root entry.
    await assertCorrupt(await buildRaw([{ type: RAW_CHAR, path: 'a' }]), /^unknown entry type byte 0x06 after the header$/);
    await assertCorrupt(await buildRaw([dir('')]), /^entry path is empty$/);
  });
});
