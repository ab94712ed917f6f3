/**
 * S3Store: chunks and manifests in an S3 bucket (AWS S3, MinIO, Ceph RGW, any S3 clone),
 * under a key prefix. Layout (docs/FORMAT.md, "S3 layout"):
 *
 *   <prefix>packs/<name>.pack    chunks in the pack format of ../pack.ts, ~16 MiB each
 *   <prefix>index/<name>.idx     which chunks packs hold (index-object.ts)
 *   <prefix>manifests/<name>     manifests, by name
 *   <prefix>aside/<name>.json    a chunk set aside (found corrupt): its pack and offset
 *
 * Writes: put appends the chunk to an open pack held in memory; a pack of
 * S3_PACK_TARGET_BYTES is sealed and uploaded in the background, one PUT. flush seals the
 * open pack, waits for every pack upload, then writes one index object naming the packs
 * stored since the last one (one PUT; also every S3_INDEX_EVERY_PACKS packs, so a long
 * push that dies keeps most of what it stored). A chunk counts as durable once an index
 * object names it: an index is only written after its packs were, so every index record
 * points to stored bytes, and a crash leaves at worst packs no index names (ignored).
 * putManifest flushes first, so no manifest is ever stored before the chunks it refers
 * to (a PUT is atomic: readers see the old or the new object).
 *
 * Reads: the index objects are loaded when the store opens into a ChunkTable (45 bytes per
 * chunk); get reads a chunk by a ranged GET, coalescing reads of neighbouring chunks made
 * together, and re-hashes every chunk it returns. Chunks stored by other writers after the
 * store opened are not seen until it is opened again.
 *
 * Set aside (ChunkStore.setAside; get calls it when bytes do not hash to their digest):
 * one small object per chunk names the pack and offset of the bad copy, which stays in its
 * pack for inspection (packs are never rewritten). From then on, and for every store that
 * opens later, that place no longer counts: has answers false, and the next put stores the
 * chunk in a new pack, whose index record then locates it.
 *
 * Every request is retried with backoff and jitter when errors.ts calls its failure
 * transient (5xx, SlowDown, broken connections, short bodies), never on a 4xx that cannot
 * succeed (policy, classifier and listener as S3StoreOptions give them: the registry's). At most S3_MAX_REQUESTS_IN_FLIGHT requests run at once, and at most
 * S3_MAX_PACKS_UPLOADING sealed packs wait in memory: puts wait for room.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { throwIfAborted, untilAborted } from '../../core/abort.js';
import { ChunkCorruptError, ChunkMissingError, InvalidOptionError, IoError, isXferError, NotFoundError } from '../../core/errors.js';
import { chunkIdKey, DIGEST_ALGORITHMS, digestFromHex, type ChunkId, type DigestAlgorithm } from '../../core/ids.js';
import { SET_ASIDE_HINT } from '../local/set-aside.js';
import { checkBoolean, checkFunction, checkPositiveInteger, checkSignal } from '../../core/options.js';
import { DEFAULT_RETRY_POLICY, retrying, type RetryEvent, type RetryPolicy } from '../../core/retry.js';
import { MiB } from '../../core/sizes.js';
import { digestEquals, digestOf } from '../../hash/digest.js';
import { checkChunkId, compareManifestNames, quoteName, validateManifestName, validateManifestPrefix } from '../names.js';
import { encodeRecordHeader, newPackName, PACK_MAGIC, PACK_NAME_RE, PACK_RECORD_HEADER_BYTES, type PackEntry } from '../pack.js';
import { GC_MARKS_RECHECK_MS } from '../gc.js';
import type { ChunkStore, GarbageCollecting, GcOptions, GcReport, GetOptions, ManifestInfo, ManifestStore, OpOptions, PutOptions, ReferencedChunks } from '../store.js';
import { collectS3Garbage, listIndexObjects, readS3Marks, type S3GcAccess } from './gc.js';
import { createS3Client, S3_MAX_REQUESTS_IN_FLIGHT, type S3ClientOptions } from './client.js';
import { isPermanentS3Error, s3Failure } from './errors.js';
import { decodeIndexObject, encodeIndexObject, type PackIndex } from './index-object.js';
import { Slots } from '../../core/window.js';
import { abortUpload, listUploads, MultipartUpload, putInParts, S3_MIN_PART_BYTES, S3_MULTIPART_ABOVE_BYTES, S3_PART_BYTES, type MultipartContext } from './multipart.js';
import { formatS3Location, formatS3Object, parseS3Location, type S3Location } from './location.js';
import { CoalescingReader } from './reads.js';
import { ChunkTable, type ChunkPlace } from './table.js';

/** A pack takes no more chunks once it is this large; it is then uploaded in one PUT. */
export const S3_PACK_TARGET_BYTES = 16 * MiB;
/** Sealed packs uploading (or failed, awaiting the next flush) at most; puts wait beyond. */
export const S3_MAX_PACKS_UPLOADING = 2;
/**
 * Index records one index object holds at most (56 MiB); more are split over several. A
 * 16 MiB pack of empty chunks alone has ~350,000.
 */
export const S3_INDEX_MAX_RECORDS = 1 << 20;
/** An index object larger than this is refused (left out, named in damagedIndexes). */
export const S3_MAX_INDEX_OBJECT_BYTES = 64 * MiB;
/**
 * Packs (or index records) stored without an index object at most: one is then written
 * without waiting for flush, so a long push that dies keeps most of what it stored.
 */
export const S3_INDEX_EVERY_PACKS = 64;
/** A set-aside object larger than this is not one (ignored). */
const MAX_ASIDE_OBJECT_BYTES = 64 * 1024;
/** Keys per listing request (S3's maximum). */
const LIST_PAGE_KEYS = 1000;
const MAX_U32 = 0xffff_ffff;

export interface S3StoreOptions extends S3ClientOptions, OpOptions {
  /**
   * How failed requests are retried (default: core/retry.ts's, ~8 s of waiting). The
   * retries stay in the store, per request, because a request may be one of many a caller
   * waits on (a pack upload in the background, a ranged read serving several gets); their
   * policy, classifier and listener come from the location registry's composition (a
   * RetryPlan, endpoint/registry.ts) when opened through it.
   */
  readonly retry?: RetryPolicy;
  /** Which failures are never retried: isPermanentS3Error (errors.ts) unless given. */
  readonly isPermanent?: (error: unknown) => boolean;
  /** Told before each retry waits. */
  readonly onRetry?: (event: RetryEvent) => void;
  /** Bytes at which a pack is sealed and uploaded (default S3_PACK_TARGET_BYTES). */
  readonly packTargetBytes?: number;
  /** Objects (packs, index objects, manifests) of more bytes are uploaded in parts (default S3_MULTIPART_ABOVE_BYTES). */
  readonly multipartAboveBytes?: number;
  /** Bytes of each part of such an upload but the last (default S3_PART_BYTES; at least S3_MIN_PART_BYTES). */
  readonly partBytes?: number;
}

interface S3Tuning {
  readonly retry: RetryPolicy;
  readonly isPermanent?: (error: unknown) => boolean;
  readonly onRetry?: (event: RetryEvent) => void;
  readonly packTargetBytes: number;
  readonly multipartAboveBytes: number;
  readonly partBytes: number;
}

/**
 * Opens the store at `url` (s3://bucket/prefix) and loads its index. The bucket must
 * exist (NotFoundError otherwise); an empty prefix is an empty store. Endpoint, region and
 * credentials come from `options` or the AWS environment (see S3ClientOptions).
 */
export async function openS3Store(url: string, options: S3StoreOptions = {}): Promise<S3Store> {
  const location = parseS3Location(url);
  checkSignal(options);
  checkPositiveInteger(options, 'packTargetBytes');
  checkPositiveInteger(options, 'multipartAboveBytes');
  checkPositiveInteger(options, 'partBytes');
  if (options.partBytes !== undefined && options.partBytes < S3_MIN_PART_BYTES) {
    throw new InvalidOptionError('partBytes', `at least ${S3_MIN_PART_BYTES} (S3's least part)`);
  }
  checkBoolean(options, 'forcePathStyle');
  checkFunction(options, 'isPermanent');
  checkFunction(options, 'onRetry');
  if (options.endpoint !== undefined && !/^https?:\/\/[^/]/.test(String(options.endpoint))) {
    throw new InvalidOptionError('endpoint', 'an http:// or https:// URL');
  }
  const store = new S3Store(location, createS3Client(options), {
    retry: options.retry ?? DEFAULT_RETRY_POLICY,
    isPermanent: options.isPermanent,
    onRetry: options.onRetry,
    packTargetBytes: options.packTargetBytes ?? S3_PACK_TARGET_BYTES,
    multipartAboveBytes: options.multipartAboveBytes ?? S3_MULTIPART_ABOVE_BYTES,
    partBytes: options.partBytes ?? S3_PART_BYTES,
  });
  try {
    await store.loadIndex(options.signal);
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return store;
}

/** A pack being filled, or sealed and uploading (or failed, to upload again at flush). */
class OutgoingPack {
  readonly name = newPackName();
  pieces: Buffer[] = [PACK_MAGIC];
  bytes = PACK_MAGIC.length;
  readonly entries: PackEntry[] = [];
  readonly keys: string[] = [];
  body: Buffer | undefined;
  upload: Promise<void> | undefined;
  done = false;
  failure: unknown;
}

interface PendingChunk {
  readonly pack: OutgoingPack;
  data: Buffer;
}

export class S3Store implements ChunkStore, ManifestStore, GarbageCollecting {
  private readonly where: string;
  private readonly table = new ChunkTable();
  /** Pack names by pack number (ChunkTable entries hold the number). */
  private readonly packNames: string[] = [];
  /** Chunks put and not yet durable (in the open pack or a sealed one), by chunkIdKey. */
  private readonly pending = new Map<string, PendingChunk>();
  private open: OutgoingPack | undefined;
  private readonly sealed = new Set<OutgoingPack>();
  /** Packs stored that no index object names yet (their chunks are readable, not yet durable). */
  private unindexed: PackIndex[] = [];
  /** Records of the packs stored since the last periodic index write (a trigger, not exact). */
  private unindexedRecords = 0;
  /** The index object being written, if one is. */
  private indexWrite: Promise<void> | undefined;
  /** Index objects found damaged when the store opened (left out: their chunks count as missing). */
  readonly damagedIndexes: string[] = [];
  private readonly slots = new Slots(S3_MAX_REQUESTS_IN_FLIGHT);
  private readonly lifetime = new AbortController();
  private readonly reader: CoalescingReader;
  private closed = false;
  /** Places set aside, `<pack name>@<offset>`: the chunk there no longer counts as stored. */
  private readonly asidePlaces = new Set<string>();
  /** Chunks set aside (chunkIdKey): a get that misses them says why. */
  private readonly asideChunks = new Set<string>();
  private roomWaiters: (() => void)[] = [];
  /** Pack numbers of packs a gc marked for deletion (or deleted): their chunks are not present. */
  private deadPacks = new Set<number>();
  /** Pack numbers by name (packNames' inverse). */
  private readonly packNumbers = new Map<string, number>();
  /** When the gc marks were last read, and a read in progress. */
  private marksCheckedMs = -Infinity;
  private marksCheck: Promise<void> | undefined;

  constructor(
    readonly location: S3Location,
    private readonly client: S3Client,
    private readonly tuning: S3Tuning = {
      retry: DEFAULT_RETRY_POLICY,
      packTargetBytes: S3_PACK_TARGET_BYTES,
      multipartAboveBytes: S3_MULTIPART_ABOVE_BYTES,
      partBytes: S3_PART_BYTES,
    },
  ) {
    this.where = formatS3Location(location);
    // Every request in flight listens on it (up to S3_MAX_REQUESTS_IN_FLIGHT, and their waiters).
    setMaxListeners(0, this.lifetime.signal);
    this.reader = new CoalescingReader((pack, start, end) => this.fetchRange(pack, start, end));
  }

  /** Chunks the store knows as durable, and the bytes their table takes. */
  get indexStats(): { readonly chunks: number; readonly tableBytes: number } {
    return { chunks: this.table.size, tableBytes: this.table.tableBytes };
  }

  /** The object under `key` (a whole key, prefix included) as a URL, for messages. */
  private url(key: string): string {
    return formatS3Object(this.location.bucket, key);
  }

  private key(kind: 'packs' | 'index' | 'manifests' | 'gc' | 'aside', name: string): string {
    const suffix = kind === 'packs' ? '.pack' : kind === 'index' ? '.idx' : kind === 'aside' ? '.json' : '';
    return `${this.location.prefix}${kind}/${name}${suffix}`;
  }

  // ---- chunks ----

  async has(ids: readonly ChunkId[], options?: OpOptions): Promise<boolean[]> {
    throwIfAborted(options?.signal);
    this.checkOpen();
    await this.checkMarks(options?.signal);
    return ids.map((id) => this.holds(id));
  }

  async get(id: ChunkId, options?: GetOptions): Promise<Buffer> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const hex = checkChunkId(id);
    this.checkOpen();
    let data: Buffer;
    const pending = this.pending.get(chunkIdKey(id));
    if (pending !== undefined) {
      data = pending.data;
    } else {
      const place = this.table.find(id.algorithm, id.digest);
      if ((place === undefined || this.isAside(place)) && this.asideChunks.has(chunkIdKey(id))) {
        throw new ChunkCorruptError(hex, `its copy in ${this.where} was found damaged and set aside (${SET_ASIDE_HINT})`);
      }
      if (place === undefined || this.isAside(place)) throw new ChunkMissingError(hex, this.where);
      if (place.length === 0) {
        data = Buffer.alloc(0);
      } else {
        try {
          data = await untilAborted(this.reader.read(this.packNames[place.pack]!, place.offset, place.length), signal);
        } catch (err) {
          if (isXferError(err, 'XFER_NOT_FOUND')) throw new ChunkMissingError(hex, `${this.where} (its pack is gone)`);
          throw err;
        }
      }
    }
    if (options?.unverified !== true && !digestEquals(digestOf(id.algorithm, data), id.digest)) {
      const place = pending === undefined ? this.table.find(id.algorithm, id.digest) : undefined;
      if (place !== undefined) {
        // Bytes change on the way (a proxy, a bad link) as well as at rest: only a second
        // read, alone, that does not match either shows the stored copy is damaged.
        const again = await untilAborted(this.fetchRange(this.packNames[place.pack]!, place.offset, place.offset + place.length), signal);
        if (digestEquals(digestOf(id.algorithm, again), id.digest)) return again;
        await this.setAsidePlace(id, hex, place, signal);
      }
      throw new ChunkCorruptError(hex, `the bytes read from ${this.where} do not match it${place !== undefined ? ` (set aside: ${SET_ASIDE_HINT})` : ''}`);
    }
    return data;
  }

  /** ChunkStore.setAside (see the head of this file); a chunk not stored, or pending, is left as it is. */
  async setAside(id: ChunkId, options?: OpOptions): Promise<void> {
    throwIfAborted(options?.signal);
    const hex = checkChunkId(id);
    this.checkOpen();
    if (this.pending.has(chunkIdKey(id))) return;
    const place = this.table.find(id.algorithm, id.digest);
    if (place === undefined || !this.counts(place)) return;
    await this.setAsidePlace(id, hex, place, options?.signal);
  }

  /** Records the copy of `id` at `place` as set aside (durably: an object of its own), then stops counting it. */
  private async setAsidePlace(id: ChunkId, hex: string, place: ChunkPlace, signal: AbortSignal | undefined): Promise<void> {
    const pack = this.packNames[place.pack]!;
    const record = { algorithm: id.algorithm, digest: hex, pack, offset: place.offset, length: place.length, at: new Date().toISOString() };
    await this.putObject(this.key('aside', newPackName()), Buffer.from(`${JSON.stringify(record)}\n`), signal);
    this.asidePlaces.add(`${pack}@${place.offset}`);
    this.asideChunks.add(chunkIdKey(id));
  }

  private isAside(place: ChunkPlace): boolean {
    return this.asidePlaces.size > 0 && this.asidePlaces.has(`${this.packNames[place.pack]!}@${place.offset}`);
  }

  async put(id: ChunkId, data: Uint8Array, options?: PutOptions): Promise<boolean> {
    const signal = options?.signal;
    throwIfAborted(signal);
    const hex = checkChunkId(id);
    this.checkOpen();
    await this.checkMarks(signal);
    if (this.holds(id)) return false;
    if (options?.trusted !== true && !digestEquals(digestOf(id.algorithm, data), id.digest)) {
      throw new ChunkCorruptError(hex, 'the bytes to store do not hash to it');
    }
    if (data.length > MAX_U32) throw new IoError(`chunk ${hex} is too large for a pack (${data.length} bytes)`);
    await this.roomForPut(signal);
    // No await from here on: concurrent puts of one id cannot both pass this check.
    if (this.holds(id)) return false;
    const pack = (this.open ??= new OutgoingPack());
    const copy = Buffer.from(data);
    const header = encodeRecordHeader(id.algorithm, id.digest, copy.length);
    const offset = pack.bytes + PACK_RECORD_HEADER_BYTES;
    pack.pieces.push(header, copy);
    pack.bytes = offset + copy.length;
    pack.entries.push({ algorithm: id.algorithm, digest: Buffer.from(id.digest), offset, length: copy.length });
    const key = chunkIdKey(id);
    pack.keys.push(key);
    this.pending.set(key, { pack, data: copy });
    if (pack.bytes >= this.tuning.packTargetBytes) this.seal();
    return true;
  }

  /**
   * Seals the open pack, waits until every sealed pack is stored (a pack whose upload
   * failed is tried once more), then writes the index object of the packs stored since
   * the last one. Throws the upload's error if one still fails (its chunks stay pending,
   * to be uploaded by the next flush).
   */
  async flush(options?: OpOptions): Promise<void> {
    const signal = options?.signal;
    throwIfAborted(signal);
    this.checkOpen();
    if (this.open !== undefined && this.open.entries.length > 0) this.seal();
    const waiting = [...this.sealed];
    for (const pack of waiting) if (pack.failure !== undefined) this.startUpload(pack);
    await untilAborted(Promise.all(waiting.map((pack) => pack.upload)), signal);
    const failed = waiting.find((pack) => !pack.done);
    if (failed !== undefined) throw s3Failure(failed.failure, `PUT ${this.url(this.key('packs', failed.name))}`);
    await this.writeIndex(signal);
  }

  /**
   * Writes one index object naming the packs stored without one. Waits for an index write
   * already under way first: flush returns only once an index names every pack stored
   * before it was called. On failure the packs stay unindexed, for the next try.
   */
  private async writeIndex(signal: AbortSignal | undefined): Promise<void> {
    while (this.indexWrite !== undefined) await untilAborted(this.indexWrite.catch(() => undefined), signal);
    if (this.unindexed.length === 0) return;
    const packs = this.unindexed;
    this.unindexed = [];
    const write = (async () => {
      let from = 0;
      try {
        while (from < packs.length) {
          // As many packs as S3_INDEX_MAX_RECORDS allows in one object (at least one).
          let to = from;
          let records = 0;
          do records += packs[to++]!.entries.length;
          while (to < packs.length && records + packs[to]!.entries.length <= S3_INDEX_MAX_RECORDS);
          await this.putObject(this.key('index', newPackName()), encodeIndexObject(packs.slice(from, to)));
          from = to;
        }
      } catch (error) {
        this.unindexed = [...packs.slice(from), ...this.unindexed];
        throw error;
      }
    })().finally(() => {
      this.indexWrite = undefined;
    });
    this.indexWrite = write;
    await untilAborted(write, signal);
  }

  /** Flushes what was put (as LocalStore does), then releases the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.sealed.size > 0 || (this.open?.entries.length ?? 0) > 0 || this.unindexed.length > 0) await this.flush();
    } finally {
      this.closed = true;
      this.lifetime.abort();
      this.client.destroy();
    }
  }

  private holds(id: ChunkId): boolean {
    checkChunkId(id);
    if (this.pending.has(chunkIdKey(id))) return true;
    const place = this.table.find(id.algorithm, id.digest);
    return place !== undefined && this.counts(place);
  }

  private checkOpen(): void {
    if (this.closed) throw new IoError(`the store at ${this.where} is closed`);
  }

  /** Waits while S3_MAX_PACKS_UPLOADING packs are sealed; rethrows the failure of one. */
  private async roomForPut(signal: AbortSignal | undefined): Promise<void> {
    for (;;) {
      const failed = [...this.sealed].find((pack) => pack.failure !== undefined);
      if (failed !== undefined) throw s3Failure(failed.failure, `PUT ${this.url(this.key('packs', failed.name))}`);
      if (this.sealed.size < S3_MAX_PACKS_UPLOADING) return;
      await untilAborted(new Promise<void>((resolve) => this.roomWaiters.push(resolve)), signal);
    }
  }

  private wakeRoomWaiters(): void {
    const woken = this.roomWaiters;
    this.roomWaiters = [];
    for (const wake of woken) wake();
  }

  private seal(): void {
    const pack = this.open!;
    this.open = undefined;
    pack.body = Buffer.concat(pack.pieces);
    pack.pieces = [];
    // The chunks' copies now live in the body: point at it, so each is held once.
    pack.entries.forEach((entry, i) => {
      this.pending.get(pack.keys[i]!)!.data = pack.body!.subarray(entry.offset, entry.offset + entry.length);
    });
    this.sealed.add(pack);
    this.startUpload(pack);
  }

  private startUpload(pack: OutgoingPack): void {
    pack.failure = undefined;
    pack.upload = this.uploadPack(pack).then(
      () => {
        const number = this.packNumber(pack.name);
        pack.entries.forEach((entry, i) => {
          this.addPlace(entry.algorithm, entry.digest, { pack: number, offset: entry.offset, length: entry.length });
          this.pending.delete(pack.keys[i]!);
        });
        pack.done = true;
        pack.body = undefined;
        this.sealed.delete(pack);
        this.unindexed.push({ name: pack.name, entries: pack.entries });
        // A failed write leaves the packs unindexed: the next flush writes them, or reports it.
        this.unindexedRecords += pack.entries.length;
        if ((this.unindexed.length >= S3_INDEX_EVERY_PACKS || this.unindexedRecords >= S3_INDEX_MAX_RECORDS) && this.indexWrite === undefined) {
          this.unindexedRecords = 0;
          this.writeIndex(undefined).catch(() => undefined);
        }
        this.wakeRoomWaiters();
      },
      (error: unknown) => {
        pack.failure = error ?? new IoError('upload failed');
        this.wakeRoomWaiters();
      },
    );
  }

  private async uploadPack(pack: OutgoingPack): Promise<void> {
    await this.putObject(this.key('packs', pack.name), pack.body!);
  }

  /** What multipart.ts needs to upload in parts through this store's requests. */
  private get multipart(): MultipartContext {
    return { client: this.client, bucket: this.location.bucket, url: (key) => this.url(key), request: (what, signal, op) => this.request(what, signal, op) };
  }

  /** One PUT, or an upload in parts when `body` is larger than the multipart bound. */
  private async putObject(key: string, body: Buffer, signal?: AbortSignal): Promise<void> {
    if (body.length > this.tuning.multipartAboveBytes) return putInParts(this.multipart, key, body, this.tuning.partBytes, signal);
    const md5 = createHash('md5').update(body).digest('base64');
    await this.request(`PUT ${this.url(key)}`, signal, (abortSignal) =>
      this.client.send(
        new PutObjectCommand({ Bucket: this.location.bucket, Key: key, Body: body, ContentLength: body.length, ContentMD5: md5 }),
        { abortSignal },
      ),
    );
  }

  /** Bytes [start, end) of a pack, exactly: a short body is a transient failure, retried. */
  private async fetchRange(pack: string, start: number, end: number): Promise<Buffer> {
    const key = this.key('packs', pack);
    return this.request(`GET ${this.url(key)}`, undefined, async (abortSignal) => {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.location.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }),
        { abortSignal },
      );
      const bytes = await readBody(out.Body);
      if (bytes.length !== end - start) {
        throw new IoError(`GET ${this.url(key)}: ${bytes.length} bytes came of the ${end - start} asked for`);
      }
      return bytes;
    });
  }

  /**
   * Runs one S3 request under the concurrency limit, retried while its failures are
   * transient, until `signal` or the store's close stops it; failures end as XferErrors.
   */
  private async request<T>(what: string, signal: AbortSignal | undefined, op: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const combined = signal === undefined ? this.lifetime.signal : AbortSignal.any([signal, this.lifetime.signal]);
    try {
      return await retrying(
        () => this.slots.run(() => op(combined), combined),
        {
          policy: this.tuning.retry,
          signal: combined,
          transient: (error) => !(this.tuning.isPermanent ?? isPermanentS3Error)(error),
          onRetry: this.tuning.onRetry,
          exhausted: (error, retries) => s3Failure(error, `${what} (failed ${retries + 1} times)`, combined),
        },
      );
    } catch (err) {
      throw s3Failure(err, what, combined);
    }
  }

  /** Every key under `prefix`, in S3's order (by UTF-8 bytes), with sizes and times. */
  private async listKeys(prefix: string, signal?: AbortSignal): Promise<{ key: string; bytes: number; mtimeMs: number }[]> {
    const keys: { key: string; bytes: number; mtimeMs: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.request(`LIST ${this.url(prefix)}`, signal, (abortSignal) =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.location.bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: LIST_PAGE_KEYS }),
          { abortSignal },
        ),
      );
      for (const item of page.Contents ?? []) {
        if (item.Key !== undefined) keys.push({ key: item.Key, bytes: item.Size ?? 0, mtimeMs: item.LastModified?.getTime() ?? 0 });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    return keys;
  }

  /**
   * Loads every index object into the table. A damaged one (see decodeIndexObject) is left
   * out and named in damagedIndexes: its chunks count as missing and are stored again.
   * Objects not named like an index are ignored.
   */
  async loadIndex(signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    await this.loadSetAside(signal); // first: places set aside then never count as the records load
    const base = `${this.location.prefix}index/`;
    const names: string[] = [];
    for (const k of await this.listKeys(base, signal)) {
      if (!k.key.endsWith('.idx')) continue;
      const name = k.key.slice(base.length, -'.idx'.length);
      if (!PACK_NAME_RE.test(name)) continue;
      if (k.bytes > S3_MAX_INDEX_OBJECT_BYTES) this.damagedIndexes.push(name);
      else names.push(name);
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < names.length) {
        const name = names[next++]!;
        const bytes = await this.getObject(this.key('index', name), signal);
        if (bytes === undefined) continue; // deleted since the listing
        const packs = decodeIndexObject(bytes);
        if (packs === undefined) {
          this.damagedIndexes.push(name);
          continue;
        }
        for (const pack of packs) {
          const number = this.packNumber(pack.name);
          for (const e of pack.entries) {
            if (e.offset + e.length > MAX_U32) continue;
            this.addPlace(e.algorithm, e.digest, { pack: number, offset: e.offset, length: e.length });
          }
        }
      }
    };
    await this.applyMarks((await readS3Marks(this.gcAccess(), signal)).keys());
    await Promise.all(Array.from({ length: S3_MAX_REQUESTS_IN_FLIGHT }, worker));
  }

  /** Reads the set-aside objects (one per chunk set aside; a malformed one is ignored). */
  private async loadSetAside(signal?: AbortSignal): Promise<void> {
    const base = `${this.location.prefix}aside/`;
    for (const k of await this.listKeys(base, signal)) {
      if (!k.key.endsWith('.json') || k.bytes > MAX_ASIDE_OBJECT_BYTES) continue;
      const bytes = await this.getObject(k.key, signal);
      if (bytes === undefined || bytes.length > MAX_ASIDE_OBJECT_BYTES) continue;
      let r: { algorithm?: unknown; digest?: unknown; pack?: unknown; offset?: unknown };
      try {
        r = JSON.parse(bytes.toString('utf8')) as typeof r;
      } catch {
        continue;
      }
      if (typeof r?.pack !== 'string' || !PACK_NAME_RE.test(r.pack) || !Number.isSafeInteger(r.offset)) continue;
      this.asidePlaces.add(`${r.pack}@${String(r.offset)}`);
      if (DIGEST_ALGORITHMS.includes(r.algorithm as DigestAlgorithm) && typeof r.digest === 'string' && /^[0-9a-f]{64}$/.test(r.digest)) {
        this.asideChunks.add(chunkIdKey({ algorithm: r.algorithm as DigestAlgorithm, digest: digestFromHex(r.digest) }));
      }
    }
  }

  private packNumber(name: string): number {
    let n = this.packNumbers.get(name);
    if (n === undefined) {
      n = this.packNames.push(name) - 1;
      this.packNumbers.set(name, n);
    }
    return n;
  }

  /**
   * Adds a chunk's place unless one that counts is known; a known place that does not count
   * (in a dead pack, or set aside) moves to this copy if it counts. The one way a place moves:
   * a copy stored anew, or found by applyMarks.
   */
  private addPlace(algorithm: ChunkId['algorithm'], digest: Uint8Array, place: ChunkPlace): void {
    const known = this.table.find(algorithm, digest);
    if (known === undefined) this.table.add(algorithm, digest, place);
    else if (!this.counts(known) && this.counts(place)) this.table.relocate(algorithm, digest, place);
  }

  /** Whether the chunk at `place` counts as present: its pack is not dead and the place not set aside. */
  private counts(place: ChunkPlace): boolean {
    return !this.deadPacks.has(place.pack) && !this.isAside(place);
  }

  /**
   * Makes exactly the packs `names` dead. When one more is dead than before, the index
   * objects are read again, so that places in it move to other copies of their chunks.
   */
  private async applyMarks(names: Iterable<string>, signal?: AbortSignal): Promise<void> {
    const dead = new Set<number>();
    for (const name of names) dead.add(this.packNumber(name));
    const grew = [...dead].some((n) => !this.deadPacks.has(n));
    this.deadPacks = dead;
    if (!grew || this.table.size === 0) return;
    for (const { packs } of await listIndexObjects(this.gcAccess(), signal)) {
      for (const pack of packs) {
        const number = this.packNumber(pack.name);
        if (dead.has(number)) continue;
        for (const e of pack.entries) if (e.offset + e.length <= MAX_U32) this.addPlace(e.algorithm, e.digest, { pack: number, offset: e.offset, length: e.length });
      }
    }
  }

  /** Reads the gc marks again if GC_MARKS_RECHECK_MS passed since the last read (../gc.ts). */
  private async checkMarks(signal: AbortSignal | undefined): Promise<void> {
    if (this.marksCheck !== undefined) return untilAborted(this.marksCheck, signal);
    if (Date.now() - this.marksCheckedMs < GC_MARKS_RECHECK_MS) return;
    this.marksCheckedMs = Date.now();
    this.marksCheck = (async () => {
      try {
        const marks = await readS3Marks(this.gcAccess(), undefined);
        // Packs this store knew that a gc deleted since stay dead: deleting a pack unmarks it.
        const names = new Set(marks.keys());
        for (const n of this.deadPacks) names.add(this.packNames[n]!);
        const recovered = [...this.deadPacks].filter((n) => !marks.has(this.packNames[n]!));
        if (recovered.length > 0) {
          const existing = new Set((await this.listKeys(`${this.location.prefix}packs/`)).map((k) => k.key));
          for (const n of recovered) if (existing.has(this.key('packs', this.packNames[n]!))) names.delete(this.packNames[n]!);
        }
        await this.applyMarks(names);
      } finally {
        this.marksCheck = undefined;
      }
    })();
    return untilAborted(this.marksCheck, signal);
  }

  /** One gc run (s3/gc.ts; the scheme: ../gc.ts). */
  async collectGarbage(referenced: ReferencedChunks, options: GcOptions): Promise<GcReport> {
    this.checkOpen();
    await this.flush({ signal: options.signal });
    return collectS3Garbage(this.gcAccess(), referenced, options);
  }

  /** What s3/gc.ts needs of this store. */
  private gcAccess(): S3GcAccess {
    return {
      url: (key) => this.url(key),
      prefix: this.location.prefix,
      key: (kind, name) => this.key(kind, name),
      store: this,
      listKeys: (prefix, signal) => this.listKeys(prefix, signal),
      getObject: (key, signal) => this.getObject(key, signal),
      putObject: (key, body, signal) => this.putObject(key, body, signal),
      deleteObject: (key, signal) =>
        this.request(`DELETE ${this.url(key)}`, signal, (abortSignal) =>
          this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: key }), { abortSignal }),
        ).then(() => undefined),
      listUploads: (prefix, signal) => listUploads(this.multipart, prefix, signal),
      abortUpload: (upload, signal) => abortUpload(this.multipart, upload, signal),
      setDead: async (names) => {
        this.marksCheckedMs = Date.now();
        await this.applyMarks(names);
      },
    };
  }

  /** A whole object, or undefined if there is none under `key`. */
  private async getObject(key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    try {
      return await this.request(`GET ${this.url(key)}`, signal, async (abortSignal) => {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: key }), { abortSignal });
        const bytes = await readBody(out.Body);
        if (out.ContentLength !== undefined && bytes.length !== out.ContentLength) {
          throw new IoError(`GET ${this.url(key)}: ${bytes.length} bytes came of ${out.ContentLength}`);
        }
        return bytes;
      });
    } catch (err) {
      if (isXferError(err, 'XFER_NOT_FOUND') && !/no such bucket/.test(err.message)) return undefined;
      throw err;
    }
  }

  // ---- manifests ----

  async putManifest(name: string, source: AsyncIterable<Uint8Array>, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    this.checkOpen();
    const key = this.key('manifests', name);
    // Held whole up to the multipart bound; a larger manifest goes up in parts as it is
    // read, so at most a part and a piece of it are in memory.
    let pieces: Buffer[] = [];
    let held = 0;
    let upload: MultipartUpload | undefined;
    try {
      for await (const piece of source) {
        throwIfAborted(signal);
        pieces.push(Buffer.from(piece));
        held += piece.length;
        if (upload === undefined && held <= this.tuning.multipartAboveBytes) continue;
        upload ??= await MultipartUpload.start(this.multipart, key, signal);
        while (held >= this.tuning.partBytes) {
          const all = Buffer.concat(pieces);
          await upload.addPart(all.subarray(0, this.tuning.partBytes), signal);
          pieces = [all.subarray(this.tuning.partBytes)];
          held = pieces[0]!.length;
        }
      }
      // Chunks first: whatever the caller did, no manifest is stored before its chunks are
      // (an upload in parts shows nothing before it is completed).
      await this.flush({ signal });
      if (upload === undefined) return await this.putObject(key, Buffer.concat(pieces), signal);
      if (held > 0) await upload.addPart(Buffer.concat(pieces), signal);
      await upload.complete(signal);
    } catch (err) {
      await upload?.abort();
      throw err;
    }
  }

  async getManifest(name: string, options?: OpOptions): Promise<AsyncIterable<Uint8Array>> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    this.checkOpen();
    const bytes = await this.getObject(this.key('manifests', name), signal);
    if (bytes === undefined) throw this.noManifest(name);
    return streamOf(bytes, signal);
  }

  async listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    validateManifestPrefix(prefix);
    throwIfAborted(options?.signal);
    this.checkOpen();
    const base = this.key('manifests', '');
    const infos: ManifestInfo[] = [];
    for (const k of await this.listKeys(base + prefix, options?.signal)) {
      const name = k.key.slice(base.length);
      if (isValidName(name)) infos.push({ name, bytes: k.bytes, mtimeMs: k.mtimeMs });
    }
    return infos.sort((a, b) => compareManifestNames(a.name, b.name));
  }

  async deleteManifest(name: string, options?: OpOptions): Promise<void> {
    validateManifestName(name);
    const signal = options?.signal;
    throwIfAborted(signal);
    this.checkOpen();
    const key = this.key('manifests', name);
    // S3's DELETE succeeds on an absent key: ask first, so an absent manifest is reported.
    try {
      await this.request(`HEAD ${this.url(key)}`, signal, (abortSignal) =>
        this.client.send(new HeadObjectCommand({ Bucket: this.location.bucket, Key: key }), { abortSignal }),
      );
    } catch (err) {
      if (isXferError(err, 'XFER_NOT_FOUND') && !/no such bucket/.test(err.message)) throw this.noManifest(name);
      throw err;
    }
    await this.request(`DELETE ${this.url(key)}`, signal, (abortSignal) =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.location.bucket, Key: key }), { abortSignal }),
    );
  }

  private noManifest(name: string): NotFoundError {
    return new NotFoundError(`no manifest named ${quoteName(name)} in ${this.where}`);
  }
}

function isValidName(name: string): boolean {
  try {
    validateManifestName(name);
    return true;
  } catch {
    return false;
  }
}

/** The whole body of a GetObject answer. */
async function readBody(body: { transformToByteArray(): Promise<Uint8Array> } | undefined): Promise<Buffer> {
  if (body === undefined) return Buffer.alloc(0);
  const bytes = await body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

async function* streamOf(bytes: Buffer, signal: AbortSignal | undefined): AsyncIterable<Uint8Array> {
  throwIfAborted(signal);
  yield bytes;
}
