import { spawn, spawnSync } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One timed run of an external command: wall and CPU seconds, peak RSS, and its stdout. */
export interface Run {
  readonly wallSeconds: number;
  readonly cpuSeconds: number;
  readonly maxRssMiB: number;
  readonly stdout: string;
}

const TIME = '/usr/bin/time';

/**
 * Runs `cmd args` under GNU time (installed by ensureTools) and returns what it measured.
 * Dirty pages are flushed first (`sync`, untimed): what earlier runs or setups wrote (a
 * 256 MiB server root, a peer's store) would otherwise be written back by the kernel's
 * flusher during this run (dirty_expire_centisecs: 30 s later), and land on whichever
 * run comes next, and fsyncs in it wait behind them.
 */
export async function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  spawnSync('sync');
  const out = join(tmpdir(), `xfer-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%e %U %S %M', '-o', out, cmd, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let so = '';
    let se = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (so += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (se += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(so) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${se.trim().split('\n').slice(-3).join(' | ')}`))));
  });
  const [e, u, s, m] = (await readFile(out, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
  await rm(out, { force: true });
  return { wallSeconds: e!, cpuSeconds: u! + s!, maxRssMiB: m! / 1024, stdout };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/**
 * The peers and tools of the macro benchmark come from Debian packages; install what is
 * missing (needs root and apt). Returns the commands that are available afterwards.
 * Without `peers`, only GNU time (what timed() needs), and no peer.
 */
export function ensureTools(log: (s: string) => void, peers = true): Set<string> {
  const wanted: Record<string, string> = peers ? { casync: 'casync', restic: 'restic', borg: 'borgbackup', b3sum: 'b3sum', rsync: 'rsync' } : {};
  const missing = Object.entries(wanted).filter(([c]) => !have(c));
  if (!have(TIME)) missing.push(['time', 'time']);
  if (missing.length && process.getuid?.() === 0 && have('apt-get')) {
    log(`installing ${missing.map(([, p]) => p).join(' ')} with apt-get`);
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
    spawnSync('apt-get', ['install', '-y', '-qq', ...missing.map(([, p]) => p)], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  return new Set(Object.keys(wanted).filter((c) => have(c)));
}
