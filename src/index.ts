/**
 * xfer's public API. Everything a library user may rely on is listed here, by name;
 * anything not exported here is internal and may change.
 */
export {
  XferError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  AlreadyExistsError,
  SpecialFileError,
  ChunkMissingError,
  ChunkCorruptError,
  ManifestCorruptError,
  ManifestMismatchError,
  VerifyFailedError,
  SourceChangedError,
  IoError,
  AbortedError,
  InvalidOptionError,
  ManifestIncompleteError,
  UnauthorizedError,
  TooLargeError,
  ProtocolError,
  TimeoutError,
  BusyError,
  isXferError,
  EXIT_CODES,
  HTTP_STATUS,
  type ErrorCode,
} from './core/errors.js';
export { type ChunkId, type ChunkerSpec, type DigestAlgorithm, digestToHex, digestFromHex } from './core/ids.js';
export { parseSize } from './core/sizes.js';

export { createChunker, type Chunker } from './chunker/index.js';
export { DEFAULT_CHUNKER, validateChunkerSpec } from './chunker/params.js';
export { digestOf, createHasher, type Hasher } from './hash/digest.js';

export { ScanPool, type ScanPoolOptions } from './scan/pool.js';
export { FileScan, StreamScan, scanFile, chunkDigest, type ChunkBatch, type FileScanResult, type ScanOptions } from './scan/scanner.js';
export { analyze, type AnalyzeOptions, type AnalyzeResult } from './scan/analyze.js';

export { ManifestWriter } from './manifest/writer.js';
export { openManifest, openManifestFile, type ManifestReader } from './manifest/reader.js';
export type { ManifestHeader, ManifestKind, EntryMeta, EntryType, ChunkRecord, ManifestEvent, ManifestEntry } from './manifest/types.js';

export type { ChunkStore, ManifestStore, ManifestInfo, OpOptions, PutOptions } from './store/store.js';
export { LocalStore } from './store/local.js';
export { MemoryStore } from './store/memory.js';

export { push, pull, type PushOptions, type PullOptions, type PushSource } from './api.js';
export { list, verify, readManifest, type LocationOptions, type VerifyOptions } from './inspect.js';
export { versions, forget, remove, type ForgetOptions, type ForgetResult, type RemoveOptions, type RemoveResult, type RetentionPolicy, type TargetVersion, type VersionInfo } from './targets.js';
export { applyPolicy, type RetentionDecision } from './store/retention.js';
export { parseVersionSelector, versionId, type VersionSelector } from './store/versions.js';
export {
  registerScheme,
  unregisterScheme,
  storeScheme,
  supportedLocations,
  type LocationSpec,
  type Scheme,
  type Decorators,
  type Composition,
  type Store,
  type StoreEndpoint,
  type StoreLocation,
  type OpenOptions,
  type TargetInfo,
  type TargetType,
} from './endpoint/registry.js';
export { storeEndpoint } from './endpoint/store.js';
export { push as pushToDestination, type PushResult, type PushProgress } from './transfer/push.js';
export type { PushDestination, PushSession, FileSink } from './transfer/destination.js';
export { verifyManifests, parseReadDataSubset, type VerifyReport, type VerifyProgress, type Damage, type DamagedChunk, type ReadDataSubset } from './transfer/verify.js';
export { reconstruct, type ReconstructOptions, type PullResult, type PullProgress } from './reconstruct/reconstruct.js';

export { LocalDestination, localTargetOf, resolveCopyTarget, openLocalSource, type LocalTarget } from './endpoint/local.js';
export { HttpDestination, httpEndpoint } from './endpoint/http.js';
export { HttpStore, type HttpStoreOptions } from './store/http.js';
/** A passing failure of the HTTP store (a ProtocolError, XFER_PROTOCOL), thrown as it is when no retry is left (--retries 0). */
export { TransientError } from './store/net-errors.js';
export { RetryingStore } from './store/decorators/retry.js';
export { LimitedStore } from './store/decorators/limit.js';
export type { RetryPlan, RetryPolicy, RetryEvent } from './core/retry.js';
export { createServer, type ServerOptions, type ServerStats, type XferServer } from './server/server.js';
