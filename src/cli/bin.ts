#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';
import { main } from './main.js';
import { EXIT_CODES, fromSystemError } from '../core/errors.js';
import { exitCodeDecided, reportError } from './output.js';

// Heap growth: V8 grows a small old generation cautiously, and a transfer keeps little on
// the heap while streaming gigabytes through external buffers (HTTP/2 frames, chunk
// slabs), so it ran a full mark-compact every few tens of MiB. Pushing 2 GiB to `xfer
// serve` cost the server 103-142 mark-compacts (2.6 s of GC helper-thread CPU); growing
// the heap limit by 4x per collection (V8's own largest factor) brought that to 38-47 and
// the client's user CPU from 4.5 s to 3.7 s. The process is the CLI's own, so the flag is
// set here, before any work; library users tune their own processes.
setFlagsFromString('--heap-growing-percent=300');

// A reader that stops early (`xfer manifest show X | head -1`) closes the pipe: the next
// write fails with EPIPE, emitted as an 'error' that nothing else handles (a stack trace).
// What is left to print has no reader, so the work is done: end quietly, as head expects
// and as a C tool's default SIGPIPE handling would (without its 141): with 0, or with the
// code the command had already decided on (verify found damage: output.ts noteExitCode).
// Exit hooks still run (temporary directories are removed). Another failure to write
// standard output (a full disk) is reported; one of standard error can only end the process.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  process.exit(err.code === 'EPIPE' ? exitCodeDecided() : reportError(fromSystemError(err, 'standard output', 'write')));
});
process.stderr.on('error', (err: NodeJS.ErrnoException) => {
  process.exit(err.code === 'EPIPE' ? exitCodeDecided() : EXIT_CODES.XFER_IO);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.exitCode = reportError(err);
  },
);
