/*
 * The HTTP store and its protocol client: store/http/store.ts (HttpStore, a ChunkStore and
 * ManifestStore) and store/http/client.ts (XferClient, one method per endpoint).
 */
export { HttpStore, type HttpStoreOptions, UPLOAD_BATCH_BYTES, FETCH_BATCH_CHUNKS, MAX_FETCHES_IN_FLIGHT, MAX_UPLOADS_IN_FLIGHT } from './http/store.js';
export { XferClient, isTransient, ANSWER_TIMEOUT_MS, type ClientOptions, type CommitAnswer } from './http/client.js';
