/**
 * Shared helpers of the manifest tests, including `buildRaw`, an independent encoder
 * written from docs/FORMAT.md. It can produce manifests the writer refuses to (bad
 * paths, wrong totals...) with correct checksums, so the tests reach the reader's
 * semantic checks; and the golden test checks it agrees with the writer byte for byte.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import xxhash from 'xxhash-wasm';
import { ManifestCorruptError } from '../src/core/errors.js';
import type { ChunkerSpec, DigestAlgorithm } from '../src/core/ids.js';
import { digestOf } from '../src/hash/digest.js';
import {
  encodeManifestToFile,
  openManifest,
  type ManifestEntry,
  type ManifestEvent,
  type ManifestHeader,
  type ManifestInit,
} from '../src/manifest/index.js';

export const FIXED_4K: ChunkerSpec = { algorithm: 'fixed', sizeBytes: 4096 };
export const CDC_DEFAULT: ChunkerSpec = { algorithm: 'fastcdc2020', minBytes: 16384, avgBytes: 65536, maxBytes: 262144 };
export const TREE_SHA256: ManifestInit = { kind: 'tree', digestAlgorithm: 'sha256', chunker: FIXED_4K };
export const FILE_BLAKE3: ManifestInit = { kind: 'file', digestAlgorithm: 'blake3', chunker: CDC_DEFAULT };

/** Runs `fn` with a fresh temporary directory, removed afterwards whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'xfer-manifest-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A file entry for `content`, cut into chunks of `lengths` (default: one chunk). */
export function fileEntry(
  path: string,
  content: Uint8Array,
  algorithm: DigestAlgorithm,
  options: { lengths?: readonly number[]; mode?: number; mtimeMs?: number; size?: number } = {},
): ManifestEntry {
  const lengths = options.lengths ?? (content.length > 0 ? [content.length] : []);
  assert.equal(lengths.reduce((a, b) => a + b, 0), content.length, 'chunk lengths must cover the content');
  let offset = 0;
  const chunks = lengths.map((length) => {
    const digest = digestOf(algorithm, content.subarray(offset, offset + length));
    offset += length;
    return { length, digest };
  });
  return {
    type: 'file',
    path,
    mode: options.mode ?? 0o644,
    mtimeMs: options.mtimeMs ?? 1_700_000_000_000,
    size: options.size ?? content.length,
    chunks,
    digest: digestOf(algorithm, content),
  };
}

export function dirEntry(path: string, mode = 0o755, mtimeMs = 1_700_000_000_000): ManifestEntry {
  return { type: 'dir', path, mode, mtimeMs, size: 0, chunks: [] };
}

export function symlinkEntry(path: string, linkTarget: string, mtimeMs = 1_700_000_000_000): ManifestEntry {
  return { type: 'symlink', path, mode: 0o777, mtimeMs, size: 0, linkTarget, chunks: [] };
}

/** Encodes through ManifestWriter (encodeManifestToFile) and returns the file's bytes. */
export async function encode(init: ManifestInit, entries: readonly ManifestEntry[]): Promise<{ bytes: Buffer; header: ManifestHeader }> {
  return withTempDir(async (dir) => {
    const path = join(dir, 'm.xfm');
    const header = await encodeManifestToFile(path, init, entries);
    return { bytes: await readFile(path), header };
  });
}

/** Yields `bytes` in pieces of `size` bytes, as a network or file stream would. */
export async function* pieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array, void, undefined> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Opens and reads a whole manifest, returning every event. */
export async function readEvents(bytes: Uint8Array, pieceSize = bytes.length || 1): Promise<{ header: ManifestHeader; events: ManifestEvent[] }> {
  const reader = await openManifest(pieces(bytes, pieceSize));
  const events: ManifestEvent[] = [];
  for await (const e of reader.events()) events.push(e);
  return { header: reader.header, events };
}

/** Asserts that reading `bytes` fully fails with ManifestCorruptError matching `message`. */
export async function assertCorrupt(bytes: Uint8Array, message?: RegExp, pieceSize?: number): Promise<void> {
  await assert.rejects(readEvents(bytes, pieceSize), (err: unknown) => {
    assert.ok(err instanceof ManifestCorruptError, `expected ManifestCorruptError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), 'error messages are one line');
    if (message) assert.match(err.message, message);
    return true;
  });
}

// ---- the independent encoder ----

export interface RawChunk {
  readonly length: number;
  readonly digest: Uint8Array;
}

/** One entry as bytes go; every field may be set to anything. */
export interface RawEntry {
  readonly type: number;
  readonly mode?: number;
  readonly mtimeMs?: bigint;
  readonly size?: bigint;
  readonly path: string | Uint8Array;
  readonly target?: string | Uint8Array;
  readonly chunks?: readonly RawChunk[];
  /** Defaults to the sum of the chunk lengths. */
  readonly finalSize?: bigint;
  /** Defaults to 32 bytes of 0xdd. */
  readonly digest?: Uint8Array;
  /** Version 2's attribute block (written when the manifest's version is 2); all fields default to "not recorded". */
  readonly attrs?: RawAttributes;
}

export interface RawAttributes {
  readonly extraNs?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly owner?: string | Uint8Array;
  readonly group?: string | Uint8Array;
  /** Written for types 6 and 7 (char, block) only, as docs/FORMAT.md says; [0, 0] if absent. */
  readonly device?: readonly [number, number];
  readonly xattrs?: readonly (readonly [string | Uint8Array, Uint8Array])[];
  /** Overrides the xattr count field. */
  readonly xattrCount?: number;
}

export interface RawOptions {
  readonly magic?: Uint8Array;
  readonly version?: number;
  /** 1 file, 2 tree. */
  readonly kind?: number;
  readonly digestAlgorithm?: DigestAlgorithm;
  readonly digestCode?: number;
  /** [algorithm code, min, avg, max]. */
  readonly chunker?: readonly [number, number, number, number];
  readonly reserved?: number;
  readonly totalBytes?: bigint;
  readonly entryCount?: bigint;
  readonly chunkCount?: bigint;
  readonly headerDigest?: Uint8Array;
}

export const RAW_FILE = 1;
export const RAW_DIR = 2;
export const RAW_SYMLINK = 3;
export const RAW_HARDLINK = 4;
export const RAW_FIFO = 5;
export const RAW_CHAR = 6;
export const RAW_BLOCK = 7;
const FILLER_DIGEST = Buffer.alloc(32, 0xdd);

function bytesOf(v: string | Uint8Array): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
}

/** The version 2 attribute block, exactly as docs/FORMAT.md lays it out. */
export function rawAttributeBytes(type: number, a: RawAttributes = {}): Buffer {
  const fixed = Buffer.alloc(12);
  fixed.writeUInt32LE(a.extraNs ?? 0, 0);
  fixed.writeUInt32LE(a.uid ?? 0xffffffff, 4);
  fixed.writeUInt32LE(a.gid ?? 0xffffffff, 8);
  const parts: Buffer[] = [fixed];
  for (const name of [a.owner ?? '', a.group ?? '']) {
    const b = bytesOf(name);
    parts.push(Buffer.of(b.length), b);
  }
  if (type === RAW_CHAR || type === RAW_BLOCK) {
    const dev = Buffer.alloc(8);
    dev.writeUInt32LE(a.device?.[0] ?? 0, 0);
    dev.writeUInt32LE(a.device?.[1] ?? 0, 4);
    parts.push(dev);
  }
  const xattrs = a.xattrs ?? [];
  const count = Buffer.alloc(2);
  count.writeUInt16LE(a.xattrCount ?? xattrs.length);
  parts.push(count);
  for (const [name, value] of xattrs) {
    const n = bytesOf(name);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(value.length);
    parts.push(Buffer.of(n.length), n, len, Buffer.from(value));
  }
  return Buffer.concat(parts);
}

/** Encodes one entry exactly as docs/FORMAT.md lays it out for format `version`. */
export function rawEntryBytes(e: RawEntry, version = 1): Buffer {
  const parts: Buffer[] = [];
  const path = bytesOf(e.path);
  const start = Buffer.alloc(23);
  start.writeUInt8(e.type, 0);
  start.writeUInt32LE(e.mode ?? 0o644, 1);
  start.writeBigInt64LE(e.mtimeMs ?? 1_700_000_000_000n, 5);
  start.writeBigInt64LE(e.size ?? 0n, 13);
  start.writeUInt16LE(path.length, 21);
  parts.push(start, path);
  if (e.target !== undefined) {
    const target = bytesOf(e.target);
    const len = Buffer.alloc(2);
    len.writeUInt16LE(target.length);
    parts.push(len, target);
  }
  if (version >= 2) parts.push(rawAttributeBytes(e.type, e.attrs));
  if (e.type === RAW_FILE) {
    let sum = 0n;
    for (const c of e.chunks ?? []) {
      const rec = Buffer.alloc(36);
      rec.writeUInt32LE(c.length, 0);
      Buffer.from(c.digest).copy(rec, 4);
      parts.push(rec);
      sum += BigInt(c.length);
    }
    const end = Buffer.alloc(4 + 8 + 32);
    end.writeBigUInt64LE(e.finalSize ?? sum, 4);
    Buffer.from(e.digest ?? FILLER_DIGEST).copy(end, 12);
    parts.push(end);
  }
  return Buffer.concat(parts);
}

/**
 * A whole manifest from raw entries: totals, header digest and both checksums are
 * computed correctly unless overridden, so only what the test breaks is broken.
 */
export async function buildRaw(entries: readonly RawEntry[], opts: RawOptions = {}): Promise<Buffer> {
  const { h64Raw } = await xxhash();
  const body = Buffer.concat(entries.map((e) => rawEntryBytes(e, opts.version ?? 1)));
  const kind = opts.kind ?? 2;
  const algorithm = opts.digestAlgorithm ?? 'sha256';
  const files = entries.filter((e) => e.type === RAW_FILE);
  const sumOf = (e: RawEntry) => e.finalSize ?? (e.chunks ?? []).reduce((s, c) => s + BigInt(c.length), 0n);
  const header = Buffer.alloc(96);
  Buffer.from(opts.magic ?? Buffer.from('XFERMAN\0', 'latin1')).copy(header, 0);
  header.writeUInt16LE(opts.version ?? 1, 8);
  header.writeUInt8(kind, 10);
  header.writeUInt8(opts.digestCode ?? (algorithm === 'blake3' ? 1 : 2), 11);
  const [alg, min, avg, max] = opts.chunker ?? [2, 4096, 4096, 4096];
  header.writeUInt8(alg, 12);
  header.writeUInt8(opts.reserved ?? 0, 13);
  header.writeUInt32LE(min, 16);
  header.writeUInt32LE(avg, 20);
  header.writeUInt32LE(max, 24);
  header.writeBigUInt64LE(opts.totalBytes ?? files.reduce((s, e) => s + sumOf(e), 0n), 32);
  header.writeBigUInt64LE(opts.entryCount ?? BigInt(entries.length), 40);
  header.writeBigUInt64LE(opts.chunkCount ?? BigInt(files.reduce((s, e) => s + (e.chunks ?? []).length, 0)), 48);
  const digest = opts.headerDigest ?? (kind === 1 ? (files[0]?.digest ?? FILLER_DIGEST) : digestOf(algorithm, body));
  Buffer.from(digest).copy(header, 56);
  header.writeBigUInt64LE(h64Raw(header.subarray(0, 88), 0n), 88);
  const trailer = Buffer.alloc(9);
  trailer[0] = 0xff;
  trailer.writeBigUInt64LE(h64Raw(body, 0n), 1);
  return Buffer.concat([header, body, trailer]);
}

/** Recomputes the header checksum after a test edited header bytes on purpose. */
export async function fixHeaderChecksum(bytes: Buffer): Promise<Buffer> {
  const { h64Raw } = await xxhash();
  const out = Buffer.from(bytes);
  out.writeBigUInt64LE(h64Raw(out.subarray(0, 88), 0n), 88);
  return out;
}
