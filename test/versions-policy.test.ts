/*
 * The retention policy of `xfer forget` (restic's rules, store/retention.ts), version
 * selectors (`@<id or time>`) and the versions' namespace, as pure functions with fixed times.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { applyPolicy, type RetentionPolicy } from '../src/store/retention.js';
import { isReservedName, validateManifestName, validateManifestPrefix, validateTargetName } from '../src/store/names.js';
import { parseVersionSelector, versionId, versionName } from '../src/store/versions.js';

/** Versions at these UTC times; returns the kept ones' times, oldest first. */
function kept(times: readonly string[], policy: RetentionPolicy): string[] {
  const versions = times.map((t) => ({ t, timeMs: Date.parse(t) }));
  return applyPolicy(versions, policy).filter((d) => d.keep).map((d) => d.version.t).sort();
}

// Two versions a day on 2026-11-28 .. 2026-12-06 (a Saturday to the next Sunday but one).
const DAYS = ['2026-11-28', '2026-11-29', '2026-11-30', '2026-12-01', '2026-12-02', '2026-12-03', '2026-12-04', '2026-12-05', '2026-12-06'];
const TWICE_DAILY = DAYS.flatMap((d) => [`${d}T08:00:00.000Z`, `${d}T20:00:00.000Z`]);

describe('forget policy (restic semantics)', () => {
  it('keep-last N keeps the N newest versions', () => {
    assert.deepEqual(kept(TWICE_DAILY, { last: 3 }), ['2026-12-05T20:00:00.000Z', '2026-12-06T08:00:00.000Z', '2026-12-06T20:00:00.000Z']);
  });

  it('keep-daily N keeps the newest version of each of the last N days that have versions', () => {
    const times = TWICE_DAILY.filter((t) => !t.startsWith('2026-12-05')); // a day without versions is skipped, not counted
    assert.deepEqual(kept(times, { daily: 3 }), ['2026-12-03T20:00:00.000Z', '2026-12-04T20:00:00.000Z', '2026-12-06T20:00:00.000Z']);
  });

  it('keep-weekly N keeps the newest of each ISO week (weeks start on Monday)', () => {
    // 2026-11-28/29 are in week 48, 2026-11-30 .. 12-06 in week 49.
    assert.deepEqual(kept(TWICE_DAILY, { weekly: 2 }), ['2026-11-29T20:00:00.000Z', '2026-12-06T20:00:00.000Z']);
  });

  it('keep-monthly N keeps the newest of each month', () => {
    assert.deepEqual(kept(TWICE_DAILY, { monthly: 2 }), ['2026-11-30T20:00:00.000Z', '2026-12-06T20:00:00.000Z']);
  });

  it('a rule with count left at the oldest version keeps the oldest too (restic keeps the longest history)', () => {
    assert.deepEqual(kept(['2026-12-05T08:00:00.000Z', '2026-12-06T08:00:00.000Z'], { daily: 5 }), ['2026-12-05T08:00:00.000Z', '2026-12-06T08:00:00.000Z']);
    assert.deepEqual(kept(['2026-12-06T07:00:00.000Z', '2026-12-06T08:00:00.000Z', '2026-12-06T09:00:00.000Z'], { daily: 2 }), ['2026-12-06T07:00:00.000Z', '2026-12-06T09:00:00.000Z']);
  });

  it('rules combine: a version is kept if any rule keeps it, with each rule named', () => {
    const decisions = applyPolicy(TWICE_DAILY.map((t) => ({ timeMs: Date.parse(t) })), { last: 2, daily: 2, monthly: 2 });
    const reasons = decisions.filter((d) => d.keep).map((d) => [new Date(d.version.timeMs).toISOString(), d.reasons.join(',')]);
    assert.deepEqual(reasons, [
      ['2026-12-06T20:00:00.000Z', 'current,last,daily,monthly'],
      ['2026-12-06T08:00:00.000Z', 'last'],
      ['2026-12-05T20:00:00.000Z', 'daily'],
      ['2026-11-30T20:00:00.000Z', 'monthly'],
    ]);
  });

  it('the newest version (the current manifest) is always kept, whatever the policy', () => {
    assert.deepEqual(kept(TWICE_DAILY, {}), ['2026-12-06T20:00:00.000Z']);
    assert.deepEqual(kept(TWICE_DAILY, { last: 0, daily: 0 }), ['2026-12-06T20:00:00.000Z']);
  });
});

describe('version selectors and names', () => {
  const digest = Buffer.from('1a2b3c4d'.padEnd(64, '0'), 'hex');

  it('a version id is the UTC commit time to the ms and 8 hex digits of the digest, sortable as text', () => {
    assert.equal(versionId(Date.parse('2026-12-06T15:04:05.123Z'), digest), '2026-12-06T15:04:05.123Z-1a2b3c4d');
    assert.ok(versionId(Date.parse('2026-12-06T09:00:00Z'), digest) < versionId(Date.parse('2026-12-06T10:00:00Z'), digest));
  });

  it('parses ids, and times to the day, minute, second or ms, each meaning the end of what it names', () => {
    assert.deepEqual(parseVersionSelector('2026-12-06T15:04:05.123Z-1a2b3c4d'), { id: '2026-12-06T15:04:05.123Z-1a2b3c4d' });
    assert.deepEqual(parseVersionSelector('2026-12-06'), { atOrBeforeMs: Date.parse('2026-12-06T23:59:59.999Z') });
    assert.deepEqual(parseVersionSelector('2026-12-06T15:04'), { atOrBeforeMs: Date.parse('2026-12-06T15:04:59.999Z') });
    assert.deepEqual(parseVersionSelector('2026-12-06T15:04:05Z'), { atOrBeforeMs: Date.parse('2026-12-06T15:04:05.999Z') });
    assert.deepEqual(parseVersionSelector('2026-12-06T15:04:05.120'), { atOrBeforeMs: Date.parse('2026-12-06T15:04:05.120Z') });
    for (const bad of ['', 'yesterday', '2026-13-01', '2026-02-30', '2026-12-06T24:00', '2026-12-06T15:04:05.123Z-xyz', 'v1']) {
      assert.equal(parseVersionSelector(bad), undefined, bad);
    }
  });

  it('versions live in a reserved namespace that stores accept and target names never enter', () => {
    // A target's key: the first 32 hex digits of the SHA-256 of its name (fixed length at any name's length).
    const key = createHash('sha256').update('photos/2026').digest('hex').slice(0, 32);
    const v = versionName('photos/2026', '2026-12-06T15:04:05.123Z-1a2b3c4d');
    assert.equal(v, `.xfer/versions/${key}/2026-12-06T15:04:05.123Z-1a2b3c4d`);
    assert.equal(versionName('p'.repeat(255), '2026-12-06T15:04:05.123Z-1a2b3c4d').length, v.length);
    assert.equal(validateManifestName(v), v);
    assert.ok(isReservedName(v));
    assert.throws(() => validateTargetName(v), /reserved segment/);
    assert.equal(validateManifestPrefix(`.xfer/versions/${key}/`), `.xfer/versions/${key}/`);
    // Only exactly that form: anything else with a '.xfer' segment stays refused everywhere.
    for (const bad of ['.xfer/x', `.xfer/versions/${key}`, `.xfer/versions/${key}/not-an-id`, '.xfer/versions/photos/2026-12-06T15:04:05.123Z-1a2b3c4d', `.xfer/versions/${key}/x/2026-12-06T15:04:05.123Z-1a2b3c4d`, `a/.xfer/versions/${key}/2026-12-06T15:04:05.123Z-1a2b3c4d`]) {
      assert.throws(() => validateManifestName(bad), /invalid manifest name/, bad);
    }
  });
});
