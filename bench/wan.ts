/**
 * `npm run build && node dist/bench/wan.js [--file-size 1G] [--tree-size 128M] [--only file,tree]
 *   [--rtt 173] [--rate 100M] [--window 3M] [--no-slow-start] [--connections auto|N] [--runs 1] [--work DIR] [--json]`
 *
 * Issue 17's WAN scenario: xfer (push -> xfer serve) and rsync (-> rsync daemon), each
 * through its own delaying relay (bench/wan-relay.ts: a round trip, a rate cap each way,
 * a TCP-like window per connection; default 173 ms, 100 Mbit/s as the seeds' cross-border
 * pair). For a large file (incompressible) and a tree (the bench fixture of
 * fixtures/tree.ts): a first copy into an empty destination, then a re-sync after ten
 * 4 KiB edits (the file: ten overwrites spread over it; the tree: one in each of ten files).
 * Each row: wall time, the client's CPU, the bytes the relay carried each way, and link
 * utilisation = the busier direction's bytes / wall time / the rate. Runs alternate
 * (xfer, rsync, xfer, ...); medians of --runs. --connections is passed to xfer push
 * (default auto); "conns" counts every connection through the relay, the stage's too.
 * Every run starts from a fresh server root and daemon module. Never part of npm test
 * (the relay's unit test is).
 */
import { spawnSync } from 'node:child_process';
import { cp, mkdir, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeTree } from '../fixtures/index.js';
import { parseSize } from '../src/core/sizes.js';
import { writeRandomFile } from '../test/helpers/cli.js';
import { rsyncLiteral, startRsyncd, startServe, stop, stoppingServers, XFER } from './harness.js';
import { have, median, timed, type Run } from './measure.js';
import { EDIT_BYTES, editFile, filesUnder } from './edits.js';
import { startWanRelay, WAN_RATE_BITS_PER_SECOND, WAN_RTT_MS, WAN_WINDOW_BYTES, type WanLinkOptions } from './wan-relay.js';

/** Ten edits of 4 KiB: the re-sync's change. */
const EDITS = 10;
const TREE_SEED = 2026;

interface WanRow {
  readonly scenario: string;
  readonly tool: string;
  readonly runs: number;
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  readonly connections: number;
  /** The busier direction's bytes per second over the link's rate (0..1). */
  readonly utilisation: number;
  /** What the tool says it sent: xfer's chunk bytes, rsync's literal data. */
  readonly sentBytes: number;
}

interface Measured {
  readonly run: Run;
  readonly up: number;
  readonly down: number;
  readonly connections: number;
  readonly sent: number;
}

const { values } = parseArgs({
  options: {
    'file-size': { type: 'string', default: '1G' },
    'tree-size': { type: 'string', default: '128M' },
    only: { type: 'string', default: 'file,tree' },
    rtt: { type: 'string', default: String(WAN_RTT_MS) },
    rate: { type: 'string', default: String(WAN_RATE_BITS_PER_SECOND / 1e6) + 'M' },
    window: { type: 'string', default: String(WAN_WINDOW_BYTES) },
    'no-slow-start': { type: 'boolean', default: false },
    connections: { type: 'string', default: 'auto' },
    runs: { type: 'string', default: '1' },
    work: { type: 'string', default: '/tmp/xfer-bench-wan' },
    json: { type: 'boolean', default: false },
  },
});
const log = (s: string) => process.stdout.write(`${s}\n`);
/** --rate in bits per second with decimal k/M/G (100M = 100 Mbit/s), as links are quoted. */
function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kMG]?)$/.exec(text);
  if (!m) throw new Error(`--rate: expected bits per second like 100M, got "${text}"`);
  return Number(m[1]) * { '': 1, k: 1e3, M: 1e6, G: 1e9 }[m[2] as '' | 'k' | 'M' | 'G'];
}
const link: Required<WanLinkOptions> = {
  rttMs: Number(values.rtt),
  rateBitsPerSecond: parseRate(values.rate!),
  windowBytes: parseSize(values.window!, '--window'),
  slowStart: !values['no-slow-start'],
};
const runs = Number(values.runs);
const work = values.work!;
const only = new Set(values.only!.split(','));
if (!have('rsync')) throw new Error('rsync is not installed (apt-get install rsync)');

async function inputs(): Promise<{ file?: { first: string; edited: string; bytes: number }; tree?: { first: string; edited: string; bytes: number } }> {
  const out: Awaited<ReturnType<typeof inputs>> = {};
  if (only.has('file')) {
    const bytes = parseSize(values['file-size']!, '--file-size');
    const first = join(work, 'in', 'first', 'big.bin');
    const edited = join(work, 'in', 'edited', 'big.bin');
    await mkdir(join(work, 'in', 'first'), { recursive: true });
    await mkdir(join(work, 'in', 'edited'), { recursive: true });
    log(`writing a ${values['file-size']} file and its edited copy`);
    await writeRandomFile(first, bytes, 17);
    spawnSync('cp', [first, edited]);
    await editFile(edited, bytes, 5000, EDITS);
    // An earlier mtime for the first version, so rsync's quick check cannot take the edited
    // file for it. Not a later one for the edit: a file stamped in the future is one xfer
    // checks again before its commit (transfer/racy.ts: a wait and a second read), which
    // an edit made now never is.
    const earlier = new Date(Date.now() - 86_400_000);
    await utimes(first, earlier, earlier);
    out.file = { first, edited, bytes };
  }
  if (only.has('tree')) {
    const sizeBytes = parseSize(values['tree-size']!, '--tree-size');
    const first = join(work, 'in', 'tree-first', 'tree');
    const edited = join(work, 'in', 'tree-edited', 'tree');
    log(`writing a ${values['tree-size']} tree (fixtures/tree.ts) and its edited copy`);
    const t = await writeTree(first, { sizeBytes, seed: TREE_SEED });
    await mkdir(join(work, 'in', 'tree-edited'), { recursive: true });
    // cp -a keeps mtimes to the nanosecond (fs.cp's preserveTimestamps keeps milliseconds,
    // which changes every file's mtime and makes the re-sync read and compare every file).
    spawnSync('cp', ['-a', first, join(work, 'in', 'tree-edited')]);
    const candidates = (await filesUnder(edited)).filter((f) => f.bytes >= 2 * EDIT_BYTES);
    for (let i = 0; i < EDITS; i++) {
      const f = candidates[Math.floor(((i + 0.5) / EDITS) * candidates.length)]!;
      await editFile(join(edited, f.path), f.bytes, 6000 + i, 1);
    }
    out.tree = { first, edited, bytes: t.totalBytes };
  }
  return out;
}

function warm(path: string): void {
  spawnSync('sh', ['-c', `find '${path}' -type f -exec cat {} + > /dev/null`]);
}

/** One run of one tool: the first copy, then the re-sync onto it, each through a fresh relay. */
function runTool(tool: 'xfer' | 'rsync', input: { first: string; edited: string }, isDir: boolean): Promise<[Measured, Measured]> {
  return stoppingServers(() => runToolOnce(tool, input, isDir));
}

async function runToolOnce(tool: 'xfer' | 'rsync', input: { first: string; edited: string }, isDir: boolean): Promise<[Measured, Measured]> {
  const dir = join(work, 'dest', tool);
  await rm(dir, { recursive: true, force: true });
  const served = tool === 'xfer' ? await startServe(join(dir, 'root'), ['--quiet']) : await startRsyncd(dir);
  const port = Number(new URL(served.url.replace(/^rsync:/, 'http:')).port);
  const relay = await startWanRelay(port, link);
  try {
    const measure = async (source: string, resync: boolean): Promise<Measured> => {
      warm(source);
      relay.reset();
      let run: Run;
      let sent: number;
      if (tool === 'xfer') {
        run = await timed(process.execPath, [XFER, 'push', source, `http://127.0.0.1:${relay.port}/target`, '--json', '--connections', values.connections!]);
        sent = (JSON.parse(run.stdout) as { bytesSent: number }).bytesSent;
      } else {
        const args = ['-a', '--stats', ...(resync ? ['--no-whole-file'] : []), isDir ? `${source}/` : source, `rsync://127.0.0.1:${relay.port}/m/target${isDir ? '/' : ''}`];
        run = await timed('rsync', args);
        sent = rsyncLiteral(run.stdout);
      }
      return { run, up: relay.bytesUp, down: relay.bytesDown, connections: relay.connections, sent };
    };
    const first = await measure(input.first, false);
    const again = await measure(input.edited, true);
    return [first, again];
  } finally {
    await relay.close();
    await stop(served.child);
    await rm(dir, { recursive: true, force: true });
  }
}

function row(scenario: string, tool: string, ms: Measured[]): WanRow {
  const wallSeconds = median(ms.map((m) => m.run.wallSeconds));
  const up = median(ms.map((m) => m.up));
  const down = median(ms.map((m) => m.down));
  return {
    scenario,
    tool,
    runs: ms.length,
    wallSeconds,
    cpuSeconds: median(ms.map((m) => m.run.cpuSeconds)),
    bytesUp: up,
    bytesDown: down,
    connections: median(ms.map((m) => m.connections)),
    utilisation: (Math.max(up, down) * 8) / wallSeconds / link.rateBitsPerSecond,
    sentBytes: median(ms.map((m) => m.sent)),
  };
}

function show(r: WanRow): void {
  log(
    `  ${r.scenario.padEnd(34)} ${r.tool.padEnd(6)} ${r.wallSeconds.toFixed(2).padStart(8)} s  cpu ${r.cpuSeconds.toFixed(2).padStart(6)} s  ` +
      `up ${(r.bytesUp / 1e6).toFixed(2).padStart(9)} MB  down ${(r.bytesDown / 1e6).toFixed(2).padStart(8)} MB  ` +
      `link ${(r.utilisation * 100).toFixed(0).padStart(3)}%  conns ${r.connections}  sent ${(r.sentBytes / 1e6).toFixed(2)} MB`,
  );
}

await rm(work, { recursive: true, force: true });
await mkdir(work, { recursive: true });
try {
  const ins = await inputs();
  log(`WAN: ${link.rttMs} ms round trip, ${link.rateBitsPerSecond / 1e6} Mbit/s, window ${link.windowBytes} B per connection, slow start ${link.slowStart ? 'on' : 'off'}; xfer --connections ${values.connections}; ${runs} run(s), alternating`);
  const rows: WanRow[] = [];
  for (const [label, input, isDir] of [['file', ins.file, false], ['tree', ins.tree, true]] as const) {
    if (input === undefined) continue;
    const got = { xfer: [] as [Measured, Measured][], rsync: [] as [Measured, Measured][] };
    for (let i = 0; i < runs; i++) {
      for (const tool of ['xfer', 'rsync'] as const) got[tool].push(await runTool(tool, input, isDir));
    }
    const size = `${(input.bytes / 1e6).toFixed(0)} MB`;
    for (const tool of ['xfer', 'rsync'] as const) {
      for (const [k, step] of [[0, 'first copy'], [1, 're-sync (10 x 4 KiB)']] as const) {
        const r = row(`${label} ${size}: ${step}`, tool, got[tool].map((pair) => pair[k]));
        show(r);
        rows.push(r);
      }
    }
  }
  const sum = (tool: string) => rows.filter((r) => r.tool === tool).reduce((s, r) => s + r.wallSeconds, 0);
  const ratio = sum('xfer') / sum('rsync');
  log(`  sum of rows: xfer ${sum('xfer').toFixed(2)} s, rsync ${sum('rsync').toFixed(2)} s: ${ratio.toFixed(2)}x rsync (bar: at most 0.8x)`);
  if (values.json) log(JSON.stringify({ link, runs, rows, sumXferSeconds: sum('xfer'), sumRsyncSeconds: sum('rsync') }));
} finally {
  await rm(work, { recursive: true, force: true });
}
