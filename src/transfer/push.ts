import type { Stats } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_CHUNKER, validateChunkerSpec } from '../chunker/params.js';
import { isZeroChunk, MAX_ZERO_CHUNK_BYTES, zeroBytes } from '../chunker/zero.js';
import { throwIfAborted } from '../core/abort.js';
import { fromSystemError, InvalidArgumentError, InvalidOptionError } from '../core/errors.js';
import type { ChunkerSpec, ChunkId, DigestAlgorithm } from '../core/ids.js';
import { DIGEST_ALGORITHMS, digestKey, digestToHex } from '../core/ids.js';
import { checkBoolean, checkFunction, checkOneOf, checkPositiveInteger, checkSignal } from '../core/options.js';
import { MiB } from '../core/sizes.js';
import { makeTempDir, removeTempDir } from '../io/temp.js';
import { ManifestWriter } from '../manifest/writer.js';
import type { ChunkRecord, EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import { ScanPool } from '../scan/pool.js';
import { chunkDigest, FileScan, scannableSize, StreamScan, type ChunkBatch, type StreamSource } from '../scan/scanner.js';
import { entryMetaOf, walkTree, type SourceEntry, type WalkSkip } from '../scan/walk.js';
import type { FileSink, KnownFile, PushDestination, PushSession } from './destination.js';
import { isRepairable, resendMissing } from './resend.js';
import { RacyFiles } from './racy.js';
import { Slots, Window } from '../core/window.js';
import type { CarriedEntry } from './select.js';
import { comparePaths } from '../manifest/rules.js';

export interface PushOptions {
  readonly chunker?: ChunkerSpec;
  readonly digestAlgorithm?: DigestAlgorithm;
  readonly signal?: AbortSignal;
  /** A pool shared with other work; by default push makes one and closes it. */
  readonly pool?: ScanPool;
  /** Chunk uploads in flight at once. */
  readonly concurrency?: number;
  readonly onProgress?: (p: PushProgress) => void;
  readonly onSkip?: (s: WalkSkip) => void;
  /** Entries of a source tree to leave out (WalkOptions.exclude): a local destination inside it. */
  readonly exclude?: (absPath: string) => boolean;
  /** The user's --exclude/--include rules (WalkOptions.excludes): left out of a tree's scan. */
  readonly excludes?: (path: string, isDir: boolean) => boolean;
  /**
   * Told of each file whose content goes to the destination: read, and not the content the
   * destination's current version has at that path (a file the quick check reuses is not
   * told). For `-v` listings; `path` is '' for a single file.
   */
  readonly onFile?: (file: { readonly path: string; readonly size: number }) => void;
  /** Told of every entry as it goes into the manifest, in manifest order. */
  readonly onEntry?: (meta: EntryMeta) => void;
  /**
   * Entries of the destination's current tree to keep as they are (select.ts
   * excludedEntries: those the user's rules exclude, which a server's copy, a mirror of the
   * manifest, would otherwise lose), in manifest order. They are merged into the manifest
   * with their chunk lists, not read, not sent, and not given to the session (for
   * destinations that rebuild from the manifest). One the source now has, or whose
   * directory the source no longer has, is dropped with what is below it.
   */
  readonly carry?: readonly CarriedEntry[];
  /**
   * Read every file (rsync's --checksum). By default a file whose size and mtime are what
   * the destination's current version recorded, with all its chunks still there, is
   * reused from that version without being read (the quick check; see
   * PushDestination.knownFile).
   */
  readonly checksum?: boolean;
  /**
   * rsync --numeric-ids: the manifest records owners and groups by number only (no names),
   * so that the receiver applies the numbers; a local destination applies numbers too.
   */
  readonly numericIds?: boolean;
}

export interface PushProgress {
  readonly bytesTotal: number;
  readonly bytesScanned: number;
  readonly bytesSent: number;
  readonly chunksSent: number;
  /** Of bytesScanned, the bytes of zero chunks: neither queried nor sent (chunker/zero.ts). */
  readonly bytesZero: number;
}

/**
 * The final figures of a push. `chunksSent` counts chunks newly stored; `bytesSent` the
 * chunk bytes that travelled for them: their size, less what delta uploads did not have to
 * send (`chunksDelta` of them went as deltas).
 */
export interface PushResult {
  readonly kind: ManifestKind;
  readonly bytesTotal: number;
  readonly bytesSent: number;
  readonly chunksTotal: number;
  readonly chunksSent: number;
  readonly chunksDelta: number;
  readonly chunksReused: number;
  /** Bytes of zero chunks (holes and zero runs): neither queried nor sent; holes at the target. */
  readonly bytesZero: number;
  /**
   * Bytes of the source that are data: what was read, the holes skipped (a sparse file's
   * allocated bytes, about). A file the quick check did not read counts its size.
   */
  readonly bytesAllocated: number;
  readonly seconds: number;
  readonly digest: string;
  /**
   * Entries of the tree the copy lacks (WalkSkip.lost: names or symlink targets that are
   * not valid UTF-8), each reported through onSkip: the push is partial if this is not 0.
   */
  readonly entriesLost: number;
  /** Entries of the existing target tree removed because the source lacks them (a local push with delete). */
  readonly deleted: readonly string[];
  /** Entries pushed, by type (a single file or stream counts as one file). */
  readonly entries: EntryCounts;
  /** Files whose content went (see PushOptions.onFile), and their bytes. */
  readonly filesTransferred: number;
  readonly bytesTransferred: number;
}

/** Entries by kind, as rsync's --stats counts them (a hard link's further names are files). */
export interface EntryCounts {
  readonly files: number;
  readonly dirs: number;
  readonly symlinks: number;
  /** Character and block device nodes. */
  readonly devices: number;
  /** FIFOs. */
  readonly specials: number;
}

/** Counts one entry of type `type` into `c`. */
export function countEntry(c: { -readonly [K in keyof EntryCounts]: number }, type: EntryMeta['type']): void {
  if (type === 'file' || type === 'hardlink') c.files++;
  else if (type === 'dir') c.dirs++;
  else if (type === 'symlink') c.symlinks++;
  else if (type === 'char' || type === 'block') c.devices++;
  else c.specials++;
}

export const DEFAULT_PUT_CONCURRENCY = 32;
/** Bytes of chunk data held by uploads in flight, at most. */
export const MAX_INFLIGHT_BYTES = 32 * MiB;
/** Files scanned ahead of the one being committed to the manifest (small-file parallelism). */
export const LOOKAHEAD_FILES = 64;
export const LOOKAHEAD_BYTES = 64 * MiB;
/**
 * Writes a scanned batch to a sink that copies the bytes (a local target). Runs of zero
 * chunks go as views of the shared zeros (zeroBytes), which the writer leaves as holes
 * without copying or comparing them (isZeroBytesView): a sparse image's holes cost no
 * work at the target. The rest goes as the batch's own bytes, a run at a time, in order.
 */
async function writeScanned(write: (data: Uint8Array, position: number) => Promise<void>, batch: ChunkBatch, algorithm: DigestAlgorithm): Promise<void> {
  /** The run being gathered: batch bytes [from, at), zero chunks or not. */
  let from = 0;
  let at = 0;
  let zeroRun = false;
  const flush = async () => {
    if (zeroRun) {
      for (let p = from; p < at; ) {
        const n = Math.min(at - p, MAX_ZERO_CHUNK_BYTES);
        await write(zeroBytes(n), batch.offset + p);
        p += n;
      }
    } else if (at > from) await write(batch.data.subarray(from, at), batch.offset + from);
    from = at;
  };
  for (let i = 0; i < batch.count; i++) {
    const zero = isZeroChunk(algorithm, batch.lengths[i]!, chunkDigest(batch, i));
    if (zero !== zeroRun) {
      await flush();
      zeroRun = zero;
    }
    at += batch.lengths[i]!;
  }
  await flush();
}

/**
 * Digests known present in this push, so repeats (zero blocks, duplicated files) cost no
 * round trip. Bounded: cleared when full, which only costs extra `has` queries.
 */
export const SEEN_CACHE_ENTRIES = 1 << 17;
/** Files whose finish (attributes, close) may run while later files are pushed. */
export const FINISHES_IN_FLIGHT = 16;
/** Digests per coalesced `has` query, at most (the server's limit is MAX_QUERY_DIGESTS). */
export const MAX_HAS_QUERY_IDS = 4096;
/**
 * `has` queries in flight at once, at most. One at a time, a query asked after the uploads
 * its predecessor's answer started waited behind them on the connection (megabytes on a
 * long link) and the link went idle until its answer came: queries go ahead of the
 * uploads instead, pipelined.
 */
export const MAX_HAS_QUERIES_IN_FLIGHT = 4;
/**
 * Digests queued that start another query while one is in flight. Fewer wait for the
 * running queries' answers and then go in one query: a tree of thousands of small files
 * (a batch each) still costs a handful of queries, not one per file.
 */
export const PIPELINED_QUERY_IDS = 1024;
/**
 * Bytes of changed chunks (PushDestination.replacesChunk) a push sends without asking the
 * destination whether it has them, at most: a chunk that took the place of another at its
 * offset is new content, nearly always missing, and asking first cost a round trip before
 * its delta could start (a re-sync after small edits over a long link). Bounded because a
 * push run again after a cut finds the chunks that arrived by asking: beyond this, it asks.
 */
export const UNASKED_CHANGED_BYTES = 2 * MiB;
/** Bytes of scanned batches queued or waiting for a `has` answer beyond which send() waits. */
export const QUEUED_BATCH_BYTES = 16 * MiB;

/** A source to push: a path (file or directory) or a stream (stdin). */
export type PushSource = string | { readonly stream: StreamSource; readonly name?: string };

/** stat() of a push source, failing with the error a user expects for a missing or unreadable path. */
export async function statSource(source: string): Promise<Stats> {
  try {
    return await stat(source);
  } catch (err) {
    throw fromSystemError(err, source, 'stat');
  }
}

/**
 * Checks the options push takes (InvalidOptionError naming the first bad one; see
 * core/options.ts). The chunker spec is checked in full by push itself (validateChunkerSpec).
 */
export function checkPushOptions(options: PushOptions): void {
  if (options.chunker !== undefined && (typeof options.chunker !== 'object' || options.chunker === null)) {
    throw new InvalidOptionError('chunker', 'a chunker spec object');
  }
  checkOneOf(options, 'digestAlgorithm', DIGEST_ALGORITHMS);
  checkPositiveInteger(options, 'concurrency');
  checkSignal(options);
  checkBoolean(options, 'checksum');
  for (const name of ['onProgress', 'onSkip', 'exclude']) checkFunction(options, name);
}

/**
 * Pushes a file, a directory tree or a stream to a destination: scans it (parallel
 * chunking and hashing), sends the chunks the destination lacks, writes the manifest,
 * then commits. The destination is unchanged unless the whole push succeeds.
 */
export async function push(source: PushSource, destination: PushDestination, options: PushOptions = {}): Promise<PushResult> {
  checkPushOptions(options);
  const started = performance.now();
  const chunker = validateChunkerSpec(options.chunker ?? DEFAULT_CHUNKER);
  const algorithm = options.digestAlgorithm ?? 'blake3';
  const signal = options.signal;
  throwIfAborted(signal);

  let kind: ManifestKind;
  let bytesTotal = 0;
  let entriesLost = 0;
  const entries = { files: 0, dirs: 0, symlinks: 0, devices: 0, specials: 0 };
  let filesTransferred = 0;
  let bytesTransferred = 0;
  let bytesAllocated = 0;
  let st: Stats | undefined;
  if (typeof source === 'string') {
    st = await statSource(source);
    if (st.isDirectory()) kind = 'tree';
    else if (st.isFile() || st.isBlockDevice()) {
      // A block device is read as a file of the device's size (a disk image; see scannableSize).
      kind = 'file';
      bytesTotal = await scannableSize(source, st);
    } else throw new InvalidArgumentError(`${source}: not a regular file, block device or directory`);
  } else kind = 'file';

  const ownPool = !options.pool;
  const pool = options.pool ?? new ScanPool();
  // A file larger than the pool scans inline: its threads boot while the destination is
  // opened (a tree's start when its files add up to that much).
  if (kind === 'file') pool.expect(bytesTotal); // 0 for a stream: its size is not known
  const tmp = await makeTempDir('xfer-push-');
  const manifestPath = join(tmp, 'manifest');
  const session = await destination.begin(kind, { signal, digestAlgorithm: algorithm, chunker, checksum: options.checksum });
  let writer: ManifestWriter | undefined;
  // A file's finish (size, mode, times, close: several sequential fs calls) overlaps the
  // next files: awaited one by one, it dominated pushes of trees of small files.
  const finishes = new Window(FINISHES_IN_FLIGHT, Infinity);
  try {
    writer = await ManifestWriter.create(manifestPath, { kind, digestAlgorithm: algorithm, chunker }, { signal, onBody: session.manifestBody });
    const sender = new ChunkSender(destination, algorithm, options, () => bytesTotal);
    const scanOpts = { chunker, digestAlgorithm: algorithm, signal };

    // Files read within their mtime's window: checked again before the commit (racy.ts).
    const racy = new RacyFiles(algorithm);
    /** Where a scanned file was read: its path, full-precision mtime and when reading began. */
    type ReadFrom = { readonly path: string; readonly mtimeExactMs: number; readonly atMs: number };
    const begin = async (meta: EntryMeta, carried = false): Promise<void> => {
      await writer!.beginEntry(meta);
      options.onEntry?.(meta);
      if (carried) return;
      countEntry(entries, meta.type);
    };
    const handleFile = async (meta: EntryMeta, scan: FileScan | StreamScan, opened?: Promise<FileSink | undefined>, from?: ReadFrom): Promise<void> => {
      await begin(meta);
      const sink = await (opened ?? session.entry(meta, { signal }));
      for await (const batch of scan.batches()) {
        throwIfAborted(signal);
        // The batch's buffer is reused once its last put and the target write are done.
        const lease = new Lease(() => batch.release());
        const list = records(batch);
        sink?.chunks?.(list); // before the chunks go: a server stage then waits for them
        await Promise.all([sender.send(batch, lease, meta.path), sink?.write && writeScanned(sink.write.bind(sink), batch, algorithm)]);
        lease.drop();
        await writer!.addChunks(list);
      }
      const { size, digest, dataBytes } = scan.result;
      bytesAllocated += dataBytes;
      if (sink) await finishes.run(0, () => sink.finish(size, digest));
      await writer!.endEntry(size, scan.result.digest);
      if (from) racy.note(from.path, size, from.mtimeExactMs, digest, from.atMs);
      const previous = destination.previousFile?.(meta.path);
      if (!previous || previous.size !== size || Buffer.compare(previous.digest, digest) !== 0) {
        filesTransferred++;
        bytesTransferred += size;
        options.onFile?.({ path: meta.path, size });
      }
    };

    // The quick check: a file the destination already has as it is now is not read.
    const known = options.checksum || !destination.knownFile ? async () => undefined : (meta: EntryMeta) => destination.knownFile!(meta, { signal });
    const reuseKnown = async (meta: EntryMeta, file: KnownFile): Promise<void> => {
      await begin(meta);
      await writer!.addChunks(file.records);
      await writer!.endEntry(file.size, file.digest);
      sender.skipped(file.size);
      bytesAllocated += file.size;
    };

    if (typeof source !== 'string') {
      const meta: EntryMeta = { type: 'file', path: '', mode: 0o644, mtimeMs: Date.now(), size: -1 };
      await handleFile(meta, new StreamScan(source.stream, { ...scanOpts, pool }));
    } else if (kind === 'file') {
      const s = st!;
      // Its attributes as a tree entry has them (owner, xattrs, mtime to the ns), of the file itself.
      const device = s.isBlockDevice();
      const exact = await stat(source, { bigint: true });
      const meta: EntryMeta = { ...entryMetaOf(await realpath(source), exact, '', 'file', undefined, options.numericIds), size: bytesTotal };
      // A device's mtime does not change when its content does: no quick check, no racy check.
      const file = device ? undefined : await known(meta);
      if (file) {
        await session.entry(meta, { signal, known: file });
        await reuseKnown(meta, file);
      } else {
        // The mtime in the walk's form (nanoseconds / 1e6), as RacyFiles compares it.
        const from = device ? undefined : { path: source, mtimeExactMs: Number(exact.mtimeNs) / 1e6, atMs: Date.now() };
        await handleFile(meta, new FileScan(source, bytesTotal, s.mtimeMs, pool, scanOpts), undefined, from);
      }
    } else {
      // Tree: scans of the next files start while earlier ones are still being sent, and
      // their destination files are opened meanwhile. Entries reach the session in walk
      // order; a directory's is awaited before anything after it (its files) starts.
      const ahead: { entry: SourceEntry; scan?: FileScan; opened?: Promise<FileSink | undefined>; known?: KnownFile; readFromMs?: number }[] = [];
      let aheadBytes = 0;
      const onSkip = (s: WalkSkip) => {
        if (s.lost) entriesLost++;
        options.onSkip?.(s);
      };
      const walker = walkTree(source, { signal, onSkip, exclude: options.exclude, excludes: options.excludes, numericIds: options.numericIds });
      let walkDone = false;
      const fill = async () => {
        while (!walkDone && ahead.length < LOOKAHEAD_FILES && aheadBytes < LOOKAHEAD_BYTES) {
          const n = await walker.next();
          if (n.done) {
            walkDone = true;
            break;
          }
          const e = n.value;
          let scan: FileScan | undefined;
          let opened: Promise<FileSink | undefined> | undefined;
          let readFromMs: number | undefined;
          const file = e.meta.type === 'file' ? await known(e.meta) : undefined;
          if (file) {
            bytesTotal += e.meta.size;
            opened = session.entry(e.meta, { signal, known: file });
            opened.catch(() => {}); // awaited below; until then, not unhandled
            ahead.push({ entry: e, known: file, opened });
            continue;
          }
          if (e.meta.type === 'file') {
            readFromMs = Date.now();
            scan = new FileScan(e.absPath, e.meta.size, e.meta.mtimeMs, pool, scanOpts);
            aheadBytes += e.meta.size;
            bytesTotal += e.meta.size;
            opened = session.entry(e.meta, { signal });
            opened.catch(() => {}); // awaited by handleFile; until then, not unhandled
          } else await session.entry(e.meta, { signal });
          ahead.push({ entry: e, scan, opened, readFromMs });
        }
      };
      // Carried entries go in before the walked entry they sort before (PushOptions.carry).
      const carry = options.carry ?? [];
      let carried = 0;
      const dirs = new Set<string>(['']);
      let dropBelow: string | undefined;
      const carryBefore = async (path: string | undefined): Promise<void> => {
        while (carried < carry.length && (path === undefined || comparePaths(carry[carried]!.meta.path, path) <= 0)) {
          const c = carry[carried++]!;
          const p = c.meta.path;
          if (dropBelow !== undefined && p.startsWith(`${dropBelow}/`)) continue;
          dropBelow = undefined;
          const slash = p.lastIndexOf('/');
          if (p === path || !dirs.has(slash < 0 ? '' : p.slice(0, slash))) {
            dropBelow = p;
            continue;
          }
          await begin(c.meta, true);
          if (c.meta.type === 'dir') dirs.add(p);
          else if (c.meta.type === 'file') {
            await writer!.addChunks(c.records);
            await writer!.endEntry(c.size, c.digest!);
          }
        }
      };
      for (;;) {
        await fill();
        const next = ahead.shift();
        if (!next) break;
        await carryBefore(next.entry.meta.path);
        if (next.entry.meta.type === 'dir') dirs.add(next.entry.meta.path);
        if (next.known) {
          await next.opened;
          await reuseKnown(next.entry.meta, next.known);
        }
        else if (next.scan) {
          const e = next.entry;
          await handleFile(e.meta, next.scan, next.opened, { path: e.absPath, mtimeExactMs: e.mtimeExactMs, atMs: next.readFromMs! });
          aheadBytes -= next.entry.meta.size;
        } else await begin(next.entry.meta);
      }
      await carryBefore(undefined);
    }
    await sender.drain();
    await finishes.drain();
    await racy.settle(signal);
    await destination.chunks.flush({ signal });
    sender.report(); // every chunk is up: the figures before the commit, final unless it fails
    const header: ManifestHeader = await writer.finish();
    writer = undefined;
    let committed: Awaited<ReturnType<PushSession['commit']>>;
    try {
      committed = await session.commit(manifestPath, header, { signal });
    } catch (err) {
      // A stored chunk the destination found damaged (and set aside) or lost at the commit:
      // sent again from the source, then one more commit (resend.ts). A stream cannot be read twice.
      if (typeof source !== 'string' || !isRepairable(err) || signal?.aborted) throw err;
      await resendMissing(manifestPath, source, destination.chunks, signal);
      committed = await session.commit(manifestPath, header, { signal });
    }
    const s = sender.stats();
    const delta = destination.deltaStats?.() ?? { chunks: 0, savedBytes: 0 };
    return {
      kind,
      bytesTotal: header.totalBytes,
      bytesSent: s.bytesSent - delta.savedBytes,
      chunksTotal: header.chunkCount,
      chunksSent: s.chunksSent,
      chunksDelta: delta.chunks,
      chunksReused: header.chunkCount - s.chunksSent,
      bytesZero: s.bytesZero,
      bytesAllocated,
      seconds: (performance.now() - started) / 1000,
      digest: digestToHex(header.digest),
      entriesLost,
      deleted: committed?.deleted ?? [],
      entries,
      filesTransferred,
      bytesTransferred,
    };
  } catch (err) {
    await finishes.drain().catch(() => {});
    await writer?.abort().catch(() => {});
    await session.abort().catch(() => {});
    throw err;
  } finally {
    await removeTempDir(tmp);
    if (ownPool) await pool.close();
  }
}

/** Counts holders of a resource; runs `free` when the last one drops it. Starts with one holder. */
class Lease {
  private holders = 1;
  constructor(private readonly free: () => void) {}
  take(): void {
    this.holders++;
  }
  drop(): void {
    if (--this.holders === 0) this.free();
  }
}

/** Each chunk's offset in `batch`'s data. */
function batchOffsets(batch: ChunkBatch): Float64Array {
  const offsets = new Float64Array(batch.count);
  for (let i = 0, o = 0; i < batch.count; i++) {
    offsets[i] = o;
    o += batch.lengths[i]!;
  }
  return offsets;
}

function records(batch: ChunkBatch): ChunkRecord[] {
  const out: ChunkRecord[] = new Array(batch.count);
  for (let i = 0; i < batch.count; i++) out[i] = { length: batch.lengths[i]!, digest: chunkDigest(batch, i) };
  return out;
}

/** A batch whose new chunks wait for the destination's answer to "which are missing". */
interface Queued {
  readonly batch: ChunkBatch;
  readonly lease: Lease;
  /** The entry the batch belongs to, for put placements. */
  readonly path: string;
  readonly ids: ChunkId[];
  /** Index in the batch of each id. */
  readonly index: number[];
}

/**
 * Sends the chunks of each batch that the destination lacks. `has` queries are coalesced
 * across batches and files: a query takes every batch queued when it starts, up to
 * MAX_HAS_QUERY_IDS, so a tree of thousands of small files (typically one batch each)
 * costs a handful of queries, not one round trip per file. Queries are pipelined: another
 * starts while some are in flight (at most MAX_HAS_QUERIES_IN_FLIGHT) once
 * PIPELINED_QUERY_IDS digests or half of QUEUED_BATCH_BYTES wait, so that queries travel
 * ahead of the uploads their answers start rather than behind them. The puts of each
 * answer start in query order, with bounded concurrency and bytes in flight. send()
 * returns once its batch is queued (waiting only while QUEUED_BATCH_BYTES are queued or
 * waiting for answers), so scanning overlaps with querying and uploading; drain() waits
 * for the rest.
 */
class ChunkSender {
  private readonly window: Window;
  private readonly seen = new Set<string>();
  private bytesSent = 0;
  private chunksSent = 0;
  private bytesScanned = 0;
  private bytesZero = 0;
  private queue: Queued[] = [];
  /** Digests and batch bytes queued, not yet in a query. */
  private queuedIds = 0;
  private queuedBytes = 0;
  /**
   * Batch bytes queued or in a query whose puts have not all started: the send() bound. A
   * batch is admitted at once, room or not (it joins the queue, and a query may take it,
   * while its send() waits); send() then waits while QUEUED_BATCH_BYTES or more are held.
   */
  private readonly held = new Slots(Number.MAX_SAFE_INTEGER, QUEUED_BATCH_BYTES);
  /** Fires at the first failure: a send() waiting for room returns; the next send() or drain() throws it. */
  private readonly failed = new AbortController();
  /** The queries in flight; each settles (never rejects) once its puts have started. */
  private readonly running = new Set<Promise<void>>();
  /** Room for the queries in flight: MAX_HAS_QUERIES_IN_FLIGHT. */
  private readonly querySlots = new Slots(MAX_HAS_QUERIES_IN_FLIGHT);
  /** Settles once the puts of every answered query so far have started (their order). */
  private putsStarted: Promise<void> = Promise.resolve();
  private startScheduled = false;
  private failure: { error: unknown } | undefined;
  /** The chunks the destination is known to store (PushDestination.storedChunks), asked once. */
  private stored: Promise<((id: ChunkId) => boolean) | undefined> | undefined;
  /** Bytes of changed chunks still to be sent without asking (UNASKED_CHANGED_BYTES). */
  private unaskedBytes = UNASKED_CHANGED_BYTES;
  /** drain() was called: no batch will join the queue, so its queries start at once. */
  private draining = false;

  constructor(
    private readonly destination: PushDestination,
    private readonly algorithm: DigestAlgorithm,
    private readonly options: PushOptions,
    private readonly total: () => number,
  ) {
    this.window = new Window(options.concurrency ?? DEFAULT_PUT_CONCURRENCY, MAX_INFLIGHT_BYTES);
  }

  /** Queues `batch`'s chunks not seen before; the puts of missing ones hold `lease` until done. */
  async send(batch: ChunkBatch, lease: Lease, path: string): Promise<void> {
    if (this.failure) throw this.failure.error;
    const ids: ChunkId[] = [];
    const index: number[] = [];
    for (let i = 0; i < batch.count; i++) {
      const d = chunkDigest(batch, i);
      // Zero chunks are never queried or sent: readers synthesise them (chunker/zero.ts).
      if (isZeroChunk(this.algorithm, batch.lengths[i]!, d)) {
        this.bytesZero += batch.lengths[i]!;
        continue;
      }
      const key = digestKey(d);
      if (this.seen.has(key)) continue; // earlier in this push: queried, and put if missing
      this.remember(key);
      ids.push({ algorithm: this.algorithm, digest: d });
      index.push(i);
    }
    if (ids.length > 0) {
      lease.take();
      this.queue.push({ batch, lease, path, ids, index });
      this.queuedIds += ids.length;
      this.queuedBytes += batch.data.length;
      this.held.admit(batch.data.length);
      this.scheduleQueries();
      // Room for one more byte: fewer than QUEUED_BATCH_BYTES held. The queries whose
      // answers free it start now rather than at the scheduled turn.
      if (!this.held.hasRoom(1)) {
        this.startQueries();
        await this.held.untilRoom(1, this.failed.signal).catch(() => {});
      }
    }
    this.bytesScanned += batch.data.length;
    this.report();
  }

  /** Starts queries once the current send() has returned, so that batches produced meanwhile join. */
  private scheduleQueries(): void {
    if (this.startScheduled) return;
    this.startScheduled = true;
    queueMicrotask(() => {
      this.startScheduled = false;
      this.startQueries();
    });
  }

  /** Starts the queries the rules of the class comment allow now. */
  private startQueries(): void {
    while (
      this.queue.length > 0 &&
      !this.failure &&
      (this.running.size === 0 || this.draining || this.queuedIds >= PIPELINED_QUERY_IDS || this.queuedBytes >= QUEUED_BATCH_BYTES / 2) &&
      this.querySlots.tryAcquire()
    ) {
      const group: Queued[] = [];
      let n = 0;
      while (this.queue.length > 0 && (group.length === 0 || n + this.queue[0]!.ids.length <= MAX_HAS_QUERY_IDS)) {
        const q = this.queue.shift()!;
        group.push(q);
        n += q.ids.length;
        this.queuedIds -= q.ids.length;
        this.queuedBytes -= q.batch.data.length;
      }
      const query = this.query(group);
      this.running.add(query);
      void query.finally(() => {
        this.running.delete(query);
        this.querySlots.release();
        this.startQueries();
      });
    }
  }

  /** One `has` query for `group`, then its puts, started after those of earlier queries. Never rejects: a failure is kept. */
  private async query(group: Queued[]): Promise<void> {
    const signal = this.options.signal;
    let present: boolean[] | undefined;
    try {
      present = await this.present(group);
    } catch (error) {
      this.fail(error);
    }
    const earlier = this.putsStarted;
    const started = (async () => {
      await earlier;
      let k = 0;
      for (const q of group) {
        try {
          if (present && !this.failure) await this.startPuts(q, present, k);
        } catch (error) {
          this.fail(error);
        } finally {
          q.lease.drop(); // its buffer goes back to the pool once its puts are done
          this.held.release(q.batch.data.length);
        }
        k += q.ids.length;
      }
    })();
    this.putsStarted = started;
    await started;
  }

  /**
   * Which of the group's ids the destination has, in order: those it is known to store
   * (storedChunks, asked once) are present and a changed chunk (replacesChunk) missing,
   * without a query, while UNASKED_CHANGED_BYTES last; the rest are asked in one `has`
   * (none if every id is decided).
   */
  private async present(group: readonly Queued[]): Promise<boolean[]> {
    const signal = this.options.signal;
    const stored = await (this.stored ??= this.destination.storedChunks?.({ signal }) ?? Promise.resolve(undefined));
    const replaces = this.destination.replacesChunk?.bind(this.destination);
    const present: boolean[] = [];
    const ask: ChunkId[] = [];
    const at: number[] = [];
    for (const q of group) {
      const offsets = replaces && this.unaskedBytes > 0 ? batchOffsets(q.batch) : undefined;
      for (let j = 0; j < q.ids.length; j++) {
        const id = q.ids[j]!;
        const i = q.index[j]!;
        const length = q.batch.lengths[i]!;
        if (stored?.(id)) present.push(true);
        else if (offsets && this.unaskedBytes >= length && replaces!(id, length, { path: q.path, offset: q.batch.offset + offsets[i]! })) {
          this.unaskedBytes -= length;
          present.push(false);
        } else {
          at.push(present.length);
          present.push(false);
          ask.push(id);
        }
      }
    }
    if (ask.length > 0) (await this.destination.chunks.has(ask, { signal })).forEach((p, j) => (present[at[j]!] = p));
    return present;
  }

  /** Keeps the first failure; the batches still queued are dropped (their buffers go back). */
  private fail(error: unknown): void {
    this.failure ??= { error };
    this.failed.abort();
    for (const q of this.queue) {
      q.lease.drop();
      this.held.release(q.batch.data.length);
    }
    this.queue = [];
    this.queuedIds = 0;
    this.queuedBytes = 0;
  }

  private async startPuts(q: Queued, present: boolean[], first: number): Promise<void> {
    const signal = this.options.signal;
    const { batch } = q;
    const offsets = batchOffsets(batch);
    for (let j = 0; j < q.ids.length; j++) {
      if (present[first + j]) continue;
      const i = q.index[j]!;
      const len = batch.lengths[i]!;
      const data = batch.data.subarray(offsets[i]!, offsets[i]! + len);
      q.lease.take();
      await this.window.run(len, async () => {
        try {
          const placement = { path: q.path, offset: batch.offset + offsets[i]! };
          const wrote = await this.destination.chunks.put(q.ids[j]!, data, { signal, trusted: true, placement });
          if (wrote) {
            this.bytesSent += len;
            this.chunksSent++;
          }
        } finally {
          q.lease.drop();
        }
      });
    }
  }

  /** A file reused without reading it (the quick check): counts as scanned, sends nothing. */
  skipped(bytes: number): void {
    this.bytesScanned += bytes;
    this.report();
  }

  report(): void {
    this.options.onProgress?.({ bytesTotal: this.total(), bytesScanned: this.bytesScanned, bytesSent: this.bytesSent, chunksSent: this.chunksSent, bytesZero: this.bytesZero });
  }

  private remember(key: string): void {
    if (this.seen.size >= SEEN_CACHE_ENTRIES) this.seen.clear();
    this.seen.add(key);
  }

  async drain(): Promise<void> {
    // Waiting for the running queries' answers gathers no more digests now: the last
    // batches' query goes at once, a round trip earlier.
    this.draining = true;
    for (;;) {
      this.startQueries();
      if (this.running.size === 0) break;
      await Promise.all([...this.running]);
    }
    await this.putsStarted;
    await this.window.drain();
    if (this.failure) throw this.failure.error;
  }

  stats(): { bytesSent: number; chunksSent: number; bytesZero: number } {
    return { bytesSent: this.bytesSent, chunksSent: this.chunksSent, bytesZero: this.bytesZero };
  }
}
