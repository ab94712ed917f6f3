/**
 * The server's main-thread cost of a push (issue 17): starts `xfer serve`, pushes one file
 * (or the same file from `clients` processes at once, to different names), stops the
 * server and reports wall time and the server's main-thread busy seconds per GiB pushed.
 * Busy time is read two ways: the main thread's CPU time from /proc (works for any build)
 * and the server's own 'stopped' log line (mainThreadBusyMs, from eventLoopUtilization).
 * Builds are alternated run by run, medians reported: the machine may be shared.
 *
 *   node dist/bench/server-busy.js --file F [--runs 3] [--clients 1] [--bin A.js --bin B.js]
 */
import { statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startServe, stop, XFER, type Served } from './harness.js';
import { median, timed } from './measure.js';
import { threadCpuSeconds } from './thread-cpu.js';

/** A server and its log so far (stderr: JSON lines). */
interface Logged extends Served {
  log: string;
}

async function serve(bin: string, root: string): Promise<Logged> {
  const s = { ...(await startServe(root, ['--log-format', 'json'], { bin, stderr: 'pipe' })), log: '' };
  s.child.stderr!.setEncoding('utf8').on('data', (d: string) => (s.log += d));
  return s;
}

interface Sample {
  readonly wall: number[];
  readonly cpuBusyPerGiB: number;
  readonly eluBusyPerGiB: number | undefined;
}

async function once(bin: string, file: string, clients: number, work: string): Promise<Sample> {
  const root = join(work, 'root');
  await rm(root, { recursive: true, force: true });
  const s = await serve(bin, root);
  let before: number, runs: Awaited<ReturnType<typeof timed>>[], after: number;
  try {
    before = threadCpuSeconds(s.child.pid!);
    runs = await Promise.all(Array.from({ length: clients }, (_, i) => timed(process.execPath, [bin, 'push', file, `${s.url}/f${i}.bin`, '--json'])));
    after = threadCpuSeconds(s.child.pid!);
  } finally {
    await stop(s.child);
  }
  const gib = (statSync(file).size * clients) / 2 ** 30;
  const stopped = s.log.split('\n').filter((l) => l.includes('"stopped"')).map((l) => JSON.parse(l) as { mainThreadBusyMs?: number }).at(-1);
  await rm(root, { recursive: true, force: true });
  return {
    wall: runs.map((r) => r.wallSeconds),
    cpuBusyPerGiB: (after - before) / gib,
    eluBusyPerGiB: stopped?.mainThreadBusyMs === undefined ? undefined : stopped.mainThreadBusyMs / 1000 / gib,
  };
}

const { values } = parseArgs({ options: { file: { type: 'string' }, runs: { type: 'string', default: '3' }, clients: { type: 'string', default: '1' }, bin: { type: 'string', multiple: true } } });
if (!values.file) throw new Error('--file is required');
const bins = values.bin?.length ? values.bin : [XFER];
const runs = Number(values.runs);
const clients = Number(values.clients);
const work = join(tmpdir(), `xfer-server-busy-${process.pid}`);
const samples = new Map<string, Sample[]>(bins.map((b) => [b, []]));
for (let r = 0; r < runs; r++) {
  for (const bin of bins) {
    const x = await once(bin, values.file, clients, join(work, String(bins.indexOf(bin))));
    samples.get(bin)!.push(x);
    console.log(`run ${r + 1} ${bin}: wall ${x.wall.map((w) => w.toFixed(2)).join(' / ')} s, main thread ${x.cpuBusyPerGiB.toFixed(2)} CPU-s/GiB${x.eluBusyPerGiB === undefined ? '' : `, ELU busy ${x.eluBusyPerGiB.toFixed(2)} s/GiB`}`);
  }
}
for (const [bin, xs] of samples) {
  const elu = xs.map((x) => x.eluBusyPerGiB).filter((v): v is number => v !== undefined);
  console.log(
    `median ${bin} (${clients} client${clients > 1 ? 's' : ''}): wall ${Array.from({ length: clients }, (_, i) => median(xs.map((x) => x.wall[i]!)).toFixed(2)).join(' / ')} s, ` +
      `main thread ${median(xs.map((x) => x.cpuBusyPerGiB)).toFixed(2)} CPU-s/GiB${elu.length ? `, ELU busy ${median(elu).toFixed(2)} s/GiB` : ''}`,
  );
}
await rm(work, { recursive: true, force: true });
