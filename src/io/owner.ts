import { hostname } from 'node:os';

/**
 * Who owns a temporary thing (a temp directory, a lock): `<host>~<pid>`, put in its name
 * or its content. A process killed with kill -9, or by a power loss, cannot remove what
 * it made; a later process on the same host removes what belongs to a dead pid. Another
 * host's (a shared volume) are never touched; a live process that reuses a dead one's
 * pid only delays the removal.
 */
export const OWNER_HOST = hostname().replace(/[^A-Za-z0-9_.-]/g, '_');
export const OWNER_TAG = `${OWNER_HOST}~${process.pid}`;

/** Whether process `pid` exists on this host (EPERM: it does, someone else's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid of an owner tag (`<host>~<pid>`), if the tag is this host's. */
export function localOwnerPid(tag: string): number | undefined {
  const head = `${OWNER_HOST}~`;
  if (!tag.startsWith(head)) return undefined;
  const pid = Number(tag.slice(head.length));
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** Whether `tag` names a process of this host that is gone (never true for another host's). */
export function ownerGone(tag: string): boolean {
  const pid = localOwnerPid(tag);
  return pid !== undefined && pid !== process.pid && !processAlive(pid);
}
