/**
 * Applying a manifest entry's attributes to what a staging made (rsync -aHAX's metadata):
 * owner and group, extended attributes (POSIX ACLs among them), permission bits and the
 * mtime to the nanosecond. Which of them may be applied is an AttributePolicy: owners and
 * the privileged xattr namespaces only as root, and at a trust boundary (the server) never
 * security.* or trusted.* xattrs and never device nodes. docs/FORMAT.md, "Applying
 * attributes", is the user-facing statement of these rules.
 */
import type { BigIntStats } from 'node:fs';
import { chmod, lchown, lutimes } from 'node:fs/promises';
import { fromSystemError } from '../core/errors.js';
import { groupId, listXattrs, removeXattr, setTimesNs, setXattr, userId } from '../io/sys.js';
import { mtimeNsOf, type EntryMeta, type EntryXattr } from '../manifest/types.js';

export interface AttributeOptions {
  /** rsync --numeric-ids: owners by number only, never mapped through their names. */
  readonly numericIds?: boolean;
  /**
   * The receiver is a trust boundary (the server's copy of what a client pushed): never
   * security.* or trusted.* xattrs (security.capability grants privileges), never device nodes.
   */
  readonly untrusted?: boolean;
}

/** What a staging applies of the attributes a manifest records. */
export interface AttributePolicy {
  /** Owner and group are applied (only root may give files away). */
  readonly owners: boolean;
  readonly numericIds: boolean;
  /** Char and block device nodes are made. */
  readonly devices: boolean;
  /** Whether an xattr of this name is applied (and, on an existing file, removed when the entry lacks it). */
  xattr(name: string): boolean;
}

/** The xattrs only root may set (manifest/rules.ts records them); `user.*` is anyone's. */
const PRIVILEGED_XATTR_RE = /^(security\.|trusted\.|system\.posix_acl_(access|default)$)/;
/** Never applied at a trust boundary: security.capability would grant privileges, trusted.* is the administrator's. */
const UNTRUSTED_REFUSED_XATTR_RE = /^(security\.|trusted\.)/;

export function attributePolicy(options: AttributeOptions = {}): AttributePolicy {
  const root = process.getuid?.() === 0;
  const untrusted = options.untrusted === true;
  return {
    owners: root,
    numericIds: options.numericIds === true,
    devices: root && !untrusted,
    xattr: (name) => {
      if (name.startsWith('user.')) return true;
      if (!root || !PRIVILEGED_XATTR_RE.test(name)) return false;
      return !(untrusted && UNTRUSTED_REFUSED_XATTR_RE.test(name));
    },
  };
}

/**
 * What to give fs.utimes (and futimes, lutimes) so that the time stored is exactly `ms`
 * whole milliseconds. `ms / 1000` is rarely exact in binary, and libuv truncates the
 * nanoseconds it derives from it to whole microseconds, toward zero: 1700000000.123 s was
 * stored as ...122.999 ms, 1 µs early. A pull's quick check rounds that back, but a push
 * of the pulled copy truncates it to ...122 ms, a new mtime: every such file was read
 * again, rewritten at the destination and given a time 1 ms off. Half a microsecond away
 * from zero makes the truncation land on the millisecond (the double's own error is under
 * 0.25 µs for any time before 2^33 s, the year 2242). Node takes a negative number as
 * "now", but a numeric string as that number: a time before 1970 is passed as one.
 * Times with nanoseconds past the millisecond go through setTimes (utimensat) instead.
 */
export function utimeArg(ms: number): number | string {
  const s = ms / 1000 + (ms < 0 ? -UTIME_NUDGE_S : UTIME_NUDGE_S);
  return ms < 0 ? String(s) : s;
}

/** Half a microsecond (see utimeArg). */
const UTIME_NUDGE_S = 0.5e-6;

/** Name lookups are cached per process: a tree has few distinct owners. */
const uidByName = new Map<string, number | undefined>();
const gidByName = new Map<string, number | undefined>();

/**
 * The uid and gid to give an entry, rsync's way: the local id of the recorded name where
 * there is a name and it exists here (unless numericIds), else the recorded number; -1
 * (chown's "leave as is") where nothing is recorded or owners are not applied.
 */
export function localOwner(meta: EntryMeta, policy: AttributePolicy): { uid: number; gid: number } {
  if (!policy.owners) return { uid: -1, gid: -1 };
  let uid = meta.uid ?? -1;
  let gid = meta.gid ?? -1;
  if (!policy.numericIds && meta.owner !== undefined && uid !== -1) {
    if (!uidByName.has(meta.owner)) uidByName.set(meta.owner, userId(meta.owner));
    uid = uidByName.get(meta.owner) ?? uid;
  }
  if (!policy.numericIds && meta.group !== undefined && gid !== -1) {
    if (!gidByName.has(meta.group)) gidByName.set(meta.group, groupId(meta.group));
    gid = gidByName.get(meta.group) ?? gid;
  }
  return { uid, gid };
}

/** The xattrs of `meta` this policy applies. */
function wantedXattrs(meta: EntryMeta, policy: AttributePolicy): EntryXattr[] {
  return (meta.xattrs ?? []).filter((x) => policy.xattr(x.name));
}

/**
 * Applies `meta`'s attributes to `path` (not following a symlink): owner, xattrs, mode
 * (not for symlinks), then times (times last: nothing after them changes the mtime).
 * `parts` leaves out what the caller has already done. `existing`: the path held a file
 * before (linked from the old version), so xattrs it has and the entry lacks are removed.
 * `shown` is what messages name.
 */
export async function applyAttributes(
  path: string,
  meta: EntryMeta,
  policy: AttributePolicy,
  shown: string,
  parts: { readonly owner?: boolean; readonly mode?: boolean; readonly times?: boolean; readonly existing?: boolean } = {},
): Promise<void> {
  let step = 'set owner of';
  try {
    if (parts.owner !== false) {
      const { uid, gid } = localOwner(meta, policy);
      if (uid !== -1 || gid !== -1) await lchown(path, uid, gid);
    }
    step = 'set extended attributes of';
    applyXattrs(path, meta, policy, parts.existing === true);
    step = 'set mode of';
    if (parts.mode !== false && meta.type !== 'symlink') await chmod(path, meta.mode);
    step = 'set times of';
    if (parts.times !== false) await setTimes(path, meta);
  } catch (err) {
    throw fromSystemError(err, shown, step);
  }
}

/** Sets the wanted xattrs; with `existing`, first removes the ones the entry lacks. */
export function applyXattrs(path: string, meta: EntryMeta, policy: AttributePolicy, existing: boolean): void {
  const wanted = wantedXattrs(meta, policy);
  if (existing) {
    const keep = new Set(wanted.map((x) => x.name));
    for (const x of listXattrs(path)) if (policy.xattr(x.name) && !keep.has(x.name)) removeXattr(path, x.name);
  }
  for (const x of wanted) setXattr(path, x.name, Buffer.from(x.value));
}

/**
 * Sets atime and mtime to the entry's mtime, to the nanosecond: through utimensat where the
 * time has nanoseconds past the millisecond, else through lutimes, which lands on the
 * millisecond exactly (utimeArg) and costs no system-call helper.
 */
export async function setTimes(path: string, meta: EntryMeta): Promise<void> {
  if ((meta.mtimeExtraNs ?? 0) !== 0) {
    const ns = mtimeNsOf(meta);
    setTimesNs(path, ns, ns);
  } else await lutimes(path, utimeArg(meta.mtimeMs), utimeArg(meta.mtimeMs));
}

/**
 * Whether `path` (lstat'ed as `st`) already carries `meta`'s attributes as this policy
 * applies them: the mtime to the nanosecond, the mode (not for symlinks), owner and group
 * where applied, and exactly the wanted xattrs among the applicable ones.
 */
export function hasAttributes(path: string, st: BigIntStats, meta: EntryMeta, policy: AttributePolicy, mode = meta.mode): boolean {
  if (st.mtimeNs !== mtimeNsOf(meta)) return false;
  if (!st.isSymbolicLink() && Number(st.mode & 0o7777n) !== mode) return false;
  const { uid, gid } = localOwner(meta, policy);
  if ((uid !== -1 && BigInt(uid) !== st.uid) || (gid !== -1 && BigInt(gid) !== st.gid)) return false;
  return xattrsMatch(path, meta, policy);
}

/** Whether the applicable xattrs of `path` are exactly the wanted ones of `meta`. */
export function xattrsMatch(path: string, meta: EntryMeta, policy: AttributePolicy): boolean {
  const wanted = wantedXattrs(meta, policy);
  let have;
  try {
    have = listXattrs(path).filter((x) => policy.xattr(x.name));
  } catch {
    return false;
  }
  if (have.length !== wanted.length) return false;
  const byName = new Map(have.map((x) => [x.name, x.value]));
  return wanted.every((x) => byName.get(x.name)?.equals(x.value) === true);
}
