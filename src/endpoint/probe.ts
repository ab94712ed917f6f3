import { readFile } from 'node:fs/promises';
import { connect, type ClientHttp2Session } from 'node:http2';

/*
 * One small question to a server, over node:http2 alone: is the tree manifest at a remote
 * path still the one with this tag (docs/PROTOCOL.md, GET /v1/manifests/ with
 * If-None-Match)? A pull whose local snapshot (reconstruct/snapshot.ts) still holds asks it
 * before anything else, and needs no more from the server when the answer is yes: it does
 * not load the HTTP client (undici, ~0.1 s of start-up) or open its connection.
 */

/** How long the question may take, connection included, before it counts as "no". */
export const PROBE_TIMEOUT_MS = 5_000;

export interface ProbeOptions {
  readonly token?: string;
  /** Path of a PEM CA file to trust. */
  readonly caFile?: string;
  readonly insecure?: boolean;
  readonly signal?: AbortSignal;
}

/**
 * True only if the server answers 304 Not Modified naming `tag`. Anything else (another
 * status, an older server that ignores If-None-Match, no connection, a TLS failure, a
 * timeout, an abort) is false and never an error: the caller then pulls the normal way,
 * which reports what went wrong.
 */
export async function manifestTagCurrent(base: URL, name: string, tag: string, options: ProbeOptions = {}): Promise<boolean> {
  if (options.signal?.aborted) return false;
  let ca: Buffer | undefined;
  if (options.caFile) {
    try {
      ca = await readFile(options.caFile);
    } catch {
      return false;
    }
  }
  const quoted = `"${tag}"`;
  return new Promise<boolean>((resolve) => {
    let session: ClientHttp2Session | undefined;
    const finish = (current: boolean) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      session?.destroy();
      resolve(current);
    };
    const onAbort = () => finish(false);
    const timer = setTimeout(onAbort, PROBE_TIMEOUT_MS);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      session = connect(base.origin, base.protocol === 'https:' ? { ca, rejectUnauthorized: !options.insecure } : {});
    } catch {
      finish(false);
      return;
    }
    session.on('error', () => finish(false));
    const req = session.request({
      ':method': 'GET',
      ':path': `/v1/manifests/${name.split('/').map(encodeURIComponent).join('/')}`,
      'if-none-match': quoted,
      ...(options.token !== undefined ? { authorization: `Bearer ${options.token}` } : {}),
    });
    req.on('response', (headers) => finish(headers[':status'] === 304 && headers.etag === quoted));
    req.on('error', () => finish(false));
    req.end();
  });
}
