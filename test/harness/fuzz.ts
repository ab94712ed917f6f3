/**
 * The fuzzer: every body `xfer serve` parses, sent over HTTP/2 to a child-process server
 * (many concurrent streams on one connection), and the manifest decoder in-process; random
 * bytes and mutations of valid inputs (test/harness/fuzz-inputs.ts). Checks:
 *   - no 5xx answer and no stream reset with INTERNAL_ERROR (each is a finding, with the request),
 *     except the resets of a session Node's http2 closed for its client's invalid frames
 *     (see NODE_MAX_SESSION_INVALID_FRAMES: counted as skipped, and as a figure);
 *   - no crash: the server's pid stays alive throughout;
 *   - no hang: no request's answer stops making progress for REQUEST_TIMEOUT_MS (a stage,
 *     which may wait for chunks and a commit by design, is cancelled after a grace instead);
 *   - the server's RSS stays under RSS_LIMIT_BYTES (VmRSS sampled throughout);
 *   - afterwards: no `.xfer-*` staging left under files/, nothing in tmp/;
 *   - the decoder throws nothing but ManifestCorruptError, and ends every input.
 * Inputs are deterministic by seed (the i-th input of a parser depends only on the seed):
 * a finding is repeated with `--seed S --parser P --index I`.
 */
import { connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isXferError } from '../../src/core/errors.js';
import { openManifest, openManifestFile } from '../../src/manifest/index.js';
import { CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES } from '../../src/store/http/client.js';
import { entriesOf, stagingNames } from './fs-state.js';
import { buildWorld, DECODER_PARSERS, httpInput, HTTP_PARSERS, manifestInput, type DecoderParser, type FuzzRequest, type HttpParser, type World } from './fuzz-inputs.js';
import { ServeProcess } from './procs.js';
import { Rng } from './rng.js';
import { Summary, type Finding } from './summary.js';

/**
 * A request whose answer makes no progress (no headers, no data, no end) for this long is a
 * hang. Not a bound on the whole answer: a fetch of many large chunks, shared fairly with 95
 * other streams on a loaded machine, may take longer while it keeps coming (measured: 263 KB
 * in 8.8 s with a longest pause of 0.9 s, beside two busy loops; docs/RELIABILITY.md).
 */
export const REQUEST_TIMEOUT_MS = 10_000;
export const RSS_LIMIT_BYTES = 500 * 1024 * 1024;
/** Answers slower than this are logged with their timing (not a failure). */
const SLOW_ANSWER_MS = 2000;
/** How often the server's RSS and liveness (and the fuzzer's own event loop) are sampled. */
const SAMPLE_MS = 200;
/** Findings kept in full per distinct check; the rest are counted. */
const FINDINGS_KEPT_PER_CHECK = 3;
/** Bytes of an answer kept to read its error code; the rest is counted and dropped. */
const ANSWER_KEPT_BYTES = 64 * 1024;
/** Request bodies up to this size are written into a finding (base64); larger ones by seed and index. */
const FINDING_BODY_BYTES = 4096;
/**
 * Node's http2 ends a session whose peer has sent more invalid frames than this over the
 * session's life (its `maxSessionInvalidFrames`, default 1000; xfer serve keeps the
 * default): GOAWAY with INTERNAL_ERROR (ERR_HTTP2_TOO_MANY_INVALID_FRAMES on the server),
 * which resets every stream of the session. Each malformed request (RFC 9113 section 8.1.1:
 * a space in :path, a :path not starting with '/', a header value with leading or trailing
 * whitespace, a body its content-length does not match), which the fuzzer sends on purpose,
 * is one such frame, and the server resets its stream with PROTOCOL_ERROR. The fuzzer sends
 * thousands on one connection: that is Node defending itself against the fuzzer, not a
 * failure of the server, and the streams it resets are counted as skipped (figure
 * streamsResetByInvalidFrameLimit).
 *
 * Which sessions ended so is taken from the server's own log (its debug line `session error
 * ... code=ERR_HTTP2_TOO_MANY_INVALID_FRAMES`, naming the client's port), not from the
 * GOAWAY: Node's server sends it, ends the socket and destroys it a moment later, which
 * resets the connection if the client's requests are still arriving; a client that writes
 * before it has read the GOAWAY then fails with ECONNRESET, its streams closed with
 * INTERNAL_ERROR, and never sees the GOAWAY (seed 424245 lost one so, 40 streams in one
 * burst; reproduced with a client that falls behind reading, docs/RELIABILITY.md). Any
 * other INTERNAL_ERROR reset stays a finding.
 */
export const NODE_MAX_SESSION_INVALID_FRAMES = 1000;
/** The server log line that says why a session ended with an error: the client's port, the code. */
const SESSION_ERROR_LINE = /\bsession error remote=\S*\|(\d+)\b.*\bcode=(\S+)/;
/** How long to wait, after a session ended, for the server's log line saying why. */
const SERVER_VERDICT_WAIT_MS = 5000;

export interface FuzzOptions {
  readonly dir: string;
  readonly seed: number;
  /** Inputs per parser. */
  readonly perParser: number;
  /** Inputs per HTTP parser, if not perParser. */
  readonly httpPerParser?: number;
  readonly httpParsers?: readonly HttpParser[];
  readonly decoderParsers?: readonly DecoderParser[];
  /** Concurrent streams on the connection (the server allows 128). */
  readonly concurrency: number;
  /** How long a stage may stay unanswered before the fuzzer cancels it. */
  readonly stageGraceMs: number;
  /** An answer without progress for this long is a hang (default REQUEST_TIMEOUT_MS, the long run's bar). */
  readonly requestTimeoutMs?: number;
  /** Replay one input: only the `index`-th of `parser` is run. */
  readonly only?: { readonly parser: string; readonly index: number };
  /** First input of each HTTP parser (default 0): a range is replayed with `from` and httpPerParser. */
  readonly from?: number;
  /** The server's log (debug level: every request, and why each session ended) goes here too. */
  readonly serverLogFile?: string;
  readonly keep?: boolean;
  readonly log?: (line: string) => void;
  /** Called with each HTTP input as it is sent. */
  readonly onInput?: (parser: HttpParser, index: number, req: FuzzRequest) => void;
}

/** How an answer came: from the request's start, in ms; `stallMs` is the longest wait for anything (headers, data, end). */
interface Timing {
  readonly ms: number;
  readonly headersMs?: number;
  readonly bytes: number;
  readonly stallMs: number;
}

type Outcome =
  | { kind: 'answer'; status: number; code?: string; message?: string; rstCode?: number; timing?: Timing }
  | { kind: 'reset'; rstCode: number }
  | { kind: 'not-sent'; error: string }
  | { kind: 'timeout'; timing: Timing }
  | { kind: 'cancelled' };

export async function runFuzz(options: FuzzOptions): Promise<Summary> {
  const rng = new Rng(options.seed);
  const summary = new Summary('fuzz', options.seed);
  const log = options.log ?? (() => {});
  await mkdir(options.dir, { recursive: true });
  const scratch = join(options.dir, 'scratch');
  await mkdir(scratch, { recursive: true });
  const world = await buildWorld(rng.fork('world'));
  const kept = new Map<string, number>();
  /** Records a failed case; the first few findings of each check are kept whole. */
  const fail = (kind: string, f: Omit<Finding, 'kind'>) => {
    const n = kept.get(f.check) ?? 0;
    kept.set(f.check, n + 1);
    summary.fail(kind, n < FINDINGS_KEPT_PER_CHECK ? [f] : []);
  };
  const wanted = (parser: string, i: number) => !options.only || (options.only.parser === parser && options.only.index === i);
  const count = (parser: string) => {
    if (options.only) return options.only.parser === parser ? options.only.index + 1 : 0;
    return (HTTP_PARSERS as readonly string[]).includes(parser) ? (options.httpPerParser ?? options.perParser) : options.perParser;
  };
  try {
    log(`fuzz: seed ${options.seed}, ${options.perParser} inputs per parser, ${options.concurrency} streams`);
    const t0 = Date.now();
    for (const parser of options.decoderParsers ?? DECODER_PARSERS) {
      await fuzzDecoder(parser, rng.fork(parser), world, count(parser), scratch, wanted, summary, fail, options.seed);
      log(`decoder ${parser}: ${describe(summary, parser)}`);
    }
    summary.figures.decoderSeconds = (Date.now() - t0) / 1000;
    const t1 = Date.now();
    const parsers = options.httpParsers ?? HTTP_PARSERS;
    if (parsers.length) await fuzzHttp(parsers, rng, world, options, count, wanted, summary, fail, log);
    summary.figures.httpSeconds = (Date.now() - t1) / 1000;
    summary.figures.perParser = options.perParser;
    summary.figures.httpPerParser = options.httpPerParser ?? options.perParser;
    for (const [check, n] of kept) summary.figures[`findings:${check}`] = n;
    return summary;
  } finally {
    if (!options.keep) await rm(options.dir, { recursive: true, force: true });
  }
}

function describe(summary: Summary, kind: string): string {
  const t = summary.kinds.get(kind);
  return t ? `${t.count} inputs, ${t.failed} failed` : 'no inputs';
}

async function fuzzDecoder(
  parser: DecoderParser,
  rng: Rng,
  world: World,
  n: number,
  scratch: string,
  wanted: (parser: string, i: number) => boolean,
  summary: Summary,
  fail: (kind: string, f: Omit<Finding, 'kind'>) => void,
  seed: number,
): Promise<void> {
  const file = join(scratch, 'decoder.xfm');
  let peak = 0;
  for (let i = 0; i < n; i++) {
    const input = await manifestInput(rng, world);
    const pieceSize = rng.pick([1, 7, 64, 4096, Math.max(1, input.bytes.length)]);
    if (!wanted(parser, i)) continue;
    const repro = `seed=${seed} parser=${parser} index=${i} (${input.how}, ${input.bytes.length} bytes${input.bytes.length <= FINDING_BODY_BYTES ? `: ${input.bytes.toString('base64')}` : ''})`;
    const read = async () => {
      if (parser === 'manifest-file') await writeFile(file, input.bytes);
      const reader = parser === 'manifest-file' ? await openManifestFile(file) : await openManifest(pieces(input.bytes, pieceSize));
      for await (const _ of reader.events()) void _;
    };
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      read().then(
        () => 'ok' as const,
        (err: unknown) => err,
      ),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), REQUEST_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (outcome === 'timeout') fail(parser, { check: `no-hang:${parser}`, message: `the decoder did not end within ${REQUEST_TIMEOUT_MS} ms`, repro });
    else if (outcome !== 'ok' && !isXferError(outcome, 'XFER_MANIFEST_CORRUPT')) {
      const e = outcome as Error;
      fail(parser, { check: `decoder-error:${(e as { code?: string })?.code ?? e?.name ?? typeof e}`, message: `the decoder threw ${e?.name}: ${String(e?.message ?? e).split('\n')[0]}`, repro });
    } else summary.pass(parser);
    if (i % 256 === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  summary.figures[`${parser}:peakRssBytes`] = Math.max(summary.figures[`${parser}:peakRssBytes`] ?? 0, peak);
}

async function* pieces(bytes: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** What the fuzzer knows of one HTTP/2 session: see NODE_MAX_SESSION_INVALID_FRAMES. */
export interface SessionState {
  /** Streams the server reset with PROTOCOL_ERROR: malformed requests. */
  malformed: number;
  /** The client's side of the session has closed. */
  ended: boolean;
  /** Streams opened on it. */
  requests: number;
  /** The GOAWAY code the server sent, if it sent one. */
  goaway?: number;
  /** The error the client's session ended with, if one (`code: message`). */
  error?: string;
  /** The client's port: the server's log names the connection by it. */
  localPort?: number;
}

/** The server's arguments beyond its root: its debug lines say why each session ended (SessionVerdicts). */
export const SERVE_ARGS = ['--log-level', 'debug'] as const;

/**
 * What the server's log (SERVE_ARGS) says ended each session with an error, by the client's
 * port: the word on which resets are Node's invalid-frame limit (NODE_MAX_SESSION_INVALID_FRAMES).
 */
export class SessionVerdicts {
  private readonly byPort = new Map<number, string>();
  constructor(private readonly log: (line: string) => void = () => {}) {}

  /** Feed each line of the server's stderr. */
  onLine(line: string): void {
    const m = SESSION_ERROR_LINE.exec(line);
    if (!m) return;
    this.byPort.set(Number(m[1]), m[2]!);
    this.log(`  the server ended the session of port ${m[1]}: ${m[2]}`);
  }

  get closedForInvalidFramesCount(): number {
    return [...this.byPort.values()].filter((v) => v === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES').length;
  }

  /**
   * Whether the server closed the session for its client's invalid frames. Waits for the
   * server's line (up to SERVER_VERDICT_WAIT_MS) if the session has ended; a session still
   * open after a second was not ended by the server.
   */
  async closedForInvalidFrames(state: SessionState): Promise<boolean> {
    for (let waited = 0; waited <= SERVER_VERDICT_WAIT_MS; waited += 50) {
      const verdict = state.localPort === undefined ? undefined : this.byPort.get(state.localPort);
      if (verdict !== undefined) return verdict === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES';
      if (!state.ended && waited >= 1000) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }
}

/** One HTTP/2 connection, replaced when the server closes it (or was restarted). */
export class Connection {
  private session?: ClientHttp2Session;
  private state: SessionState = { malformed: 0, ended: false, requests: 0 };
  opened = 0;
  constructor(private url: () => string, private log: (line: string) => void = () => {}) {}

  get(): { session: ClientHttp2Session; state: SessionState } {
    if (!this.session || this.session.closed || this.session.destroyed) {
      // The flow-control windows of xfer's own client (store/http.ts): with Node's default
      // of 64 KiB per connection, every 32 KiB of answers waits for the fuzzer's event loop
      // to acknowledge it, and under load a 2.5 MiB answer took over 10 s while progressing.
      const session = connect(this.url(), { settings: { initialWindowSize: STREAM_WINDOW_BYTES } });
      session.once('connect', () => {
        state.localPort = session.socket?.localPort;
        if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
      });
      const state: SessionState = { malformed: 0, ended: false, requests: 0 };
      const n = this.opened + 1;
      session.on('error', (err: NodeJS.ErrnoException) => (state.error ??= `${err.code ?? err.name}: ${err.message}`));
      session.on('frameError', (type: number, code: number, id: number) => this.log(`  connection ${n}: a frame of type ${type} on stream ${id} could not be sent (code ${code})`));
      session.on('goaway', (code: number) => (state.goaway = code));
      session.on('close', () => {
        state.ended = true;
        if (this.closing && state.goaway === undefined && state.error === undefined) return;
        const why = `${state.goaway === undefined ? 'no GOAWAY from the server' : `GOAWAY code ${state.goaway} from the server`}${state.error ? `; the client's session failed: ${state.error}` : ''}`;
        this.log(`  connection ${n} (port ${state.localPort}) ended after ${state.requests} requests (${state.malformed} malformed): ${why}`);
      });
      this.session = session;
      this.state = state;
      this.opened++;
    }
    return { session: this.session, state: this.state };
  }

  private closing = false;

  close(): void {
    this.closing = true;
    this.session?.close();
  }
}

/** What became of a request, and the state of the session it went on (if it was sent). Exported for tests of the fuzzer's judgement. */
export type Sent = Outcome & { readonly session?: SessionState };

export function send(conn: Connection, req: FuzzRequest, timeoutMs: number, stageGraceMs: number): Promise<Sent> {
  return new Promise((resolve) => {
    let stream;
    let session: SessionState;
    try {
      const c = conn.get();
      session = c.state;
      session.requests++;
      stream = c.session.request({ ':method': req.method, ':path': req.path, ...req.headers });
    } catch (err) {
      resolve({ kind: 'not-sent', error: (err as Error).message });
      return;
    }
    let status = 0;
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...o, session });
    };
    const answer = (): Outcome => {
      let code: string | undefined;
      let message: string | undefined;
      if (status >= 400) {
        try {
          const j = JSON.parse(Buffer.concat(kept).toString('utf8')) as { code?: string; message?: string };
          code = j.code;
          message = j.message;
        } catch {
          /* not JSON: reported by status */
        }
      }
      return { kind: 'answer', status, code, message, timing: timing() };
    };
    const started = Date.now();
    let headersAt: number | undefined;
    let bytes = 0;
    let lastProgress = started;
    let stallMs = 0;
    const progress = () => {
      const now = Date.now();
      stallMs = Math.max(stallMs, now - lastProgress);
      lastProgress = now;
    };
    const timing = (): Timing => {
      progress();
      return { ms: lastProgress - started, headersMs: headersAt === undefined ? undefined : headersAt - started, bytes, stallMs };
    };
    // A hang is an answer that makes no progress (headers, data, its end) for timeoutMs: a
    // large answer that keeps coming is not one, however long it takes in all (see
    // REQUEST_TIMEOUT_MS). Judged after the poll phase (setImmediate), so that what arrived
    // while the fuzzer's own event loop was held up counts before the timer does.
    const expire = () => {
      if (done) return;
      if (req.stage && status === 0) {
        stream.close(h2.NGHTTP2_CANCEL);
        finish({ kind: 'cancelled' });
        return;
      }
      const quiet = Date.now() - lastProgress;
      if (quiet < timeoutMs) timer = setTimeout(expire, timeoutMs - quiet);
      else
        setImmediate(() => {
          if (done) return;
          if (Date.now() - lastProgress < timeoutMs) return expire();
          stream.close(h2.NGHTTP2_CANCEL);
          finish({ kind: 'timeout', timing: timing() });
        });
    };
    let timer = setTimeout(expire, req.stage ? stageGraceMs : timeoutMs);
    stream.on('response', (h) => {
      status = Number(h[':status']);
      progress();
      headersAt = lastProgress;
    });
    stream.on('data', (d: Buffer) => {
      progress();
      bytes += d.length;
      if (keptBytes < ANSWER_KEPT_BYTES) {
        kept.push(d);
        keptBytes += d.length;
      }
    });
    stream.on('end', () => finish(answer()));
    stream.on('error', () => {});
    stream.on('close', () => {
      const rstCode = stream.rstCode ?? 0;
      if (rstCode === h2.NGHTTP2_PROTOCOL_ERROR) session.malformed++;
      if (status && rstCode === h2.NGHTTP2_NO_ERROR) finish(answer());
      else if (status) finish({ ...(answer() as Extract<Outcome, { kind: 'answer' }>), rstCode });
      else finish({ kind: 'reset', rstCode });
    });
    // Node ends a GET's or HEAD's stream itself: writing even an empty body after that is an
    // error that stops the answer's 'data' events (its body would go unread, its progress unseen).
    if (req.body.length) stream.end(req.body);
    else stream.end();
  });
}

function describeTiming(t: Timing): string {
  return `${t.ms} ms: headers ${t.headersMs === undefined ? 'never' : `after ${t.headersMs} ms`}, ${t.bytes} bytes of body, longest wait for progress ${t.stallMs} ms`;
}

function describeRequest(req: FuzzRequest): string {
  const body = req.body.length <= FINDING_BODY_BYTES ? `base64:${req.body.toString('base64')}` : `(${req.body.length} bytes: repeat by seed and index)`;
  const headers = Object.keys(req.headers).length ? ` headers=${JSON.stringify(req.headers).slice(0, 300)}` : '';
  return `${req.method} ${req.path.length > 300 ? `${req.path.slice(0, 300)}...(${req.path.length} chars)` : req.path}${headers} body ${req.body.length} bytes [${req.how}] ${body}`;
}

async function fuzzHttp(
  parsers: readonly HttpParser[],
  rng: Rng,
  world: World,
  options: FuzzOptions,
  count: (parser: string) => number,
  wanted: (parser: string, i: number) => boolean,
  summary: Summary,
  fail: (kind: string, f: Omit<Finding, 'kind'>) => void,
  log: (line: string) => void,
): Promise<void> {
  const root = join(options.dir, 'root');
  const verdicts = new SessionVerdicts(log);
  // At debug level: the server logs why each session ended (see NODE_MAX_SESSION_INVALID_FRAMES).
  const server = new ServeProcess(root, SERVE_ARGS, { logFile: options.serverLogFile, onLine: (line) => verdicts.onLine(line) });
  await server.start();
  const conn = new Connection(() => server.url, log);
  const inFlight = new Set<string>();
  let peakRss = 0;
  let restarts = 0;
  let stopped = false;
  let restarting: Promise<void> | undefined;
  // The fuzzer's own event loop: a timer that fires late means every answer was seen late.
  let lastSample = Date.now();
  let maxLoopLagMs = 0;
  const checkServer = async () => {
    const now = Date.now();
    const lag = now - lastSample - SAMPLE_MS;
    lastSample = now;
    if (lag > maxLoopLagMs) maxLoopLagMs = lag;
    if (lag >= SLOW_ANSWER_MS) log(`  the fuzzer's event loop was blocked for ${lag} ms`);
    const rss = await server.rssBytes();
    if (rss !== undefined) {
      if (rss > peakRss) peakRss = rss;
      if (rss > RSS_LIMIT_BYTES) fail('server', { check: 'rss-bound', message: `server RSS ${(rss / 1048576).toFixed(0)} MiB over ${RSS_LIMIT_BYTES / 1048576} MiB`, repro: `seed=${options.seed}; in flight: ${[...inFlight].slice(0, 5).join(' | ')}` });
    }
    if (!server.alive && !restarting && !stopped) {
      fail('server', { check: 'server-alive', message: `the server ${server.exitDescription}: ${crashLines(server.stderr)}`, repro: `seed=${options.seed}; in flight: ${[...inFlight].slice(0, 10).join(' | ')}` });
      restarts++;
      restarting = server.start().finally(() => (restarting = undefined));
    }
  };
  const sampler = setInterval(() => void checkServer(), SAMPLE_MS);
  /** The slowest complete answer per parser. */
  const slowest = new Map<string, Timing>();
  try {
    for (const batch of world.uploads) {
      const r = await send(conn, { method: 'POST', path: '/v1/chunks?algorithm=blake3', headers: {}, body: batch, stage: false, how: 'setup' }, REQUEST_TIMEOUT_MS, 0);
      if (r.kind !== 'answer' || r.status !== 200) throw new Error(`fuzz setup: uploading the world's chunks failed: ${JSON.stringify(r)}`);
    }
    // Inputs are made in order per parser (deterministic); parsers are interleaved so that
    // stages, uploads and commits race as they would under real load.
    const streams = parsers.map((p) => ({ parser: p, rng: rng.fork(p), next: options.only ? 0 : (options.from ?? 0), n: count(p) }));
    let turn = 0;
    const nextRequest = async (): Promise<{ parser: HttpParser; index: number; req: FuzzRequest } | undefined> => {
      for (let tries = 0; tries < streams.length; tries++) {
        const s = streams[turn++ % streams.length]!;
        while (s.next < s.n) {
          const index = s.next++;
          if (!wanted(s.parser, index)) continue;
          // A generator of its own per input: workers draw inputs concurrently (httpInput
          // awaits), and the i-th input must not depend on which worker drew which when
          // (a shared generator made replays by index send other inputs than the run had).
          const req = await httpInput(s.parser, s.rng.fork(index), world);
          return { parser: s.parser, index, req };
        }
      }
      return undefined;
    };
    let sent = 0;
    let notSent = 0;
    let cancelled = 0;
    let lost = 0;
    let sessionLimit = 0;
    const worker = async () => {
      for (let item = await nextRequest(); item; item = await nextRequest()) {
        const { parser, index, req } = item;
        options.onInput?.(parser, index, req);
        if (restarting) await restarting;
        const label = `${parser}#${index} ${req.method} ${req.path.slice(0, 80)}`;
        inFlight.add(label);
        const pid = server.pid;
        const o = await send(conn, req, options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, options.stageGraceMs);
        inFlight.delete(label);
        if ((o.kind === 'answer' || o.kind === 'timeout') && o.timing) {
          const t = o.timing;
          if (t.ms > (slowest.get(parser)?.ms ?? -1)) slowest.set(parser, t);
          if (t.ms >= SLOW_ANSWER_MS) log(`  slow: ${label}: ${o.kind === 'timeout' ? 'timed out' : `status ${o.status}`} after ${describeTiming(t)}`);
        }
        if (o.kind === 'reset' || o.kind === 'timeout' || (o.kind === 'answer' && o.rstCode)) {
          // A server that just died resets every stream: those are its crash's (reported
          // once, as server-alive), not each request's. Node's http2 closing a session for
          // its invalid frames resets its streams (INTERNAL_ERROR): judged by the server's
          // word on that session (SessionVerdicts), which may come a moment later.
          await new Promise((r) => setTimeout(r, 300));
          if (server.pid !== pid || !server.alive) {
            lost++;
            continue;
          }
          if ((o.kind === 'reset' || o.kind === 'answer') && o.rstCode === h2.NGHTTP2_INTERNAL_ERROR && o.session && (await verdicts.closedForInvalidFrames(o.session))) {
            sessionLimit++;
            summary.skip(parser, `streams reset when Node's http2 closed the session for its client's invalid frames (over ${NODE_MAX_SESSION_INVALID_FRAMES})`);
            continue;
          }
        }
        sent++;
        if (sent % 5000 === 0) log(`  ${sent} requests, peak server RSS ${(peakRss / 1048576).toFixed(0)} MiB`);
        const repro = `seed=${options.seed} parser=${parser} index=${index}: ${describeRequest(req)}`;
        if (o.kind === 'not-sent') {
          notSent++; // the HTTP/2 client refused to send it (an invalid header or path): not the server's
          continue;
        }
        if (o.kind === 'cancelled') cancelled++;
        if (o.kind === 'timeout') fail(parser, { check: `no-hang:${parser}`, message: `the answer made no progress for ${options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS} ms (${describeTiming(o.timing)})`, repro });
        else if (o.kind === 'answer' && o.status >= 500) fail(parser, { check: `no-5xx:${parser}:${o.code ?? o.status}`, message: `${o.status} ${o.code ?? ''}: ${o.message ?? ''}`, repro });
        else if ((o.kind === 'answer' || o.kind === 'reset') && o.rstCode === h2.NGHTTP2_INTERNAL_ERROR && server.alive && !restarting) {
          fail(parser, { check: `no-internal-reset:${parser}`, message: `stream reset with INTERNAL_ERROR${o.kind === 'answer' ? ` after status ${o.status}` : ' before any answer'}`, repro });
        } else summary.pass(parser);
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, () => worker()));
    for (const p of parsers) log(`http ${p}: ${describe(summary, p)}`);
    summary.figures.requestsSent = sent;
    summary.figures.requestsNotSent = notSent;
    summary.figures.stagesCancelled = cancelled;
    summary.figures.requestsLostToCrashes = lost;
    summary.figures.connections = conn.opened;
    summary.figures.sessionsClosedForInvalidFrames = verdicts.closedForInvalidFramesCount;
    summary.figures.streamsResetByInvalidFrameLimit = sessionLimit;
    summary.figures.fuzzerMaxEventLoopLagMs = maxLoopLagMs;
    for (const [p, t] of slowest) {
      summary.figures[`slowest:${p}:ms`] = t.ms;
      summary.figures[`slowest:${p}:bytes`] = t.bytes;
      summary.figures[`slowest:${p}:stallMs`] = t.stallMs;
    }
    await checkServer();
    // Afterwards: alive, answering, and nothing left behind by the cancelled stages and failed commits.
    conn.close();
    const after = new Connection(() => server.url);
    let info: Outcome = { kind: 'not-sent', error: 'not asked' };
    for (let attempt = 0; attempt < 2; attempt++) {
      // A crash in the last moments is reported as server-alive (by checkServer), not here.
      await new Promise((r) => setTimeout(r, 500));
      await checkServer();
      if (restarting) await restarting;
      info = await send(after, { method: 'GET', path: '/v1/info', headers: {}, body: Buffer.alloc(0), stage: false, how: 'check' }, REQUEST_TIMEOUT_MS, 0);
      if (info.kind === 'answer' && info.status === 200) break;
    }
    after.close();
    const end: Omit<Finding, 'kind'>[] = [];
    if (info.kind !== 'answer' || info.status !== 200) end.push({ check: 'server-answers', message: `after the run GET /v1/info gave ${JSON.stringify(info)}` });
    let staging: string[] = [];
    for (let i = 0; i < 40; i++) {
      staging = await stagingNames(join(root, 'files'), true);
      if (!staging.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (staging.length) end.push({ check: 'no-staging-leftovers', message: `left under files/: ${staging.slice(0, 5).join(', ')}` });
    const tmp = await entriesOf(join(root, 'tmp'));
    if (tmp.length) end.push({ check: 'server-tmp-empty', message: `left in tmp/: ${tmp.slice(0, 5).join(', ')}` });
    const outside = (await readdir(options.dir)).filter((n) => n !== 'root' && n !== 'scratch');
    if (outside.length) end.push({ check: 'writes-outside-root', message: `beside the server's root: ${outside.join(', ')}` });
    if (end.length) summary.fail('server', end.map((f) => ({ ...f, repro: `seed=${options.seed}` })));
    else summary.pass('server');
  } finally {
    stopped = true;
    clearInterval(sampler);
    conn.close();
    summary.figures.serverPeakRssBytes = Math.max(summary.figures.serverPeakRssBytes ?? 0, peakRss);
    summary.figures.serverRestarts = restarts;
    await server.stop('SIGTERM');
  }
}

/** The lines of a crashed server's stderr that say what happened: the error and its first frames. */
export function crashLines(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const at = lines.findIndex((l) => /Error|error:/.test(l));
  return (at >= 0 ? lines.slice(at, at + 4) : lines.slice(-4)).join(' / ');
}
