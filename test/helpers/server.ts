import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { createServer, type XferServer } from '../../src/server/server.js';
import { BIN } from './cli.js';

/**
 * For a describe(): a temporary directory and an in-process server on `<dir>/root`, made
 * before its tests and removed after them. The fields are set once `before` has run.
 */
export function useServer(prefix: string): { readonly dir: string; readonly root: string; readonly server: XferServer } {
  const f = {} as { dir: string; root: string; server: XferServer };
  before(async () => {
    f.dir = await mkdtemp(join(tmpdir(), prefix));
    f.root = join(f.dir, 'root');
    f.server = await createServer({ root: f.root, port: 0 });
  });
  after(async () => {
    await f.server?.close();
    if (f.dir) await rm(f.dir, { recursive: true, force: true });
  });
  return f;
}

/** Starts `xfer serve` as a child process and waits for its "listening on <url>" line. */
export async function startServeProcess(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ url: string; child: ChildProcess; stderr(): string; stop(signal?: NodeJS.Signals): Promise<number | null> }> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /^listening on (\S+)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.stderr!.setEncoding('utf8').on('data', (d) => (err += d));
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    url,
    child,
    stderr: () => err,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** One raw HTTP/2 request (for protocol-level tests that the CLI would never send). */
export async function rawRequest(
  url: string, method: string, path: string, body?: Buffer, headers: Record<string, string> = {},
): Promise<{ status: number; body: Buffer }> {
  const session: ClientHttp2Session = connect(url);
  try {
    return await new Promise((resolve, reject) => {
      session.on('error', reject);
      const req = session.request({ ':method': method, ':path': path, ...headers });
      let status = 0;
      const parts: Buffer[] = [];
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => resolve({ status, body: Buffer.concat(parts) }));
      req.on('error', reject);
      req.end(body);
    });
  } finally {
    session.close();
  }
}

/**
 * A TCP relay to a server on 127.0.0.1 that counts the bytes clients send through it and
 * the connections they open, and can cut every connection it carries at once (a network
 * break; the server lives on): cut() says how many client connections it broke.
 */
export async function startRelay(target: string): Promise<{ url: string; bytesUp: () => number; connections: () => number; cut: () => number; close: () => Promise<void> }> {
  const port = Number(new URL(target).port);
  const sockets = new Set<Socket>();
  const inbounds = new Set<Socket>();
  let up = 0;
  let connections = 0;
  const relay = createNetServer((inbound) => {
    connections++;
    inbounds.add(inbound);
    inbound.on('close', () => inbounds.delete(inbound));
    const outbound = netConnect(port, '127.0.0.1');
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.on('data', (d: Buffer) => (up += d.length));
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`,
    bytesUp: () => up,
    connections: () => connections,
    cut: () => {
      const broken = inbounds.size;
      for (const s of sockets) s.destroy();
      return broken;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    },
  };
}
