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

/** A TCP relay startRelay made. */
export interface Relay {
  readonly url: string;
  /** Bytes clients sent through it, all connections. */
  bytesUp(): number;
  /** Connections clients opened through it. */
  connections(): number;
  /** Cuts every connection it carries at once (a network break; the server lives on); says how many client connections it broke. */
  cut(): number;
  /**
   * Breaks one connection, the first to have carried `afterBytes` towards the server (the
   * piece that reaches it is not passed on): `kill` destroys it (a reset), `freeze` stops
   * passing its bytes either way without closing it (a connection that silently stopped:
   * a NAT that forgot it, a dead path).
   */
  breakOne(how: 'kill' | 'freeze', afterBytes: number): void;
  /** Connections broken by breakOne. */
  broken(): number;
  /**
   * Holds the connections clients open from now on: accepted, but not carried to the
   * server until release() (a network that is down for a while), so a test can look at the
   * server between a cut and the client's next attempt.
   */
  hold(): void;
  release(): void;
  close(): Promise<void>;
}

/**
 * A TCP relay to a server on 127.0.0.1 that counts the bytes clients send through it and
 * the connections they open, and can break them (Relay: cut, breakOne).
 */
export async function startRelay(target: string): Promise<Relay> {
  const port = Number(new URL(target).port);
  const sockets = new Set<Socket>();
  const inbounds = new Set<Socket>();
  let up = 0;
  let connections = 0;
  let broken = 0;
  let plan: { how: 'kill' | 'freeze'; afterBytes: number } | undefined;
  /** Connections accepted while held: carried once released. */
  let held: (() => void)[] | undefined;
  const relay = createNetServer((inbound) => {
    if (held) {
      inbound.pause();
      held.push(() => carryConnection(inbound));
      return;
    }
    carryConnection(inbound);
  });
  const carryConnection = (inbound: Socket) => {
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
    let connectionUp = 0;
    let frozen = false;
    /** Whether `d`, read from the client, is passed on; false once this connection is broken. */
    const onwards = (d: Buffer): boolean => {
      up += d.length;
      connectionUp += d.length;
      if (plan && connectionUp >= plan.afterBytes) {
        broken++;
        if (plan.how === 'kill') {
          inbound.destroy();
          outbound.destroy();
        } else {
          frozen = true;
          // Read on and drop, either way: nothing waits for a drain that will not come.
          inbound.resume();
          outbound.resume();
        }
        plan = undefined;
      }
      return !frozen && !inbound.destroyed;
    };
    // As pipe() does (back-pressure, end), but each piece goes through `pass` first.
    const carry = (from: Socket, to: Socket, pass: (d: Buffer) => boolean) => {
      from.on('data', (d: Buffer) => {
        if (pass(d) && !to.write(d)) from.pause();
      });
      to.on('drain', () => from.resume());
      from.on('end', () => to.end());
    };
    carry(inbound, outbound, onwards);
    carry(outbound, inbound, () => !frozen);
    inbound.resume();
  };
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`,
    bytesUp: () => up,
    connections: () => connections,
    cut: () => {
      const n = inbounds.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    breakOne: (how, afterBytes) => {
      plan = { how, afterBytes };
    },
    broken: () => broken,
    hold: () => {
      held ??= [];
    },
    release: () => {
      const waiting = held ?? [];
      held = undefined;
      for (const carryOn of waiting) carryOn();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    },
  };
}
