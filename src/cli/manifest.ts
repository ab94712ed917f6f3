import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { localTargetOf } from '../endpoint/local.js';
import { checkLocalPath } from '../endpoint/remote.js';
import { openManifest, openManifestFile } from '../manifest/reader.js';
import type { ManifestReader } from '../manifest/reader.js';
import { renderManifest } from '../manifest/render.js';
import { LocalStore } from '../store/local.js';

export function registerManifest(program: Command, signal: AbortSignal): void {
  const manifest = program.command('manifest').description('inspect manifests');
  manifest
    .command('show')
    .description('print a manifest readably (header, entries, chunks)')
    .argument('<file>', 'a manifest file, or a pushed target <dest-dir>/<name>')
    .option('--json', 'print one JSON object')
    .action(async (file: string, flags: { json?: boolean }) => {
      checkLocalPath(file, 'the manifest to show');
      let reader: ManifestReader;
      let store: LocalStore | undefined;
      if (await isPushedTarget(file)) {
        const t = localTargetOf(file);
        store = await LocalStore.open(t.storeDir, { create: false, signal });
        reader = await openManifest(await store.getManifest(t.name, { signal }), { signal });
      } else {
        reader = await openManifestFile(file, { signal });
      }
      try {
        const out = process.stdout;
        await renderManifest(reader, (text) => (out.write(text) ? undefined : new Promise<void>((r) => out.once('drain', () => r()))), { json: !!flags.json });
      } finally {
        await store?.close();
      }
    });
}

async function isPushedTarget(p: string): Promise<boolean> {
  try {
    const t = localTargetOf(p);
    return (await stat(join(t.storeDir, 'manifests', t.name))).isFile();
  } catch {
    return false;
  }
}
