/**
 * `npm run bench [-- --micro | --macro] [--only a,b,c,d,e,f] [--local | --remote-only]
 *                [--size 2G] [--runs 3] [--work DIR] [--scale 1T [--scale-push]]`
 *
 * Micro suites (benny) and macro scenarios against peers, alternating runs; prints tables,
 * writes bench/results/<timestamp>.json and the Markdown report with SVG charts beside it
 * (bench/report.ts). Never part of npm test.
 *
 * Macro scenarios (letters as in the benchmark issue):
 *   a  chunk + hash, with the physical limits (cat, b3sum)
 *   b  first copy: local push vs casync/restic/borg; loopback push vs rsync daemon
 *      (bench/macro.ts, bench/remote.ts; the loopback part also times the 200-edit
 *      incremental, the restore into an empty dir and the unchanged pull)
 *   c  incremental copy of a disk image after scattered edits, an insertion, a deletion
 *   d  restore into an empty destination and with the previous version as seed
 *      (c and d: bench/scenario-disk.ts)
 *   e  DICOM series and volume, original then anonymized (bench/scenario-dicom.ts)
 *   f  a tree with a few changes (bench/scenario-tree.ts)
 *   h  CDC against --fixed 64K on the disk image and its edits: bytes sent and throughput
 *      (bench/scenario-chunkers.ts; local; not in the default set: `--only h --size 256M`)
 *   g  the tree's base version pulled again, unchanged, from xfer serve vs an rsync daemon
 *      (bench/scenario-tree.ts; loopback, so not with --local; not in the default set:
 *      `--only g --size 256M` is the 7,643-file tree of the issue 13 bar)
 * --local skips everything over loopback; --remote-only runs only the loopback part of b.
 * --scale SIZE runs only the streaming scale run (bench/scale.ts) on a generated source.
 *
 * --xfer-only: no peers (casync, restic, borg, b3sum, rsync rows), xfer's rows only.
 *
 * --compare DIR: the no-slowdown check between two builds. DIR is another checkout of
 * xfer, built (`npm ci && npx tsc -p tsconfig.json`; its dist/src/cli/bin.js is timed), e.g.
 * the commit before a change:
 *   git worktree add /tmp/xfer-before <commit> && (cd /tmp/xfer-before && npm ci && npx tsc -p tsconfig.json)
 *   npm run bench -- --compare /tmp/xfer-before --only a,b,c,d --runs 7
 * Runs the selected macro scenarios (--only, --size, --local, --remote-only, --work as
 * usual; xfer rows only) once per build per round, `--runs` rounds, on the same inputs.
 * Both builds run under THIS build's harness (XFER_BENCH_CLI names the CLI timed), so they
 * differ only in the CLI and server measured. The order alternates round by round (this
 * then other, other then this, ...: each goes first in half the rounds, so drift and
 * whatever the first of a pair leaves behind land on both alike), and every timed run
 * starts with `sync` (bench/measure.ts). Prints, for every row, the median wall time of
 * each build, the change of the medians, the median of the per-round changes (each
 * round's pair ran minutes apart at most, so load from elsewhere mostly cancels in it),
 * and the same for the timed client's CPU seconds (load-insensitive; no server CPU).
 * (The arithmetic is bench/compare.ts.) Writes bench/results/compare/<timestamp>.json
 * (outside the merged report; the per-round results files are removed).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, totalmem, release, tmpdir } from 'node:os';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseSize } from '../src/core/sizes.js';
import { compareRows, formatCompareTable, roundOrder } from './compare.js';
import { summarize, type MacroRow } from './harness.js';
import type { Run } from './measure.js';
import { runMacro } from './macro.js';
import { ensureTools } from './measure.js';
import { runMicro, runMicroStorage } from './micro.js';
import { writeReport } from './report.js';
import { runScale } from './scale.js';
import { runDicom } from './scenario-dicom.js';
import { runChunkers } from './scenario-chunkers.js';
import { runDisk } from './scenario-disk.js';
import { runTree, runTreePullUnchanged } from './scenario-tree.js';

const { values } = parseArgs({
  options: {
    micro: { type: 'boolean', default: false },
    macro: { type: 'boolean', default: false },
    only: { type: 'string', default: 'a,b,c,d,e,f' },
    local: { type: 'boolean', default: false },
    'remote-only': { type: 'boolean', default: false },
    size: { type: 'string', default: '2G' },
    runs: { type: 'string', default: '3' },
    work: { type: 'string', default: join(tmpdir(), 'xfer-bench') },
    scale: { type: 'string' },
    'scale-push': { type: 'boolean', default: false },
    compare: { type: 'string' },
    'xfer-only': { type: 'boolean', default: false },
  },
});
const log = (s: string) => process.stdout.write(`${s}\n`);
const only = new Set(values.only!.split(',').map((s) => s.trim()));
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  node: process.version,
  machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memGiB: Math.round(totalmem() / 2 ** 30), kernel: release() },
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
};
const work = values.work!;
await mkdir(work, { recursive: true });
if (values.compare !== undefined) {
  await compareBuilds(values.compare);
  process.exit(0);
}
if (values.scale) {
  results.scale = await runScale({ sizeBytes: parseSize(values.scale, '--scale'), push: values['scale-push']!, log });
} else {
  const both = !values.micro && !values.macro;
  if (values.micro || both) {
    log('micro benchmarks');
    results.micro = [...(await runMicro(log)), ...(await runMicroStorage(log))];
  }
  if (values.macro || both) {
    // --xfer-only: no peers (what --compare runs: their rows are not compared, and their writes and time only add noise).
    const tools = ensureTools(log, !values['xfer-only']);
    const o = { work, sizeBytes: parseSize(values.size!, '--size'), runs: Number(values.runs), tools, log };
    log(`macro benchmarks (${values.size}, ${values.runs} runs each, alternating; peers: ${[...tools].join(', ') || 'none'})`);
    const rows: MacroRow[] = [];
    if (only.has('a') || only.has('b')) rows.push(...(await runMacro({ ...o, remote: !values.local, remoteOnly: values['remote-only']! })));
    if (!values['remote-only']) {
      if (only.has('c') || only.has('d')) rows.push(...(await runDisk({ ...o, incremental: only.has('c'), restore: only.has('d'), remote: !values.local })));
      if (only.has('e')) rows.push(...(await runDicom({ ...o, remote: !values.local })));
      if (only.has('f')) rows.push(...(await runTree({ ...o, remote: !values.local })));
      if (only.has('g') && !values.local) rows.push(...(await runTreePullUnchanged(o)));
      if (only.has('h')) rows.push(...(await runChunkers(o)));
    }
    results.macro = rows;
  }
}
const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
await mkdir(dir, { recursive: true });
const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
await writeFile(file, JSON.stringify(results, null, 2));
log(`results written to ${file}`);
log(`report written to ${await writeReport(file)}`);

/**
 * --compare: the selected macro rows of this build's CLI and of the CLI in `dir`, under this
 * build's harness, alternating round by round (see the top). Each round is one
 * `run.js --macro --xfer-only --runs 1` child per build, with XFER_BENCH_CLI set to its CLI.
 */
async function compareBuilds(dir: string): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const ownCli = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
  const otherCli = resolve(dir, 'dist', 'src', 'cli', 'bin.js');
  if (!existsSync(otherCli)) throw new Error(`--compare ${dir}: no dist/src/cli/bin.js there (build it: npm ci && npx tsc -p tsconfig.json)`);
  const rounds = Number(values.runs);
  if (!Number.isSafeInteger(rounds) || rounds < 1) throw new Error(`--runs: expected a positive integer, got ${values.runs}`);
  const args = ['--macro', '--xfer-only', '--only', values.only!, '--size', values.size!, '--runs', '1', '--work', work];
  if (values.local) args.push('--local');
  if (values['remote-only']) args.push('--remote-only');
  const builds = { this: { cli: ownCli, rows: [] as MacroRow[] }, other: { cli: otherCli, rows: [] as MacroRow[] } };
  log(`comparing ${ownCli} (this) with ${otherCli} (other), both under ${self}: ${rounds} rounds of ${args.join(' ')}`);
  log('order: odd rounds this then other, even rounds other then this; every timed run starts after a sync; xfer rows only');
  for (let round = 0; round < rounds; round++) {
    for (const label of roundOrder(round)) {
      log(`round ${round + 1}/${rounds}: ${label}`);
      builds[label].rows.push(...(await runRound(self, args, builds[label].cli)));
    }
  }
  const table = compareRows(builds.this.rows, builds.other.rows);
  log('');
  for (const line of formatCompareTable(table)) log(line);
  const key = (r: MacroRow) => `${r.scenario}\u0000${r.tool}`;
  const summary = (rows: MacroRow[]) => [...new Set(rows.map(key))].map((k) => {
    const of = rows.filter((r) => key(r) === k);
    const runs: Run[] = of.map((r) => ({ wallSeconds: r.wallSeconds.median, cpuSeconds: r.cpuSecondsMedian, maxRssMiB: r.maxRssMiB, stdout: '' }));
    return summarize(of[0]!.scenario, of[0]!.tool, runs, of[0]!.inputBytes);
  });
  const out = fileURLToPath(new URL('../../bench/results/compare/', import.meta.url));
  await mkdir(out, { recursive: true });
  const file = join(out, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const method = 'one harness (this build) for both CLIs; rounds alternate this-first and other-first; sync before every timed run; xfer rows only';
  await writeFile(file, JSON.stringify({ ...results, compare: { this: ownCli, other: otherCli, harness: self, method, rounds, rows: table, thisRows: summary(builds.this.rows), otherRows: summary(builds.other.rows) } }, null, 2));
  log(`comparison written to ${file}`);
}

/** One child `run.js` with `args`, timing the CLI `cli`; its macro rows. Its results file and report are removed. */
async function runRound(script: string, args: string[], cli: string): Promise<MacroRow[]> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, XFER_BENCH_CLI: cli } });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    process.stdout.write(d);
  });
  const code = await new Promise<number | null>((r) => child.on('close', r));
  const written = /results written to (\S+)/.exec(out)?.[1];
  // Its results are what counts: a report that fails after them (rows of a tiny --size) does not void the round.
  if (written === undefined) throw new Error(`${script} ${args.join(' ')} (XFER_BENCH_CLI=${cli}) exited ${code} before writing its results`);
  const rows = (JSON.parse(await readFile(written, 'utf8')) as { macro?: MacroRow[] }).macro ?? [];
  const stem = join(dirname(written), basename(written, '.json'));
  await Promise.all([rm(written, { force: true }), rm(`${stem}.md`, { force: true }), rm(stem, { recursive: true, force: true })]);
  return rows;
}
