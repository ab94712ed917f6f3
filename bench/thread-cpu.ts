import { readFileSync } from 'node:fs';

/** USER_HZ on Linux: /proc's clock ticks per second. */
const TICKS_PER_S = 100;

/**
 * CPU seconds (user + system) of thread `tid` of process `pid`, from /proc: for a Node
 * process, tid = pid is its main thread, the one a server's throughput is bound by.
 */
export function threadCpuSeconds(pid: number, tid = pid): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_S;
}
