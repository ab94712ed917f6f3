import { randomBytes } from 'node:crypto';
import { link, mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { sleepUnlessAborted, throwIfAborted } from '../core/abort.js';
import { fromSystemError } from '../core/errors.js';
import { OWNER_TAG, ownerGone } from '../io/owner.js';
import { writeDurably } from './local/fs.js';

/** The first wait between attempts to take a held lock; doubled each time up to LOCK_MAX_POLL_MS. */
const LOCK_FIRST_POLL_MS = 20;
const LOCK_MAX_POLL_MS = 200;

/** A lock this process holds; release() is idempotent. */
export interface HeldLock {
  readonly file: string;
  release(): Promise<void>;
}

export interface LockOptions {
  readonly signal?: AbortSignal;
  /** Told once, when the lock is found held by a live process (`<host>~<pid>`) and the wait begins. */
  readonly onWait?: (holder: string) => void;
}

/**
 * Takes the exclusive lock `file`, waiting while another process holds it, as a second git
 * waits for index.lock... except that it waits instead of failing. Works across processes
 * (and hosts, on a shared filesystem): the lock is the file's existence, made with link(2),
 * which fails if the name exists and gives the file its content (`<host>~<pid> <token>`)
 * at once. A lock whose holder is a dead process of this host is broken; another host's
 * is waited for (onWait says by whom, so that a user can remove a stale one). The wait
 * ends with AbortedError when `signal` fires.
 */
export async function acquireLock(file: string, options: LockOptions = {}): Promise<HeldLock> {
  const { signal } = options;
  const content = `${OWNER_TAG} ${randomBytes(8).toString('hex')}\n`;
  const draft = `${file}.${OWNER_TAG}-${randomBytes(6).toString('hex')}.new`;
  let told = false;
  let pollMs = LOCK_FIRST_POLL_MS;
  try {
    await writeDraft(draft, content);
    await removeDeadDrafts(file);
    for (;;) {
      throwIfAborted(signal);
      try {
        await link(draft, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, file, 'take lock');
      }
      const holder = await readHolder(file);
      if (holder === undefined) continue; // released meanwhile
      if (ownerGone(holder.owner)) {
        await breakStale(file, holder.text);
        continue;
      }
      if (!told) options.onWait?.(holder.owner);
      told = true;
      await sleepUnlessAborted(pollMs, signal);
      pollMs = Math.min(LOCK_MAX_POLL_MS, pollMs * 2);
    }
  } finally {
    await unlink(draft).catch(() => {});
  }
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      // Only our own: never a lock another process took after ours was broken.
      if ((await readHolder(file))?.text === content) await unlink(file).catch(() => {});
    },
  };
}

/** `<lock>.<host>~<pid>-<random>.new` or `.stale`: a draft or a lock moved aside, with its owner. */
const SIDE_FILE_RE = /^\.([^~]+~\d+)-[0-9a-f]+\.(?:new|stale)$/;

/**
 * Removes the drafts (and stale locks moved aside) of `file` left by processes of this host
 * that were killed while they waited or broke a lock. Best effort: a leftover is harmless.
 */
async function removeDeadDrafts(file: string): Promise<void> {
  const dir = dirname(file);
  const base = basename(file);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const owner = name.startsWith(base) ? SIDE_FILE_RE.exec(name.slice(base.length))?.[1] : undefined;
    if (owner && ownerGone(owner)) await unlink(join(dir, name)).catch(() => {});
  }
}

/**
 * The draft, in the lock's directory (made if missing), written durably: a lock linked from
 * it is never found empty after a power loss (no owner to judge dead, waited on for ever).
 */
async function writeDraft(draft: string, content: string): Promise<void> {
  await mkdir(dirname(draft), { recursive: true }).catch((e: unknown) => {
    throw fromSystemError(e, dirname(draft), 'create lock directory');
  });
  await writeDurably(draft, [Buffer.from(content)], undefined);
}

/** The lock's content and its owner tag; undefined if there is no lock. */
async function readHolder(file: string): Promise<{ text: string; owner: string } | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromSystemError(err, file, 'read lock');
  }
  return { text, owner: text.split(' ')[0] ?? '' };
}

/**
 * Removes a dead holder's lock whose content was `seen`. Two processes may find the same
 * stale lock: each moves it aside under a name of its own, and removes what it moved only
 * if that is still the stale lock. One that moved a live lock (taken after the other broke
 * the stale one) puts it back.
 */
async function breakStale(file: string, seen: string): Promise<void> {
  const aside = `${file}.${OWNER_TAG}-${randomBytes(6).toString('hex')}.stale`;
  try {
    await rename(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // broken or released meanwhile
    throw fromSystemError(err, file, 'break stale lock');
  }
  try {
    const moved = await readFile(aside, 'utf8');
    if (moved !== seen) await link(aside, file).catch(() => {});
  } finally {
    await unlink(aside).catch(() => {});
  }
}
