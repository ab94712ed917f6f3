import { InvalidArgumentError, type Command } from 'commander';
import { formatBytes } from '../core/sizes.js';
import { remoteFrom, remoteOptions, type RemoteFlags } from './options.js';
import { count, printJson } from './output.js';

interface ForgetFlags extends RemoteFlags {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  dryRun?: boolean;
  json?: boolean;
}

/** A --keep-* count: a whole number, 0 or more. */
function keepCount(value: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('expected a whole number, 0 or more');
  return Number(value);
}

/**
 * `xfer forget <location>/<target> --keep-...`: removes the versions the policy does not
 * keep (restic's policy words and rules, store/retention.ts). Chunks stay until gc.
 */
export function registerForget(program: Command, signal: AbortSignal): void {
  const cmd = program
    .command('forget')
    .description("remove a target's versions that a policy does not keep (restic's rules); the current version is always kept; chunks stay until gc")
    .argument('<target>', 'a pushed target: <dest-dir>/<name>, http(s)://host:port/<remote-path>, s3://bucket/<path>')
    .option('--keep-last <n>', 'keep the n newest versions', keepCount)
    .option('--keep-daily <n>', 'keep the newest version of each of the last n days that have versions (UTC)', keepCount)
    .option('--keep-weekly <n>', 'keep the newest version of each of the last n ISO weeks that have versions', keepCount)
    .option('--keep-monthly <n>', 'keep the newest version of each of the last n months that have versions', keepCount)
    .option('-n, --dry-run', 'say what would be removed, remove nothing')
    .option('--json', 'print the result as one JSON object');
  for (const o of remoteOptions()) cmd.addOption(o);
  cmd.action(async (spec: string, flags: ForgetFlags) => {
    const { forget } = await import('../targets.js');
    const r = await forget(spec, {
      ...remoteFrom(flags, signal),
      last: flags.keepLast, daily: flags.keepDaily, weekly: flags.keepWeekly, monthly: flags.keepMonthly,
      dryRun: flags.dryRun === true,
    });
    const shown = ({ manifest: _, ...v }: { manifest: string; timeMs: number }) => ({ ...v, time: new Date(v.timeMs).toISOString() });
    if (flags.json) return printJson({ target: r.target, dryRun: r.dryRun, keep: r.keep.map(shown), remove: r.remove.map(shown) });
    for (const v of r.keep) process.stdout.write(`keep   ${v.id}  ${formatBytes(v.bytes).padStart(11)}  (${v.reasons.join(', ')})\n`);
    for (const v of r.remove) process.stdout.write(`${r.dryRun ? 'would remove' : 'remove'} ${v.id}  ${formatBytes(v.bytes).padStart(11)}\n`);
    process.stdout.write(`${r.dryRun ? 'dry run, nothing removed: ' : ''}${r.target}: ${count(r.keep.length, 'version')} kept, ${count(r.remove.length, 'version')} ${r.dryRun ? 'would be ' : ''}removed (chunks stay until xfer gc)\n`);
  });
}
