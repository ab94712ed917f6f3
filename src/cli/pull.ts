import { posix } from 'node:path';
import type { Command } from 'commander';
import { formatBytes } from '../core/sizes.js';
import { InvalidArgumentError } from '../core/errors.js';
import { connectRemote, isRemote, parseRemote } from '../endpoint/http.js';
import { openLocalSource, resolveCopyTarget } from '../endpoint/local.js';
import { openManifest } from '../manifest/reader.js';
import { reconstruct } from '../reconstruct/reconstruct.js';
import { ScanPool } from '../scan/pool.js';
import type { ChunkStore, ManifestStore } from '../store/store.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { printJson, Progress, rate } from './output.js';

interface PullFlags extends RemoteFlags {
  json?: boolean;
  quiet?: boolean;
  seed?: string[];
}

export function registerPull(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('pull')
    .description('rebuild a pushed file or tree at a local path, reusing chunks already there')
    .argument('<target>', 'a pushed target: <dest-dir>/<name> or http(s)://host:port/<remote-path>')
    .argument('<path>', 'where to put it; an existing directory or a path ending in / means "inside it"')
    .option('--seed <file...>', 'local files whose chunks may be reused')
    .option('--json', 'print the result as one JSON object')
    .option('-q, --quiet', 'no progress display');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (targetArg: string, dest: string, flags: PullFlags) => {
    let store: ChunkStore & ManifestStore & { close(): Promise<void> };
    let name: string;
    if (isRemote(targetArg)) {
      const r = parseRemote(targetArg);
      if (!r.path) throw new InvalidArgumentError(`${targetArg}: name a remote path to pull`);
      store = await connectRemote(r.base, remoteFrom(flags, signal));
      name = r.path;
    } else {
      const opened = await openLocalSource(targetArg, { signal });
      store = opened.store;
      name = opened.name;
    }
    const pool = new ScanPool();
    const progress = Progress.for(flags);
    try {
      const reader = await openManifest(await store.getManifest(name, { signal }), { signal });
      const target = await resolveCopyTarget(posix.basename(name), dest);
      const r = await reconstruct(reader, store, target, {
        signal,
        pool,
        seeds: flags.seed ?? [],
        onProgress: (p) => progress.update(p.bytesDone, p.bytesTotal, `, ${formatBytes(p.bytesReused)} reused`),
      });
      progress.done();
      if (flags.json) {
        printJson({ bytesTotal: r.bytesTotal, bytesReceived: r.bytesReceived, bytesReused: r.bytesReused, seconds: r.seconds });
      } else if (!flags.quiet) {
        process.stdout.write(
          `pulled ${target}: ${formatBytes(r.bytesTotal)}; ${formatBytes(r.bytesReceived)} received, ` +
            `${formatBytes(r.bytesReused)} reused locally; ${r.seconds.toFixed(2)} s, ${rate(r.bytesTotal, r.seconds)}\n`,
        );
      }
    } finally {
      progress.done();
      await pool.close();
      await store.close();
    }
  });
}
