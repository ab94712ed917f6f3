/*
 * moto_server (Python; on PATH here and in CI's image), started on 127.0.0.1 for a test
 * (helpers/s3.ts useS3Service) or a bench (bench/s3-puts.ts). Imports no node:test, so a
 * bench can use it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

/** How long a started S3 server may take to answer its first request. */
export const START_TIMEOUT_MS = 30_000;
/** moto accepts any credentials. */
export const MOTO_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };

/** Why moto_server cannot be started here, or undefined if it can. */
export function motoMissing(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v moto_server'], { encoding: 'utf8' });
  return found.status === 0 ? undefined : 'moto_server is not on PATH (pip install "moto[server]")';
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Waits until the server `child` runs answers at `url`; throws, with its `output`, if it exits or stays silent for START_TIMEOUT_MS. */
export async function waitUntilAnswers(url: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the S3 server exited (${child.exitCode}): ${output()}`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`the S3 server at ${url} did not answer within ${START_TIMEOUT_MS} ms: ${output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Stops `child` (SIGTERM, SIGKILL after 5 s) and waits for it to exit. */
export async function stopChild(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** A moto_server on a free port of 127.0.0.1, answering; stop it with stopChild(child). */
export interface Moto {
  readonly endpoint: string;
  readonly child: ChildProcess;
  /** What it printed so far. */
  output(): string;
}

/** Starts moto_server and waits until it answers (stopped again if it does not). */
export async function startMoto(): Promise<Moto> {
  const port = await freePort();
  const child = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitUntilAnswers(endpoint, child, () => output);
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { endpoint, child, output: () => output };
}
