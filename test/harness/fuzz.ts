/**
 * The fuzzer: every body `xfer serve` parses, sent over HTTP/2 to a child-process server
 * (many concurrent streams on one connection), and the manifest decoder in-process; random
 * bytes and mutations of valid inputs (test/harness/fuzz-inputs.ts). Checks:
 *   - no 5xx answer and no stream reset with INTERNAL_ERROR (each is a finding, with the request),
 *     except the resets of a session Node's http2 closed for its client's invalid frames
 *     (see NODE_MAX_SESSION_INVALID_FRAMES: counted as skipped, and as a figure);
 *   - no crash: the server's pid stays alive throughout;
 *   - no hang: every request answered within REQUEST_TIMEOUT_MS (a stage, which may wait
 *     for chunks and a commit by design, is cancelled after a grace instead);
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
import { entriesOf, stagingNames } from './fs-state.js';
import { buildWorld, DECODER_PARSERS, httpInput, HTTP_PARSERS, manifestInput, type DecoderParser, type FuzzRequest, type HttpParser, type World } from './fuzz-inputs.js';
import { ServeProcess } from './procs.js';
import { Rng } from './rng.js';
import { Summary, type Finding } from './summary.js';

export const REQUEST_TIMEOUT_MS = 10_000;
export const RSS_LIMIT_BYTES = 500 * 1024 * 1024;
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
 * thousands on one connection: a GOAWAY with INTERNAL_ERROR on a session after at least this
 * many PROTOCOL_ERROR resets is Node defending itself against the fuzzer, not a failure of
 * the server; the streams it resets are counted as skipped (figure
 * streamsResetByInvalidFrameLimit). A GOAWAY with INTERNAL_ERROR before that stays a finding.
 */
export const NODE_MAX_SESSION_INVALID_FRAMES = 1000;

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
  /** A request not answered in full within this is a hang (default REQUEST_TIMEOUT_MS, the long run's bar). */
  readonly requestTimeoutMs?: number;
  /** Replay one input: only the `index`-th of `parser` is run. */
  readonly only?: { readonly parser: string; readonly index: number };
  readonly keep?: boolean;
  readonly log?: (line: string) => void;
}

type Outcome =
  | { kind: 'answer'; status: number; code?: string; message?: string; rstCode?: number }
  | { kind: 'reset'; rstCode: number }
  | { kind: 'not-sent'; error: string }
  | { kind: 'timeout' }
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
interface SessionState {
  /** Streams the server reset with PROTOCOL_ERROR: malformed requests. */
  malformed: number;
  /** The server closed the session for its invalid frames. */
  closedForInvalidFrames: boolean;
}

/** One HTTP/2 connection, replaced when the server closes it (or was restarted). */
class Connection {
  private session?: ClientHttp2Session;
  private state: SessionState = { malformed: 0, closedForInvalidFrames: false };
  opened = 0;
  /** Sessions the server closed for their invalid frames. */
  closedForInvalidFrames = 0;
  constructor(private url: () => string, private log: (line: string) => void = () => {}) {}

  get(): { session: ClientHttp2Session; state: SessionState } {
    if (!this.session || this.session.closed || this.session.destroyed) {
      const session = connect(this.url());
      const state: SessionState = { malformed: 0, closedForInvalidFrames: false };
      session.on('error', () => {});
      // The server resets the session's open streams (INTERNAL_ERROR) just before this
      // GOAWAY: the workers judge such resets after a pause (fuzzHttp), once it has come.
      session.on('goaway', (code: number) => {
        if (code === h2.NGHTTP2_INTERNAL_ERROR && state.malformed >= NODE_MAX_SESSION_INVALID_FRAMES) {
          state.closedForInvalidFrames = true;
          this.closedForInvalidFrames++;
        }
        if (code !== h2.NGHTTP2_NO_ERROR) this.log(`  the server closed connection ${this.opened} (GOAWAY code ${code}) after ${state.malformed} malformed requests on it${state.closedForInvalidFrames ? ": Node's invalid-frame limit" : ''}`);
      });
      this.session = session;
      this.state = state;
      this.opened++;
    }
    return { session: this.session, state: this.state };
  }

  close(): void {
    this.session?.close();
  }
}

/** What became of a request, and the state of the session it went on (if it was sent). */
type Sent = Outcome & { readonly session?: SessionState };

function send(conn: Connection, req: FuzzRequest, timeoutMs: number, stageGraceMs: number): Promise<Sent> {
  return new Promise((resolve) => {
    let stream;
    let session: SessionState;
    try {
      const c = conn.get();
      session = c.state;
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
      return { kind: 'answer', status, code, message };
    };
    const started = Date.now();
    const expire = () => {
      if (req.stage && status === 0) {
        stream.close(h2.NGHTTP2_CANCEL);
        finish({ kind: 'cancelled' });
      } else if (Date.now() - started < timeoutMs) {
        // A stage whose answer has begun: it gets the full time to end, like any request.
        timer = setTimeout(expire, timeoutMs - (Date.now() - started));
      } else {
        stream.close(h2.NGHTTP2_CANCEL);
        finish({ kind: 'timeout' });
      }
    };
    let timer = setTimeout(expire, req.stage ? stageGraceMs : timeoutMs);
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (d: Buffer) => {
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
    stream.end(req.body);
  });
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
  const server = new ServeProcess(root);
  await server.start();
  const conn = new Connection(() => server.url, log);
  const inFlight = new Set<string>();
  let peakRss = 0;
  let restarts = 0;
  let stopped = false;
  let restarting: Promise<void> | undefined;
  const checkServer = async () => {
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
  const sampler = setInterval(() => void checkServer(), 200);
  try {
    for (const batch of world.uploads) {
      const r = await send(conn, { method: 'POST', path: '/v1/chunks?algorithm=blake3', headers: {}, body: batch, stage: false, how: 'setup' }, REQUEST_TIMEOUT_MS, 0);
      if (r.kind !== 'answer' || r.status !== 200) throw new Error(`fuzz setup: uploading the world's chunks failed: ${JSON.stringify(r)}`);
    }
    // Inputs are made in order per parser (deterministic); parsers are interleaved so that
    // stages, uploads and commits race as they would under real load.
    const streams = parsers.map((p) => ({ parser: p, rng: rng.fork(p), next: 0, n: count(p) }));
    let turn = 0;
    const nextRequest = async (): Promise<{ parser: HttpParser; index: number; req: FuzzRequest } | undefined> => {
      for (let tries = 0; tries < streams.length; tries++) {
        const s = streams[turn++ % streams.length]!;
        while (s.next < s.n) {
          const index = s.next++;
          const req = await httpInput(s.parser, s.rng, world);
          if (wanted(s.parser, index)) return { parser: s.parser, index, req };
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
        if (restarting) await restarting;
        const label = `${parser}#${index} ${req.method} ${req.path.slice(0, 80)}`;
        inFlight.add(label);
        const pid = server.pid;
        const o = await send(conn, req, options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, options.stageGraceMs);
        inFlight.delete(label);
        if (o.kind === 'reset' || o.kind === 'timeout' || (o.kind === 'answer' && o.rstCode)) {
          // A server that just died resets every stream: those are its crash's (reported
          // once, as server-alive), not each request's. Node's http2 closing a session for
          // its invalid frames resets its streams (INTERNAL_ERROR) before the GOAWAY that
          // says so: judged once that has come.
          await new Promise((r) => setTimeout(r, 300));
          if (server.pid !== pid || !server.alive) {
            lost++;
            continue;
          }
          if (o.session?.closedForInvalidFrames && (o.kind === 'reset' || o.kind === 'answer') && o.rstCode === h2.NGHTTP2_INTERNAL_ERROR) {
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
        if (o.kind === 'timeout') fail(parser, { check: `no-hang:${parser}`, message: `no complete answer within ${options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS} ms`, repro });
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
    summary.figures.sessionsClosedForInvalidFrames = conn.closedForInvalidFrames;
    summary.figures.streamsResetByInvalidFrameLimit = sessionLimit;
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
