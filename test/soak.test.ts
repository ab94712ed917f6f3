import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { reportAgainstKnown } from './harness/known.js';
import { seedFrom } from './harness/rng.js';
import { runSoak } from './harness/soak.js';

const MiB = 1024 * 1024;
const KILL_POINTS = 20;
const PROXY_RUNS = 4;

/** Known failures of this short run on the current code (see test/harness/known.ts). */
const KNOWN = new Map<string, string>([
  [
    'tmpdir-empty',
    'a client killed (SIGKILL) mid-push or mid-pull leaves its $TMPDIR/xfer-push-* or xfer-pull-* directory, and the next run in the same TMPDIR does not remove it. ' +
      'Repro: TMPDIR=$(mktemp -d) xfer push <8 MiB file> <dir>/ & sleep 0.4; kill -9 $!; xfer push <same> <dir>/; ls $TMPDIR',
  ],
  [
    'no-staging-leftovers',
    'intermittent: once (seed 20261206, case 14, kill-client:push:local:file at 454 ms) a killed local push left .xfer-data.bin.<host>~<pid>-<hex>.tmp beside the target after its re-run completed; ' +
      'the re-run found the target already new (the kill came after the swap?) and so swept no orphans. Repro: rerun the soak with that seed',
  ],
  ['server-tmp-empty', 'a server killed (SIGKILL) during PUT /v1/manifests leaves <root>/tmp/manifest-*; the restarted server does not remove it'],
]);

describe('soak (short): kills, broken connections and a full disk', () => {
  it(`${KILL_POINTS} kill points, ${PROXY_RUNS} proxy runs, disk full: old or new version, a re-run completes, nothing left behind`, { timeout: 180_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-soak-test-'));
    try {
      const summary = await runSoak({ dir: join(dir, 'run'), seed: seedFrom(process.env.SOAK_SEED ?? '20261206'), killPoints: KILL_POINTS, proxyRuns: PROXY_RUNS, diskFull: true, diskFullBytes: { tmpfs: 16 * MiB, source: 24 * MiB }, fileBytes: 4 * MiB });
      let cases = 0;
      for (const [kind, tally] of summary.kinds) if (kind.startsWith('kill-')) cases += tally.count;
      assert.equal(cases, KILL_POINTS);
      assert.ok((summary.figures.struck ?? 0) >= KILL_POINTS / 4, `only ${summary.figures.struck} of ${KILL_POINTS} kills landed while the operation ran`);
      for (const n of summary.notes) t.diagnostic(n);
      await reportAgainstKnown(t, summary, KNOWN);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
