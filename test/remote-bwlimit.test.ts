import { strict as assert } from 'node:assert';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isOneLineError, runCli, sha256File, writeRandomFile } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

const MiB = 1024 * 1024;

describe('--bwlimit holds chunk data to a rate, each way', () => {
  const f = useServer('xfer-bwlimit-');

  it('a push and a pull of 8 MiB take at least as long as the rate allows, and arrive intact', async () => {
    const src = join(f.dir, 'eight.bin');
    await writeRandomFile(src, 8 * MiB, 91);
    // 8 MiB at 4 MiB/s, less the burst (a quarter second's worth, 1 MiB): at least 1.75 s.
    const up = await runCli(['push', src, `${f.server.url}/eight.bin`, '--json', '--bwlimit', '4M']);
    assert.equal(up.code, 0, up.stderr);
    assert.ok(JSON.parse(up.stdout).seconds >= 1.6, `push took ${JSON.parse(up.stdout).seconds} s`);
    assert.equal(await sha256File(join(f.root, 'files', 'eight.bin')), await sha256File(src));
    // 8 MiB at 8 MiB/s, less the burst (2 MiB): at least 0.75 s.
    const out = join(f.dir, 'pulled.bin');
    const down = await runCli(['pull', `${f.server.url}/eight.bin`, out, '--json', '--bwlimit', '8M']);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(JSON.parse(down.stdout).seconds >= 0.7, `pull took ${JSON.parse(down.stdout).seconds} s`);
    assert.equal(await sha256File(out), await sha256File(src));
  });

  it('refuses a rate it cannot keep, one that is not a size, and a local transfer', async () => {
    const cases: [string[], RegExp][] = [
      [['push', '/etc/hostname', `${f.server.url}/h`, '--bwlimit', '10'], /a rate limit must be at least 1024 bytes per second, got 10/],
      [['push', '/etc/hostname', `${f.server.url}/h`, '--bwlimit', 'fast'], /invalid --bwlimit rate "fast"/],
      [['push', '/etc/hostname', join(f.dir, 'local/'), '--bwlimit', '1M'], /--bwlimit applies to transfers to or from a server/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, re);
    }
  });
});
