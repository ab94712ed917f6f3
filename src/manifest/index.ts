/** The manifest format: streaming writer and reader, in-memory helpers, rendering. */
export type { ChunkRecord, EntryMeta, EntryType, ManifestEntry, ManifestEvent, ManifestHeader, ManifestKind } from './types.js';
export { FORMAT_VERSION, HEADER_BYTES, MAX_LINK_TARGET_BYTES, MAX_MODE, MAX_PATH_BYTES } from './format.js';
export { comparePaths, pathProblem } from './rules.js';
export { ManifestWriter, WRITE_BUFFER_BYTES, type ManifestInit, type ManifestWriterOptions } from './writer.js';
export { FILE_READ_CHUNK_BYTES, READ_BATCH_RECORDS, openManifest, openManifestBody, openManifestFile, type ManifestReader, type ManifestReaderOptions } from './reader.js';
export { decodeManifest, encodeManifestToFile } from './memory.js';
export { renderManifest, type RenderOptions } from './render.js';
