#!/usr/bin/env node
// Writes native/blake3-zero-cv-8MiB.bin: the BLAKE3 chaining values (non-root subtree CVs)
// of 8 MiB of zero bytes at offsets 0, 8 MiB, 16 MiB, ... up to 256 GiB, 32 bytes each, in
// order (src/hash/zero-cvs.ts, which pins the file's digest). They are constants of BLAKE3:
// a first scan of a sparse image then hashes its data only. Needs the built addon and
// dist/ (npm run build). Run by hand when the span or the count changes; the file is
// committed, and test/zero-cv-cache checks entries against the addon.
import { writeFileSync } from 'node:fs';

const { treeBinding } = await import('../dist/src/hash/tree.js');
const { ZERO_CV_SPAN_BYTES, ZERO_CV_TABLE_ENTRIES } = await import('../dist/src/hash/zero-cvs.js');
const tree = treeBinding();
if (!tree) throw new Error('the native addon is needed');
const out = new Uint8Array(ZERO_CV_TABLE_ENTRIES * 32);
const chunksPerSpan = ZERO_CV_SPAN_BYTES / 1024;
let next = 0;
const worker = async () => {
  for (let k = next++; k < ZERO_CV_TABLE_ENTRIES; k = next++) await tree.blake3CvAsync(null, ZERO_CV_SPAN_BYTES, k * chunksPerSpan, out.subarray(k * 32, k * 32 + 32));
};
await Promise.all([worker(), worker(), worker(), worker()]);
writeFileSync(new URL('./blake3-zero-cv-8MiB.bin', import.meta.url), out);
