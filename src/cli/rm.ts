import type { Command } from 'commander';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { count, printJson } from './output.js';

/**
 * `xfer rm <location>/<target>`: removes a target, its versions and the copy its location
 * rebuilt (a local destination's, a server's); a folder of targets only with -r. Chunks
 * stay until gc.
 */
export function registerRm(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('rm')
    .description('remove a pushed target: its versions, its manifest and its rebuilt copy (chunks stay until gc)')
    .argument('<target>', 'a pushed target: <dest-dir>/<name>, http(s)://host:port/<remote-path>, s3://bucket/<path>')
    .option('-r, --recursive', 'remove a folder of targets and every target in it')
    .option('-n, --dry-run', 'say what would be removed, remove nothing')
    .option('--json', 'print the result as one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (spec: string, flags: RemoteFlags & { recursive?: boolean; dryRun?: boolean; json?: boolean }) => {
    const { remove } = await import('../targets.js');
    const r = await remove(spec, { ...remoteFrom(flags, signal), recursive: flags.recursive === true, dryRun: flags.dryRun === true });
    if (flags.json) return printJson(r);
    for (const t of r.removed) process.stdout.write(`${r.dryRun ? 'would remove' : 'removed'} ${t.target} (${count(t.versions, 'version')})\n`);
    if (r.dryRun) process.stdout.write(`dry run, nothing removed: ${count(r.removed.length, 'target')}\n`);
  });
}
