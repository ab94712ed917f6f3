import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { compareRows, formatCompareTable, roundOrder } from '../bench/compare.js';
import type { MacroRow } from '../bench/harness.js';

/** A macro row of one run (what a `--runs 1` round reports). */
function row(tool: string, wall: number, cpu: number, scenario = 'first copy (loopback)'): MacroRow {
  return { scenario, tool, runs: 1, wallSeconds: { median: wall, min: wall, max: wall }, cpuSecondsMedian: cpu, maxRssMiB: 100, mbPerSecond: 1, inputBytes: 1 };
}

const XFER_ROW = 'xfer push -> xfer serve';

describe('bench --compare (bench/compare.ts, bench/harness.ts)', () => {
  it('each build goes first in every other round', () => {
    const orders = [0, 1, 2, 3].map(roundOrder);
    assert.deepEqual(orders, [
      ['this', 'other'],
      ['other', 'this'],
      ['this', 'other'],
      ['other', 'this'],
    ]);
  });

  it("pairs the builds' runs round by round: the paired change is the median of the per-round changes, beside the change of the medians", () => {
    // Round 2 ran on a loaded machine for both builds: the medians differ by 25%, each round's pair by 10% or less.
    const thisRows = [row(XFER_ROW, 2.2, 1.1), row(XFER_ROW, 5.5, 1.1), row(XFER_ROW, 2.4, 1.2)];
    const otherRows = [row(XFER_ROW, 2.0, 1.0), row(XFER_ROW, 5.0, 1.0), row(XFER_ROW, 2.4, 1.0)];
    const [r, ...rest] = compareRows(thisRows, otherRows);
    assert.equal(rest.length, 0);
    assert.equal(r!.rounds, 3);
    assert.deepEqual(r!.otherWalls, [2.0, 5.0, 2.4]);
    assert.deepEqual(r!.thisWalls, [2.2, 5.5, 2.4]);
    assert.ok(Math.abs(r!.changePercent - 0) < 1e-9, `medians 2.4 and 2.4: ${r!.changePercent}`);
    assert.deepEqual(r!.perRoundChangePercent.map((p) => Math.round(p * 10) / 10), [10, 10, 0]);
    assert.ok(Math.abs(r!.pairedChangePercent - 10) < 1e-9, `paired: ${r!.pairedChangePercent}`);
    assert.ok(Math.abs(r!.cpuPairedChangePercent - 10) < 1e-9, `cpu: ${r!.cpuPairedChangePercent}`);
    assert.match(formatCompareTable([r!])[1]!, /^first copy \(loopback\)\s+xfer push -> xfer serve\s+2\.40\s+2\.40\s+\+0\.0%\s+\+10\.0%\s+\+10\.0%\s+\+10\.0% \+10\.0% \+0\.0%$/);
  });

  it('compares only the xfer rows both builds measured', () => {
    const thisRows = [row(XFER_ROW, 2, 1), row('rsync -> rsync daemon', 1, 1), row('xfer chunk', 1, 1, 'chunk')];
    const otherRows = [row(XFER_ROW, 2, 1), row('rsync -> rsync daemon', 1, 1)];
    assert.deepEqual(
      compareRows(thisRows, otherRows).map((r) => r.tool),
      [XFER_ROW],
    );
  });

  it('XFER_BENCH_CLI names the CLI the harness times (both builds run under one harness); unset, it is this build\'s', () => {
    const harness = fileURLToPath(new URL('../bench/harness.js', import.meta.url));
    const xferOf = (env: NodeJS.ProcessEnv) =>
      execFileSync(process.execPath, ['--input-type=module', '-e', `import(${JSON.stringify(harness)}).then((m) => process.stdout.write(m.XFER))`], { env, encoding: 'utf8' });
    const { XFER_BENCH_CLI: _, ...without } = process.env;
    assert.equal(xferOf({ ...without, XFER_BENCH_CLI: '/tmp/xfer-other/dist/src/cli/bin.js' }), '/tmp/xfer-other/dist/src/cli/bin.js');
    assert.equal(xferOf(without), fileURLToPath(new URL('../src/cli/bin.js', import.meta.url)));
  });
});
