/**
 * `npm run soak`: the long fault run (test/harness/soak.ts). Flags (or environment):
 *   --count N        kill points (SOAK_COUNT, default 240)
 *   --proxy N        runs through the fault proxy (SOAK_PROXY, default 40)
 *   --seed S         (SOAK_SEED; default from the clock, printed)
 *   --file-mib N     size of the pushed file (default 32)
 *   --no-disk-full   skip the tmpfs cases
 *   --json PATH      summary file (default soak-summary.json)
 *   --dir PATH       working directory (default under TMPDIR), --keep to keep it
 * Prints a table of fault kinds; exits 1 if any case failed.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { flagValue, hasFlag, intFlag, runMain } from '../test/harness/args.js';
import { seedFrom } from '../test/harness/rng.js';
import { runSoak } from '../test/harness/soak.js';

async function main(argv: string[]): Promise<number> {
  const seed = seedFrom(flagValue(argv, 'seed', 'SOAK_SEED'));
  const json = resolve(flagValue(argv, 'json', 'SOAK_JSON') ?? 'soak-summary.json');
  const dir = flagValue(argv, 'dir') ?? (await mkdtemp(join(tmpdir(), 'xfer-soak-')));
  console.log(`soak seed ${seed} (repeat with --seed ${seed})`);
  const summary = await runSoak({
    dir: join(dir, 'run'),
    seed,
    killPoints: intFlag(argv, 'count', 'SOAK_COUNT', 240),
    proxyRuns: intFlag(argv, 'proxy', 'SOAK_PROXY', 40),
    diskFull: !hasFlag(argv, 'no-disk-full'),
    fileBytes: intFlag(argv, 'file-mib', 'SOAK_FILE_MIB', 32) * 1024 * 1024,
    keep: hasFlag(argv, 'keep'),
    log: (line) => console.log(line),
  });
  return summary.report(json);
}

runMain('soak', main);
