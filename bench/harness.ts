/**
 * The shared shape of every macro scenario: one row per (scenario, tool), measured by
 * running contenders alternately, and the servers the loopback scenarios talk to.
 * Scenario modules (bench/scenario-*.ts) build Contender lists and call alternate().
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, timed, type Run } from './measure.js';

/**
 * The CLI under test: this build's (compiled), or the one named by XFER_BENCH_CLI. `--compare`
 * sets it to time another build's CLI with this build's harness: both builds then get the
 * same inputs, preparation, syncs and measurement (running the other build's own bench/
 * would compare two harnesses as well as two CLIs).
 */
export const XFER = process.env.XFER_BENCH_CLI ?? fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

/**
 * One measured (scenario, tool) pair. `inputBytes` is the logical size the scenario moves
 * (what mbPerSecond is computed from); `sentBytesMedian` is what the tool reports it put on
 * the wire or into its store (xfer: chunk payload bytes; rsync: literal data; casync/restic/
 * borg: bytes added to the store), when the scenario measures it.
 */
export interface MacroRow {
  readonly scenario: string;
  readonly tool: string;
  readonly runs: number;
  readonly wallSeconds: { median: number; min: number; max: number };
  readonly cpuSecondsMedian: number;
  readonly maxRssMiB: number;
  readonly mbPerSecond: number;
  readonly inputBytes: number;
  readonly sentBytesMedian?: number;
  /** What sentBytesMedian counts, for the report ("chunk bytes sent", "literal data", ...). */
  readonly sentLabel?: string;
}

/** Options every macro scenario receives. */
export interface ScenarioOptions {
  /** Scratch directory for inputs and destinations (created; large). */
  readonly work: string;
  /** Input size in bytes (the scenario may round it to what its generator supports). */
  readonly sizeBytes: number;
  readonly runs: number;
  /** Peer commands available (casync, restic, borg, b3sum, rsync). */
  readonly tools: Set<string>;
  readonly log: (s: string) => void;
}

/** A way to run one tool in one scenario: prepare() (untimed), the timed command, then sent(). */
export interface Contender {
  readonly tool: string;
  prepare(): Promise<void>;
  command(): [string, string[], NodeJS.ProcessEnv?];
  /** Bytes this run sent or stored, from its stdout or by looking at its destination. */
  sent?(run: Run): number | Promise<number>;
  readonly sentLabel?: string;
}

export function summarize(scenario: string, tool: string, runs: Run[], inputBytes: number, sent: number[] = [], sentLabel?: string): MacroRow {
  const walls = runs.map((r) => r.wallSeconds);
  const m = median(walls);
  return {
    scenario,
    tool,
    runs: runs.length,
    wallSeconds: { median: m, min: Math.min(...walls), max: Math.max(...walls) },
    cpuSecondsMedian: median(runs.map((r) => r.cpuSeconds)),
    maxRssMiB: Math.max(...runs.map((r) => r.maxRssMiB)),
    mbPerSecond: inputBytes / m / 1e6,
    inputBytes,
    ...(sent.length ? { sentBytesMedian: median(sent), ...(sentLabel ? { sentLabel } : {}) } : {}),
  };
}

export function logRow(r: MacroRow, log: (s: string) => void): void {
  const sent = r.sentBytesMedian !== undefined ? `  ${r.sentLabel ?? 'sent'} ${(r.sentBytesMedian / 1e6).toFixed(2)} MB` : '';
  log(
    `  ${r.scenario.padEnd(28)} ${r.tool.padEnd(28)} ${r.wallSeconds.median.toFixed(2).padStart(7)} s (min ${r.wallSeconds.min.toFixed(2)}, max ${r.wallSeconds.max.toFixed(2)})  ${r.mbPerSecond.toFixed(0).padStart(6)} MB/s  cpu ${r.cpuSecondsMedian.toFixed(2)} s  rss ${r.maxRssMiB.toFixed(0)} MiB${sent}`,
  );
}

/**
 * Runs contenders alternately (xfer, peer, xfer, peer, ...) so drift in the machine's state
 * affects all alike; returns one row per contender, in the order given.
 */
export async function alternate(scenario: string, contenders: Contender[], runs: number, inputBytes: number, log: (s: string) => void): Promise<MacroRow[]> {
  const results = new Map<string, { runs: Run[]; sent: number[] }>(contenders.map((c) => [c.tool, { runs: [], sent: [] }]));
  for (let i = 0; i < runs; i++) {
    for (const c of contenders) {
      await c.prepare();
      const [cmd, args, env] = c.command();
      const run = await timed(cmd, args, env);
      const r = results.get(c.tool)!;
      r.runs.push(run);
      if (c.sent) r.sent.push(await c.sent(run));
    }
  }
  const rows = contenders.map((c) => summarize(scenario, c.tool, results.get(c.tool)!.runs, inputBytes, results.get(c.tool)!.sent, c.sentLabel));
  for (const r of rows) logRow(r, log);
  return rows;
}

/** Warms the page cache with these files or trees: the bars are measured with inputs cached. */
export function warm(...paths: string[]): void {
  spawnSync('sh', ['-c', `find ${paths.map((p) => `'${p}'`).join(' ')} -type f -exec cat {} + > /dev/null`]);
}

/** Literal bytes rsync sent, from `rsync --stats` output. */
export const rsyncLiteral = (out: string): number => Number((/Literal data: ([\d,.]+)/.exec(out)?.[1] ?? '0').replace(/[,.]/g, ''));

/** The `bytesSent` (push) or `bytesReceived` (pull) field of an `xfer ... --json` run. */
export const xferSent = (run: Run): number => {
  const j = JSON.parse(run.stdout) as { bytesSent?: number; bytesReceived?: number };
  return j.bytesSent ?? j.bytesReceived ?? 0;
};

/** `du -sb` of a path: the bytes a store occupies (what a peer "sent" into a local repository). */
export function duBytes(path: string): number {
  const r = spawnSync('du', ['-sb', path], { encoding: 'utf8' });
  return Number(r.stdout.split('\t')[0] ?? 0);
}

export interface Served {
  readonly url: string;
  readonly child: ChildProcess;
}

/** How startServe runs the server. */
export interface ServeOptions {
  /** The CLI to run (another build's dist/src/cli/bin.js, to compare builds); this build's by default. */
  readonly bin?: string;
  /** Where its stderr (the log) goes: this process's (default), child.stderr ('pipe'), or nowhere. */
  readonly stderr?: 'inherit' | 'pipe' | 'ignore';
}

/**
 * Starts `xfer serve --root root --port 0` as a child, with any further `args` (e.g.
 * `--quiet`: the default log writes a line per request), and waits for its `listening on` line.
 */
export async function startServe(root: string, args: readonly string[] = [], options: ServeOptions = {}): Promise<Served> {
  const child = started(spawn(process.execPath, [options.bin ?? XFER, 'serve', '--root', root, '--port', '0', ...args], { stdio: ['ignore', 'pipe', options.stderr ?? 'inherit'] }));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (c) => reject(new Error(`xfer serve exited ${c}`)));
  });
  return { url, child };
}

/** Starts an rsync daemon with one writable module `m` at `dir/module`; url is rsync://.../m. */
export async function startRsyncd(dir: string): Promise<Served> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const conf = join(dir, 'rsyncd.conf');
  await mkdir(join(dir, 'module'), { recursive: true });
  await writeFile(conf, `use chroot = no\nuid = root\ngid = root\n[m]\npath = ${join(dir, 'module')}\nread only = no\n`);
  const child = started(spawn('rsync', ['--daemon', '--no-detach', `--config=${conf}`, `--port=${port}`, '--address=127.0.0.1'], { stdio: 'ignore' }));
  for (let i = 0; i < 100; i++) {
    if (spawnSync('rsync', [`rsync://127.0.0.1:${port}/`], { stdio: 'ignore' }).status === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `rsync://127.0.0.1:${port}/m`, child };
}

/** Stops a server child (SIGTERM) and waits for it to exit. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/**
 * The servers startServe and startRsyncd started that have not exited yet. A row that
 * throws between a server's start and its stop would leave it running (and listening, and
 * holding its root) after the bench: stoppingServers stops them as the error passes, and
 * the process's exit (an error that ends the bench) kills what is left.
 */
const running = new Set<ChildProcess>();

function started(child: ChildProcess): ChildProcess {
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.once('error', () => running.delete(child));
  return child;
}

process.once('exit', () => {
  // Synchronous here: nothing can be awaited at exit. SIGTERM lets them end cleanly.
  for (const child of running) child.kill('SIGTERM');
});

/**
 * Runs `fn`, then stops every server started meanwhile (startServe, startRsyncd) that still
 * runs, whether `fn` returned or threw; servers started before are left alone, so scopes
 * nest. Scenario entry points run their rows in one.
 */
export async function stoppingServers<T>(fn: () => Promise<T>): Promise<T> {
  const before = new Set(running);
  try {
    return await fn();
  } finally {
    for (const child of [...running]) if (!before.has(child)) await stop(child);
  }
}

/** Environment for restic and borg runs (no encryption prompts). */
export const PEER_ENV: NodeJS.ProcessEnv = {
  RESTIC_PASSWORD: 'bench',
  BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
  BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
};
