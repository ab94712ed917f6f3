import { setMaxListeners } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createSecureServer, createServer as createH2Server, type Http2SecureServer, type Http2Server, type Http2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { fromSystemError, InvalidArgumentError } from '../core/errors.js';
import { LocalStore } from '../store/local.js';
import { createHandler } from './handler.js';
import { MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_BYTES, SESSION_WINDOW_BYTES, STREAM_WINDOW_BYTES } from './limits.js';

export interface ServerOptions {
  /** Directory holding the server's store (`<root>/store`) and materialized files (`<root>/files`). */
  readonly root: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** PEM certificate and key files: TLS with ALPN h2. Without them: cleartext h2 (h2c). */
  readonly tlsCertFile?: string;
  readonly tlsKeyFile?: string;
  /** Require `Authorization: Bearer <token>` on every request. */
  readonly token?: string;
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
}

export const DEFAULT_PORT = 7373;
export const DEFAULT_GRACE_MS = 10_000;

/** Starts `xfer serve`: a node:http2 server over a local store (docs/PROTOCOL.md). */
export async function createServer(options: ServerOptions): Promise<XferServer> {
  if ((options.tlsCertFile === undefined) !== (options.tlsKeyFile === undefined)) {
    throw new InvalidArgumentError('--tls-cert and --tls-key must be given together');
  }
  // An empty token would let every request in while the operator believes a token guards it.
  if (options.token === '') throw new InvalidArgumentError('the token is empty: give a non-empty --token (or XFER_TOKEN), or none to serve without authentication');
  const root = options.root;
  const filesDir = join(root, 'files');
  const tmpDir = join(root, 'tmp');
  for (const d of [root, filesDir, tmpDir]) {
    try {
      await mkdir(d, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, d, 'create directory');
    }
  }
  const store = await LocalStore.open(join(root, 'store'), { create: true });
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // every in-flight store operation listens on it
  const stats = { commits: 0, commitsStaged: 0 };
  const handler = createHandler({ store, filesDir, tmpDir, token: options.token, signal: controller.signal, stats });
  const settings = { initialWindowSize: STREAM_WINDOW_BYTES, maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: MAX_HEADER_LIST_BYTES };
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
    server = createSecureServer({ cert, key, allowHTTP1: false, settings, maxSessionMemory: 512 }, handler);
  } else {
    server = createH2Server({ settings, maxSessionMemory: 512 }, handler);
  }
  const sessions = new Set<Http2Session>();
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => {});
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
  const port = (server.address() as AddressInfo).port;
  const url = `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    stats: () => ({ ...stats }),
    close(graceMs = DEFAULT_GRACE_MS) {
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        for (const s of sessions) s.close();
        const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
        if ((await Promise.race([closed.then(() => 'closed' as const), timer])) === 'timeout') {
          controller.abort(new Error('server shutting down'));
          for (const s of sessions) s.destroy();
          await closed;
        }
        await store.close();
      })();
      return closing;
    },
  };
}
