import { setMaxListeners } from 'node:events';
import { readFile } from 'node:fs/promises';
import {
  constants as h2,
  createSecureServer,
  createServer as createH2Server,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { collectWhenIdle, trimLargeBuffers } from '../io/sys.js';
import { BusyError, fromSystemError, InvalidArgumentError, TimeoutError } from '../core/errors.js';
import { LocalStore } from '../store/local.js';
import { createHandler, failureOf, sendErrorAnswer, type ServerStore } from './handler.js';
import { HeldStore } from './held.js';
import { claimMode } from './mode.js';
import { clearServerTemp } from './paths.js';
import { sweepDeadStagings } from './sweep.js';
import {
  BODY_MIN_PROGRESS_BYTES,
  BODY_TIMEOUT_MS,
  BUSY_RETRY_AFTER_S,
  HEADERS_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  LAST_SESSION_TRIM_DELAY_MS,
  MAX_BUSY_CONNECTIONS,
  MAX_CONCURRENT_STREAMS,
  defaultMaxConnections,
  MAX_HEADER_LIST_BYTES,
  MAX_STREAMS_TOTAL,
  SESSION_WINDOW_BYTES,
  STAGE_IDLE_TIMEOUT_MS,
  STREAM_WINDOW_BYTES,
} from './limits.js';
import { silentLogger, type ServerLogger } from './log.js';
import { scheduleVerify, type VerifySchedule } from './verify-job.js';

export interface ServerOptions {
  /**
   * Directory holding the server's materialized files (`<root>/files`), its temporary
   * files (`<root>/tmp`) and, unless `store` is given, its store (`<root>/store`).
   */
  readonly root: string;
  /**
   * The store chunks and manifests are kept in: any ChunkStore & ManifestStore (local, S3,
   * memory). The caller keeps it: the server does not close it. Default: a LocalStore at
   * `<root>/store`, which the server opens and closes.
   */
  readonly store?: ServerStore;
  /**
   * How `store` names itself in its messages (e.g. `s3://bucket/prefix`): replaced by "the
   * server's store" in what clients are told, as the default store's path is.
   */
  readonly storeName?: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** PEM certificate and key files: TLS with ALPN h2. Without them: cleartext h2 (h2c). */
  readonly tlsCertFile?: string;
  readonly tlsKeyFile?: string;
  /** Require `Authorization: Bearer <token>` on every request. Must not be empty. */
  readonly token?: string;
  /** See IDLE_TIMEOUT_MS. 0: none. */
  readonly idleTimeoutMs?: number;
  /** See HEADERS_TIMEOUT_MS. 0: none. */
  readonly headersTimeoutMs?: number;
  /** See BODY_TIMEOUT_MS. 0: none. */
  readonly bodyTimeoutMs?: number;
  /** See STAGE_IDLE_TIMEOUT_MS. 0: none. */
  readonly stageTimeoutMs?: number;
  /** See MAX_CONNECTIONS. */
  readonly maxConnections?: number;
  /** See MAX_STREAMS_TOTAL. */
  readonly maxStreams?: number;
  /** Where requests, commits and errors are reported (server/log.ts). Default: nowhere. */
  readonly logger?: ServerLogger;
  /** A push asking for it (in-place=1) rewrites a file target of more bytes than this in place (IN_PLACE_ABOVE_BYTES). */
  readonly inPlaceAboveBytes?: number;
  /** Verify every target in the background on this schedule, each result in the log (server/verify-job.ts). */
  readonly verifySchedule?: VerifySchedule;
  /**
   * Store-only (`xfer serve --no-files`, restic-like): pushes store chunks, manifests and
   * versions only, nothing is rebuilt under `<root>/files/`; pulls rebuild at the client.
   * The mode is recorded in the root at its first start, and a start in the other mode is
   * refused (server/mode.ts). inPlaceAboveBytes must then not be given.
   */
  readonly storeOnly?: boolean;
}

export interface XferServer {
  /** e.g. `http://127.0.0.1:7373` */
  readonly url: string;
  /**
   * Stops accepting connections, lets in-flight requests finish for up to `graceMs`, then
   * aborts the rest (their staging files are removed; no target is ever left half-written).
   */
  close(graceMs?: number): Promise<void>;
  /** Counters since start, for operators and tests. */
  stats(): ServerStats;
}

export interface ServerStats {
  /** Manifests committed (targets swapped in or kept unchanged). */
  readonly commits: number;
  /** Of those, files rebuilt by a stage while their chunks arrived (server/stage.ts). */
  readonly commitsStaged: number;
  /** Connections open now. */
  readonly connections: number;
}

export const DEFAULT_PORT = 7373;
export const DEFAULT_GRACE_MS = 10_000;
/** How long a connection closed for idleness may take to finish its GOAWAY before it is cut. */
const CLOSE_GRACE_MS = 1000;

/** One TCP connection: whether it is over the cap, its session, its requests. */
interface Connection {
  readonly socket: Socket;
  /** Accepted beyond maxConnections: its requests are answered 503, then it is closed. */
  readonly busy: boolean;
  session?: Http2Session;
  /** Requests seen, and open now. */
  requests: number;
  open: number;
  timer?: NodeJS.Timeout;
}

function isNonNegativeInteger(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

/** Starts `xfer serve`: a node:http2 server over a store (ServerOptions.store; docs/PROTOCOL.md). */
export async function createServer(options: ServerOptions): Promise<XferServer> {
  if ((options.tlsCertFile === undefined) !== (options.tlsKeyFile === undefined)) {
    throw new InvalidArgumentError('--tls-cert and --tls-key must be given together');
  }
  // An empty token would let every request in while the operator believes a token guards it.
  if (options.token === '') throw new InvalidArgumentError('the token is empty: give a non-empty --token (or XFER_TOKEN), or none to serve without authentication');
  const idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  const headersTimeoutMs = options.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const bodyTimeoutMs = options.bodyTimeoutMs ?? BODY_TIMEOUT_MS;
  const stageTimeoutMs = options.stageTimeoutMs ?? STAGE_IDLE_TIMEOUT_MS;
  const maxConnections = options.maxConnections ?? defaultMaxConnections();
  const maxStreams = options.maxStreams ?? MAX_STREAMS_TOTAL;
  for (const [name, v] of Object.entries({ idleTimeoutMs, headersTimeoutMs, bodyTimeoutMs, stageTimeoutMs })) {
    if (!isNonNegativeInteger(v)) throw new InvalidArgumentError(`${name} must be a non-negative integer of milliseconds`);
  }
  for (const [name, v] of Object.entries({ maxConnections, maxStreams })) {
    if (!isNonNegativeInteger(v) || v < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
  }
  if (options.inPlaceAboveBytes !== undefined && !isNonNegativeInteger(options.inPlaceAboveBytes)) throw new InvalidArgumentError('inPlaceAboveBytes must be a non-negative integer of bytes');
  const storeOnly = options.storeOnly === true;
  if (storeOnly && options.inPlaceAboveBytes !== undefined) throw new InvalidArgumentError('--in-place-above applies to rebuilt files, and a --no-files server rebuilds none: leave it out');
  const log = options.logger ?? silentLogger;
  // Absolute, so that messages naming paths under it are recognized and hidden (handler.ts),
  // whatever the working directory.
  const root = resolve(options.root);
  const filesDir = join(root, 'files');
  const tmpDir = join(root, 'tmp');
  try {
    await mkdir(root, { recursive: true });
  } catch (err) {
    throw fromSystemError(err, root, 'create directory');
  }
  // Before files/ is made: a root without a record but with files/ is a files root (mode.ts).
  await claimMode(root, storeOnly ? 'store-only' : 'files');
  // A store-only root has no files/: nothing is rebuilt, so nothing there could go stale.
  for (const d of storeOnly ? [tmpDir] : [filesDir, tmpDir]) {
    try {
      await mkdir(d, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, d, 'create directory');
    }
  }
  await clearServerTemp(tmpDir);
  const ownStore = options.store === undefined;
  // The default store with files: chunks of the current files are held by them, one copy
  // on disk (server/held.ts); its start-up rules run before the staging sweep below.
  let held: HeldStore | undefined;
  if (ownStore && !storeOnly) {
    const local = await LocalStore.open(join(root, 'store'), { create: true });
    try {
      held = await HeldStore.open(local, { root, filesDir, log });
    } catch (err) {
      await local.close();
      throw err;
    }
  }
  const store: ServerStore = held ?? options.store ?? (await LocalStore.open(join(root, 'store'), { create: true }));
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // every in-flight store operation listens on it
  const stats = { commits: 0, commitsStaged: 0 };
  const handler = createHandler({ store, filesDir, tmpDir, token: options.token, signal: controller.signal, stats, stageTimeoutMs, sendTimeoutMs: bodyTimeoutMs, log, inPlaceAboveBytes: options.inPlaceAboveBytes, storeName: options.storeName, storeOnly, held });
  const settings = { initialWindowSize: STREAM_WINDOW_BYTES, maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: MAX_HEADER_LIST_BYTES };

  const connections = new Map<string, Connection>();
  const keyOf = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}|${s.remotePort}`;
  let activeRequests = 0;

  /** Every request: refused 503 at a limit, its body watched, its answer logged. Never throws. */
  const serve = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    try {
      admit(req, res);
    } catch (err) {
      log.error({ code: 'XFER_INTERNAL', error: (err as Error)?.message ?? String(err) }, 'request failed before its handler');
      sendErrorAnswer(res, err);
    }
  };

  const admit = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    const started = performance.now();
    const conn = connections.get(keyOf(req.stream.session?.socket ?? {}));
    const stream = req.stream;
    let bytesIn = 0;
    let bytesOut = 0;
    // Counted where the compat layer hands the stream's data to the request: a 'data'
    // listener of our own would start the stream flowing before the handler reads it.
    const push = req.push.bind(req);
    req.push = (chunk: unknown, encoding?: BufferEncoding) => {
      if (chunk instanceof Uint8Array) bytesIn += chunk.length;
      return push(chunk, encoding);
    };
    countWrites(res, (n) => (bytesOut += n));
    activeRequests++;
    if (conn) {
      conn.requests++;
      conn.open++;
      clearTimeout(conn.timer);
    }
    const path = req.url.split('?')[0]!;
    let watchdog: NodeJS.Timeout | undefined;
    res.once('close', () => {
      activeRequests--;
      clearInterval(watchdog);
      if (conn && --conn.open === 0 && !conn.busy) armIdle(conn);
      const failure = failureOf(res);
      const fields = {
        method: req.method,
        path,
        status: res.statusCode,
        bytesIn,
        bytesOut,
        ms: Math.round(performance.now() - started),
        ...(failure ? { code: failure.code } : {}),
        ...(failure && res.statusCode >= 500 ? { error: failure.message } : {}),
        ...(!res.writableFinished ? { reset: true } : {}),
      };
      if (res.statusCode >= 500) log.error(fields, 'request failed');
      else log.info(fields, 'request');
    });
    if (conn?.busy || activeRequests > maxStreams) {
      const why = conn?.busy ? `the server has ${maxConnections} connections open` : `the server has ${maxStreams} requests in progress`;
      sendErrorAnswer(res, new BusyError(`${why}: try again later`), { 'retry-after': String(BUSY_RETRY_AFTER_S) });
      closeAfterAnswer(res);
      if (conn?.busy) conn.session?.close();
      return;
    }
    // Stage bodies are paced by the push and bounded by the stage's own idle timeout.
    if (bodyTimeoutMs > 0 && !path.startsWith('/v1/stage/')) {
      let seen = 0;
      watchdog = setInterval(() => {
        if (stream.readableEnded || req.complete || stream.closed) return clearInterval(watchdog);
        const progressed = bytesIn - seen;
        seen = bytesIn;
        // Data the handler has not taken yet, or a paused stream: the server is the slow side.
        if (req.readableLength > 0 || stream.readableLength > 0 || stream.isPaused()) return;
        if (progressed >= BODY_MIN_PROGRESS_BYTES) return;
        clearInterval(watchdog);
        sendErrorAnswer(res, new TimeoutError(`the request body brought ${progressed} bytes in ${bodyTimeoutMs / 1000} s (at least ${BODY_MIN_PROGRESS_BYTES} needed)`));
        closeAfterAnswer(res);
      }, bodyTimeoutMs);
      watchdog.unref();
    }
    handler(req, res);
  };

  /** Closes an idle connection: GOAWAY, then cut if it lingers. */
  const armIdle = (conn: Connection) => {
    clearTimeout(conn.timer);
    if (idleTimeoutMs === 0) return;
    conn.timer = setTimeout(() => {
      log.debug({ remote: keyOf(conn.socket), idleMs: idleTimeoutMs }, 'closing an idle connection');
      conn.session?.close();
      setTimeout(() => destroyConnection(conn), CLOSE_GRACE_MS).unref();
    }, idleTimeoutMs);
    conn.timer.unref();
  };

  let server: Http2Server | Http2SecureServer;
  const tls = options.tlsCertFile !== undefined;
  if (tls) {
    let cert: Buffer;
    let key: Buffer;
    try {
      cert = await readFile(options.tlsCertFile!);
      key = await readFile(options.tlsKeyFile!);
    } catch (err) {
      throw fromSystemError(err, options.tlsCertFile!, 'read TLS certificate or key');
    }
    server = createSecureServer({ cert, key, allowHTTP1: false, settings, maxSessionMemory: 512 }, serve);
  } else {
    server = createH2Server({ settings, maxSessionMemory: 512 }, serve);
  }
  // Past the busy ones, connections are closed at once by net.Server itself.
  server.maxConnections = maxConnections + MAX_BUSY_CONNECTIONS;
  // Ahead of http2's own listener, which makes a cleartext connection's session (and emits
  // 'session') synchronously: the connection is known by then.
  server.prependListener('connection', (socket: Socket) => {
    const conn: Connection = { socket, busy: connections.size >= maxConnections, requests: 0, open: 0 };
    const key = keyOf(socket);
    connections.set(key, conn);
    socket.on('error', () => {}); // a reset by either side; the close below follows
    socket.on('close', () => {
      clearTimeout(conn.timer);
      if (connections.get(key) === conn) connections.delete(key);
    });
    if (conn.busy) log.warn({ remote: key, connections: connections.size }, 'connection over the limit: its requests are answered 503');
    // The TLS handshake, the HTTP/2 preface and the first request's headers, in time.
    if (headersTimeoutMs > 0) {
      conn.timer = setTimeout(() => {
        if (conn.requests > 0) return;
        log.debug({ remote: key, headersTimeoutMs }, 'closing a connection that sent no request');
        destroyConnection(conn);
      }, headersTimeoutMs);
      conn.timer.unref();
    }
  });
  const sessions = new Set<Http2Session>();
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    const conn = connections.get(keyOf(session.socket));
    if (conn) conn.session = session;
    // Why a session ends, at debug level: an error (e.g. ERR_HTTP2_TOO_MANY_INVALID_FRAMES,
    // after which Node sends GOAWAY INTERNAL_ERROR and resets every stream), a GOAWAY from
    // the client, a frame nghttp2 could not send. Without these a burst of resets on one
    // connection cannot be told apart from a server fault.
    const remote = keyOf(session.socket ?? {});
    let requests = 0;
    session.on('stream', () => requests++);
    session.on('close', () => {
      sessions.delete(session);
      log.debug({ remote, requests }, 'session closed');
      // The last client gone: what its commands kept for reuse goes back now, not after an
      // idle spell (LARGE_BUFFER_IDLE_MS), so the next client's command starts from an
      // empty server. Back to back, a 64 GiB sparse image's commands left 236-311 MiB
      // resident and the next command's peak went over 300 MiB (issue 14's bound).
      if (sessions.size === 0) setTimeout(() => sessions.size === 0 && !closing && trimLargeBuffers(0), LAST_SESSION_TRIM_DELAY_MS).unref();
    });
    session.on('error', (err: NodeJS.ErrnoException) => log.debug({ remote, requests, code: err.code, error: err.message }, 'session error'));
    session.on('goaway', (errorCode: number, lastStreamId: number) => log.debug({ remote, requests, errorCode, lastStreamId }, 'GOAWAY from the client'));
    session.on('frameError', (frameType: number, errorCode: number, streamId: number) => log.debug({ remote, frameType, errorCode, streamId }, 'a frame could not be sent'));
    try {
      session.setLocalWindowSize(SESSION_WINDOW_BYTES);
    } catch {
      /* the session may already be closing */
    }
  });
  server.on('sessionError', () => {});
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(fromSystemError(err, `${host}:${options.port ?? DEFAULT_PORT}`, 'listen')));
    server.listen(options.port ?? DEFAULT_PORT, host, () => resolve());
  });
  server.on('error', (err) => log.error({ error: (err as Error).message }, 'server error'));
  const port = (server.address() as AddressInfo).port;
  const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  // Staging copies that dead server processes left under files/ go in the background (server/sweep.ts).
  const sweepController = new AbortController();
  const swept = storeOnly ? undefined : sweepDeadStagings(filesDir, { signal: sweepController.signal, log });
  const verifier = options.verifySchedule ? scheduleVerify(store, storeOnly ? undefined : filesDir, options.verifySchedule, log) : undefined;
  // Between commands, what the last one dropped is collected (see collectWhenIdle).
  const stopCollecting = collectWhenIdle();
  let closing: Promise<void> | undefined;
  return {
    url,
    stats: () => ({ ...stats, connections: connections.size }),
    close(graceMs = DEFAULT_GRACE_MS) {
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        for (const s of sessions) s.close();
        // Connections that never made a session (a handshake or preface in progress).
        for (const c of connections.values()) if (c.requests === 0) destroyConnection(c);
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
        if ((await Promise.race([closed.then(() => 'closed' as const), timer])) === 'timeout') {
          controller.abort(new Error('server shutting down'));
          for (const s of sessions) s.destroy();
          await closed;
        }
        stopCollecting();
        sweepController.abort();
        await swept;
        await verifier?.stop();
        if (ownStore) await store.close();
        else await store.flush().catch(() => {});
      })();
      return closing;
    },
  };
}

/**
 * Cuts a connection. Its session owns the socket's handle once made, and a plain destroy()
 * then waits for a write the peer may never let finish: the socket is reset instead.
 */
function destroyConnection(conn: Connection): void {
  if (!conn.socket.destroyed) conn.socket.resetAndDestroy();
  conn.session?.destroy();
}

/** Counts the bytes written to a response (for the request log). end(data) goes through write(). */
function countWrites(res: Http2ServerResponse, add: (n: number) => void): void {
  const write = res.write.bind(res) as (...args: unknown[]) => boolean;
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    add(typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk instanceof Uint8Array ? chunk.length : 0);
    return write(chunk, ...rest);
  }) as typeof res.write;
}

/**
 * Ends a request whose answer was sent before its body was read: once the answer is out,
 * the stream is reset with NO_ERROR (RFC 9113 section 8.1), so the client stops sending.
 */
function closeAfterAnswer(res: Http2ServerResponse): void {
  const stream = res.stream;
  if (!stream || stream.closed) return;
  const rst = () => {
    if (!stream.closed) stream.close(h2.NGHTTP2_NO_ERROR);
  };
  if (res.writableFinished) rst();
  else res.once('finish', rst);
}
