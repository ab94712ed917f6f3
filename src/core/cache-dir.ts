/**
 * The user's cache directory for xfer: XDG_CACHE_HOME/xfer, or ~/.cache/xfer. Everything
 * kept there is a hint that saves work (pull snapshots, pushed manifests, zero-span
 * hashes), checked before it is used; losing it costs time, never correctness.
 */
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/** The directory; undefined where there is none to use (no absolute XDG_CACHE_HOME or home). */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, 'xfer');
  let home: string;
  try {
    home = env.HOME || homedir();
  } catch {
    return undefined;
  }
  return home && isAbsolute(home) ? join(home, '.cache', 'xfer') : undefined;
}
