/*
 * A fault-injecting HTTP proxy between the S3 SDK and a real S3 server (moto, s3rver):
 * plain node:http, forwarding each request unchanged (the Host header too, so signatures
 * stay valid) unless `fault` picks a fault for it. It logs every request, so tests can
 * count PUTs and ranged GETs.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export type S3Fault =
  /** Answer with this status and S3 error code; the request never reaches the server. */
  | { readonly kind: 'status'; readonly status: number; readonly code: string }
  /** Close the connection without an answer; the request never reaches the server. */
  | { readonly kind: 'drop' }
  /**
   * Forward the request, then close the connection before the answer (the server did the
   * work); `then` runs first (a test kills its client there: a crash after the request).
   */
  | { readonly kind: 'drop-after'; readonly then?: () => void }
  /** Forward; pass the answer's headers and half its body, then close the connection. */
  | { readonly kind: 'truncate' }
  /** Forward; pass the answer's first half only, as a complete answer (Content-Length says so). */
  | { readonly kind: 'short' }
  /** Forward; pass the answer with one body byte changed. */
  | { readonly kind: 'corrupt' }
  /** Never answer (until the client gives up or the proxy closes). */
  | { readonly kind: 'hang' };

export interface LoggedRequest {
  readonly method: string;
  /** Path without the query, e.g. /bucket/prefix/packs/x.pack. */
  readonly path: string;
  readonly query: string;
  readonly range: string | undefined;
  readonly bytes: number;
  /** The fault applied, if any. */
  fault?: S3Fault['kind'];
}

export class S3FaultProxy {
  readonly log: LoggedRequest[] = [];
  /** Picks the fault for a request (called once per request, in arrival order). */
  fault: ((req: LoggedRequest) => S3Fault | undefined) | undefined;
  private readonly hanging = new Set<ServerResponse>();

  private constructor(
    private readonly server: Server,
    private readonly target: URL,
  ) {}

  static async start(target: string): Promise<S3FaultProxy> {
    let proxy: S3FaultProxy | undefined;
    const server = createServer((req, res) => proxy!.handle(req, res));
    proxy = new S3FaultProxy(server, new URL(target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Requests logged so far with `method` (and a path matching `path`). */
  count(method: string, path?: RegExp): number {
    return this.log.filter((r) => r.method === method && (path === undefined || path.test(r.path))).length;
  }

  /** Faults `times` requests that `match` accepts with `fault`, then none. */
  failNext(match: (req: LoggedRequest) => boolean, fault: S3Fault, times = 1): void {
    let left = times;
    this.fault = (req) => {
      if (left > 0 && match(req)) {
        left--;
        return fault;
      }
      return undefined;
    };
  }

  /** Closes the connections of requests left hanging (their clients see them break). */
  releaseHanging(): void {
    for (const res of this.hanging) res.socket?.destroy();
    this.hanging.clear();
  }

  async close(): Promise<void> {
    this.releaseHanging();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const logged: LoggedRequest = {
      method: req.method ?? 'GET',
      path: decodeURIComponent(url.pathname),
      query: url.search,
      range: req.headers.range,
      bytes: Number(req.headers['content-length'] ?? 0),
    };
    this.log.push(logged);
    const fault = this.fault?.(logged);
    if (fault !== undefined) logged.fault = fault.kind;
    if (fault?.kind === 'status') {
      req.resume();
      req.on('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`;
        res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (fault?.kind === 'drop') {
      req.resume();
      req.on('end', () => req.socket.destroy());
      return;
    }
    if (fault?.kind === 'hang') {
      req.resume();
      this.hanging.add(res);
      return;
    }
    const upstream = request(
      { host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => this.answer(answer, res, fault),
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  }

  private answer(answer: IncomingMessage, res: ServerResponse, fault: S3Fault | undefined): void {
    if (fault === undefined) {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      return;
    }
    const pieces: Buffer[] = [];
    answer.on('data', (d: Buffer) => pieces.push(d));
    answer.on('end', () => {
      const body = Buffer.concat(pieces);
      if (fault.kind === 'drop-after') {
        fault.then?.();
        res.socket?.destroy();
      } else if (fault.kind === 'truncate') {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
      } else if (fault.kind === 'short') {
        const half = body.subarray(0, body.length >> 1);
        res.writeHead(answer.statusCode ?? 502, { ...answer.headers, 'content-length': String(half.length) });
        res.end(half);
      } else if (fault.kind === 'corrupt') {
        if (body.length > 0) body[body.length >> 1] = body[body.length >> 1]! ^ 0x01;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.end(body);
      }
    });
  }
}
