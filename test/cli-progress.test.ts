import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from '../src/server/server.js';
import { BIN, runCli, writeRandomFile } from './helpers/cli.js';
import { startRelay } from './helpers/server.js';

const MiB = 1024 * 1024;
const ERASE_LINE = '\r\x1b[K';

/**
 * Runs the CLI with a pseudo-terminal as stdin/stdout/stderr, through util-linux `script`
 * (Debian's bsdutils, always installed): what a user at a terminal sees, stdout and stderr
 * together.
 */
function runOnTty(args: string[]): Promise<{ code: number; output: string }> {
  const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qefc', quoted, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
  });
}

describe('progress display on a terminal', () => {
  let dir: string;
  let src: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-progress-'));
    src = join(dir, 'src.bin');
    await writeRandomFile(src, 64 * MiB, 77);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('push redraws one line with bytes scanned of the total, percent, rate, ETA and bytes sent, then erases it', async () => {
    const r = await runOnTty(['push', src, join(dir, 'dest1') + '/']);
    assert.equal(r.code, 0, r.output);
    assert.ok(r.output.includes(ERASE_LINE), 'redraws in place');
    const line = r.output.split(ERASE_LINE).find((l) => l.includes(' of '));
    assert.ok(line, `a progress line: ${JSON.stringify(r.output)}`);
    assert.match(line, /^[\d.]+ \S+ of 64\.00 MiB [\d.]+%, [\d.]+ \S+\/s(, ETA \d+s)?, [\d.]+ \S+ sent$/);
  });

  it('pull shows the same line with bytes reused', async () => {
    await runCli(['push', src, join(dir, 'dest2') + '/']);
    const r = await runOnTty(['pull', join(dir, 'dest2', 'src.bin'), join(dir, 'pulled.bin')]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /of 64\.00 MiB [\d.]+%, [\d.]+ \S+\/s(, ETA \d+s)?, [\d.]+ \S+ reused/);
  });

  it('a broken connection shows why the transfer stalls and when it is tried again', async () => {
    const server = await createServer({ root: join(dir, 'root'), port: 0 });
    const relay = await startRelay(server.url);
    try {
      const big = join(dir, 'big.bin');
      await writeRandomFile(big, 160 * MiB, 78);
      const run = runOnTty(['push', big, `${relay.url}/big.bin`]);
      for (let i = 0; i < 2000 && relay.bytesUp() < 16 * MiB; i++) await sleep(2);
      relay.cut();
      const r = await run;
      assert.equal(r.code, 0, r.output);
      const notices = r.output.split(ERASE_LINE).filter((l) => l.includes('retry'));
      assert.ok(notices.length > 0, JSON.stringify(r.output.slice(-500)));
      // The cut shows as such. A request reset around the reconnect may show beside it, in
      // its own words (upload-session-memory: the client's own session used to refuse answers
      // with ENHANCE_YOUR_CALM here); nothing else may.
      const broke = /^the connection to http:\/\/127\.0\.0\.1:\d+ broke: [^;]+; retry \d+ in [\d.]+ s$/;
      const reset = /^http:\/\/127\.0\.0\.1:\d+ reset the request \(NGHTTP2_[A-Z_]+\); retry \d+ in [\d.]+ s$/;
      assert.ok(notices.some((n) => broke.test(n)), JSON.stringify(notices));
      for (const n of notices) assert.ok(broke.test(n) || reset.test(n), n);
      assert.match(r.output, /pushed http:\/\/127\.0\.0\.1:\d+\/big\.bin: 160\.00 MiB/);
    } finally {
      await relay.close();
      await server.close();
    }
  });

  it('--quiet and --json draw nothing, and neither does a non-terminal stderr', async () => {
    const quiet = await runOnTty(['push', src, join(dir, 'dest3') + '/', '--quiet']);
    assert.equal(quiet.code, 0, quiet.output);
    assert.ok(!quiet.output.includes(ERASE_LINE), JSON.stringify(quiet.output));
    const json = await runOnTty(['push', src, join(dir, 'dest4') + '/', '--json']);
    assert.ok(!json.output.includes(ERASE_LINE));
    assert.equal(JSON.parse(json.output.trim()).bytesTotal, 64 * MiB);
    const piped = await runCli(['push', src, join(dir, 'dest5') + '/']);
    assert.equal(piped.code, 0);
    assert.ok(!piped.stderr.includes(ERASE_LINE));
  });
});
