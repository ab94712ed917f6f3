import type { Command } from 'commander';
import { InvalidArgumentError } from '../core/errors.js';
import { formatBytes } from '../core/sizes.js';
import { isRemote, parseRemote } from '../endpoint/remote.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { printJson } from './output.js';

export function registerLs(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('ls')
    .description('list the files and trees on a server')
    .argument('<url>', 'http(s)://host:port/[<prefix>]')
    .option('--json', 'print one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (spec: string, flags: RemoteFlags & { json?: boolean }) => {
    if (!isRemote(spec)) throw new InvalidArgumentError(`${spec}: ls takes an http:// or https:// URL`);
    const r = parseRemote(spec);
    const { connectRemote } = await import('../endpoint/http.js');
    const store = await connectRemote(r.base, remoteFrom(flags, signal));
    try {
      const prefix = r.path && r.trailingSlash ? `${r.path}/` : r.path;
      const entries = await store.list(prefix, { signal });
      if (flags.json) return printJson({ entries });
      for (const e of entries) {
        // A manifest the server cannot read is listed as `damaged`, with the server's reason.
        const size = e.kind === 'damaged' ? '-' : formatBytes(e.bytes);
        process.stdout.write(`${e.kind.padEnd(4)} ${size.padStart(11)}  ${new Date(e.mtimeMs).toISOString()}  ${e.path}${e.error ? `  (${e.error})` : ''}\n`);
      }
    } finally {
      await store.close();
    }
  });
}
