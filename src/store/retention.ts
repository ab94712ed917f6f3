/**
 * The retention policy of `xfer forget`, with restic's words and semantics (restic's
 * internal/restic/snapshot_policy.go, ApplyPolicy): the versions are walked newest first;
 * each rule has a count and a bucket function (keep-last: every version its own bucket;
 * keep-daily: the UTC day; keep-weekly: the ISO week; keep-monthly: the month). A version
 * is kept when, for some rule with count left, it opens a new bucket (it is the newest
 * version of that day, week, ...); keeping it spends one of that rule's count. As restic
 * does, when a rule still has count left at the oldest version, the oldest is kept too
 * (it keeps the history as long as the policy allows). Times are UTC (restic's are the
 * snapshot's local time): a version's time is its id's, which is UTC.
 * xfer's own rule on top: the newest version, the target's current manifest, is always kept.
 */

/** `--keep-*` counts: how many buckets of each kind to keep a version in. Absent or 0: none. */
export interface RetentionPolicy {
  readonly last?: number;
  readonly daily?: number;
  readonly weekly?: number;
  readonly monthly?: number;
}

/** The decision for one version, with the rules that kept it (`last`, `daily`, ... or `current`). */
export interface RetentionDecision<T> {
  readonly version: T;
  readonly keep: boolean;
  readonly reasons: readonly string[];
}

type Bucket = (timeMs: number, index: number) => number;

const BUCKETS: readonly { readonly rule: keyof RetentionPolicy; readonly bucket: Bucket }[] = [
  { rule: 'last', bucket: (_t, index) => index },
  { rule: 'daily', bucket: (t) => { const d = new Date(t); return d.getUTCFullYear() * 10_000 + (d.getUTCMonth() + 1) * 100 + d.getUTCDate(); } },
  { rule: 'weekly', bucket: (t) => isoWeek(t) },
  { rule: 'monthly', bucket: (t) => { const d = new Date(t); return d.getUTCFullYear() * 100 + d.getUTCMonth() + 1; } },
];

/** Whether a policy keeps anything by rule (a forget without one is refused: it would remove all but the current). */
export function isEmptyPolicy(policy: RetentionPolicy): boolean {
  return BUCKETS.every(({ rule }) => !policy[rule]);
}

/**
 * Applies `policy` to `versions` (any order; `timeMs` of each) and returns the decisions,
 * newest first. Pure: tests give fixed times.
 */
export function applyPolicy<T extends { readonly timeMs: number }>(versions: readonly T[], policy: RetentionPolicy): RetentionDecision<T>[] {
  const sorted = [...versions].sort((a, b) => b.timeMs - a.timeMs);
  const state = BUCKETS.map(({ rule, bucket }) => ({ rule, bucket, count: policy[rule] ?? 0, last: NaN }));
  return sorted.map((version, index) => {
    const reasons: string[] = index === 0 ? ['current'] : [];
    for (const s of state) {
      if (s.count <= 0) continue;
      const value = s.bucket(version.timeMs, index);
      if (value !== s.last || index === sorted.length - 1) {
        s.last = value;
        s.count--;
        reasons.push(s.rule);
      }
    }
    return { version, keep: reasons.length > 0, reasons };
  });
}

/** The ISO 8601 week of a UTC time, as year * 100 + week (restic's `t.ISOWeek()`). */
function isoWeek(timeMs: number): number {
  const d = new Date(timeMs);
  const day = (d.getUTCDay() + 6) % 7; // Monday 0 ... Sunday 6
  // The Thursday of this week decides the year the week belongs to.
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - day + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return year * 100 + week;
}
