/**
 * Scenario h: content-defined chunks (FastCDC, the default) against fixed 64 KiB blocks
 * (`--fixed 64K`) on the deterministic disk image (fixtures/disk-image.ts: random, text
 * and repeated extents between zero regions) and its edited versions: scattered 4 KiB
 * overwrites, an insertion, a deletion.
 *
 * For each chunker, the destination holds `base` pushed with that chunker (built once,
 * untimed, copied into the run's destination before every run); the timed command is a
 * local `xfer push <version> <dest>/ --json` with the same chunker. Rows report the chunk
 * bytes each one sent and its throughput. Fixed blocks should match CDC on overwrites
 * (an edit dirties one block either way) and lose on an insertion or deletion, after
 * which every later block is shifted and new.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { alternate, warm, XFER, xferSent, type Contender, type MacroRow, type ScenarioOptions } from './harness.js';
import { writeVersion } from './scenario-disk.js';
import { DEFAULT_SCATTERED_COUNT, type DiskImageVersion } from '../fixtures/index.js';

/** The two chunkers compared, as push options. */
const CHUNKERS: readonly { readonly name: string; readonly args: readonly string[] }[] = [
  { name: 'CDC (default)', args: [] },
  { name: '--fixed 64K', args: ['--fixed', '64K'] },
];

const EDITS: readonly { readonly version: DiskImageVersion; readonly scenario: string }[] = [
  { version: 'scattered', scenario: `chunkers: ${DEFAULT_SCATTERED_COUNT} x 4K edits` },
  { version: 'insert', scenario: 'chunkers: insertion' },
  { version: 'delete', scenario: 'chunkers: deletion' },
];

const SENT_LABEL = 'chunk bytes sent';

function run(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
}

export async function runChunkers(o: ScenarioOptions): Promise<MacroRow[]> {
  const scratch = join(o.work, 'chunkers', String(o.sizeBytes));
  await rm(scratch, { recursive: true, force: true });
  const base = await writeVersion(o, 'base');
  const states = CHUNKERS.map((c, i) => ({ ...c, state: join(scratch, `state-${i}`), dest: join(scratch, 'dest') }));
  for (const s of states) {
    await mkdir(s.state, { recursive: true });
    run(process.execPath, [XFER, 'push', base, `${s.state}/`, '--json', ...s.args]);
  }
  const rows: MacroRow[] = [];
  for (const edit of EDITS) {
    const path = await writeVersion(o, edit.version);
    o.log(edit.scenario);
    const contenders: Contender[] = states.map((s) => ({
      tool: `xfer push (local), ${s.name}`,
      sentLabel: SENT_LABEL,
      async prepare() {
        await rm(s.dest, { recursive: true, force: true });
        await mkdir(s.dest, { recursive: true });
        run('cp', ['-a', '--reflink=auto', `${s.state}/.`, `${s.dest}/`]);
        spawnSync('sync');
        warm(path, s.dest);
      },
      command: () => [process.execPath, [XFER, 'push', path, `${s.dest}/`, '--json', ...s.args]],
      sent: xferSent,
    }));
    rows.push(...(await alternate(edit.scenario, contenders, o.runs, statSync(path).size, o.log)));
  }
  await rm(scratch, { recursive: true, force: true });
  return rows;
}
