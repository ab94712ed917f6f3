/**
 * `npm run siege`: the server under idle and slow clients. Starts `xfer serve` as a child
 * on 127.0.0.1, opens many idle connections (raw TCP that never speaks, and HTTP/2 sessions
 * that never open a stream) and many slow uploads (a `POST /v1/chunks` that trickles one
 * byte every few seconds), pushes a normal file beside them, then waits for the server to
 * close every idle and slow one within its stated timeouts.
 *
 * Passes when the push completes bit-identically, every siege connection is closed by the
 * server within the timeouts (plus slack), and the server's pid never changed. Prints a
 * table and writes a JSON summary (--out).
 *
 *   npm run siege -- [--idle 1000] [--slow 200] [--push-mib 100] [--deadline-s 120]
 *                    [--out FILE] [-- <extra xfer serve flags>]
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe, XFER } from './harness.js';


interface Args {
  idle: number;
  slow: number;
  pushMiB: number;
  deadlineS: number;
  trickleMs: number;
  out?: string;
  serverArgs: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { idle: 1000, slow: 200, pushMiB: 100, deadlineS: 120, trickleMs: 10_000, serverArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (k === '--') {
      a.serverArgs = argv.slice(i + 1);
      break;
    }
    const v = argv[++i];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--idle') a.idle = Number(v);
    else if (k === '--slow') a.slow = Number(v);
    else if (k === '--push-mib') a.pushMiB = Number(v);
    else if (k === '--deadline-s') a.deadlineS = Number(v);
    else if (k === '--trickle-ms') a.trickleMs = Number(v);
    else if (k === '--out') a.out = v;
    else throw new Error(`unknown option ${k}`);
  }
  return a;
}

/** When each siege connection was closed by the server (ms after the siege began), or undefined while open. */
interface Tracked {
  kind: 'tcp' | 'h2-idle' | 'slow-upload';
  closedAtMs?: number;
  how?: string;
}

function runCli(args: string[]): Promise<{ code: number | null; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [XFER, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('exit', (code) => resolve({ code, stderr, ms: performance.now() - t0 }));
  });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'xfer-siege-'));
  const { child, url } = await startServe(join(work, 'root'), args.serverArgs, { stderr: 'ignore' });
  const pid = child.pid;
  let serverExited: number | null | undefined;
  child.once('exit', (code) => (serverExited = code));
  const { hostname, port } = new URL(url);
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const tracked: Tracked[] = [];
  const sockets: Socket[] = [];
  const sessions: ClientHttp2Session[] = [];
  const timers: NodeJS.Timeout[] = [];
  let ending = false; // closes after this are ours, not the server's
  const closed = (t: Tracked, how: string) => {
    if (!ending && t.closedAtMs === undefined) {
      t.closedAtMs = now();
      t.how = how;
    }
  };

  // Idle: half raw TCP that never sends a byte, half HTTP/2 sessions with no stream.
  for (let i = 0; i < args.idle; i++) {
    if (i % 2 === 0) {
      const t: Tracked = { kind: 'tcp' };
      tracked.push(t);
      const s = netConnect({ host: hostname, port: Number(port) });
      s.on('error', () => {});
      s.on('close', () => closed(t, 'closed'));
      s.resume();
      sockets.push(s);
    } else {
      const t: Tracked = { kind: 'h2-idle' };
      tracked.push(t);
      const s = h2connect(url);
      s.on('error', () => {});
      s.on('goaway', () => closed(t, 'goaway'));
      s.on('close', () => closed(t, 'closed'));
      sessions.push(s);
    }
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 10));
  }

  // Slow uploads: a chunk batch that declares 4096 bytes and sends one every trickleMs.
  for (let i = 0; i < args.slow; i++) {
    const t: Tracked = { kind: 'slow-upload' };
    tracked.push(t);
    const s = h2connect(url);
    s.on('error', () => {});
    sessions.push(s);
    const req = s.request({ ':method': 'POST', ':path': '/v1/chunks?algorithm=blake3', 'content-length': '4096' });
    req.on('error', () => closed(t, 'reset'));
    req.on('response', (h) => closed(t, `answered ${h[':status']}`));
    req.on('close', () => closed(t, 'stream closed'));
    s.on('close', () => closed(t, 'closed'));
    req.write(Buffer.from([0]));
    const timer = setInterval(() => {
      if (t.closedAtMs === undefined && !req.destroyed) req.write(Buffer.from([0]));
    }, args.trickleMs);
    timers.push(timer);
  }

  // A normal push beside them.
  const src = join(work, 'push.bin');
  await writeFile(src, randomBytes(args.pushMiB * 1024 * 1024));
  const push = await runCli(['push', src, `${url}/siege/`]);
  const pull = push.code === 0 ? await runCli(['pull', `${url}/siege/push.bin`, join(work, 'back.bin')]) : undefined;
  const identical = pull?.code === 0 && (await readFile(join(work, 'back.bin'))).equals(await readFile(src));

  // Wait for the server to close them all, up to the deadline.
  while (now() < args.deadlineS * 1000 && tracked.some((t) => t.closedAtMs === undefined)) await new Promise((r) => setTimeout(r, 500));
  const stillOpen = tracked.filter((t) => t.closedAtMs === undefined).length;
  const alive = serverExited === undefined && child.pid === pid;

  ending = true;
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  for (const s of sessions) s.destroy();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  await rm(work, { recursive: true, force: true });

  const byKind = (k: Tracked['kind']) => {
    const ts = tracked.filter((t) => t.kind === k);
    const closedMs = ts.filter((t) => t.closedAtMs !== undefined).map((t) => t.closedAtMs!);
    return { count: ts.length, closed: closedMs.length, maxCloseS: closedMs.length ? Math.max(...closedMs) / 1000 : null };
  };
  const summary = {
    idle: args.idle,
    slow: args.slow,
    push: { mib: args.pushMiB, exit: push.code, seconds: push.ms / 1000, stderr: push.stderr.trim().slice(0, 300) },
    pullIdentical: identical,
    tcp: byKind('tcp'),
    h2Idle: byKind('h2-idle'),
    slowUpload: byKind('slow-upload'),
    stillOpenAtDeadline: stillOpen,
    deadlineS: args.deadlineS,
    serverAlive: alive,
  };
  const pass = push.code === 0 && identical && stillOpen === 0 && alive;
  process.stdout.write(
    `siege: ${args.idle} idle, ${args.slow} slow uploads\n` +
      `  push of ${args.pushMiB} MiB beside them: exit ${push.code}, ${summary.push.seconds.toFixed(2)} s; pulled back identical: ${identical}\n` +
      `  raw TCP idle     closed ${summary.tcp.closed}/${summary.tcp.count}, last after ${summary.tcp.maxCloseS?.toFixed(1) ?? "-"} s\n` +
      `  HTTP/2 idle      closed ${summary.h2Idle.closed}/${summary.h2Idle.count}, last after ${summary.h2Idle.maxCloseS?.toFixed(1) ?? "-"} s\n` +
      `  slow uploads     closed ${summary.slowUpload.closed}/${summary.slowUpload.count}, last after ${summary.slowUpload.maxCloseS?.toFixed(1) ?? "-"} s\n` +
      `  server alive (same pid): ${alive}\n` +
      `${pass ? 'PASS' : 'FAIL'}\n`,
  );
  if (args.out) await writeFile(args.out, JSON.stringify(summary, null, 2));
  process.exitCode = pass ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`siege: ${(err as Error).message}\n`);
  process.exitCode = 2;
});
