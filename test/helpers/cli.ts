import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../src/cli/bin.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI in a child process, as a user would. */
/**
 * Runs the CLI. Standard input is a pipe carrying `input` (or nothing), or, with
 * `inputFd`, that open file descriptor (a redirect from a file: `xfer ... < file`).
 */
export function runCli(args: string[], options: { input?: Buffer; inputFd?: number; env?: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: [options.inputFd ?? 'pipe', 'pipe', 'pipe'],
      uid: options.uid,
      gid: options.gid,
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    if (options.inputFd !== undefined) return;
    if (options.input) child.stdin!.end(options.input);
    else child.stdin!.end();
  });
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

/** A CLI run started in a child process (startCli): its exit, and what it wrote so far. */
export interface StartedCli {
  readonly child: ChildProcess;
  /** Its exit code; null if a signal ended it. */
  readonly exit: Promise<number | null>;
  running(): boolean;
  stdout(): string;
  stderr(): string;
}

/**
 * Starts the CLI in a child process (standard input closed) without waiting for it: for a
 * test that signals, kills or watches it meanwhile. `env` is added to this process's.
 */
export function startCli(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): StartedCli {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
  let out = '';
  let err = '';
  let running = true;
  child.stdout!.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d) => (err += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  void exit.then(() => (running = false));
  return { child, exit, running: () => running, stdout: () => out, stderr: () => err };
}

/**
 * Writes `size` deterministic pseudo-random bytes without holding them all in memory: an
 * AES-128-CTR keystream keyed by the seed, so no two pieces of a file repeat (a per-piece
 * reseeded small PRNG can land on overlapping stretches of its cycle and dedup for real).
 */
export async function writeRandomFile(path: string, size: number, seed = 1): Promise<void> {
  const key = createHash('sha256').update(`xfer-test-${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const fh = await open(path, 'w');
  try {
    const piece = 16 * 1024 * 1024;
    const zeros = Buffer.alloc(piece);
    for (let o = 0; o < size; o += piece) await fh.write(cipher.update(zeros.subarray(0, Math.min(piece, size - o))));
  } finally {
    await fh.close();
  }
}

/** Asserts the shape of a one-line user error: "xfer: ...", no stack trace. */
export function isOneLineError(stderr: string): boolean {
  const lines = stderr.trim().split('\n');
  return lines.length === 1 && lines[0]!.startsWith('xfer: ') && !stderr.includes('    at ');
}
