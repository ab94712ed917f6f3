import type { Command } from 'commander';
import { verify } from '../inspect.js';
import { formatBytes } from '../core/sizes.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { count, EXIT_DAMAGED, printJson, Progress } from './output.js';

interface VerifyFlags extends RemoteFlags {
  json?: boolean;
  chunksOnly?: boolean;
  readData?: boolean;
  readDataSubset?: string;
  progress?: boolean;
  quiet?: boolean;
}

/**
 * `xfer verify <location>`: a local destination directory (all its targets) or one target
 * of it, or a store or server location (a target, a folder of them, or all). Exit 0 only
 * when everything checked is intact, EXIT_DAMAGED (1) on damage (inspect.ts, verify).
 */
export function registerVerify(program: Command, signal: AbortSignal, setExit: (code: number) => void): void {
  const cmd = program
    .command('verify')
    .description('check that every chunk the manifests refer to exists (--read-data: is intact) and every rebuilt file matches its manifest; exit 1 on damage')
    .argument('<location>', 'a destination directory (all its targets), <dest-dir>/<name> (one), or a server or store location (a target, a folder of them, or all)')
    .option('--read-data', 'read back and re-hash every chunk and every rebuilt file (default: chunks are checked for existence, files for size and mtime)')
    .option('--read-data-subset <n/t|p%>', 'read only part of the data: part n of t (t runs cover all) or a random p% (implies --read-data)')
    .option('--chunks-only', 'check the stored chunks only, not the rebuilt files')
    .option('--json', 'print the report as one JSON object')
    .option('-P, --progress', 'show progress on stderr even when it is not a terminal')
    .option('-q, --quiet', 'no progress');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (location: string, flags: VerifyFlags) => {
    const progress = Progress.for(flags);
    const reading = flags.readData === true || flags.readDataSubset !== undefined;
    const r = await verify(location, {
      ...remoteFrom(flags, signal),
      chunksOnly: flags.chunksOnly === true,
      readData: flags.readData === true,
      readDataSubset: flags.readDataSubset,
      onProgress: (p) => progress.update(reading ? p.bytesRead : p.bytes, 0, `, ${p.manifestsDone}/${count(p.manifests, 'manifest')}, ${count(p.chunks, 'chunk reference')}${p.damaged ? `, ${count(p.damaged, 'problem')}` : ''}`),
    }).finally(() => progress.done());
    if (r.damaged.length) setExit(EXIT_DAMAGED);
    if (flags.json) return printJson(r);
    for (const d of r.damaged) {
      process.stdout.write(`DAMAGED ${d.manifest}${d.path ? `/${d.path}` : ''}: ${d.kind}${d.digest ? ` chunk ${d.digest}` : ''}: ${d.message}\n`);
    }
    const read = r.readData === 'none' ? '' : `, ${count(r.chunksRead, 'chunk')} read (${formatBytes(r.bytesRead)}${r.readData === 'all' ? '' : `, subset ${r.readData}`})`;
    const problems = r.damaged.length ? `, ${count(r.damaged.length, 'problem')}${r.damagedChunks.length ? ` (${count(r.damagedChunks.length, 'damaged chunk')})` : ''}` : '';
    process.stdout.write(
      `${r.damaged.length ? 'FAILED' : 'ok'}: ${count(r.manifests, 'manifest')}${r.versions ? ` (and ${count(r.versions, 'version')})` : ''}, ${count(r.files, 'file')}, ${count(r.chunks, 'chunk reference')} (${formatBytes(r.bytes)})` +
        `${read}${r.rebuilt ? `, ${count(r.filesChecked, 'rebuilt file')}` : ''} checked${problems}${r.rebuiltSkipped ? `; rebuilt files not checked: ${r.rebuiltSkipped}` : ''}\n`,
    );
  });
}

