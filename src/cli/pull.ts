import type { Command } from 'commander';
import { pull } from '../api.js';
import { formatBytes } from '../core/sizes.js';
import { remoteFrom, numericIdsOption, remoteOptions, type RemoteFlags } from './options.js';
import { printJson, Progress, rate } from './output.js';

interface PullFlags extends RemoteFlags {
  json?: boolean;
  quiet?: boolean;
  seed?: string[];
  checksum?: boolean;
  delete?: boolean;
  numericIds?: boolean;
}

export function registerPull(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('pull')
    .description('rebuild a pushed file or tree at a local path, reusing chunks already there')
    .argument('<target>', 'a pushed target: <dest-dir>/<name> or http(s)://host:port/<remote-path>')
    .argument('<path>', 'where to put it; an existing directory or a path ending in / means "inside it"')
    .option('--seed <file...>', 'local files whose chunks may be reused')
    .option('-c, --checksum', 'read every file already at the destination, also those whose size, mtime and mode match the manifest (rsync --checksum)')
    .option('--delete', 'remove entries of an existing destination tree that the pulled tree lacks (by default they are kept, as rsync keeps them)')
    .option('--json', 'print the result as one JSON object')
    .option('-q, --quiet', 'no progress display');
  for (const o of [numericIdsOption(), ...remoteOptions()]) cmd.addOption(o);
  cmd.action(async (source: string, dest: string, flags: PullFlags) => {
    const progress = Progress.for(flags);
    try {
      const r = await pull(source, dest, {
        ...remoteFrom(flags, signal),
        seeds: flags.seed ?? [],
        checksum: flags.checksum === true,
        delete: flags.delete === true,
        numericIds: flags.numericIds === true,
        onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `, ${formatBytes(p.bytesReused)} reused`),
        onRetry: (e) => progress.retrying(e),
      });
      progress.done();
      if (flags.json) {
        printJson({ bytesTotal: r.bytesTotal, bytesReceived: r.bytesReceived, bytesReused: r.bytesReused, seconds: r.seconds, deleted: r.deleted });
      } else if (!flags.quiet) {
        process.stdout.write(
          `pulled ${r.target}: ${formatBytes(r.bytesTotal)}; ${formatBytes(r.bytesReceived)} received, ` +
            `${formatBytes(r.bytesReused)} reused locally; ${r.seconds.toFixed(2)} s, ${rate(r.bytesTotal, r.seconds)}\n`,
        );
      }
    } finally {
      progress.done();
    }
  });
}
