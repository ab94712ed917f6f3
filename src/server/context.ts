import type { ChunkId } from '../core/ids.js';
import type { ChunkStore, ManifestStore } from '../store/store.js';
import type { HeldStore } from './held.js';
import type { ServerLogger } from './log.js';
import type { Stage, StageHub } from './stage.js';
import type { StageBodies } from './stage-body.js';

/** What the server serves from: any store (local today, S3 next), through its interfaces only. */
export type ServerStore = ChunkStore & ManifestStore;

/**
 * A store that can tell where a chunk lies, and its length, without reading it (the local
 * store, from its index). The server uses it where it helps (fetch read-ahead bounded in
 * bytes before reading) and does without it for any other store.
 */
export interface ChunkSizes {
  chunkLocation(id: ChunkId): Promise<{ readonly length: number } | undefined>;
}

export function hasChunkSizes(store: ServerStore): store is ServerStore & ChunkSizes {
  return typeof (store as Partial<ChunkSizes>).chunkLocation === 'function';
}

export interface HandlerContext {
  readonly store: ServerStore;
  /** `<root>/files`: where pushed files and trees are materialized (none when storeOnly). */
  readonly filesDir: string;
  /** `xfer serve --no-files`: nothing is materialized; commits store manifests only (ServerOptions.storeOnly). */
  readonly storeOnly?: boolean;
  readonly tmpDir: string;
  readonly token?: string;
  readonly signal: AbortSignal;
  /** Counted here (see ServerStats). */
  readonly stats?: { commits: number; commitsStaged: number };
  /** See STAGE_IDLE_TIMEOUT_MS. */
  readonly stageTimeoutMs?: number;
  /** An answer the client takes nothing of for this long is reset (BODY_TIMEOUT_MS). 0: none. */
  readonly sendTimeoutMs?: number;
  readonly log?: ServerLogger;
  /** How the store names itself in messages (an s3:// URL), hidden from clients as its local path is (ServerOptions.storeName). */
  readonly storeName?: string;
  /** See IN_PLACE_ABOVE_BYTES (server/in-place.ts). */
  readonly inPlaceAboveBytes?: number;
  /** The held index of the default store with files (server/held.ts): `store` itself. Commits and rm drive it. */
  readonly held?: HeldStore;
}

/** What the routes (server/routes/) share: the handler's context and its state. */
export interface RouteContext {
  readonly ctx: HandlerContext;
  readonly stages: StageHub;
  /** Stages opened with checksum=1: the only ones a commit with checksum=1 swaps in. */
  readonly checksumStages: WeakSet<Stage>;
  /** The bodies tree stages read, which a staged commit names instead of sending them again. */
  readonly stageBodies: StageBodies;
  /** Commits in progress, by name: commits (and manifest writes) to one name are serialized. */
  readonly commits: Map<string, Promise<unknown>>;
  readonly log: ServerLogger;
  /** See HandlerContext.sendTimeoutMs. */
  readonly sendTimeoutMs: number;
  /** Messages name paths under the server's root: clients are not told where that is. */
  readonly hidePaths: (message: string) => string;
}
