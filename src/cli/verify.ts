import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { NotFoundError } from '../core/errors.js';
import { formatBytes } from '../core/sizes.js';
import { checkLocalPath } from '../endpoint/remote.js';
import { localTargetOf, openLocalSource, openLocalStore, STORE_DIR_NAME } from '../endpoint/local.js';
import type { LocalStore } from '../store/local.js';
import { verifyManifests } from '../transfer/verify.js';
import { count, EXIT_DAMAGED, printJson } from './output.js';

/**
 * `xfer verify <dir>` checks every manifest of <dir>/.xfer; `xfer verify <dir>/<name>` one.
 * A directory that holds a store is taken as the whole store, anything else as a target.
 */
export function registerVerify(program: Command, signal: AbortSignal, setExit: (code: number) => void): void {
  program
    .command('verify')
    .description('check that every chunk the manifests refer to is present and intact, and every rebuilt file matches its manifest; exit 1 on damage')
    .argument('<dest>', 'a destination directory (all its targets) or <dest-dir>/<name> (one)')
    .option('--chunks-only', 'check the stored chunks only, not the rebuilt files')
    .option('--json', 'print the report as one JSON object')
    .action(async (dest: string, flags: { json?: boolean; chunksOnly?: boolean }) => {
      checkLocalPath(dest, 'what verify checks');
      let store: LocalStore;
      let names: string[];
      let dir: string;
      const whole = await isStoreDir(dest);
      if (whole) {
        store = await openLocalStore(dest, { signal });
        names = (await store.listManifests('', { signal })).map((m) => m.name);
        dir = resolve(dest);
      } else {
        const opened = await openLocalSource(dest, { signal });
        store = opened.store;
        names = [opened.name];
        dir = opened.t.dir;
      }
      // A local destination's targets are rebuilt beside its store: <dir>/<name>.
      const targetOf = flags.chunksOnly ? undefined : (name: string) => join(dir, ...name.split('/'));
      try {
        const r = await verifyManifests(store, store, names, { signal, targetOf });
        if (r.damaged.length) setExit(EXIT_DAMAGED);
        if (flags.json) printJson(r);
        else {
          for (const d of r.damaged) {
            process.stdout.write(`DAMAGED ${d.manifest}${d.path ? `/${d.path}` : ''}: ${d.kind}${d.digest ? ` chunk ${d.digest}` : ''}: ${d.message}\n`);
          }
          process.stdout.write(
            `${r.damaged.length ? 'FAILED' : 'ok'}: ${count(r.manifests, 'manifest')}, ${count(r.files, 'file')}, ${count(r.chunks, 'chunk reference')} (${formatBytes(r.bytes)})` +
              `${targetOf ? `, ${count(r.filesChecked, 'rebuilt file')}` : ''} checked` +
              `${r.damaged.length ? `, ${count(r.damaged.length, 'problem')}` : ''}\n`,
          );
        }
      } finally {
        await store.close();
      }
    });
}

async function isStoreDir(p: string): Promise<boolean> {
  try {
    return (await stat(join(p, STORE_DIR_NAME))).isDirectory() && (await stat(p)).isDirectory();
  } catch {
    try {
      await stat(localTargetOf(p).storeDir);
      return false;
    } catch {
      throw new NotFoundError(`${p}: no xfer store here or beside it`);
    }
  }
}
