/**
 * The arithmetic of `run.js --compare` (bench/run.ts runs the rounds): which build goes
 * first in a round, and the table of changes from each build's rows, round by round.
 */
import type { MacroRow } from './harness.js';
import { median } from './measure.js';

export type BuildLabel = 'this' | 'other';

/**
 * The order of the builds in round `round` (0-based): this then other in even rounds, other
 * then this in odd ones. Each build goes first in half the rounds, so what the first run of
 * a pair leaves behind (dirty pages, a warm cache, a busier machine) lands on both alike.
 */
export function roundOrder(round: number): readonly [BuildLabel, BuildLabel] {
  return round % 2 === 0 ? ['this', 'other'] : ['other', 'this'];
}

/** One compared row (scenario, tool). Percentages are (this / other - 1) * 100. */
export interface CompareRow {
  readonly scenario: string;
  readonly tool: string;
  /** Median wall seconds over the rounds, of each build. */
  readonly otherSeconds: number;
  readonly thisSeconds: number;
  /** Change of the medians. */
  readonly changePercent: number;
  /** Median of the per-round changes: each round's two runs ran minutes apart at most. */
  readonly pairedChangePercent: number;
  readonly perRoundChangePercent: readonly number[];
  /**
   * Median of the per-round changes of the timed client's CPU seconds (user + sys, its
   * threads included; not a server's): far less sensitive than wall time to load from other
   * processes, so a wall-time change the CPU does not show is more likely the machine's.
   */
  readonly cpuPairedChangePercent: number;
  readonly otherWalls: readonly number[];
  readonly thisWalls: readonly number[];
  readonly rounds: number;
}

const key = (r: MacroRow): string => `${r.scenario}\u0000${r.tool}`;

function byRow(rows: readonly MacroRow[]): Map<string, MacroRow[]> {
  const out = new Map<string, MacroRow[]>();
  for (const r of rows) out.set(key(r), [...(out.get(key(r)) ?? []), r]);
  return out;
}

const change = (a: number, b: number): number => (b / a - 1) * 100;

/**
 * The xfer rows both builds measured, in this build's order. `thisRows` and `otherRows`
 * hold each build's rows round after round (one run per row per round), so the i-th
 * occurrence of a row in each is round i's pair.
 */
export function compareRows(thisRows: readonly MacroRow[], otherRows: readonly MacroRow[]): CompareRow[] {
  const theirsByRow = byRow(otherRows);
  const table: CompareRow[] = [];
  for (const [k, mine] of byRow(thisRows)) {
    const theirs = theirsByRow.get(k);
    if (!mine[0]!.tool.startsWith('xfer') || theirs === undefined) continue;
    const otherWalls = theirs.map((r) => r.wallSeconds.median);
    const thisWalls = mine.map((r) => r.wallSeconds.median);
    const pairs = Math.min(mine.length, theirs.length);
    const perRound = thisWalls.slice(0, pairs).map((t, i) => change(otherWalls[i]!, t));
    const cpuPerRound = mine.slice(0, pairs).map((r, i) => change(theirs[i]!.cpuSecondsMedian, r.cpuSecondsMedian));
    const otherSeconds = median(otherWalls);
    const thisSeconds = median(thisWalls);
    table.push({
      scenario: mine[0]!.scenario,
      tool: mine[0]!.tool,
      otherSeconds,
      thisSeconds,
      changePercent: change(otherSeconds, thisSeconds),
      pairedChangePercent: median(perRound),
      perRoundChangePercent: perRound,
      cpuPairedChangePercent: median(cpuPerRound),
      otherWalls,
      thisWalls,
      rounds: pairs,
    });
  }
  return table;
}

const pct = (x: number): string => `${x >= 0 ? '+' : ''}${x.toFixed(1)}%`;

/** The table as printed: a header line, then one line per row. */
export function formatCompareTable(rows: readonly CompareRow[]): string[] {
  return [
    `${'scenario'.padEnd(28)} ${'tool'.padEnd(38)} ${'other s'.padStart(8)} ${'this s'.padStart(8)} ${'change'.padStart(7)} ${'paired'.padStart(7)} ${'cpu'.padStart(7)}  per round (this/other - 1)`,
    ...rows.map(
      (r) =>
        `${r.scenario.padEnd(28)} ${r.tool.padEnd(38)} ${r.otherSeconds.toFixed(2).padStart(8)} ${r.thisSeconds.toFixed(2).padStart(8)} ${pct(r.changePercent).padStart(7)} ${pct(r.pairedChangePercent).padStart(7)} ${pct(r.cpuPairedChangePercent).padStart(7)}  ${r.perRoundChangePercent.map(pct).join(' ')}`,
    ),
  ];
}
