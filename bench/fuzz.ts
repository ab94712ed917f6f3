/**
 * `npm run fuzz`: the long fuzz run (test/harness/fuzz.ts). Flags (or environment):
 *   --count N          inputs per parser (FUZZ_COUNT, default 100000)
 *   --http-count N     inputs per HTTP parser, if not --count (FUZZ_HTTP_COUNT)
 *   --seed S           (FUZZ_SEED; default from the clock, printed)
 *   --concurrency N    concurrent HTTP/2 streams (default 96)
 *   --parser P --index I   replay one input (a finding's repro)
 *   --from I           start each HTTP parser at input I (with --http-count N: inputs I..N-1)
 *   --server-log PATH  append the server's log there (debug level: every request, and why
 *                      each connection ended)
 *   --json PATH        summary file (default fuzz-summary.json)
 *   --dir PATH         working directory (default under TMPDIR), --keep to keep it
 * Prints a table per parser; exits 1 if any input failed.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { flagValue, hasFlag, intFlag, runMain } from '../test/harness/args.js';
import { runFuzz } from '../test/harness/fuzz.js';
import { DECODER_PARSERS, HTTP_PARSERS } from '../test/harness/fuzz-inputs.js';
import { seedFrom } from '../test/harness/rng.js';

async function main(argv: string[]): Promise<number> {
  const seed = seedFrom(flagValue(argv, 'seed', 'FUZZ_SEED'));
  const json = resolve(flagValue(argv, 'json', 'FUZZ_JSON') ?? 'fuzz-summary.json');
  const dir = flagValue(argv, 'dir') ?? (await mkdtemp(join(tmpdir(), 'xfer-fuzz-')));
  const parser = flagValue(argv, 'parser');
  if (parser !== undefined && ![...HTTP_PARSERS, ...DECODER_PARSERS].includes(parser as never)) {
    throw new Error(`--parser must be one of ${[...HTTP_PARSERS, ...DECODER_PARSERS].join(', ')}`);
  }
  const only = parser === undefined ? undefined : { parser, index: intFlag(argv, 'index', undefined, 0) };
  console.log(`fuzz seed ${seed} (repeat with --seed ${seed})`);
  const summary = await runFuzz({
    dir: join(dir, 'run'),
    seed,
    perParser: intFlag(argv, 'count', 'FUZZ_COUNT', 100_000),
    httpPerParser: flagValue(argv, 'http-count', 'FUZZ_HTTP_COUNT') === undefined ? undefined : intFlag(argv, 'http-count', 'FUZZ_HTTP_COUNT', 0),
    concurrency: intFlag(argv, 'concurrency', 'FUZZ_CONCURRENCY', 96),
    stageGraceMs: 1000,
    only,
    from: intFlag(argv, 'from', undefined, 0),
    serverLogFile: flagValue(argv, 'server-log') === undefined ? undefined : resolve(flagValue(argv, 'server-log')!),
    keep: hasFlag(argv, 'keep'),
    log: (line) => console.log(line),
  });
  return summary.report(json);
}

runMain('fuzz', main);
