/**
 * A server root read where it lies, without a server (`xfer verify <root>` or
 * `xfer verify <root>/store` on the server's machine, as `restic check` reads a repository):
 * the same check as POST /v1/verify, over the same store the server would open. In the
 * default mode (with files) that is the LocalStore at `<root>/store` with the held index
 * (server/held.ts) in read-only mode: the current files' chunks lie in `<root>/files`, not in
 * packs, and a check of `store/` alone would call every one of them missing.
 *
 * Contract: the held index's start-up rules and the re-adoption of a copied root's files
 * apply in memory only, and no record under `held/` is written; the LocalStore opens as a
 * local verify opens any store (a corrupt pack chunk goes to its set-aside list). A held
 * chunk found damaged is appended to `held/damaged` (server/held.ts HELD_DAMAGE_FILE), the
 * one write under `held/`: a running server reads it and stops counting the chunk present,
 * so that its next push sends it again (records are the server's alone to rewrite). On a
 * running server, `xfer verify http://host:port/` asks the server itself.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { LocalStore } from '../store/local.js';
import type { ReadDataSubset, VerifyProgress, VerifyReport } from '../transfer/verify.js';
import { HeldStore } from './held.js';
import { silentLogger } from './log.js';
import { recordedMode } from './mode.js';
import { runVerifyJob } from './verify-job.js';

/** The store's directory under a server root. */
export const ROOT_STORE_DIR = 'store';
/** What marks a LocalStore's directory (store/local/layout.ts). */
const STORE_FILE = 'store.json';

/**
 * The server root `path` is (a root, or the `store` directory of one), or undefined: a
 * directory with `store/store.json` and a recorded mode or a `files/` directory
 * (server/mode.ts recordedMode).
 */
export async function serverRootOf(path: string): Promise<string | undefined> {
  const abs = resolve(path);
  for (const root of basename(abs) === ROOT_STORE_DIR ? [abs, dirname(abs)] : [abs]) {
    const hasStore = await stat(join(root, ROOT_STORE_DIR, STORE_FILE)).then((s) => s.isFile(), () => false);
    if (hasStore && (await recordedMode(root).catch(() => undefined)) !== undefined) return root;
  }
  return undefined;
}

export interface RootVerifyOptions {
  readonly signal?: AbortSignal;
  readonly readData?: boolean;
  readonly subset?: ReadDataSubset;
  readonly chunksOnly?: boolean;
  readonly onProgress?: (progress: VerifyProgress) => void;
}

/** Verifies every target of the server root `root` (serverRootOf) as the server would. */
export async function verifyServerRoot(root: string, options: RootVerifyOptions = {}): Promise<VerifyReport> {
  const signal = options.signal ?? new AbortController().signal;
  const storeOnly = (await recordedMode(root)) === 'store-only';
  const local = await LocalStore.open(join(root, ROOT_STORE_DIR), { create: false, signal });
  let store: LocalStore | HeldStore = local;
  try {
    if (!storeOnly) store = await HeldStore.open(local, { root, filesDir: join(root, 'files'), log: silentLogger, signal, readOnly: true });
    return await runVerifyJob({
      store, filesDir: storeOnly ? undefined : join(root, 'files'), path: '', readData: options.readData, subset: options.subset, chunksOnly: options.chunksOnly, signal, onProgress: options.onProgress,
    });
  } finally {
    await store.close();
  }
}
