/**
 * The bench never leaves an `xfer serve` (or rsync daemon) running after a row that throws
 * (bench/harness.ts): a scenario's rows run in stoppingServers, which stops the servers
 * started in it whatever happened, and a bench that dies of the error kills what it left.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startServe, stop, stoppingServers, type Served } from '../bench/harness.js';

/** Whether process `pid` still runs (a zombie, exited but not yet reaped, does not). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function gone(pid: number, withinMs: number): Promise<boolean> {
  for (const until = Date.now() + withinMs; Date.now() < until; await new Promise((r) => setTimeout(r, 50))) if (!running(pid)) return true;
  return !running(pid);
}

describe('bench servers are stopped when a row throws', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-bench-servers-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a scope whose row throws stops the servers started in it, and only those', async () => {
    const outer = await startServe(join(dir, 'outer'), ['--quiet'], { stderr: 'ignore' });
    let inner: Served | undefined;
    try {
      await assert.rejects(
        stoppingServers(async () => {
          inner = await startServe(join(dir, 'inner'), ['--quiet'], { stderr: 'ignore' });
          throw new Error('the row failed');
        }),
        /the row failed/,
      );
      assert.ok(inner);
      assert.equal(running(inner.child.pid!), false, 'the server started in the scope still runs');
      assert.equal(running(outer.child.pid!), true, 'the server started before the scope was stopped');
    } finally {
      await stop(outer.child);
      if (inner) await stop(inner.child);
    }
  });

  it('a bench that dies of an error kills the servers it left running', async () => {
    const harness = fileURLToPath(new URL('../bench/harness.js', import.meta.url));
    const script = `
      const { startServe } = await import(${JSON.stringify(harness)});
      const s = await startServe(${JSON.stringify(join(dir, 'died'))}, ['--quiet'], { stderr: 'ignore' });
      process.stdout.write(s.child.pid + '\\n');
      throw new Error('the bench failed');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.notEqual(code, 0);
    const pid = Number(out.trim());
    assert.ok(pid > 0, `the bench printed its server's pid (${JSON.stringify(out)})`);
    const stopped = await gone(pid, 5000);
    if (!stopped) process.kill(pid, 'SIGKILL');
    assert.ok(stopped, 'the server outlived the bench');
  });
});
