import type { Command } from 'commander';
import { list } from '../inspect.js';
import { formatBytes } from '../core/sizes.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { printJson } from './output.js';

export function registerLs(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('ls')
    .description('list the pushed files and trees at a location (a server, a destination directory), or the versions of one')
    .argument('<location>', 'http(s)://host:port/[<prefix>], a destination directory, or <dest-dir>/<prefix>; with --versions, a target')
    .option('--versions', 'list the versions of the target <location> names: time, id, size, digest (oldest first; * marks the current one)')
    .option('--json', 'print one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (spec: string, flags: RemoteFlags & { json?: boolean; versions?: boolean }) => {
    if (flags.versions) {
      const { versions } = await import('../targets.js');
      const r = await versions(spec, remoteFrom(flags, signal));
      if (flags.json) return printJson({ target: r.target, versions: r.versions.map(({ manifest: _, ...v }) => ({ ...v, time: new Date(v.timeMs).toISOString() })) });
      for (const v of r.versions) {
        const size = v.kind === 'damaged' ? '-' : formatBytes(v.bytes);
        process.stdout.write(`${v.current ? '*' : ' '} ${new Date(v.timeMs).toISOString()}  ${v.id}  ${v.kind.padEnd(4)} ${size.padStart(11)}  ${v.digest || `(${v.error ?? 'damaged'})`}\n`);
      }
      return;
    }
    const entries = await list(spec, remoteFrom(flags, signal));
    if (flags.json) return printJson({ entries });
    for (const e of entries) {
      // A manifest that cannot be read is listed as `damaged`, with the reason.
      const size = e.kind === 'damaged' ? '-' : formatBytes(e.bytes);
      process.stdout.write(`${e.kind.padEnd(4)} ${size.padStart(11)}  ${new Date(e.mtimeMs).toISOString()}  ${e.path}${e.error ? `  (${e.error})` : ''}\n`);
    }
  });
}
