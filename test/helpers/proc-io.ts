import { readFileSync } from 'node:fs';

/**
 * A counter of this process's I/O so far, from /proc/self/io (proc(5)): `rchar` bytes read
 * through read(2) and friends (page cache hits too; holes skipped do not count),
 * `read_bytes` bytes read from storage (page cache hits do not count; O_DIRECT reads do),
 * `syscr` and `syscw` read and write system calls.
 */
export function processIo(field: 'rchar' | 'read_bytes' | 'syscr' | 'syscw'): number {
  const m = new RegExp(`^${field}: (\\d+)$`, 'm').exec(readFileSync('/proc/self/io', 'utf8'));
  return Number(m![1]);
}
