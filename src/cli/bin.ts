#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';
import { main } from './main.js';
import { reportError } from './output.js';

// Heap growth: V8 grows a small old generation cautiously, and a transfer keeps little on
// the heap while streaming gigabytes through external buffers (HTTP/2 frames, chunk
// slabs), so it ran a full mark-compact every few tens of MiB. Pushing 2 GiB to `xfer
// serve` cost the server 103-142 mark-compacts (2.6 s of GC helper-thread CPU); growing
// the heap limit by 4x per collection (V8's own largest factor) brought that to 38-47 and
// the client's user CPU from 4.5 s to 3.7 s. The process is the CLI's own, so the flag is
// set here, before any work; library users tune their own processes.
setFlagsFromString('--heap-growing-percent=300');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.exitCode = reportError(err);
  },
);
