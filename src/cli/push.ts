import type { Command } from 'commander';
import { createReadStream, fstatSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { push } from '../api.js';
import { InvalidArgumentError } from '../core/errors.js';
import { formatBytes, MiB } from '../core/sizes.js';
import { basename } from 'node:path';
import { chunkerOptions, chunkerSpecFor, connectionsOption, digestFrom, filterFrom, numericIdsOption, remoteFrom, remoteOptions, syncOptions, type ChunkerFlags, type FilterArg, type RemoteFlags, type SyncFlags } from './options.js';
import { count, EXIT_PARTIAL, printJson, Progress, rate } from './output.js';
import { deletedLine, fileLine, makeStats, statsText, type ItemFile } from './report.js';

interface PushFlags extends ChunkerFlags, RemoteFlags, SyncFlags {
  json?: boolean;
  quiet?: boolean;
  delta: boolean;
  checksum?: boolean;
  delete?: boolean;
  numericIds?: boolean;
  inPlace?: boolean;
}

export function registerPush(program: Command, signal: AbortSignal, setExitCode: (code: number) => void): void {
  const cmd = program
    .command('push')
    .description('store a file or tree at a destination and rebuild it there, sending only chunks the destination lacks')
    .argument('<path>', 'file or directory to push, or - for standard input; a directory with a trailing / means its contents (rsync): they go to <dest> itself')
    .argument('<dest>', 'target: a local path or http(s)://host:port/<remote-path>; an existing directory or a trailing / means "inside it, under the source name"')
    .option('--json', 'print the result as one JSON object')
    .option('-q, --quiet', 'no progress display')
    .option('--no-delta', 'to a server: send changed chunks whole, not as the blocks that differ from the chunk they replace')
    .option('--delete', 'into a local directory: remove entries of the existing target tree that the source lacks, except excluded ones (by default they are kept, as rsync keeps them)')
    .option('-c, --checksum', 'read every file, also those whose size and mtime are unchanged since the last push to the target (rsync --checksum)')
    .option('--in-place', "to a server: have it rewrite a file target larger than its --in-place-above threshold where it is, only the changed chunks, instead of rebuilding it whole and swapping it in (the server's copy is inconsistent until the push completes)");
  const filterArgs: FilterArg[] = [];
  for (const o of [...syncOptions(filterArgs), numericIdsOption(), ...chunkerOptions(), ...remoteOptions(), connectionsOption()]) cmd.addOption(o);
  cmd.action(async (source: string, dest: string, flags: PushFlags) => {
    const excludes = await filterFrom(filterArgs);
    const isStdin = source === '-';
    // An ext2/3/4 image gets the image chunker unless a chunker option says otherwise.
    const chunker = await chunkerSpecFor(isStdin ? undefined : source, flags, (n) => cmd.getOptionValueSource(n) === 'cli');
    const digestAlgorithm = digestFrom(flags);
    if (isStdin && dest.endsWith('/')) throw new InvalidArgumentError('pushing standard input needs a destination file name, not a directory');
    const progress = Progress.for(flags);
    const dryRun = flags.dryRun === true;
    /** Files listed (-v, -n) as they go; a single file by its name. */
    const listing = (flags.verbose || dryRun) && !flags.json;
    const transferred: ItemFile[] = [];
    const itemName = (path: string) => (path !== '' ? path : isStdin ? basename(dest) : basename(source));
    try {
      const r = await push(isStdin ? { stream: stdinStream(), name: 'stdin' } : source, dest, {
        ...remoteFrom(flags, signal),
        delta: flags.delta,
        checksum: flags.checksum === true,
        inPlace: flags.inPlace === true,
        delete: flags.delete === true,
        dryRun,
        excludes,
        onFile: (f) => {
          const item = { path: itemName(f.path), size: f.size };
          transferred.push(item);
          if (listing) progress.println(fileLine(item));
        },
        numericIds: flags.numericIds === true,
        chunker,
        digestAlgorithm,
        // Zero chunks (holes, zero runs) are not sent: shown apart from the data.
        onProgress: (p) => progress.update(p.bytesScanned, p.bytesTotal, `, ${formatBytes(p.bytesSent)} sent${p.bytesZero > 0 ? `, ${formatBytes(p.bytesZero)} zero` : ''}`),
        onRetry: (e) => progress.retrying(e),
        onSkip: (s) => process.stderr.write(`xfer: skipped ${s.path}: ${s.reason}\n`),
        onLockWait: (holder) => {
          if (!flags.quiet) process.stderr.write(`xfer: waiting for another push to the same target to finish (${holder})\n`);
        },
      });
      progress.done();
      if (r.entriesLost > 0) setExitCode(EXIT_PARTIAL);
      if (listing) for (const d of r.deleted) process.stdout.write(deletedLine(d));
      const stats = flags.stats
        ? makeStats({
            ...r.entries, deleted: r.deleted.length,
            filesTransferred: r.filesTransferred, bytesTotal: r.bytesTotal, bytesTransferred: r.bytesTransferred,
            literalBytes: r.bytesSent, bytesSent: r.bytesSent, bytesReceived: 0,
          })
        : undefined;
      if (flags.json) {
        printJson({
          ...(dryRun ? { dryRun: true } : {}),
          bytesTotal: r.bytesTotal,
          bytesSent: r.bytesSent,
          chunksTotal: r.chunksTotal,
          chunksSent: r.chunksSent,
          chunksDelta: r.chunksDelta,
          chunksReused: r.chunksReused,
          bytesZero: r.bytesZero,
          bytesAllocated: r.bytesAllocated,
          seconds: r.seconds,
          entriesLost: r.entriesLost,
          deleted: r.deleted,
          ...(flags.verbose || dryRun ? { transferred } : {}),
          ...(stats ? { stats } : {}),
        });
      } else if (dryRun) {
        process.stdout.write(
          `dry run, nothing written: would push ${r.target}: ${count(r.filesTransferred, 'file')} of ${r.entries.files} (${formatBytes(r.bytesTransferred)} of ${formatBytes(r.bytesTotal)}), ` +
            `${formatBytes(r.bytesSent)} in ${count(r.chunksSent, 'chunk')} the destination lacks; ${count(r.deleted.length, 'entry', 'entries')} deleted\n`,
        );
      } else if (!flags.quiet) {
        process.stdout.write(
          `pushed ${r.target}: ${formatBytes(r.bytesTotal)} in ${count(r.chunksTotal, 'chunk')}; ` +
            `${r.chunksSent} sent (${formatBytes(r.bytesSent)}${r.chunksDelta > 0 ? `, ${r.chunksDelta} as ${r.chunksDelta === 1 ? 'a delta' : 'deltas'}` : ''}), ${r.chunksReused} reused; ` +
            `${r.seconds.toFixed(2)} s, ${rate(r.bytesTotal, r.seconds)}\n`,
        );
      }
      if (stats && !flags.json) process.stdout.write(statsText(stats));
      if (r.entriesLost > 0) {
        process.stderr.write(`xfer: partial transfer: ${count(r.entriesLost, 'entry', 'entries')} could not be copied (see above)\n`);
      }
    } finally {
      progress.done();
    }
  });
}

/** Bytes per read of standard input when it is a regular file (`xfer push - dest < file`). */
const STDIN_FILE_READ_BYTES = 4 * MiB;

/**
 * Standard input to push. A regular file (a redirect) is read in STDIN_FILE_READ_BYTES
 * pieces: process.stdin reads it 64 KiB at a time (a 2 GiB push into a local directory:
 * 7.1-8.3 s against 4.6-4.8 s). A pipe stays process.stdin: reads from a pipe return what
 * it holds (64 KiB), and reading one through the fs thread pool measured 2.4x slower.
 */
function stdinStream(): Readable {
  let regular = false;
  try {
    regular = fstatSync(0).isFile();
  } catch {
    // not a file descriptor we can stat: treat it as a pipe
  }
  return regular ? createReadStream('', { fd: 0, highWaterMark: STDIN_FILE_READ_BYTES, autoClose: false }) : process.stdin;
}
