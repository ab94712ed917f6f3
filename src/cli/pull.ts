import type { Command } from 'commander';
import type { PullOptions } from '../api.js';
import type { FallbackFigures } from '../reconstruct/fallback.js';
import { tryPullFromSnapshot } from '../pull-snapshot.js';
import { formatBytes } from '../core/sizes.js';
import { posix } from 'node:path';
import { connectionsOption, filterFrom, numericIdsOption, remoteFrom, remoteOptions, syncOptions, type FilterArg, type RemoteFlags, type SyncFlags } from './options.js';
import { count, printJson, Progress, rate } from './output.js';
import { deletedLine, fileLine, makeStats, statsText } from './report.js';

interface PullFlags extends RemoteFlags, SyncFlags {
  json?: boolean;
  quiet?: boolean;
  seed?: string[];
  checksum?: boolean;
  delete?: boolean;
  numericIds?: boolean;
  inPlace?: boolean;
  fallback?: string[];
}

export function registerPull(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('pull')
    .description('rebuild a pushed file or tree at a local path, reusing chunks already there')
    .argument('<target>', 'a pushed target: <dest-dir>/<name> or http(s)://host:port/<remote-path>; a tree with a trailing / means its contents (rsync): they go to <path> itself; <target>@<version id or UTC time> pulls that version (see xfer ls --versions)')
    .argument('<path>', 'where to put it; an existing directory or a path ending in / means "inside it"')
    .option('--seed <file...>', 'local files whose chunks may be reused')
    .option(
      '--fallback <location>',
      'a store to take a chunk from when the source lacks it or holds it damaged (verified, then put back into the source, which heals it); repeat to try several in order',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('-c, --checksum', 'read every file already at the destination, also those whose size, mtime and mode match the manifest (rsync --checksum)')
    .option('--delete', 'remove entries of an existing destination tree that the pulled tree lacks, except excluded ones (by default they are kept, as rsync keeps them)')
    .option('--in-place', 'rewrite an existing file where it is, only the ranges that differ, instead of replacing it atomically (a block device is always written so); it is inconsistent until the pull completes, and running the pull again completes it')
    .option('--json', 'print the result as one JSON object')
    .option('-q, --quiet', 'no progress display');
  const filterArgs: FilterArg[] = [];
  for (const o of [...syncOptions(filterArgs), numericIdsOption(), ...remoteOptions(), connectionsOption()]) cmd.addOption(o);
  cmd.action(async (source: string, dest: string, flags: PullFlags) => {
    const excludes = await filterFrom(filterArgs);
    const progress = Progress.for(flags);
    const dryRun = flags.dryRun === true;
    const listing = (flags.verbose || dryRun) && !flags.json;
    try {
      const options: PullOptions = {
        dryRun,
        excludes,
        plan: flags.verbose === true || flags.stats === true,
        ...remoteFrom(flags, signal),
        seeds: flags.seed ?? [],
        checksum: flags.checksum === true,
        delete: flags.delete === true,
        numericIds: flags.numericIds === true,
        inPlace: flags.inPlace === true,
        ...(flags.fallback ? { fallback: flags.fallback } : {}),
        // A warning, shown even with --quiet or --json: the user must know not to use the target.
        onInconsistent: (target) => {
          progress.done();
          process.stderr.write(`xfer: writing ${target} in place: it is inconsistent until this pull completes (if interrupted, run it again to complete it)\n`);
        },
        onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `, ${formatBytes(p.bytesReused)} reused${p.bytesZero > 0 ? ` (${formatBytes(p.bytesZero)} zero, left as holes)` : ''}`),
        onRetry: (e) => progress.retrying(e),
      };
      // A no-op pull known from the target's snapshot ends before the library is loaded.
      const r = (await tryPullFromSnapshot(source, dest, options)) ?? (await (await import('../api.js')).pull(source, dest, options));
      progress.done();
      const plan = r.plan;
      const fb = 'fallback' in r ? (r.fallback as FallbackFigures | undefined) : undefined;
      const transferred = (plan?.files ?? []).map((f) => ({ path: f.path === '' ? posix.basename(r.target) : f.path, size: f.size }));
      if (listing) {
        for (const f of transferred) process.stdout.write(fileLine(f));
        for (const d of r.deleted) process.stdout.write(deletedLine(d));
      }
      const stats = flags.stats && plan
        ? makeStats({
            ...plan.entries, deleted: r.deleted.length,
            filesTransferred: plan.files.length, bytesTotal: r.bytesTotal, bytesTransferred: plan.bytesTransferred,
            literalBytes: r.bytesReceived, bytesSent: 0, bytesReceived: r.bytesReceived,
          })
        : undefined;
      if (flags.json) {
        printJson({
          ...(dryRun ? { dryRun: true } : {}),
          bytesTotal: r.bytesTotal, bytesReceived: r.bytesReceived, bytesReused: r.bytesReused,
          bytesZero: r.bytesZero, bytesAllocated: r.bytesAllocated, seconds: r.seconds, deleted: r.deleted,
          ...(r.bytesWritten !== undefined ? { bytesWritten: r.bytesWritten } : {}),
          ...(r.bytesReadBack !== undefined ? { bytesReadBack: r.bytesReadBack } : {}),
          ...(flags.verbose || dryRun ? { transferred } : {}),
          ...(stats ? { stats } : {}),
          ...(fb ? { fallback: fb } : {}),
        });
      } else if (dryRun) {
        process.stdout.write(
          `dry run, nothing written: would pull ${r.target}: ${count(transferred.length, 'file')} of ${plan!.entries.files} (${formatBytes(plan!.bytesTransferred)} of ${formatBytes(r.bytesTotal)}), ` +
            `up to ${formatBytes(r.bytesReceived)} of chunks to fetch; ${count(r.deleted.length, 'entry', 'entries')} deleted\n`,
        );
      } else if (!flags.quiet) {
        process.stdout.write(
          `pulled ${r.target}: ${formatBytes(r.bytesTotal)}; ${formatBytes(r.bytesReceived)} received, ` +
            `${formatBytes(r.bytesReused)} reused locally; ${r.bytesWritten !== undefined ? `${formatBytes(r.bytesWritten)} written in place; ` : ''}${r.seconds.toFixed(2)} s, ${rate(r.bytesTotal, r.seconds)}\n`,
        );
      }
      if (stats && !flags.json) process.stdout.write(statsText(stats));

      if (fb && fb.chunksFromFallback > 0 && !flags.json) {
        // Shown even with --quiet: the source store is damaged or incomplete.
        process.stderr.write(
          `xfer: ${count(fb.chunksFromFallback, 'chunk')} missing or damaged in the source came from the fallback; ${fb.chunksHealed} put back into the source` +
            `${fb.healFailures > 0 ? `, ${fb.healFailures} not (${fb.healError ?? 'refused'})` : ''}\n`,
        );
      }
    } finally {
      progress.done();
    }
  });
}
