/**
 * `npm run bench [-- --micro | --macro [--local]] [--size 2G] [--runs 3] [--work DIR]`
 * --local skips the loopback scenarios (xfer serve, rsync daemon, restores); --remote-only
 * runs only those.
 * Micro suites (benny) and macro scenarios against peers; prints tables and writes
 * bench/results/<timestamp>.json. Never part of npm test.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseSize } from '../src/core/sizes.js';
import { runMacro } from './macro.js';
import { ensureTools } from './measure.js';
import { runMicro, runMicroStorage } from './micro.js';

const { values } = parseArgs({
  options: {
    micro: { type: 'boolean', default: false },
    macro: { type: 'boolean', default: false },
    local: { type: 'boolean', default: false },
    'remote-only': { type: 'boolean', default: false },
    size: { type: 'string', default: '2G' },
    runs: { type: 'string', default: '3' },
    work: { type: 'string', default: join(tmpdir(), 'xfer-bench') },
  },
});
const both = !values.micro && !values.macro;
const log = (s: string) => process.stdout.write(`${s}\n`);
const results: Record<string, unknown> = {
  date: new Date().toISOString(),
  node: process.version,
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
};
if (values.micro || both) {
  log('micro benchmarks');
  results.micro = [...(await runMicro(log)), ...(await runMicroStorage(log))];
}
if (values.macro || both) {
  const tools = ensureTools(log);
  log(`macro benchmarks (${values.size}, ${values.runs} runs each, alternating; peers: ${[...tools].join(', ') || 'none'})`);
  results.macro = await runMacro({ work: values.work!, sizeBytes: parseSize(values.size!, '--size'), runs: Number(values.runs), tools, log, remote: !values.local, remoteOnly: values['remote-only']! });
}
const dir = fileURLToPath(new URL('../../bench/results/', import.meta.url));
await mkdir(dir, { recursive: true });
const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
await writeFile(file, JSON.stringify(results, null, 2));
log(`results written to ${file}`);
