import type { Command } from 'commander';
import { verify } from '../inspect.js';
import { formatBytes } from '../core/sizes.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { count, EXIT_DAMAGED, printJson } from './output.js';

/**
 * `xfer verify <dir>` checks every manifest of <dir>/.xfer; `xfer verify <dir>/<name>` one;
 * a store location, the target or folder of targets its path names (api.ts, verify).
 */
export function registerVerify(program: Command, signal: AbortSignal, setExit: (code: number) => void): void {
  const cmd = program
    .command('verify')
    .description('check that every chunk the manifests refer to is present and intact, and every rebuilt file matches its manifest; exit 1 on damage')
    .argument('<dest>', 'a destination directory (all its targets) or <dest-dir>/<name> (one)')
    .option('--chunks-only', 'check the stored chunks only, not the rebuilt files')
    .option('--json', 'print the report as one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (dest: string, flags: RemoteFlags & { json?: boolean; chunksOnly?: boolean }) => {
    const { rebuilt, ...r } = await verify(dest, { ...remoteFrom(flags, signal), chunksOnly: flags.chunksOnly === true });
    if (r.damaged.length) setExit(EXIT_DAMAGED);
    if (flags.json) return printJson(r);
    for (const d of r.damaged) {
      process.stdout.write(`DAMAGED ${d.manifest}${d.path ? `/${d.path}` : ''}: ${d.kind}${d.digest ? ` chunk ${d.digest}` : ''}: ${d.message}\n`);
    }
    process.stdout.write(
      `${r.damaged.length ? 'FAILED' : 'ok'}: ${count(r.manifests, 'manifest')}, ${count(r.files, 'file')}, ${count(r.chunks, 'chunk reference')} (${formatBytes(r.bytes)})` +
        `${rebuilt ? `, ${count(r.filesChecked, 'rebuilt file')}` : ''} checked` +
        `${r.damaged.length ? `, ${count(r.damaged.length, 'problem')}` : ''}\n`,
    );
  });
}
