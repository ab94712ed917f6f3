import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { reportAgainstKnown, type KnownIssue } from './harness/known.js';
import { seedFrom } from './harness/rng.js';
import { runSoak } from './harness/soak.js';

const MiB = 1024 * 1024;
const KILL_POINTS = 20;
const PROXY_RUNS = 4;

/** Known failures of this short run on the current code (see test/harness/known.ts). */
const KNOWN: readonly KnownIssue[] = [
  {
    check: 'tmpdir-empty',
    why:
      'a client killed (SIGKILL) mid-push or mid-pull leaves its $TMPDIR/xfer-push-* or xfer-pull-* directory, and the next run in the same TMPDIR does not remove it. ' +
      'Repro: export TMPDIR=$(mktemp -d); xfer push <4 MiB file> <dir>/ & sleep 0.5; kill -9 $!; xfer push <same file> <dir>/; ls $TMPDIR',
  },
  {
    check: 'rerun-completes',
    match: /ENOTEMPTY.*\.xfer-[^']*\.partial\.old/,
    why:
      'a tree pull killed between its two renames (target -> .xfer-<name>.partial.old, staged -> target) or before removing the .old leaves .xfer-<name>.partial.old; every later pull of that tree then fails with exit 11 ENOTEMPTY. ' +
      'Repro: xfer pull <tree v1> out/; mkdir -p out/.xfer-tree.partial.old/a; touch out/.xfer-tree.partial.old/a/f; xfer pull <tree v2> out/',
  },
  {
    check: 'no-staging-leftovers',
    why:
      'a local push of a file the target already holds (unchanged, e.g. the re-run after a kill that came after the swap) leaves its staging copy .xfer-<name>.<host>~<pid>-<hex>.tmp beside the target; ' +
      'the next push that changes the target sweeps it (its pid is dead). Repro: xfer push f dest/; xfer push f dest/; ls -a dest',
  },
  {
    check: 'local-store-tmp-empty',
    why:
      'a local push killed while storing chunks leaves <dest>/.xfer/tmp/<pid>-<hex>-<n>.tmp; the store removes such files only once they are an hour old (STALE_TEMP_AGE_MS), though the name says its writer is dead. ' +
      'Repro: xfer push <4 MiB file> dest/ & sleep 0.5; kill -9 $!; xfer push <same> dest/; ls dest/.xfer/tmp',
  },
  {
    check: 'server-alive',
    why:
      'a client killed mid tree push once took the server down with it (seed 424243, case 88 of 200, kill at 447 ms): the stage crash of test/fuzz.test.ts (an unhandled AbortedError, here "the client closed the stage"); the re-run then finds no server',
  },
  { check: 'rerun-completes', match: /cannot reach/, why: 'the re-run after the server crash above: nothing listens any more' },
  { check: 'server-tmp-empty', why: 'a server killed (SIGKILL) during PUT /v1/manifests leaves <root>/tmp/manifest-*; the restarted server does not remove it' },
];

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
