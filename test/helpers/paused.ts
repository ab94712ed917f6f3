import type { ManifestStore } from '../../src/store/store.js';

/**
 * `store` with its putManifest held: a push through it runs to its commit, says so
 * (`atCommit` resolves), and commits only once `release()` is called. Everything else
 * passes through. For tests of what runs between a push's has() and its commit (gc).
 */
export function pausedAtCommit<S extends ManifestStore>(store: S): { store: S; atCommit: Promise<void>; release: () => void } {
  let arrived!: () => void;
  const atCommit = new Promise<void>((r) => (arrived = r));
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const paused = new Proxy(store, {
    get(target, key, receiver) {
      if (key === 'putManifest') {
        return async (...args: Parameters<ManifestStore['putManifest']>) => {
          arrived();
          await released;
          return target.putManifest(...args);
        };
      }
      const v = Reflect.get(target, key, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { store: paused, atCommit, release };
}
