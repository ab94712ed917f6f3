/**
 * `node dist/bench/tree-commit.js [--size 256M] [--runs 3] [--bin OTHER/dist/src/cli/bin.js] [--work DIR]`
 *
 * The CPU of a tree's first copy to a server, per process: the bench tree (fixtures/tree.ts,
 * 7,643 files at 256M, scenario f's base) pushed over loopback to a fresh `xfer serve` each
 * run. Prints per run the wall time, the push's CPU, and the server's CPU (whole process
 * and main thread, from /proc) spent on the push and its commit. `--bin` runs another
 * build (both client and server), to compare before and after. Never part of npm test.
 */
import { readFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeTree } from '../fixtures/index.js';
import { parseSize } from '../src/core/sizes.js';
import { startServe, stop, XFER } from './harness.js';
import { median, timed } from './measure.js';
import { threadCpuSeconds } from './thread-cpu.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '256M' },
    runs: { type: 'string', default: '3' },
    bin: { type: 'string' },
    work: { type: 'string', default: '/tmp/xfer-bench-tree-commit' },
  },
});
const log = (s: string) => process.stdout.write(`${s}\n`);
const work = values.work!;
const bin = values.bin ?? XFER;

/** CPU seconds (user + system, every thread) of process `pid`, from /proc. */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

await rm(work, { recursive: true, force: true });
await mkdir(work, { recursive: true });
try {
  const source = join(work, 'in', 'tree');
  const t = await writeTree(source, { sizeBytes: parseSize(values.size!, '--size'), seed: 2026 });
  log(`tree: ${t.entries.filter((e) => e.type !== 'dir').length} files, ${(t.totalBytes / 1e6).toFixed(0)} MB; ${bin}`);
  const rows: { wall: number; client: number; server: number; main: number }[] = [];
  for (let i = 0; i < Number(values.runs); i++) {
    const root = join(work, 'root');
    await rm(root, { recursive: true, force: true });
    const served = await startServe(root, ['--quiet'], { bin });
    try {
      const pid = served.child.pid!;
      const [cpu0, main0] = [processCpuSeconds(pid), threadCpuSeconds(pid)];
      const run = await timed(process.execPath, [bin, 'push', source, `${served.url}/tree`, '--quiet']);
      const r = { wall: run.wallSeconds, client: run.cpuSeconds, server: processCpuSeconds(pid) - cpu0, main: threadCpuSeconds(pid) - main0 };
      rows.push(r);
      log(`  run ${i + 1}: wall ${r.wall.toFixed(2)} s  push cpu ${r.client.toFixed(2)} s  server cpu ${r.server.toFixed(2)} s (main thread ${r.main.toFixed(2)} s)`);
    } finally {
      await stop(served.child);
    }
  }
  const m = (k: keyof (typeof rows)[number]) => median(rows.map((r) => r[k])).toFixed(2);
  log(`  median: wall ${m('wall')} s  push cpu ${m('client')} s  server cpu ${m('server')} s (main thread ${m('main')} s)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
