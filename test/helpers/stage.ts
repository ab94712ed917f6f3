import { DEFAULT_CHUNKER } from '../../src/chunker/params.js';
import { digestOf } from '../../src/hash/digest.js';
import { STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../../src/protocol/stage-format.js';
import { createChunker } from '../../src/chunker/index.js';
import { cutAll } from './chunks.js';

/**
 * The stage list of `data` as a push sends it (docs/PROTOCOL.md, protocol/stage-format.ts): a
 * record per chunk of the default chunker, then the end record; `digest` overrides the end
 * record's whole-file digest.
 */
export function stageList(data: Buffer, digest: Uint8Array = digestOf('blake3', data)): Buffer {
  const parts: Buffer[] = [];
  let o = 0;
  for (const len of cutAll(createChunker(DEFAULT_CHUNKER), data)) {
    const r = Buffer.alloc(STAGE_RECORD_BYTES);
    r.writeUInt32BE(len, 0);
    digestOf('blake3', data.subarray(o, o + len)).copy(r, 4);
    parts.push(r);
    o += len;
  }
  const end = Buffer.alloc(STAGE_END_BYTES);
  end.writeBigUInt64BE(BigInt(data.length), 4);
  Buffer.from(digest).copy(end, 12);
  return Buffer.concat([...parts, end]);
}
