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
 */
import { cpus, totalmem, release, tmpdir } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseSize } from '../src/core/sizes.js';
import type { MacroRow } from './harness.js';
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
if (values.scale) {
  results.scale = await runScale({ sizeBytes: parseSize(values.scale, '--scale'), push: values['scale-push']!, log });
} else {
  const both = !values.micro && !values.macro;
  if (values.micro || both) {
    log('micro benchmarks');
    results.micro = [...(await runMicro(log)), ...(await runMicroStorage(log))];
  }
  if (values.macro || both) {
    const tools = ensureTools(log);
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
