import { EXIT_CODES, isXferError } from '../core/errors.js';
import type { RetryEvent } from '../core/retry.js';
import { formatBytes } from '../core/sizes.js';

/** Exit codes besides those of EXIT_CODES: success, and "verify found damage". */
export const EXIT_OK = 0;
export const EXIT_DAMAGED = 1;
export const EXIT_USAGE = 2;
/** Some entries of a tree could not be copied (each reported on stderr); the rest was. rsync's code. */
export const EXIT_PARTIAL = 23;

let exitCodeSoFar = EXIT_OK;

/**
 * The exit code a command has decided on before it finishes (verify found damage, a push
 * is partial). Told when it is decided, before the report is printed: a reader that closes
 * the pipe early (`xfer verify dir | head -1`, see bin.ts) must not turn "damaged" into 0.
 */
export function noteExitCode(code: number): void {
  exitCodeSoFar = code;
}

export function exitCodeDecided(): number {
  return exitCodeSoFar;
}

/** The one place an error becomes a line on stderr and an exit code. No stack traces. */
export function reportError(err: unknown): number {
  if (isXferError(err)) {
    process.stderr.write(`xfer: ${err.message}\n`);
    return EXIT_CODES[err.code] ?? 1;
  }
  const e = err as { code?: string; message?: string };
  if (e?.code === 'ERR_STREAM_PREMATURE_CLOSE' || e?.code === 'EPIPE') return EXIT_OK;
  process.stderr.write(`xfer: internal error: ${e?.message ?? String(err)}\n`);
  if (process.env.XFER_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return EXIT_CODES.XFER_INTERNAL;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** "1 chunk", "2 chunks": a count and its noun in the right number. */
export function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function rate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${formatBytes(bytes / seconds)}/s` : '-';
}

/** Least time between two redraws of the progress line. */
export const PROGRESS_INTERVAL_MS = 250;

/**
 * A one-line progress display on stderr when it is a TTY (or -P/--progress asks for it),
 * redrawn at most 4 times a second. Silent otherwise (pipes, CI, --quiet, --json).
 */
export class Progress {
  /** The first update draws at once (a short transfer still shows one line). */
  private last = -Infinity;
  private readonly started = performance.now();
  private shown = false;
  constructor(private readonly enabled: boolean) {}

  static for(opts: { quiet?: boolean; json?: boolean; progress?: boolean }): Progress {
    return new Progress(!opts.quiet && !opts.json && (process.stderr.isTTY === true || opts.progress === true));
  }

  /** Prints a line of a listing on stdout, erasing the progress line first (it is redrawn at the next update). */
  println(text: string): void {
    if (this.shown) {
      process.stderr.write('\r\x1b[K');
      this.shown = false;
      this.last = -Infinity;
    }
    process.stdout.write(text);
  }

  update(done: number, total: number, extra: string): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.last < PROGRESS_INTERVAL_MS) return;
    this.last = now;
    const secs = (now - this.started) / 1000;
    const r = secs > 0 ? done / secs : 0;
    const eta = r > 0 && total > done ? `, ETA ${Math.ceil((total - done) / r)}s` : '';
    const pct = total > 0 ? ` ${((100 * done) / total).toFixed(1)}%` : '';
    process.stderr.write(`\r\x1b[K${formatBytes(done)}${total > 0 ? ` of ${formatBytes(total)}` : ''}${pct}, ${formatBytes(r)}/s${eta}${extra}`);
    this.shown = true;
  }

  /** Shows `text` in place of the progress line until the next update (a stall explained). */
  notice(text: string): void {
    if (!this.enabled) return;
    process.stderr.write(`\r\x1b[K${text}`);
    this.shown = true;
    this.last = -Infinity; // the next update redraws at once
  }

  /** What the display says before a retry waits (see core/retry.ts). */
  retrying(event: RetryEvent): void {
    const why = event.error instanceof Error ? event.error.message : String(event.error);
    this.notice(`${why}; retry ${event.retry} in ${(event.delayMs / 1000).toFixed(1)} s`);
  }

  done(): void {
    if (this.shown) process.stderr.write('\r\x1b[K');
  }
}
