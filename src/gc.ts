/*
 * The library's gc over any location (endpoint/registry.ts): a local destination's store,
 * an S3 store, a server (which collects its own store), a store object. The work is the
 * store's (store/gc.ts and each store's collectGarbage).
 */
import { InvalidArgumentError } from './core/errors.js';
import { checkBoolean } from './core/options.js';
import { holdsStore, openLocalStore, STORE_DIR_NAME } from './endpoint/local.js';
import { openStoreLocation, parseLocation, refuseWireOptions, type LocationSpec } from './endpoint/open.js';
import type { LocationOptions } from './inspect.js';
import { collectGarbage, DEFAULT_GC_GRACE_MS, DEFAULT_MAX_UNUSED_PERCENT } from './store/gc.js';
import type { GcRun } from './store/store.js';

export interface GcLocationOptions extends LocationOptions {
  /** Change nothing; report what would be done. */
  readonly dryRun?: boolean;
  /** Repack packs more than this share unused (0-100); DEFAULT_MAX_UNUSED_PERCENT. */
  readonly maxUnusedPercent?: number;
  /** How long a marked pack is kept before a gc deletes it; DEFAULT_GC_GRACE_MS. 0: at once (no push may be running). */
  readonly graceMs?: number;
  /** The time gc takes as now (tests). */
  readonly nowMs?: number;
}

/**
 * Collects the garbage of the store at `location` (a destination directory holding
 * `.xfer/`, a store URL or object naming the store itself, not a target in it).
 */
export async function gc(location: LocationSpec, options: GcLocationOptions = {}): Promise<GcRun> {
  checkBoolean(options, 'dryRun');
  const { signal } = options;
  const gcOptions = {
    signal,
    dryRun: options.dryRun === true,
    maxUnusedPercent: options.maxUnusedPercent ?? DEFAULT_MAX_UNUSED_PERCENT,
    graceMs: options.graceMs ?? DEFAULT_GC_GRACE_MS,
    ...(options.nowMs === undefined ? {} : { nowMs: options.nowMs }),
  };
  const parsed = parseLocation(location, 'the store to collect');
  if (parsed.kind === 'store') {
    if (parsed.path !== '') throw new InvalidArgumentError(`${parsed.text}: gc collects a whole store: name the store, not a target in it`);
    const endpoint = await openStoreLocation(parsed, options);
    try {
      return await collectGarbage(endpoint.store, gcOptions);
    } finally {
      await endpoint.close();
    }
  }
  refuseWireOptions(parsed, options);
  if (!(await holdsStore(parsed.path))) {
    throw new InvalidArgumentError(`${parsed.text}: gc collects a whole store: name the destination directory that holds ${STORE_DIR_NAME}/, not a target in it`);
  }
  const store = await openLocalStore(parsed.path, { signal });
  try {
    return await collectGarbage(store, gcOptions);
  } finally {
    await store.close();
  }
}
