/**
 * Child processes of the harness: the CLI, killed at a chosen moment, and `xfer serve` on
 * 127.0.0.1, which can be killed and started again on the same port. Real processes, the
 * way a user runs them: nothing is mocked.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { BIN } from '../helpers/cli.js';

export interface RunResult {
  /** Exit code, or null when killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  /** Whether the harness killed it (it had not exited by the kill moment). */
  readonly killed: boolean;
  /** Whether it outlived `timeoutMs` (then it was killed: a hang). */
  readonly timedOut: boolean;
  /** Whether `atMs` ran (only while the child still ran). */
  readonly acted: boolean;
}

export interface RunOptions {
  /** TMPDIR of the child: each run gets its own, so the harness can check it is left empty. */
  readonly tmp: string;
  /** SIGKILL the child this long after its start, if it still runs. */
  readonly killAfterMs?: number;
  /** Called at `ms` after the start if the child still runs (e.g. to kill the server under it). */
  readonly atMs?: { ms: number; run: () => Promise<void> | void };
  /** A run longer than this is killed and reported as timed out. */
  readonly timeoutMs?: number;
  readonly cwd?: string;
}

/** Runs `xfer <args>` as a child process. */
export function runXfer(args: readonly string[], options: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, env: { ...process.env, TMPDIR: options.tmp }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
  let killed = false;
  let timedOut = false;
  let acted = false;
  const timers: NodeJS.Timeout[] = [];
  if (options.killAfterMs !== undefined) {
    timers.push(
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) {
          killed = true;
          child.kill('SIGKILL');
        }
      }, options.killAfterMs),
    );
  }
  if (options.atMs) {
    const { ms, run } = options.atMs;
    timers.push(
      setTimeout(() => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        acted = true;
        void run();
      }, ms),
    );
  }
  timers.push(
    setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) {
        timedOut = true;
        child.kill('SIGKILL');
      }
    }, options.timeoutMs ?? 120_000),
  );
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, killed, timedOut, acted });
    });
  });
}

/** A one-line user error: "xfer: ...", no stack trace. */
export function isOneLineError(stderr: string): boolean {
  const lines = stderr.trim().split('\n');
  return lines.length === 1 && lines[0]!.startsWith('xfer: ') && !stderr.includes('    at ');
}

/**
 * Characters of a server's stderr kept in memory (its end): enough for a crash's error and
 * stack. A long run at info level writes a line per request (about 150 MB in a long fuzz
 * run), which the harness must not hold; ServeOptions.logFile keeps all of it on disk.
 */
const STDERR_KEPT_CHARS = 256 * 1024;

export interface ServeOptions {
  /** Every line the server writes to stderr is appended here too. */
  readonly logFile?: string;
  /** Called with each whole line the server writes to stderr. */
  readonly onLine?: (line: string) => void;
}

/** `xfer serve` as a child process; kill() and start() again keep its root and port. */
export class ServeProcess {
  private child?: ChildProcess;
  private exited?: Promise<void>;
  private log?: WriteStream;
  private partialLine = '';
  port = 0;
  /** The end of its stderr since the last start (STDERR_KEPT_CHARS). */
  stderr = '';

  constructor(readonly root: string, private readonly extraArgs: readonly string[] = [], private readonly options: ServeOptions = {}) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get alive(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** How it ended, if it has: for a finding's message. */
  get exitDescription(): string {
    if (!this.child) return 'not started';
    return this.child.signalCode ? `killed by ${this.child.signalCode}` : `exited ${this.child.exitCode}`;
  }

  async start(): Promise<void> {
    // A port that was just released may still be held for a moment: try again briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.startOnce();
        return;
      } catch (err) {
        if (attempt >= 20 || this.port === 0) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private startOnce(): Promise<void> {
    const child = spawn(process.execPath, [BIN, 'serve', '--root', this.root, '--port', String(this.port), ...this.extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.stderr = '';
    // 'close': exited, and its stderr read to the end (into the log file too).
    this.exited = new Promise((r) => child.on('close', () => r()));
    let out = '';
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`serve did not start: ${this.stderr}`)), 15_000);
      child.stdout!.setEncoding('utf8').on('data', (d) => {
        out += d;
        const m = /^listening on http:\/\/127\.0\.0\.1:(\d+)$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          this.port = Number(m[1]);
          resolve();
        }
      });
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        this.stderr += d;
        if (this.stderr.length > 2 * STDERR_KEPT_CHARS) this.stderr = this.stderr.slice(-STDERR_KEPT_CHARS);
        if (this.options.logFile) (this.log ??= createWriteStream(this.options.logFile, { flags: 'a' })).write(d);
        if (this.options.onLine) {
          const lines = (this.partialLine + d).split('\n');
          this.partialLine = lines.pop()!;
          for (const line of lines) this.options.onLine(line);
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`serve exited ${code}: ${this.stderr.trim()}`));
      });
    });
  }

  /** SIGKILL (a crash) or SIGTERM (a stop), and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.alive) this.child!.kill(signal);
    await this.exited;
    const log = this.log;
    this.log = undefined;
    if (log) await new Promise((r) => log.end(r));
  }

  /** Resident memory of the server process in bytes (VmRSS), or undefined if it is gone. */
  async rssBytes(): Promise<number | undefined> {
    if (!this.alive) return undefined;
    const status = await readFile(`/proc/${this.child!.pid}/status`, 'utf8').catch(() => '');
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  }
}
