/**
 * Constants and header codec of the manifest binary format, versions 1 and 2 (written:
 * 2; read: both). docs/FORMAT.md is
 * the normative description; every number here appears there. All integers are
 * little-endian. Nothing in this module does I/O.
 */
import { DIGEST_BYTES, type ChunkerSpec, type DigestAlgorithm } from '../core/ids.js';
import type { Xxh64 } from './checksum.js';
import type { EntryMeta, EntryType, ManifestHeader, ManifestKind } from './types.js';

/** "XFERMAN\0": the first 8 bytes of every manifest. */
export const MAGIC = Buffer.from('XFERMAN\0', 'latin1');
/** The version writers write. */
export const FORMAT_VERSION = 2;
/** Version 1: no attribute block, types file/dir/symlink only, no root entry. Still read. */
export const FORMAT_VERSION_1 = 1;
/** The versions a reader accepts. */
export const READABLE_FORMAT_VERSIONS: readonly number[] = [FORMAT_VERSION_1, FORMAT_VERSION];

// ---- header layout (offsets in bytes from the start of the manifest) ----
export const HEADER_MAGIC_OFFSET = 0;
export const HEADER_VERSION_OFFSET = 8;
export const HEADER_KIND_OFFSET = 10;
export const HEADER_DIGEST_ALGORITHM_OFFSET = 11;
export const HEADER_CHUNKER_ALGORITHM_OFFSET = 12;
/** 3 reserved bytes, zero in version 1. */
export const HEADER_RESERVED1_OFFSET = 13;
export const HEADER_CHUNKER_MIN_OFFSET = 16;
export const HEADER_CHUNKER_AVG_OFFSET = 20;
export const HEADER_CHUNKER_MAX_OFFSET = 24;
/** 4 reserved bytes, zero in version 1 (they also align the u64 fields to 8). */
export const HEADER_RESERVED2_OFFSET = 28;
export const HEADER_TOTAL_BYTES_OFFSET = 32;
export const HEADER_ENTRY_COUNT_OFFSET = 40;
export const HEADER_CHUNK_COUNT_OFFSET = 48;
export const HEADER_DIGEST_OFFSET = 56;
/** xxh64 (seed 0) of header bytes [0, HEADER_CHECKSUM_OFFSET). */
export const HEADER_CHECKSUM_OFFSET = 88;
export const HEADER_BYTES = 96;

// ---- body layout (entry offsets from the entry's first byte, its type) ----
export const ENTRY_MODE_OFFSET = 1;
export const ENTRY_MTIME_OFFSET = 5;
export const ENTRY_DECLARED_SIZE_OFFSET = 13;
export const ENTRY_PATH_LENGTH_OFFSET = 21;
/** type u8, mode u32, mtimeMs i64, declared size i64, path length u16; the path follows. */
export const ENTRY_FIXED_BYTES = 23;
/** A string length prefix (path, symlink target): u16. */
export const STRING_LENGTH_BYTES = 2;
/** A chunk record: length u32 + digest. */
export const CHUNK_RECORD_BYTES = 4 + DIGEST_BYTES;
/** The record ending a file's chunk list: a length of 0 and no digest. */
export const CHUNK_TERMINATOR_BYTES = 4;
/** End of a file entry: final size u64 + whole-file digest. */
export const ENTRY_END_BYTES = 8 + DIGEST_BYTES;
/** End marker u8 + xxh64 of the body u64. */
export const TRAILER_BYTES = 1 + 8;

export const ENTRY_TYPE_FILE = 1;
export const ENTRY_TYPE_DIR = 2;
export const ENTRY_TYPE_SYMLINK = 3;
/** Version 2 types. */
export const ENTRY_TYPE_HARDLINK = 4;
export const ENTRY_TYPE_FIFO = 5;
export const ENTRY_TYPE_CHAR = 6;
export const ENTRY_TYPE_BLOCK = 7;

// ---- version 2 attribute block (after the path, and a symlink's or hardlink's target) ----
/** mtime nanoseconds past mtimeMs u32, uid u32, gid u32. */
export const ATTR_FIXED_BYTES = 12;
/** A u8 length before the owner and group names and before each xattr name. */
export const SHORT_LENGTH_BYTES = 1;
/** Device number of a char or block entry: major u32, minor u32. */
export const DEVICE_BYTES = 8;
/** The number of xattrs: u16. */
export const XATTR_COUNT_BYTES = 2;
/** The length of an xattr value: u32. */
export const XATTR_VALUE_LENGTH_BYTES = 4;
/** uid or gid not recorded: (uid_t)-1, which chown(2) also reads as "leave unchanged". */
export const NO_ID = 0xffff_ffff;
/** Where the next entry's type byte would be, this byte says the body has ended. */
export const END_MARKER = 0xff;

// ---- limits ----
/** Longest entry path, in UTF-8 bytes (PATH_MAX on Linux). */
export const MAX_PATH_BYTES = 4096;
/** Longest symlink target, in UTF-8 bytes. */
export const MAX_LINK_TARGET_BYTES = 4096;
/** Entry modes are permission bits only (setuid/setgid/sticky included). */
export const MAX_MODE = 0o7777;
/** Nanoseconds past the millisecond, at most (version 2). */
export const MAX_MTIME_EXTRA_NS = 999_999;
/** Longest user or group name, in UTF-8 bytes (LOGIN_NAME_MAX less its NUL). */
export const MAX_OWNER_NAME_BYTES = 255;
/** Longest xattr name, namespace included, in UTF-8 bytes (Linux XATTR_NAME_MAX). */
export const MAX_XATTR_NAME_BYTES = 255;
/** Largest xattr value, in bytes (Linux XATTR_SIZE_MAX: 64 KiB). */
export const MAX_XATTR_VALUE_BYTES = 65_536;
/** Most xattrs one entry may carry. */
export const MAX_XATTRS_PER_ENTRY = 1024;
/** Most bytes of xattr names and values one entry may carry, together (bounds a reader's memory per entry). */
export const MAX_ENTRY_XATTR_BYTES = 256 * 1024;

const KIND_CODES: Readonly<Record<ManifestKind, number>> = { file: 1, tree: 2 };
const DIGEST_CODES: Readonly<Record<DigestAlgorithm, number>> = { blake3: 1, sha256: 2 };
const CHUNKER_CODES: Readonly<Record<ChunkerSpec['algorithm'], number>> = { fastcdc2020: 1, fixed: 2 };
const ENTRY_TYPE_CODES: Readonly<Record<EntryType, number>> = {
  file: ENTRY_TYPE_FILE,
  dir: ENTRY_TYPE_DIR,
  symlink: ENTRY_TYPE_SYMLINK,
  hardlink: ENTRY_TYPE_HARDLINK,
  fifo: ENTRY_TYPE_FIFO,
  char: ENTRY_TYPE_CHAR,
  block: ENTRY_TYPE_BLOCK,
};

function invert<K extends string>(table: Readonly<Record<K, number>>): ReadonlyMap<number, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as number, k as K]));
}
const KINDS_BY_CODE = invert(KIND_CODES);
const DIGESTS_BY_CODE = invert(DIGEST_CODES);
const CHUNKERS_BY_CODE = invert(CHUNKER_CODES);
const ENTRY_TYPES_BY_CODE = invert(ENTRY_TYPE_CODES);

export function entryTypeCode(type: EntryType): number {
  return ENTRY_TYPE_CODES[type];
}

/**
 * The entry type for a type byte in a manifest of `version`, or undefined for any other byte
 * (including END_MARKER, and version 2's types in version 1).
 */
export function entryTypeFromCode(code: number, version = FORMAT_VERSION): EntryType | undefined {
  if (version === FORMAT_VERSION_1 && code > ENTRY_TYPE_SYMLINK) return undefined;
  return ENTRY_TYPES_BY_CODE.get(code);
}

/** Whether entries of this type carry a path after their path (a symlink's target, a hardlink's file). */
export function hasLinkTarget(type: EntryType): boolean {
  return type === 'symlink' || type === 'hardlink';
}

/** Whether entries of this type carry a device number (version 2). */
export function isDevice(type: EntryType): boolean {
  return type === 'char' || type === 'block';
}

const TWO_POW_32 = 0x1_0000_0000;
/** Largest high 32-bit word of a u64 or i64 whose value is still a safe integer. */
const MAX_SAFE_HIGH_WORD = 0x1f_ffff;

/** Writes a safe integer as a two's-complement i64 (also used for u64 of values >= 0). */
export function writeInt64(buf: Buffer, value: number, offset: number): void {
  const high = Math.floor(value / TWO_POW_32);
  buf.writeUInt32LE(value - high * TWO_POW_32, offset);
  buf.writeInt32LE(high, offset + 4);
}

/** Reads a u64; returns -1 if it is not a safe integer (the caller reports corruption). */
export function readUint64(buf: Buffer, offset: number): number {
  const high = buf.readUInt32LE(offset + 4);
  if (high > MAX_SAFE_HIGH_WORD) return -1;
  return high * TWO_POW_32 + buf.readUInt32LE(offset);
}

/** Reads an i64; returns undefined if it is not a safe integer. */
export function readInt64(buf: Buffer, offset: number): number | undefined {
  const high = buf.readInt32LE(offset + 4);
  if (high > MAX_SAFE_HIGH_WORD || high < -MAX_SAFE_HIGH_WORD - 1) return undefined;
  const value = high * TWO_POW_32 + buf.readUInt32LE(offset);
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * Writes `header` into buf[0, HEADER_BYTES), checksum included.
 * Fixed-size chunkers are stored with min = avg = max = sizeBytes.
 */
export function encodeHeader(header: ManifestHeader, buf: Buffer, xxh64: Xxh64): void {
  buf.fill(0, 0, HEADER_BYTES);
  MAGIC.copy(buf, HEADER_MAGIC_OFFSET);
  buf.writeUInt16LE(header.formatVersion, HEADER_VERSION_OFFSET);
  buf.writeUInt8(KIND_CODES[header.kind], HEADER_KIND_OFFSET);
  buf.writeUInt8(DIGEST_CODES[header.digestAlgorithm], HEADER_DIGEST_ALGORITHM_OFFSET);
  const c = header.chunker;
  buf.writeUInt8(CHUNKER_CODES[c.algorithm], HEADER_CHUNKER_ALGORITHM_OFFSET);
  const [min, avg, max] = c.algorithm === 'fixed' ? [c.sizeBytes, c.sizeBytes, c.sizeBytes] : [c.minBytes, c.avgBytes, c.maxBytes];
  buf.writeUInt32LE(min, HEADER_CHUNKER_MIN_OFFSET);
  buf.writeUInt32LE(avg, HEADER_CHUNKER_AVG_OFFSET);
  buf.writeUInt32LE(max, HEADER_CHUNKER_MAX_OFFSET);
  writeInt64(buf, header.totalBytes, HEADER_TOTAL_BYTES_OFFSET);
  writeInt64(buf, header.entryCount, HEADER_ENTRY_COUNT_OFFSET);
  writeInt64(buf, header.chunkCount, HEADER_CHUNK_COUNT_OFFSET);
  buf.set(header.digest, HEADER_DIGEST_OFFSET);
  buf.writeBigUInt64LE(headerChecksum(buf, xxh64), HEADER_CHECKSUM_OFFSET);
}

/** xxh64 of the header bytes before the checksum field. */
export function headerChecksum(buf: Buffer, xxh64: Xxh64): bigint {
  return xxh64.hash(buf.subarray(0, HEADER_CHECKSUM_OFFSET));
}

/**
 * Decodes the fields of a header whose magic, version and checksum the caller has already
 * checked. Returns the header, or a message saying what is wrong. The chunker spec is
 * returned as decoded; the caller validates its ranges (validateChunkerSpec).
 */
export function decodeHeaderFields(buf: Buffer): ManifestHeader | string {
  const formatVersion = buf.readUInt16LE(HEADER_VERSION_OFFSET);
  if (buf[HEADER_RESERVED1_OFFSET] !== 0 || buf[HEADER_RESERVED1_OFFSET + 1] !== 0 || buf[HEADER_RESERVED1_OFFSET + 2] !== 0 ||
      buf.readUInt32LE(HEADER_RESERVED2_OFFSET) !== 0) {
    return 'manifest header has non-zero reserved bytes';
  }
  const kindCode = buf[HEADER_KIND_OFFSET]!;
  const kind = KINDS_BY_CODE.get(kindCode);
  if (kind === undefined) return `unknown manifest kind ${kindCode}`;
  const digestCode = buf[HEADER_DIGEST_ALGORITHM_OFFSET]!;
  const digestAlgorithm = DIGESTS_BY_CODE.get(digestCode);
  if (digestAlgorithm === undefined) return `unknown digest algorithm ${digestCode} in manifest header`;
  const chunkerCode = buf[HEADER_CHUNKER_ALGORITHM_OFFSET]!;
  const chunkerAlgorithm = CHUNKERS_BY_CODE.get(chunkerCode);
  if (chunkerAlgorithm === undefined) return `unknown chunker algorithm ${chunkerCode} in manifest header`;
  const min = buf.readUInt32LE(HEADER_CHUNKER_MIN_OFFSET);
  const avg = buf.readUInt32LE(HEADER_CHUNKER_AVG_OFFSET);
  const max = buf.readUInt32LE(HEADER_CHUNKER_MAX_OFFSET);
  let chunker: ChunkerSpec;
  if (chunkerAlgorithm === 'fixed') {
    if (min !== avg || avg !== max) {
      return `invalid chunker parameters in manifest header: fixed chunker sizes differ (${min}, ${avg}, ${max})`;
    }
    chunker = { algorithm: 'fixed', sizeBytes: avg };
  } else {
    chunker = { algorithm: 'fastcdc2020', minBytes: min, avgBytes: avg, maxBytes: max };
  }
  const totalBytes = readUint64(buf, HEADER_TOTAL_BYTES_OFFSET);
  const entryCount = readUint64(buf, HEADER_ENTRY_COUNT_OFFSET);
  const chunkCount = readUint64(buf, HEADER_CHUNK_COUNT_OFFSET);
  if (totalBytes < 0 || entryCount < 0 || chunkCount < 0) return 'manifest header totals are out of range';
  if (kind === 'file' && entryCount !== 1) return `file manifest header declares ${entryCount} entries (must be 1)`;
  const digest = Buffer.from(buf.subarray(HEADER_DIGEST_OFFSET, HEADER_DIGEST_OFFSET + DIGEST_BYTES));
  return { formatVersion, kind, digestAlgorithm, chunker, totalBytes, entryCount, chunkCount, digest };
}

/** The UTF-8 bytes of the optional owner or group name ('' when absent). */
function nameBytes(name: string | undefined): Buffer {
  return Buffer.from(name ?? '', 'utf8');
}

/**
 * The size of `meta`'s version 2 attribute block. `meta` must have passed metaProblem
 * (names and xattrs within their limits).
 */
export function attributeBlockBytes(meta: EntryMeta): number {
  let n = ATTR_FIXED_BYTES + SHORT_LENGTH_BYTES + Buffer.byteLength(meta.owner ?? '', 'utf8') + SHORT_LENGTH_BYTES + Buffer.byteLength(meta.group ?? '', 'utf8');
  if (isDevice(meta.type)) n += DEVICE_BYTES;
  n += XATTR_COUNT_BYTES;
  for (const x of meta.xattrs ?? []) n += SHORT_LENGTH_BYTES + Buffer.byteLength(x.name, 'utf8') + XATTR_VALUE_LENGTH_BYTES + x.value.length;
  return n;
}

/**
 * Writes `meta`'s version 2 attribute block at buf[at] (room for attributeBlockBytes(meta)
 * bytes is the caller's) and returns the offset after it. Absent fields are written as
 * "not recorded": 0 ns, NO_ID, empty names, no xattrs.
 */
export function encodeAttributeBlock(meta: EntryMeta, buf: Buffer, at: number): number {
  buf.writeUInt32LE(meta.mtimeExtraNs ?? 0, at);
  buf.writeUInt32LE(meta.uid ?? NO_ID, at + 4);
  buf.writeUInt32LE(meta.gid ?? NO_ID, at + 8);
  at += ATTR_FIXED_BYTES;
  for (const name of [nameBytes(meta.owner), nameBytes(meta.group)]) {
    buf[at] = name.length;
    at += SHORT_LENGTH_BYTES + name.copy(buf, at + SHORT_LENGTH_BYTES);
  }
  if (isDevice(meta.type)) {
    buf.writeUInt32LE(meta.devMajor ?? 0, at);
    buf.writeUInt32LE(meta.devMinor ?? 0, at + 4);
    at += DEVICE_BYTES;
  }
  const xattrs = meta.xattrs ?? [];
  buf.writeUInt16LE(xattrs.length, at);
  at += XATTR_COUNT_BYTES;
  for (const x of xattrs) {
    const len = buf.write(x.name, at + SHORT_LENGTH_BYTES, 'utf8');
    buf[at] = len;
    at += SHORT_LENGTH_BYTES + len;
    buf.writeUInt32LE(x.value.length, at);
    buf.set(x.value, at + XATTR_VALUE_LENGTH_BYTES);
    at += XATTR_VALUE_LENGTH_BYTES + x.value.length;
  }
  return at;
}
