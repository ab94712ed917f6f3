/**
 * What the fuzzer sends: a small "world" of chunks and manifests built by the seeded
 * generator (uploaded to the server before the run, so that valid inputs do real work),
 * valid seed inputs of every body the server parses, with their integer fields marked, and
 * a generator of the i-th input of each parser: random bytes or mutations of the seeds.
 */
import xxhash from 'xxhash-wasm';
import { digestOf } from '../../src/hash/digest.js';
import type { ManifestEntry } from '../../src/manifest/index.js';
import { baseBlockSums, encodeDelta } from '../../src/protocol/delta.js';
import { chunkerQuery, STAGE_END_BYTES, STAGE_RECORD_BYTES } from '../../src/protocol/stage-format.js';
import { CDC_DEFAULT, dirEntry, encode, FILE_BLAKE3, fileEntry, symlinkEntry } from '../manifest-helpers.js';
import { mutate, randomBytes, type Field, type SeedInput } from './mutate.js';
import type { Rng } from './rng.js';

export const HTTP_PARSERS = ['missing', 'chunks', 'fetch', 'sums', 'delta', 'stage-file', 'stage-tree', 'manifest-put', 'requests'] as const;
export const DECODER_PARSERS = ['manifest-stream', 'manifest-file'] as const;
export type HttpParser = (typeof HTTP_PARSERS)[number];
export type DecoderParser = (typeof DECODER_PARSERS)[number];

const HEADER_BYTES = 96;
const TRAILER_BYTES = 9;

export interface World {
  /** Chunks to upload before the run: [length][digest][data] records, in batches. */
  readonly uploads: Buffer[];
  /** Digests the server holds. */
  readonly stored: Buffer[];
  readonly seeds: Record<Exclude<HttpParser, 'requests'>, SeedInput[]>;
  /** Valid manifests (file and tree): the decoder's seeds. */
  readonly manifests: SeedInput[];
}

/** One HTTP request of the fuzz run. */
export interface FuzzRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  /** A stage: it may legitimately wait for chunks and a commit; cancelled after a grace. */
  readonly stage: boolean;
  /** How it was made (for a finding). */
  readonly how: string;
}

export async function buildWorld(rng: Rng): Promise<World> {
  const blob = (n: number) => rng.bytes(n);
  const A = blob(150_000);
  const B = blob(90_000);
  const small = [blob(100), blob(2048), blob(3000), blob(20_000)];
  const aChunks = [A.subarray(0, 70_000), A.subarray(70_000)];
  const all = [...aChunks, B, ...small];
  const record = (data: Buffer) => {
    const head = Buffer.alloc(36);
    head.writeUInt32LE(data.length, 0);
    digestOf('blake3', data).copy(head, 4);
    return Buffer.concat([head, data]);
  };
  const uploads = [Buffer.concat(aChunks.map(record)), Buffer.concat([B, ...small].map(record))];
  const stored = all.map((d) => Buffer.from(digestOf('blake3', d)));

  // Manifests over the stored chunks: a file, and a tree with dirs, a symlink, an empty file.
  const fileEntries: ManifestEntry[] = [fileEntry('', A, 'blake3', { lengths: [70_000, 80_000] })];
  const treeEntries: ManifestEntry[] = [
    dirEntry('d'),
    fileEntry('d/a', A, 'blake3', { lengths: [70_000, 80_000] }),
    fileEntry('d/b', B, 'blake3'),
    fileEntry('e', Buffer.alloc(0), 'blake3'),
    symlinkEntry('l', 'd/a'),
    fileEntry('s', small[1]!, 'blake3'),
  ];
  const treeInit = { kind: 'tree' as const, digestAlgorithm: 'blake3' as const, chunker: CDC_DEFAULT };
  const file = (await encode(FILE_BLAKE3, fileEntries)).bytes;
  const tree = (await encode(treeInit, treeEntries)).bytes;
  const manifests = [
    { bytes: file, fields: [...headerFields(), ...entryFields(fileEntries, HEADER_BYTES)] },
    { bytes: tree, fields: [...headerFields(), ...entryFields(treeEntries, HEADER_BYTES)] },
  ];
  const treeBody = tree.subarray(HEADER_BYTES, tree.length - TRAILER_BYTES);

  const digests = (list: Buffer[]) => ({ bytes: Buffer.concat(list) });
  const unknown = rng.bytes(32);
  const digestSeeds = [digests(stored), digests([stored[0]!]), digests([unknown, stored[2]!, unknown]), digests([stored[4]!, stored[4]!])];

  const chunkRecord = (data: Buffer): SeedInput => ({ bytes: record(data), fields: [{ offset: 0, bytes: 4, endian: 'le' }] });
  const twoRecords = Buffer.concat([record(small[0]!), record(small[2]!)]);

  // Delta: a new chunk = the first chunk of A with one block changed, against that chunk.
  const base = aChunks[0]!;
  const changed = Buffer.from(base);
  rng.bytes(2048).copy(changed, 4096);
  const shifts = [0, base.length - changed.length] as const;
  const sums = baseBlockSums('blake3', base, shifts, changed.length);
  const delta = encodeDelta('blake3', digestOf('blake3', changed), digestOf('blake3', base), shifts, changed, sums).record;
  const deltaFields: Field[] = [
    { offset: 64, bytes: 4, endian: 'le' },
    { offset: 68, bytes: 4, endian: 'le' },
    { offset: 72, bytes: 4, endian: 'le' },
  ];
  const sumsRecord = (digest: Buffer, a: number, b: number, length: number) => {
    const r = Buffer.alloc(44);
    digest.copy(r, 0);
    r.writeInt32LE(a, 32);
    r.writeInt32LE(b, 36);
    r.writeUInt32LE(length, 40);
    return r;
  };
  const sumsFields = (n: number): Field[] => Array.from({ length: n }, (_, k) => [32, 36, 40].map((o) => ({ offset: 44 * k + o, bytes: 4 as const, endian: 'le' as const }))).flat();

  const stageList = (chunks: Buffer[]): SeedInput => {
    const parts: Buffer[] = [];
    const fields: Field[] = [];
    let at = 0;
    for (const c of chunks) {
      const r = Buffer.alloc(STAGE_RECORD_BYTES);
      r.writeUInt32BE(c.length, 0);
      digestOf('blake3', c).copy(r, 4);
      parts.push(r);
      fields.push({ offset: at, bytes: 4, endian: 'be' });
      at += r.length;
    }
    const end = Buffer.alloc(STAGE_END_BYTES);
    const whole = Buffer.concat(chunks);
    end.writeBigUInt64BE(BigInt(whole.length), 4);
    digestOf('blake3', whole).copy(end, 12);
    fields.push({ offset: at, bytes: 4, endian: 'be' }, { offset: at + 4, bytes: 8, endian: 'be' });
    parts.push(end);
    return { bytes: Buffer.concat(parts), fields };
  };

  return {
    uploads,
    stored,
    manifests,
    seeds: {
      missing: digestSeeds,
      fetch: digestSeeds,
      chunks: [chunkRecord(small[0]!), chunkRecord(small[3]!), { bytes: twoRecords, fields: [{ offset: 0, bytes: 4, endian: 'le' }, { offset: 36 + small[0]!.length, bytes: 4, endian: 'le' }] }],
      sums: [
        { bytes: sumsRecord(stored[0]!, 0, 0, 70_000), fields: sumsFields(1) },
        { bytes: Buffer.concat([sumsRecord(stored[0]!, 0, 10, 69_990), sumsRecord(unknown, 0, 0, 100)]), fields: sumsFields(2) },
      ],
      delta: [{ bytes: delta, fields: deltaFields }],
      'stage-file': [stageList(aChunks), stageList([small[1]!]), stageList([small[0]!, small[2]!])],
      'stage-tree': [{ bytes: Buffer.concat([treeBody, Buffer.from([0xff])]), fields: entryFields(treeEntries, 0) }],
      'manifest-put': manifests,
    },
  };
}

/** The integer fields of a manifest header. */
function headerFields(): Field[] {
  return [
    { offset: 8, bytes: 2, endian: 'le' },
    { offset: 10, bytes: 1, endian: 'le' },
    { offset: 11, bytes: 1, endian: 'le' },
    { offset: 12, bytes: 1, endian: 'le' },
    { offset: 16, bytes: 4, endian: 'le' },
    { offset: 20, bytes: 4, endian: 'le' },
    { offset: 24, bytes: 4, endian: 'le' },
    { offset: 32, bytes: 8, endian: 'le' },
    { offset: 40, bytes: 8, endian: 'le' },
    { offset: 48, bytes: 8, endian: 'le' },
  ];
}

/** The integer fields of entries laid out from `start` (docs/FORMAT.md "Body: entries"). */
function entryFields(entries: readonly ManifestEntry[], start: number): Field[] {
  const fields: Field[] = [];
  let at = start;
  for (const e of entries) {
    fields.push({ offset: at, bytes: 1, endian: 'le' }, { offset: at + 1, bytes: 4, endian: 'le' }, { offset: at + 5, bytes: 8, endian: 'le' }, { offset: at + 13, bytes: 8, endian: 'le' }, { offset: at + 21, bytes: 2, endian: 'le' });
    at += 23 + Buffer.byteLength(e.path);
    if (e.type === 'symlink') {
      fields.push({ offset: at, bytes: 2, endian: 'le' });
      at += 2 + Buffer.byteLength(e.linkTarget ?? '');
    }
    if (e.type === 'file') {
      for (let k = 0; k < e.chunks.length; k++) fields.push({ offset: at + 36 * k, bytes: 4, endian: 'le' });
      at += 36 * e.chunks.length;
      fields.push({ offset: at, bytes: 4, endian: 'le' }, { offset: at + 4, bytes: 8, endian: 'le' });
      at += 44;
    }
  }
  return fields;
}

let h64Raw: ((input: Uint8Array, seed?: bigint) => bigint) | undefined;

/**
 * Makes a mutated manifest pass its checksums again (and, for `digestToo`, its tree digest),
 * so that the reader's later checks are reached instead of the first checksum.
 */
async function fixManifest(b: Buffer, digestToo: boolean): Promise<Buffer> {
  h64Raw ??= (await xxhash()).h64Raw;
  if (b.length < HEADER_BYTES) return b;
  const out = Buffer.from(b);
  if (out.length >= HEADER_BYTES + TRAILER_BYTES) {
    const body = out.subarray(HEADER_BYTES, out.length - TRAILER_BYTES);
    out.writeBigUInt64LE(h64Raw(body, 0n), out.length - 8);
    if (digestToo && out[10] === 2) Buffer.from(digestOf(out[11] === 2 ? 'sha256' : 'blake3', body)).copy(out, 56);
  }
  out.writeBigUInt64LE(h64Raw(out.subarray(0, 88), 0n), 88);
  return out;
}

/** The i-th manifest for the decoder or a PUT: random, or a seed mutated and often re-checksummed. */
export async function manifestInput(rng: Rng, world: World): Promise<{ bytes: Buffer; how: string }> {
  const r = rng.float();
  if (r < 0.1) return { bytes: randomBytes(rng), how: 'random' };
  const seed = rng.pick(world.manifests);
  if (r < 0.13) return { bytes: seed.bytes, how: 'valid' };
  const m = mutate(rng, seed, world.manifests);
  const fix = rng.float();
  if (fix < 0.35) return { bytes: m.bytes, how: m.applied.join('+') };
  return { bytes: await fixManifest(m.bytes, fix > 0.7), how: `${m.applied.join('+')}+checksums${fix > 0.7 ? '+digest' : ''}` };
}

const ALGORITHMS = ['blake3', 'blake3', 'blake3', 'sha256', '', 'BLAKE3', 'md5', 'blake3&algorithm=sha256', '%00'];

/** The i-th HTTP request for `parser`. */
export async function httpInput(parser: HttpParser, rng: Rng, world: World): Promise<FuzzRequest> {
  if (parser === 'requests') return oddRequest(rng, world);
  const algorithm = rng.bool(0.9) ? 'blake3' : rng.pick(ALGORITHMS);
  const body = async (): Promise<{ bytes: Buffer; how: string }> => {
    if (parser === 'manifest-put') return manifestInput(rng, world);
    const r = rng.float();
    if (r < 0.12) return { bytes: randomBytes(rng), how: 'random' };
    const seeds = world.seeds[parser];
    const seed = rng.pick(seeds);
    if (r < 0.17) return { bytes: seed.bytes, how: 'valid' };
    const m = mutate(rng, seed, seeds);
    return { bytes: m.bytes, how: m.applied.join('+') };
  };
  const b = await body();
  const slot = rng.range(1, 4);
  switch (parser) {
    case 'missing':
      return post(`/v1/chunks/missing?algorithm=${algorithm}`, b);
    case 'chunks':
      return post(`/v1/chunks?algorithm=${algorithm}`, b);
    case 'fetch':
      return post(`/v1/chunks/fetch?algorithm=${algorithm}`, b);
    case 'sums':
      return post(`/v1/chunks/sums?algorithm=${algorithm}`, b);
    case 'delta':
      return post(`/v1/chunks/delta?algorithm=${algorithm}`, b);
    case 'stage-file': {
      const size = rng.bool(0.8) ? stageSize(b.bytes) : rng.pick(['0', '-1', '9007199254740993', '1e3', '', 'x']);
      const mode = rng.bool(0.9) ? '420' : rng.pick(['4096', '-1', '0', '0o644', '']);
      const mtime = rng.bool(0.9) ? '1700000000000' : rng.pick(['-5', '99999999999999999999', '1.5', '']);
      return { ...post(`/v1/stage/fz/s${slot}?algorithm=${algorithm}&mode=${mode}&mtimeMs=${mtime}&size=${size}`, b), stage: true };
    }
    case 'stage-tree': {
      const chunker = rng.bool(0.85) ? chunkerQuery(CDC_DEFAULT) : rng.pick(['chunker=fixed&size=4096', 'chunker=fixed&size=1', 'chunker=fastcdc2020&min=1&avg=2&max=3', 'chunker=zzz', '', 'chunker=fastcdc2020&min=999999999&avg=999999999&max=999999999']);
      return { ...post(`/v1/stage/fz/t${slot}?algorithm=${algorithm}&kind=tree&${chunker}`, b), stage: true };
    }
    case 'manifest-put':
      return { method: 'PUT', path: `/v1/manifests/fz/m${slot}`, headers: {}, body: b.bytes, stage: false, how: b.how };
  }
}

/** The file size a stage list announces in its end record, if it has one where a valid list would. */
function stageSize(list: Buffer): string {
  if (list.length >= STAGE_END_BYTES) {
    const end = list.subarray(list.length - STAGE_END_BYTES);
    if (end.readUInt32BE(0) === 0) return String(end.readBigUInt64BE(4));
  }
  return '0';
}

function post(path: string, b: { bytes: Buffer; how: string }): FuzzRequest {
  return { method: 'POST', path, headers: {}, body: b.bytes, stage: false, how: b.how };
}

const SEGMENTS = ['a', 'fz', 'm1', 'm2', 'l', 'd', '..', '.', '', '%2e%2e', '%2E', '%2f', '%2F', '%5c', '%00', '%ff', '%c0%af', '%', '%%', '%zz', 'a%2Fb', '%C3%A9', 'COM1', '~', '.xfer-x', '.xfer', 'store', 'tmp', 'files', '*', ';', '$', "'", 'a b'];
const ENDPOINTS = ['info', 'chunks/missing', 'chunks', 'chunks/fetch', 'chunks/sums', 'chunks/delta', 'stage/', 'manifests/', 'stat/', 'list', '', 'chunks/', 'manifests', 'stage', 'info/'];
const PREFIXES = ['/v1/', '/v1/', '/v1/', '/v2/', '/', '/v1', '//v1/', '/v1//', '/v1/../v1/', '/V1/', '*'];
const METHODS = ['GET', 'POST', 'PUT', 'GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'FOO'];
const QUERY_KEYS = ['algorithm', 'kind', 'mode', 'mtimeMs', 'size', 'chunker', 'min', 'avg', 'max', 'prefix', '', 'x'];
const QUERY_VALUES = ['blake3', 'sha256', 'tree', 'file', '420', '-1', '0', '1e3', '0x10', '99999999999999999999999999999999', ' 1', '%00', '%zz', '', 'fastcdc2020', 'fixed', '..', '../..', 'fz', '4096', '&', '=', '%2F'];

/** A request with an odd path, query string, method or headers, and a body from anywhere. */
function oddRequest(rng: Rng, world: World): FuzzRequest {
  const segments = Array.from({ length: rng.range(0, 5) }, () => (rng.bool(0.95) ? rng.pick(SEGMENTS) : 'x'.repeat(rng.range(1, rng.bool(0.5) ? 300 : 12_000))));
  let path = rng.pick(PREFIXES) + rng.pick(ENDPOINTS) + segments.join('/');
  if (rng.bool(0.6)) {
    const pairs = Array.from({ length: rng.range(0, 6) }, () => `${rng.pick(QUERY_KEYS)}${rng.bool(0.9) ? '=' : ''}${rng.pick(QUERY_VALUES)}`);
    path += `?${pairs.join(rng.bool(0.9) ? '&' : '&&')}`;
  }
  const headers: Record<string, string> = {};
  const h = rng.float();
  if (h < 0.1) headers.authorization = rng.pick(['Bearer ', 'Bearer x', 'Basic Zm9vOmJhcg==', 'bearer', 'Bearer ' + 'y'.repeat(4000)]);
  else if (h < 0.2) headers['content-type'] = rng.pick(['application/json', 'text/plain', '', 'x/y; charset=utf-8']);
  else if (h < 0.3) headers['x-junk'] = 'j'.repeat(rng.range(1, 15_000));
  else if (h < 0.35) for (let k = 0; k < 100; k++) headers[`x-h${k}`] = String(k);
  let body: Buffer;
  const b = rng.float();
  if (b < 0.5) body = Buffer.alloc(0);
  else if (b < 0.8) body = randomBytes(rng);
  else {
    const all = [...world.manifests, ...Object.values(world.seeds).flat()];
    body = rng.pick(all).bytes;
  }
  const method = rng.pick(METHODS);
  // A declared length that does not match the body: the server must refuse, never wait.
  if (rng.bool(0.05) && method !== 'GET' && method !== 'HEAD') headers['content-length'] = String(rng.pick([0, 1, body.length + 1, 4 * 1024 * 1024 * 1024 * 1024]));
  return { method, path, headers, body: method === 'GET' || method === 'HEAD' ? Buffer.alloc(0) : body, stage: path.includes('stage'), how: 'odd request' };
}
