/**
 * `npm run bench:report [-- [--out DIR] [--readme FILE] <results.json ...>]`
 *
 * Merges benchmark results files (default: every bench/results/*.json) into one report: for
 * each macro (scenario, tool) and micro (suite, name) the newest run's row wins, and each
 * row names the run (date + command) it came from. Writes docs/perf/report.md and
 * docs/perf/*.svg and rewrites README.md's Performance section between
 * `<!-- perf:start -->` and `<!-- perf:end -->`. Running it twice gives identical files.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { listResultsFiles, writeMergedReport } from './report.js';

/** The repository root (this file runs as dist/bench/report-cli.js). */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

try {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: 'string', default: join(ROOT, 'docs', 'perf') },
      readme: { type: 'string', default: join(ROOT, 'README.md') },
    },
  });
  const files = positionals.length ? positionals.map((p) => resolve(p)) : await listResultsFiles(join(ROOT, 'bench', 'results'));
  if (!files.length) throw new Error('no results files in bench/results/ (run `npm run bench` first)');
  const { report, charts, merged } = await writeMergedReport({ files, outDir: resolve(values.out!), readme: resolve(values.readme!) });
  process.stdout.write(
    `merged ${files.length} results files; figures from ${merged.sources.length} runs:\n` +
      merged.sources.map((s, i) => `  ${i + 1}. ${s.date}  ${s.command}\n`).join('') +
      `report: ${report}\ncharts: ${charts.join(', ')}\nREADME: ${resolve(values.readme!)}\n`,
  );
} catch (e) {
  process.stderr.write(`bench:report: ${(e as Error).message}\n`);
  process.exitCode = 1;
}
