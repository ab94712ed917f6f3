import type { Command } from 'commander';
import { nativeLoadError } from '../chunker/native.js';
import { digestToHex } from '../core/ids.js';
import { formatBytes } from '../core/sizes.js';
import { checkLocalPath } from '../endpoint/registry.js';
import { analyze } from '../scan/analyze.js';
import { chunkerOptions, chunkerSpecFor, digestFrom, type ChunkerFlags } from './options.js';
import { count, rate } from './output.js';

interface ChunkFlags extends ChunkerFlags {
  json?: boolean;
  list?: boolean;
}

export function registerChunk(program: Command): void {
  const cmd = program
    .command('chunk')
    .description('chunk and hash a file, tree or stdin (-) without storing anything; report sizes and dedup')
    .argument('<path>', 'file, directory, or - for standard input')
    .option('--json', 'print one JSON object')
    .option('--list', 'also list every chunk (offset, length, digest)');
  for (const o of chunkerOptions()) cmd.addOption(o);
  cmd.action(async (path: string, flags: ChunkFlags) => {
    if (path !== '-') checkLocalPath(path, 'what chunk reads');
    // An ext2/3/4 image gets the image chunker unless a chunker option says otherwise, as in push.
    const chunker = await chunkerSpecFor(path === '-' ? undefined : path, flags, (n) => cmd.getOptionValueSource(n) === 'cli');
    const digestAlgorithm = digestFrom(flags);
    const out = process.stdout;
    let first = true;
    const onChunk = flags.list
      ? (file: string, offset: number, length: number, digest: Uint8Array) => {
          if (flags.json) {
            out.write(`${first ? '{"list":[' : ','}${JSON.stringify({ ...(file !== path && file !== '-' ? { path: file } : {}), offset, length, digest: digestToHex(digest) })}`);
          } else {
            out.write(`${file !== path && file !== '-' ? `${file} ` : ''}${offset} ${length} ${digestToHex(digest)}\n`);
          }
          first = false;
        }
      : undefined;
    const source = path === '-' ? process.stdin : path;
    const r = await analyze(source, { chunker, digestAlgorithm, onChunk });
    const implementation = chunker.algorithm === 'fixed' ? 'fixed' : nativeLoadError() ? 'typescript' : 'native';
    if (flags.json) {
      const summary = JSON.stringify({
        size: r.size, chunks: r.chunks, distinctChunks: r.distinctChunks, distinctBytes: r.distinctBytes,
        digest: r.digest, seconds: r.seconds, digestAlgorithm, chunker: implementation,
      });
      if (flags.list) out.write(`${first ? '{"list":[' : ''}],${summary.slice(1)}\n`);
      else out.write(`${summary}\n`);
      return;
    }
    const dedup = r.distinctBytes !== null && r.distinctBytes > 0 ? (r.size / r.distinctBytes).toFixed(2) : '-';
    out.write(
      [
        `size:            ${formatBytes(r.size)} (${count(r.size, 'byte')})${r.files > 1 ? ` in ${count(r.files, 'file')}` : ''}`,
        `chunks:          ${r.chunks}`,
        `distinct chunks: ${r.distinctChunks ?? 'not tracked (too many chunks)'}`,
        `distinct bytes:  ${r.distinctBytes === null ? '-' : `${formatBytes(r.distinctBytes)} (${count(r.distinctBytes, 'byte')})`}`,
        `dedup ratio:     ${dedup}`,
        `${`${digestAlgorithm}:`.padEnd(17)}${r.digest}`,
        `throughput:      ${rate(r.size, r.seconds)} (${r.seconds.toFixed(3)} s, ${implementation} chunker)`,
      ].join('\n') + '\n',
    );
  });
}
