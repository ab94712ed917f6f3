import type { Command } from 'commander';
import { Option } from 'commander';
import { pino, type Level, type Logger } from 'pino';
import { InvalidArgumentError, isXferError } from '../core/errors.js';
import {
  BODY_TIMEOUT_MS,
  HEADERS_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  MALLOC_MMAP_THRESHOLD_BYTES,
  MAX_CONNECTIONS,
  MAX_STREAMS_TOTAL,
  STAGE_IDLE_TIMEOUT_MS,
} from '../server/limits.js';
import { createServer, DEFAULT_PORT } from '../server/server.js';
import { mallocMmapThreshold } from '../io/sys.js';
import { IN_PLACE_ABOVE_BYTES } from '../server/in-place.js';
import { parseSize } from '../core/sizes.js';
import { parseReadDataSubset } from '../transfer/verify.js';
import type { VerifySchedule } from '../server/verify-job.js';
import ms from 'ms';
import type { ServerStore } from '../server/handler.js';
import { s3From, s3Options, type S3Flags } from './options.js';

interface ServeFlags extends S3Flags {
  root: string;
  store?: string;
  host: string;
  port: string;
  tlsCert?: string;
  tlsKey?: string;
  token?: string;
  idleTimeout: string;
  headersTimeout: string;
  bodyTimeout: string;
  stageTimeout: string;
  maxConnections?: string;
  maxStreams: string;
  logFormat: string;
  logLevel: string;
  quiet?: boolean;
  inPlaceAbove?: string;
  /** commander's negation of `--no-files`: false when it is given. */
  files: boolean;
  verifyEvery?: string;
  verifySubset?: string;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function registerServe(program: Command, signal: AbortSignal): void {
  program
    .command('serve')
    .description('serve a chunk store over HTTP/2 for push, pull and ls')
    .requiredOption('--root <dir>', 'directory for the store (<root>/store) and pushed files (<root>/files)')
    .option('--no-files', 'store-only (backup targets, like restic): keep chunks, manifests and versions, rebuild no file under <root>/files (pulls rebuild at the client); recorded in the root at its first start, and a later start in the other mode is refused')
    .option('--store <s3://bucket/prefix>', 'keep chunks and manifests in this S3 store instead of <root>/store (pushed files are still rebuilt under <root>/files, unless --no-files)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port (0 picks a free one)', String(DEFAULT_PORT))
    .option('--tls-cert <file>', 'PEM certificate: serve TLS with ALPN h2')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--token <token>', 'require Authorization: Bearer <token> (or set XFER_TOKEN); must not be empty')
    .addOption(new Option('--idle-timeout <seconds>', 'close a connection with no request open for this long (0: never)').default(String(IDLE_TIMEOUT_MS / 1000)))
    .addOption(new Option('--headers-timeout <seconds>', 'close a new connection that sent no request headers in this time (0: never)').default(String(HEADERS_TIMEOUT_MS / 1000)))
    .addOption(new Option('--body-timeout <seconds>', 'cut (408) a request body bringing under 1 KiB, or an answer not read, for this long (0: never)').default(String(BODY_TIMEOUT_MS / 1000)))
    .addOption(new Option('--stage-timeout <seconds>', 'discard (408) a stage that makes no progress for this long (0: never)').default(String(STAGE_IDLE_TIMEOUT_MS / 1000)))
    .addOption(new Option('--max-connections <n>', `connections served at once; beyond, 503 with Retry-After (default ${MAX_CONNECTIONS}, less if the open-files limit is lower)`))
    .addOption(new Option('--max-streams <n>', 'requests in progress on the whole server; beyond, 503 with Retry-After').default(String(MAX_STREAMS_TOTAL)))
    .addOption(new Option('--log-format <format>', 'log lines on stderr: text or json').choices(['text', 'json']).default('text'))
    .addOption(new Option('--log-level <level>', 'least severe level logged').choices(LOG_LEVELS).default('info'))
    .addOption(new Option('--in-place-above <size>', `a push with --in-place rewrites a file target larger than this where it is, only the changed chunks (smaller ones are rebuilt and swapped in atomically; default ${IN_PLACE_ABOVE_BYTES / 1024 ** 3}G; not with --no-files)`))
    .option('--verify-every <duration>', 'verify every target in the background this long after start and after each verify (24h, 30m), results in the log')
    .option('--verify-subset <n/t|p%>', 'with --verify-every: also read back and re-hash this part of the data (100% all; default: existence and rebuilt files\' size and mtime only)')
    .option('-q, --quiet', 'log warnings and errors only (same as --log-level warn)')
    .addOption(s3Options()[0]!)
    .addOption(s3Options()[1]!)
    .action(async (flags: ServeFlags) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`invalid port "${flags.port}"`);
      const verifySchedule = verifyScheduleOf(flags);
      const s3 = s3From(flags);
      if (flags.store === undefined && (s3.endpoint !== undefined || s3.forcePathStyle === true)) {
        throw new InvalidArgumentError('--s3-endpoint and --s3-path-style apply to an S3 store: give --store s3://bucket/prefix');
      }
      const logger = serverLogger(flags.logFormat, flags.quiet ? 'warn' : flags.logLevel);
      // This process is the server: freed Buffers of a MiB or more go back to the system.
      mallocMmapThreshold(MALLOC_MMAP_THRESHOLD_BYTES);
      // The last line of defence: a failure that escaped its request is logged, and the
      // server goes on serving its other clients (each request's state is its own).
      const onUnhandled = (err: unknown) => logger.error({ code: isXferError(err) ? err.code : 'XFER_INTERNAL', error: (err as Error)?.message ?? String(err) }, 'unhandled rejection (kept serving)');
      process.on('unhandledRejection', onUnhandled);
      // A store given by --store is ours to close, after the server (which only flushes it).
      let store: (ServerStore & { close(): Promise<void> }) | undefined;
      let storeName: string | undefined;
      try {
        if (flags.store !== undefined) ({ store, name: storeName } = await openServeStore(flags.store, s3, signal));
        const server = await createServer({
          root: flags.root,
          ...(store !== undefined ? { store, storeName } : {}),
          host: flags.host,
          port,
          tlsCertFile: flags.tlsCert,
          tlsKeyFile: flags.tlsKey,
          token: flags.token ?? process.env.XFER_TOKEN,
          idleTimeoutMs: secondsFlag(flags.idleTimeout, '--idle-timeout'),
          headersTimeoutMs: secondsFlag(flags.headersTimeout, '--headers-timeout'),
          bodyTimeoutMs: secondsFlag(flags.bodyTimeout, '--body-timeout'),
          stageTimeoutMs: secondsFlag(flags.stageTimeout, '--stage-timeout'),
          maxConnections: flags.maxConnections === undefined ? undefined : countFlag(flags.maxConnections, '--max-connections'),
          maxStreams: countFlag(flags.maxStreams, '--max-streams'),
          logger,
          inPlaceAboveBytes: flags.inPlaceAbove === undefined ? undefined : parseSize(flags.inPlaceAbove, '--in-place-above size'),
          storeOnly: !flags.files,
          verifySchedule,
        });
        process.stdout.write(`listening on ${server.url}\n`);
        logger.info({ url: server.url }, 'listening');
        await new Promise<void>((resolve) => {
          if (signal.aborted) resolve();
          signal.addEventListener('abort', () => resolve(), { once: true });
        });
        logger.info({}, 'stopping');
        await server.close();
      } finally {
        await store?.close().catch((err: unknown) => logger.error({ error: (err as Error)?.message ?? String(err) }, 'closing the store failed'));
        process.off('unhandledRejection', onUnhandled);
        logger.flush();
      }
    });
}

/** The least --verify-every: a verify is a job, not a poll. */
export const MIN_VERIFY_EVERY_MS = 100;

/** --verify-every and --verify-subset, checked. */
function verifyScheduleOf(flags: ServeFlags): VerifySchedule | undefined {
  if (flags.verifyEvery === undefined) {
    if (flags.verifySubset !== undefined) throw new InvalidArgumentError('--verify-subset goes with --verify-every');
    return undefined;
  }
  // A unit is required: ms's bare number would be milliseconds, a surprise for "24".
  const everyMs = /^\d+(\.\d+)?\s*[a-z]+$/i.test(flags.verifyEvery) ? ms(flags.verifyEvery as ms.StringValue) : undefined;
  if (everyMs === undefined || !Number.isFinite(everyMs) || everyMs < MIN_VERIFY_EVERY_MS || everyMs > 2 ** 31 - 1) {
    throw new InvalidArgumentError(`--verify-every must be a duration with its unit (24h, 30m, 90s), from ${MIN_VERIFY_EVERY_MS} ms to 24 days, got "${flags.verifyEvery}"`);
  }
  return { everyMs, subset: flags.verifySubset === undefined ? undefined : parseReadDataSubset(flags.verifySubset) };
}

/**
 * The store of --store, and how it names itself in messages (hidden from clients): only
 * s3://bucket/prefix (the prefix is the store's, not a target in it: packs, index and
 * manifests go under it). Opening loads its index; a missing bucket or an unreachable
 * endpoint fails the start with the store's own message.
 */
async function openServeStore(url: string, s3: { endpoint?: string; forcePathStyle?: boolean }, signal: AbortSignal) {
  const { formatS3Location, isS3Location, openS3Store } = await import('../store/s3/index.js');
  if (!isS3Location(url)) throw new InvalidArgumentError(`--store: expected s3://bucket/prefix, got "${url}" (without --store the store is <root>/store)`);
  const store = await openS3Store(url, { ...s3, signal });
  // The bucket, as the store's messages begin: s3://bucket/<key>.
  return { store, name: formatS3Location({ bucket: store.location.bucket, prefix: '' }).replace(/\/$/, '') };
}

/** Seconds (decimals allowed) as whole milliseconds. */
function secondsFlag(raw: string, flag: string): number {
  const s = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(s) || s > 2_000_000) throw new InvalidArgumentError(`${flag} must be a number of seconds (0 to turn it off), got "${raw}"`);
  return Math.round(s * 1000);
}

function countFlag(raw: string, flag: string): number {
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} must be a positive integer, got "${raw}"`);
  return n;
}

/**
 * The server's log on stderr: pino's JSON lines, or the same records as one readable line
 * each (`<time> <LEVEL> <message> key=value ...`). Tokens and Authorization headers are
 * never logged (the server does not pass them; the redaction is a second guard).
 */
function serverLogger(format: string, level: string): Logger {
  const options = {
    level,
    base: undefined,
    redact: { paths: ['token', 'authorization', 'headers.authorization', '*.token', '*.authorization'], censor: '[redacted]' },
  };
  if (format === 'json') return pino(options, pino.destination({ dest: 2, sync: true }));
  return pino(options, { write: (line: string) => process.stderr.write(textLine(line)) });
}

function textLine(json: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, msg, ...fields } = record;
  const name = (pino.levels.labels[Number(level)] ?? String(level)).toUpperCase() as Uppercase<Level>;
  const pairs = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' && !/\s|"/.test(v) ? v : JSON.stringify(v)}`);
  return `${new Date(Number(time)).toISOString()} ${name} ${String(msg ?? '')}${pairs.length ? ` ${pairs.join(' ')}` : ''}\n`;
}
