/** The S3 store: what the location registry (endpoint/open.ts) and the library need. */
export { createS3Client, S3_MAX_REQUESTS_IN_FLIGHT, type S3ClientOptions } from './client.js';
export { isPermanentS3Error } from './errors.js';
export { formatS3Location, isS3Location, parseS3Location, S3_SCHEME, type S3Location } from './location.js';
export { openS3Store, S3_PACK_TARGET_BYTES, S3Store, type S3StoreOptions } from './store.js';
export { S3_MIN_PART_BYTES, S3_MULTIPART_ABOVE_BYTES, S3_PART_BYTES } from './multipart.js';
