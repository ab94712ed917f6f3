import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { fromSystemError, isXferError, ManifestCorruptError } from '../core/errors.js';
import { HEADER_BYTES, TRAILER_BYTES } from '../manifest/format.js';
import { manifestTag } from '../manifest/tag.js';
import type { ChunkId } from '../core/ids.js';
import { retryPolicy, type RetryPlan } from '../core/retry.js';
import type { EntryMeta, ManifestHeader, ManifestKind } from '../manifest/types.js';
import { HttpStore, type HttpStoreOptions } from '../store/http/store.js';
import { DeltaUploads } from './http-delta.js';
import { openStage, type StageUpload } from './http-stage.js';
import { currentManifest, rememberPushed } from './pushed.js';
import { isReservedName } from '../store/names.js';
import type { ManifestStore, OpOptions } from '../store/store.js';
import { KnownFiles, previousVersion } from '../transfer/known.js';
import { formatReadDataSubset } from '../transfer/verify.js';
import type { BeginOptions, EntryOptions, FileSink, KnownFile, PushDestination, PushSession } from '../transfer/destination.js';
import type { OpenOptions, StoreEndpoint } from './registry.js';
import type { XferClient } from '../store/http/client.js';

/** The options of a transfer to or from a location (OpenOptions), and the push's own. */
export interface RemoteOptions extends OpenOptions {
  /** Send a changed chunk as the blocks that differ from the old chunk at its place (default true). */
  readonly delta?: boolean;
}

/**
 * Connects to the server at `base`. `retry`: the retries the registry composed (policy,
 * classifier, listener; registry.ts, composition), which the protocol client applies per
 * request, in the transport (ClientOptions.isPermanent says why there).
 */
export async function connectRemote(base: URL, options: RemoteOptions, retry: RetryPlan | undefined): Promise<HttpStore> {
  let ca: Buffer | undefined;
  if (options.caFile) {
    try {
      ca = await readFile(options.caFile);
    } catch (err) {
      throw fromSystemError(err, options.caFile, 'read CA file');
    }
  }
  const o: HttpStoreOptions = {
    token: options.token, ca, insecure: options.insecure, signal: options.signal, bwlimitBytesPerSecond: options.bwlimitBytesPerSecond, answerTimeoutMs: options.answerTimeoutMs,
    connections: options.connections,
    // No plan: no retries (a scheme that declares no classifier).
    ...(retry ?? { retry: retryPolicy(0) }),
  };
  return HttpStore.connect(base, o);
}

/**
 * A server as a location: its own stat and listing (the server reads its manifests'
 * headers), pushes staged and sent as deltas (HttpDestination), and its own verify (POST
 * /v1/verify): checking a server's chunks from here would fetch them all, and its rebuilt
 * files are not reachable from here at all.
 */
export function httpEndpoint(store: HttpStore): StoreEndpoint {
  return {
    store,
    describe: (name) => `${store.base.origin}/${name}`,
    stat: (name, options) => store.stat(name, options),
    // The server lists every manifest, versions too (HttpStore.listManifests needs them all):
    // the versions' namespace is left out here, as listTargets does, unless asked for.
    list: async (prefix, options) => (await store.list(prefix, options)).filter((e) => !isReservedName(e.path) || isReservedName(prefix)),
    remove: async (name, options) => (await store.client.removeTarget(name, options.recursive, options.signal)).removed,
    destination: (name, options = {}) => new HttpDestination(store, name, { delta: options.delta, inPlace: options.inPlace, previous: options.previous }),
    verify: (path, options = {}) => store.client.verify(path, {
      readData: options.readData,
      subset: options.subset && formatReadDataSubset(options.subset),
      chunksOnly: options.chunksOnly,
      signal: options.signal,
      onProgress: options.onProgress,
    }),
    currentManifest: (name, options) => currentManifest(store, name, options),
    get retriesMade() {
      return store.retriesMade;
    },
    readAhead: true,
    close: () => store.close(),
  };
}

/**
 * A push to an `xfer serve` server: chunks go up in batches; at commit the manifest is
 * uploaded and the server swaps in the verified target. A single file is also staged:
 * its chunk list streams to the server while the chunks go up, so the server rebuilds it
 * as they arrive instead of reading them all back after the upload (server/stage.ts).
 */
export class HttpDestination implements PushDestination {
  readonly description: string;
  /** The store, with delta uploads unless the options turn them off. */
  readonly chunks: HttpStore | DeltaUploads;
  constructor(
    readonly store: HttpStore,
    private readonly name: string,
    /**
     * inPlace (push --in-place): the commit asks the server to rewrite a large file target
     * in place (in-place=1, server/in-place.ts); no stage is opened for a file, which would
     * rebuild it whole beside the target while the chunks arrive.
     */
    private readonly options: { readonly delta?: boolean; readonly stage?: boolean; readonly inPlace?: boolean; readonly previous?: Pick<ManifestStore, 'getManifest'> } = {},
  ) {
    this.description = `${store.base.origin}/${name}`;
    this.chunks = options.delta === false ? store : new DeltaUploads(store);
  }

  private known: KnownFiles | undefined;

  async begin(kind: ManifestKind, opts: BeginOptions = {}): Promise<PushSession> {
    const store = this.store;
    const client = store.client;
    const name = this.name;
    const algorithm = opts.digestAlgorithm ?? 'blake3';
    const checksum = opts.checksum === true;
    const inPlace = this.options.inPlace === true;
    // The caller's copy of the current manifest, if it fetched one: one GET per push.
    // A tree's tag names it to the server, which then says which of its chunks it lacks
    // without the push listing them (chunks/missing-of).
    let tag: string | undefined;
    const previous = await previousVersion(this.options.previous ?? store, name, kind, { ...opts, header: (h) => (tag = manifestTag(h)) });
    if (this.chunks instanceof DeltaUploads) this.chunks.useBases(previous);
    const named = tag;
    this.known = KnownFiles.for(previous, store, opts, named === undefined ? undefined : (o) => client.missingOf(name, named, o.signal));
    if (!checksum) this.known?.ask(opts);
    const staging = this.options.stage !== false && (kind === 'file' ? store.info.stage === true : store.info.stageTrees === true && opts.chunker !== undefined);
    // A tree is staged from the start: its stage reads the manifest's body as it is written.
    const treeStage = staging && kind === 'tree' ? openStage(client, name, algorithm, { tree: opts.chunker! }, opts.signal, { checksum }) : undefined;
    // Awaited at commit; a failed stage only costs the server time (and the commit sends the whole manifest).
    let treeStageFailed = false;
    treeStage?.done.catch(() => (treeStageFailed = true));
    let stage: StageUpload | undefined = treeStage;
    return {
      manifestBody: treeStage ? (bytes) => treeStage.list.addBytes(bytes) : undefined,
      entry: async (meta: EntryMeta, o: EntryOptions = {}): Promise<FileSink | undefined> => {
        // A stream's size is not known up front: it is rebuilt at commit. A known file the
        // server keeps as it is.
        if (!staging || kind !== 'file' || meta.type !== 'file' || meta.size < 0 || stage || o.known || inPlace) return undefined;
        const s = openStage(client, name, algorithm, meta, opts.signal, { checksum });
        s.done.catch(() => {}); // awaited at commit; a failed stage only costs the server time
        stage = s;
        return {
          chunks: (records) => s.list.add(records),
          finish: async (size, digest) => s.list.end(size, digest),
        };
      },
      async commit(manifestPath: string, header: ManifestHeader, opts: OpOptions = {}): Promise<void> {
        treeStage?.list.endBody();
        try {
          // The server has the tree's body from its stage: only the header and trailer go.
          const staged = treeStage !== undefined && !treeStageFailed && store.info.commitStaged === true && (await commitStaged(client, name, manifestPath, { signal: opts.signal, checksum }));
          if (!staged) await client.commitManifest(name, () => createReadStream(manifestPath), { signal: opts.signal, checksum, inPlace });
        } finally {
          stage?.list.stop();
        }
        // The next push of this tree reads it from here if it is still current (pushed.ts).
        if (header.kind === 'tree') await rememberPushed(store.base, name, manifestPath);
        await stage?.done.catch(() => {});
      },
      abort: async () => {
        stage?.list.stop();
        await stage?.done.catch(() => {});
      },
    };
  }

  knownFile(meta: EntryMeta, opts: OpOptions = {}): Promise<KnownFile | undefined> {
    return this.known?.find(meta, opts) ?? Promise.resolve(undefined);
  }

  storedChunks(opts: OpOptions = {}): Promise<((id: ChunkId) => boolean) | undefined> {
    return this.known?.storedChunks(opts) ?? Promise.resolve(undefined);
  }

  replacesChunk(id: ChunkId, length: number, placement: { readonly path: string; readonly offset: number }): boolean {
    return this.chunks instanceof DeltaUploads && this.chunks.replaces(id, length, placement);
  }

  deltaStats(): { chunks: number; savedBytes: number } {
    return this.chunks instanceof DeltaUploads ? this.chunks.deltaStats() : { chunks: 0, savedBytes: 0 };
  }

  previousFile(path: string): { readonly size: number; readonly digest: Uint8Array } | undefined {
    return this.known?.previousFile(path);
  }

  async close(): Promise<void> {
    await this.chunks.close();
  }
}

/**
 * Commits the tree manifest at `manifestPath` by naming the body its stage sent
 * (docs/PROTOCOL.md, `staged=1`): the header and trailer go, the body does not travel
 * twice. False if the server holds no such body (404: the stage failed or is gone); the
 * caller then sends the whole manifest.
 */
async function commitStaged(client: XferClient, name: string, manifestPath: string, options: { readonly signal?: AbortSignal; readonly checksum: boolean }): Promise<boolean> {
  const ends = await manifestEnds(manifestPath);
  try {
    await client.commitManifest(name, async function* () {
      yield ends;
    }, { signal: options.signal, checksum: options.checksum, staged: true });
    return true;
  } catch (err) {
    if (isXferError(err, 'XFER_NOT_FOUND')) return false;
    throw err;
  }
}

/** The manifest's header and trailer, one after the other. */
async function manifestEnds(path: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
    const { size } = await fh.stat();
    const out = Buffer.alloc(HEADER_BYTES + TRAILER_BYTES);
    if (size < out.length) throw new ManifestCorruptError(`${path}: manifest of ${size} bytes is shorter than its header and trailer`);
    await fh.read(out, 0, HEADER_BYTES, 0);
    await fh.read(out, HEADER_BYTES, TRAILER_BYTES, size - TRAILER_BYTES);
    return out;
  } catch (err) {
    throw isXferError(err) ? err : fromSystemError(err, path, 'read manifest');
  } finally {
    await fh?.close();
  }
}
