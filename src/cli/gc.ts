import type { Command } from 'commander';
import { InvalidArgumentError } from '../core/errors.js';
import { formatBytes } from '../core/sizes.js';
import { gc } from '../gc.js';
import { DEFAULT_GC_GRACE_MS, DEFAULT_MAX_UNUSED_PERCENT } from '../store/gc.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { count, printJson } from './output.js';

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `0`, or a number and a unit: `90s`, `30m`, `24h`, `7d`. */
export function parseGrace(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])?$/.exec(text.trim());
  if (m === null || (m[2] === undefined && Number(m[1]) !== 0)) {
    throw new InvalidArgumentError(`--grace: expected 0 or a duration such as 90s, 30m, 24h or 7d, got "${text}"`);
  }
  return Math.round(Number(m[1]) * (m[2] === undefined ? 0 : DURATION_UNITS_MS[m[2]]!));
}

function parsePercent(text: string): number {
  const v = Number(text.trim().replace(/%$/, ''));
  if (!/^\d+(\.\d+)?%?$/.test(text.trim()) || v > 100) throw new InvalidArgumentError(`--max-unused: expected a percentage from 0 to 100, got "${text}"`);
  return v;
}

/** `xfer gc <location>`: collects the garbage of a store (gc.ts, store/gc.ts). */
export function registerGc(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('gc')
    .description('delete the chunks no manifest refers to, repack mostly unused packs, remove what killed pushes left; safe beside running pushes (two-phase, see --grace)')
    .argument('<location>', 'a destination directory (its .xfer store), s3://bucket/prefix, or a server URL http(s)://host:port/')
    .option('-n, --dry-run', 'change nothing; report what would be done')
    .option('--max-unused <percent>', 'repack a pack when more than this share of it is unused', String(DEFAULT_MAX_UNUSED_PERCENT))
    .option('--grace <duration>', 'keep what a gc marked this long before a later gc deletes it (longer than any push runs); 0 deletes at once: only when no push is running', `${DEFAULT_GC_GRACE_MS / 3_600_000}h`)
    .option('--json', 'print the report as one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (location: string, flags: RemoteFlags & { json?: boolean; dryRun?: boolean; maxUnused: string; grace: string }) => {
    const r = await gc(location, {
      ...remoteFrom(flags, signal),
      dryRun: flags.dryRun === true,
      maxUnusedPercent: parsePercent(flags.maxUnused),
      graceMs: parseGrace(flags.grace),
    });
    if (flags.json) return printJson(r);
    const would = r.dryRun ? 'would ' : '';
    const out = process.stdout;
    out.write(`${r.dryRun ? 'dry run: ' : ''}${count(r.manifests, 'manifest')}, ${count(r.referencedChunks, 'chunk')} in use\n`);
    out.write(`${would}delete ${count(r.deletedPacks, 'pack')} (${count(r.deletedChunks, 'chunk')}, ${count(r.orphanPacks, 'orphan')}): ${formatBytes(r.freedBytes)} freed\n`);
    out.write(`${would}repack ${count(r.repackedPacks, 'pack')} (${formatBytes(r.repackedBytes)} of chunks in use copied)\n`);
    out.write(`${would}mark ${count(r.markedPacks, 'pack')} for deletion (${formatBytes(r.markedBytes)})${r.recoveredPacks ? `; ${would}recover ${count(r.recoveredPacks, 'pack')} a manifest needs again` : ''}\n`);
    if (r.waitingPacks) {
      out.write(`waiting: ${count(r.waitingPacks, 'pack')} (${formatBytes(r.waitingBytes)}), deletable by a gc from ${new Date(r.nextDeletableAtMs).toISOString()}\n`);
    }
    out.write(`store: ${formatBytes(r.storeBytes)}${r.dryRun ? ' after the run' : ''}\n`);
  });
}
