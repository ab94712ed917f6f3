import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { reportAgainstKnown, type KnownIssue } from './harness/known.js';
import { seedFrom } from './harness/rng.js';
import { runSoak } from './harness/soak.js';

const MiB = 1024 * 1024;
const KILL_POINTS = 12;
const PROXY_RUNS = 4;

/** Known failures of this short run on the current code (see test/harness/known.ts). */
const KNOWN: readonly KnownIssue[] = [];

describe('soak (short): kills, broken connections and a full disk', () => {
  it(`${KILL_POINTS} kill points, ${PROXY_RUNS} proxy runs, disk full: old or new version, a re-run completes, nothing left behind`, { timeout: 180_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-soak-test-'));
    try {
      const summary = await runSoak({ dir: join(dir, 'run'), seed: seedFrom(process.env.SOAK_SEED ?? '20261206'), killPoints: KILL_POINTS, proxyRuns: PROXY_RUNS, proxyMaxFaults: 1, diskFull: true, diskFullBytes: { tmpfs: 8 * MiB, source: 12 * MiB }, fileBytes: 4 * MiB });
      let cases = 0;
      for (const [kind, tally] of summary.kinds) if (kind.startsWith('kill-')) cases += tally.count;
      assert.equal(cases, KILL_POINTS);
      assert.ok((summary.figures.struck ?? 0) >= KILL_POINTS / 4, `only ${summary.figures.struck} of ${KILL_POINTS} kills landed while the operation ran`);
      await reportAgainstKnown(t, summary, KNOWN);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
