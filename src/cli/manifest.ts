import type { Command } from 'commander';
import { readManifest } from '../inspect.js';
import { renderManifest } from '../manifest/render.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';

export function registerManifest(program: Command, signal: AbortSignal): void {
  const manifest = program.command('manifest').description('inspect manifests');
  const show = manifest
    .command('show')
    .description('print a manifest readably (header, entries, chunks)')
    .argument('<file>', 'a manifest file, a pushed target <dest-dir>/<name>, or http(s)://host:port/<remote-path>')
    .option('--json', 'print one JSON object');
  for (const o of remoteOptions()) show.addOption(o);
  show.action(async (file: string, flags: RemoteFlags & { json?: boolean }) => {
    const reader = await readManifest(file, remoteFrom(flags, signal));
    try {
      const out = process.stdout;
      await renderManifest(reader, (text) => (out.write(text) ? undefined : new Promise<void>((r) => out.once('drain', () => r()))), { json: !!flags.json });
    } finally {
      await reader.close();
    }
  });
}
