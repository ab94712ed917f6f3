import { spawnSync } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeRandomFile } from '../test/helpers/cli.js';
import { alternate, warm, XFER, type Contender, type MacroRow, type ScenarioOptions } from './harness.js';
import { runRemote } from './remote.js';

export type { MacroRow } from './harness.js';

export interface MacroOptions extends ScenarioOptions {
  /** Also run the loopback scenarios (xfer serve vs rsync daemon, restores). */
  readonly remote: boolean;
  /** Only the loopback scenarios. */
  readonly remoteOnly: boolean;
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
