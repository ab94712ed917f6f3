#!/usr/bin/env node
// npm install hook: builds the native chunker with node-gyp. A failed build is not fatal:
// xfer then uses its TypeScript chunker (same boundaries, slower) and says so in
// `xfer chunk --json`'s "chunker" field. Set XFER_REQUIRE_NATIVE=1 to make it fatal (CI).
import { spawnSync } from 'node:child_process';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
if (process.env.XFER_SKIP_NATIVE_BUILD === '1') process.exit(0);
const r = spawnSync('node-gyp', ['rebuild'], { cwd: here, stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status !== 0) {
  const why = r.error ? r.error.message : `node-gyp exited with ${r.status}`;
  console.warn(`xfer: native chunker not built (${why}); the TypeScript chunker will be used.`);
  process.exit(process.env.XFER_REQUIRE_NATIVE === '1' ? 1 : 0);
}
