import { KiB } from '../../src/core/sizes.js';

/** What the crashing client (s3-crash-child.ts) puts: 5 chunks of 64 KiB, in two packs of this target. */
export const CRASH_CHUNKS = 5;
export const CRASH_CHUNK_BYTES = 64 * KiB;
export const CRASH_PACK_TARGET_BYTES = 160 * KiB;
