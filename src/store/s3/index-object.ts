/**
 * The index objects of an S3 store (`<prefix>index/<name>.idx`): which chunks each pack
 * holds, in the index records of ../pack.ts, for any number of packs, so that a push
 * writes one index object when it flushes rather than one per pack:
 *
 *   S3_INDEX_MAGIC ('XFERS3X1')
 *   per pack: name length (u8), name (ASCII, PACK_NAME_RE), record count (u32),
 *             then that many IDX_RECORD_BYTES records (each with its own CRC-32)
 *   CRC-32 of all the bytes before it (u32)
 *
 * Integers are little-endian. An object is written by one PUT (atomic), after every pack
 * it names was stored, so each record points to stored bytes.
 */
import { crc32 } from 'node:zlib';
import { decodeIndexRecords, encodeIndexRecords, IDX_RECORD_BYTES, PACK_NAME_RE, type PackEntry } from '../pack.js';

export const S3_INDEX_MAGIC = Buffer.from('XFERS3X1');
const CRC_BYTES = 4;

/** The chunks of one pack. */
export interface PackIndex {
  readonly name: string;
  readonly entries: readonly PackEntry[];
}

export function encodeIndexObject(packs: readonly PackIndex[]): Buffer {
  const parts: Buffer[] = [S3_INDEX_MAGIC];
  for (const pack of packs) {
    const name = Buffer.from(pack.name, 'ascii');
    const head = Buffer.alloc(1 + name.length + 4);
    head[0] = name.length;
    name.copy(head, 1);
    head.writeUInt32LE(pack.entries.length, 1 + name.length);
    parts.push(head, encodeIndexRecords(pack.entries));
  }
  const body = Buffer.concat(parts);
  const crc = Buffer.alloc(CRC_BYTES);
  crc.writeUInt32LE(crc32(body));
  return Buffer.concat([body, crc]);
}

/**
 * The packs an index object names, or undefined if it is not one or is damaged (wrong
 * magic or checksum, a bad pack name, a record count beyond its end, a bad record): its
 * bytes come from the network, so every length is checked before use.
 */
export function decodeIndexObject(bytes: Uint8Array): PackIndex[] | undefined {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length < S3_INDEX_MAGIC.length + CRC_BYTES || !buf.subarray(0, S3_INDEX_MAGIC.length).equals(S3_INDEX_MAGIC)) return undefined;
  const end = buf.length - CRC_BYTES;
  if (buf.readUInt32LE(end) !== crc32(buf.subarray(0, end))) return undefined;
  const packs: PackIndex[] = [];
  let at = S3_INDEX_MAGIC.length;
  while (at < end) {
    const nameBytes = buf[at]!;
    if (at + 1 + nameBytes + 4 > end) return undefined;
    const name = buf.toString('ascii', at + 1, at + 1 + nameBytes);
    if (!PACK_NAME_RE.test(name)) return undefined;
    const count = buf.readUInt32LE(at + 1 + nameBytes);
    at += 1 + nameBytes + 4;
    const recordBytes = count * IDX_RECORD_BYTES;
    if (at + recordBytes > end) return undefined;
    const { entries, usedBytes } = decodeIndexRecords(buf.subarray(at, at + recordBytes));
    if (usedBytes !== recordBytes) return undefined;
    packs.push({ name, entries });
    at += recordBytes;
  }
  return packs;
}
