import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BIN, runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

/**
 * Runs the CLI with its standard output read by a reader that closes the pipe after the
 * first line, as `| head -1` does. Resolves with the exit code and standard error.
 */
function runIntoHead(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; first: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) child.stdout.destroy();
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, first: out.split('\n')[0]!, stderr }));
  });
}

describe('a reader that closes the pipe early (| head -1)', () => {
  let dir: string;
  /** Small chunks: thousands of lines, far more than a pipe holds, so writes follow the close. */
  const small = ['--min', '64', '--avg', '256', '--max', '1K'];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-epipe-'));
    await writeFile(join(dir, 'data'), pseudoRandom(2 * 1024 * 1024, 7));
    const p = await runCli(['push', join(dir, 'data'), join(dir, 'backup/'), '-q', ...small]);
    assert.equal(p.code, 0, p.stderr);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: [string, () => string[], RegExp][] = [
    ['chunk --list', () => ['chunk', '--list', ...small, join(dir, 'data')], /^0 \d+ [0-9a-f]{64}$/],
    ['manifest show', () => ['manifest', 'show', join(dir, 'backup', 'data')], /^format version/],
    ['manifest show --json', () => ['manifest', 'show', '--json', join(dir, 'backup', 'data')], /^\{/],
  ];
  for (const [what, args, first] of cases) {
    it(`${what} ends quietly with exit 0, no stack trace`, async () => {
      const r = await runIntoHead(args());
      assert.match(r.first, first);
      assert.equal(r.stderr, '');
      assert.equal(r.signal, null);
      assert.equal(r.code, 0);
    });
  }

  it('verify | head -1 on a damaged store still exits 1: the damage is not hidden', async () => {
    const damaged = join(dir, 'damaged');
    const p = await runCli(['push', join(dir, 'data'), `${damaged}/`, '-q', ...small]);
    assert.equal(p.code, 0, p.stderr);
    // Every chunk corrupt: thousands of DAMAGED lines, more than the pipe holds.
    const packs = join(damaged, '.xfer', 'packs');
    for (const name of (await readdir(packs)).filter((n) => n.endsWith('.pack'))) {
      const size = (await stat(join(packs, name))).size;
      await writeFile(join(packs, name), Buffer.alloc(size));
    }
    const r = await runIntoHead(['verify', '--chunks-only', '--read-data', damaged]);
    assert.match(r.first, /^DAMAGED data/);
    assert.equal(r.stderr, '');
    assert.equal(r.code, 1);
  });
});
