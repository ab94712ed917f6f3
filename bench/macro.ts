import { spawnSync } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeRandomFile } from '../test/helpers/cli.js';
import { median, timed, type Run } from './measure.js';
import { runRemote } from './remote.js';

const XFER = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

export interface MacroRow {
  readonly scenario: string;
  readonly tool: string;
  readonly runs: number;
  readonly wallSeconds: { median: number; min: number; max: number };
  readonly cpuSecondsMedian: number;
  readonly maxRssMiB: number;
  readonly mbPerSecond: number;
}

export interface MacroOptions {
  readonly work: string;
  readonly sizeBytes: number;
  readonly runs: number;
  readonly tools: Set<string>;
  readonly log: (s: string) => void;
  /** Also run the loopback scenarios (xfer serve vs rsync daemon, restores). */
  readonly remote: boolean;
  /** Only the loopback scenarios. */
  readonly remoteOnly: boolean;
}

function row(scenario: string, tool: string, runs: Run[], bytes: number): MacroRow {
  const walls = runs.map((r) => r.wallSeconds);
  const m = median(walls);
  return {
    scenario,
    tool,
    runs: runs.length,
    wallSeconds: { median: m, min: Math.min(...walls), max: Math.max(...walls) },
    cpuSecondsMedian: median(runs.map((r) => r.cpuSeconds)),
    maxRssMiB: Math.max(...runs.map((r) => r.maxRssMiB)),
    mbPerSecond: bytes / m / 1e6,
  };
}

/** A way to run one tool in one scenario: prepare() (untimed) then the timed command. */
interface Contender {
  readonly tool: string;
  prepare(): Promise<void>;
  command(): [string, string[], NodeJS.ProcessEnv?];
}

/**
 * Runs contenders alternately (xfer, peer, xfer, peer, ...) so drift in the machine's state
 * affects all alike; returns one row per contender.
 */
async function alternate(scenario: string, contenders: Contender[], runs: number, bytes: number, log: (s: string) => void): Promise<MacroRow[]> {
  const results = new Map<string, Run[]>(contenders.map((c) => [c.tool, []]));
  for (let i = 0; i < runs; i++) {
    for (const c of contenders) {
      await c.prepare();
      const [cmd, args, env] = c.command();
      results.get(c.tool)!.push(await timed(cmd, args, env));
    }
  }
  const rows = contenders.map((c) => row(scenario, c.tool, results.get(c.tool)!, bytes));
  for (const r of rows) {
    log(`  ${scenario.padEnd(22)} ${r.tool.padEnd(22)} ${r.wallSeconds.median.toFixed(2).padStart(7)} s (min ${r.wallSeconds.min.toFixed(2)}, max ${r.wallSeconds.max.toFixed(2)})  ${r.mbPerSecond.toFixed(0).padStart(6)} MB/s  cpu ${r.cpuSecondsMedian.toFixed(2)} s  rss ${r.maxRssMiB.toFixed(0)} MiB`);
  }
  return rows;
}

/** Warm the page cache: the bar is measured with the file in page cache. */
function warm(path: string): void {
  spawnSync('sh', ['-c', `cat '${path}' > /dev/null`]);
}

export async function runMacro(o: MacroOptions): Promise<MacroRow[]> {
  await mkdir(o.work, { recursive: true });
  const src = join(o.work, `random-${o.sizeBytes}.bin`);
  const exists = await stat(src).then((s) => s.size === o.sizeBytes, () => false);
  if (!exists) {
    o.log(`generating ${src}`);
    await writeRandomFile(src, o.sizeBytes, 2026);
  }
  warm(src);
  const rows: MacroRow[] = [];
  if (o.remoteOnly) return runRemote({ work: o.work, src, sizeBytes: o.sizeBytes, runs: o.runs, tools: o.tools, log: o.log });
  const dest = (name: string) => join(o.work, name);
  const fresh = (p: string) => async () => {
    await rm(p, { recursive: true, force: true });
    warm(src);
  };

  o.log('physical limits');
  const limits: Contender[] = [{ tool: 'cat > /dev/null', prepare: async () => {}, command: () => ['sh', ['-c', `cat '${src}' > /dev/null`]] }];
  if (o.tools.has('b3sum')) limits.push({ tool: 'b3sum (2 threads)', prepare: async () => {}, command: () => ['b3sum', ['--num-threads', '2', src]] });
  rows.push(...(await alternate('limits', limits, o.runs, o.sizeBytes, o.log)));

  o.log('chunk and hash (xfer chunk, BLAKE3)');
  rows.push(...(await alternate('chunk', [{ tool: 'xfer chunk', prepare: async () => {}, command: () => [process.execPath, [XFER, 'chunk', src, '--json']] }], o.runs, o.sizeBytes, o.log)));

  o.log('first copy into an empty destination');
  const firstCopy: Contender[] = [
    { tool: 'xfer push (local)', prepare: fresh(dest('xfer-dest')), command: () => [process.execPath, [XFER, 'push', src, `${dest('xfer-dest')}/`, '--json']] },
  ];
  if (o.tools.has('casync')) {
    firstCopy.push({
      tool: 'casync make',
      prepare: fresh(dest('casync')),
      command: () => ['sh', ['-c', `mkdir -p '${dest('casync')}' && casync make --store='${dest('casync')}/store' '${dest('casync')}/index.caibx' '${src}'`]],
    });
  }
  if (o.tools.has('restic')) {
    firstCopy.push({
      tool: 'restic backup',
      prepare: async () => {
        await fresh(dest('restic'))();
        spawnSync('restic', ['init', '--repo', dest('restic')], { env: { ...process.env, RESTIC_PASSWORD: 'bench' }, stdio: 'ignore' });
      },
      command: () => ['restic', ['backup', '--repo', dest('restic'), '--no-cache', '--quiet', src], { RESTIC_PASSWORD: 'bench' }],
    });
  }
  if (o.tools.has('borg')) {
    firstCopy.push({
      tool: 'borg create',
      prepare: async () => {
        await fresh(dest('borg'))();
        spawnSync('borg', ['init', '--encryption', 'none', dest('borg')], { env: { ...process.env, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes' }, stdio: 'ignore' });
      },
      command: () => ['borg', ['create', '--compression', 'none', `${dest('borg')}::a`, src], { BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' }],
    });
  }
  rows.push(...(await alternate('push to empty', firstCopy, o.runs, o.sizeBytes, o.log)));
  for (const p of ['xfer-dest', 'casync', 'restic', 'borg']) await rm(dest(p), { recursive: true, force: true });
  if (o.remote) rows.push(...(await runRemote({ work: o.work, src, sizeBytes: o.sizeBytes, runs: o.runs, tools: o.tools, log: o.log })));
  return rows;
}
