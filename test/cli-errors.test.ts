import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatBytes, parseSize } from '../src/core/sizes.js';
import { describeNetFailure } from '../src/store/net-errors.js';
import { createServer } from '../src/server/server.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

describe('usage errors', () => {
  const cases: [string, string[], RegExp][] = [
    ['an unknown option', ['push', '--bogus', 'a', 'b'], /^xfer: unknown option '--bogus'/],
    ['a missing argument', ['push'], /^xfer: missing required argument 'path'/],
    ['an unknown command, with the likely one', ['pus', 'a', 'b'], /^xfer: unknown command 'pus' \(Did you mean push\?\)/],
    ['an unknown subcommand option', ['manifest', 'show', '--bogus', 'x'], /^xfer: unknown option '--bogus'/],
  ];
  for (const [what, args, message] of cases) {
    it(`${what} is one line starting "xfer:", exit 2`, async () => {
      const r = await runCli(args);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, /\(run xfer --help for usage\)\n$/);
    });
  }
});

describe('network and TLS failures are said in words, with the fix', () => {
  let dir: string;
  let file: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-neterr-'));
    file = join(dir, 'f');
    await writeFile(file, 'hello');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a host that does not resolve: "cannot resolve host NAME"', async () => {
    // .invalid never resolves (RFC 2606), with or without a network.
    const r = await runCli(['push', file, 'http://no-such-host.invalid:7373/f', '--retries', '0']);
    assert.equal(r.code, 14, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /cannot resolve host no-such-host\.invalid/);
    assert.doesNotMatch(r.stderr, /ENOTFOUND|EAI_AGAIN/);
  });

  it('nothing listening: "connection refused"', async () => {
    const probe = createNetServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const r = await runCli(['ls', `http://127.0.0.1:${port}/`, '--retries', '0']);
    assert.equal(r.code, 14, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /cannot reach http:\/\/127\.0\.0\.1:\d+: connection refused/);
    assert.match(r.stderr, /is xfer serve running there/);
    assert.doesNotMatch(r.stderr, /ECONNREFUSED/);
  });

  it('a self-signed certificate: "certificate not trusted: pass --ca FILE", not retried', async () => {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const server = await createServer({ root: join(dir, 'tls-root'), port: 0, tlsCertFile: cert, tlsKeyFile: key });
    try {
      const r = await runCli(['push', file, `${server.url}/f`, '--retries', '2']);
      assert.equal(r.code, 14, r.stderr);
      assert.ok(isOneLineError(r.stderr), r.stderr);
      assert.match(r.stderr, /certificate not trusted: pass --ca FILE .*--insecure/);
      assert.doesNotMatch(r.stderr, /SELF_SIGNED|gave up after/);
      const plain = await runCli(['ls', `${server.url.replace('https:', 'http:')}/`, '--retries', '0']);
      assert.equal(plain.code, 14, plain.stderr);
      assert.ok(isOneLineError(plain.stderr), plain.stderr);
      assert.doesNotMatch(plain.stderr, /UND_ERR/);
    } finally {
      await server.close();
    }
  });
});

describe('figures for people', () => {
  const f = useServer('xfer-figures-');

  it('sizes parse with fractions ("1.5M"); a fraction of a byte is refused', () => {
    assert.equal(parseSize('1.5M', 'x'), 1.5 * 1024 * 1024);
    assert.equal(parseSize('0.5K', 'x'), 512);
    assert.throws(() => parseSize('1.5', 'x'), /whole number of bytes/);
  });

  it('a rate below 1 KiB/s prints in whole bytes', () => {
    assert.equal(formatBytes(6.9196953730742425), '7 B');
  });

  it('one small file: rounded rate, "1 chunk", "1 manifest, 1 file", "1 byte"', async () => {
    const src = join(f.dir, 'one');
    await writeFile(src, 'abc');
    const dest = join(f.dir, 'local-dest/');
    const p = await runCli(['push', src, dest]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stdout, /: 3 B in 1 chunk; 1 sent \(3 B\), 0 reused; [\d.]+ s, \d+(\.\d\d)? (B|KiB|MiB)\/s\n$/);
    const v = await runCli(['verify', dest]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^ok: 1 manifest, 1 file, 1 chunk reference \(3 B\), 1 rebuilt file checked\n$/);
    const c = await runCli(['chunk', src]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^size: +3 B \(3 bytes\)\n/);
    const one = join(f.dir, 'byte');
    await writeFile(one, 'x');
    const c1 = await runCli(['chunk', one]);
    assert.match(c1.stdout, /^size: +1 B \(1 byte\)\n/);
    const p1 = await runCli(['push', one, dest]);
    assert.equal(p1.code, 0, p1.stderr);
    const m = await runCli(['manifest', 'show', join(dest, 'byte')]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /^total size: +1 byte\n/m);
  });

  it('--bwlimit takes 1.5M, and 0 for no limit (rsync)', async () => {
    const src = join(f.dir, 'limited');
    await writeFile(src, 'some bytes');
    for (const limit of ['1.5M', '0']) {
      const r = await runCli(['push', src, `${f.server.url}/limited-${limit}`, '--bwlimit', limit]);
      assert.equal(r.code, 0, `${limit}: ${r.stderr}`);
    }
    // 0 is no limit, so it does not ask for a server either.
    const local = await runCli(['push', src, join(f.dir, 'local-0/'), '--bwlimit', '0']);
    assert.equal(local.code, 0, local.stderr);
  });
});

describe('describeNetFailure', () => {
  const base = new URL('https://backup.example.net:7373');
  const table: [string, RegExp, boolean][] = [
    ['ENOTFOUND', /^cannot resolve host backup\.example\.net$/, true],
    ['EAI_AGAIN', /^cannot resolve host backup\.example\.net/, true],
    ['ECONNREFUSED', /^connection refused/, true],
    ['EHOSTUNREACH', /^no route to host$/, true],
    ['ENETUNREACH', /^network unreachable$/, true],
    ['ETIMEDOUT', /^connection timed out$/, true],
    ['UND_ERR_CONNECT_TIMEOUT', /^connection timed out$/, true],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', /^certificate not trusted: pass --ca FILE/, true],
    ['SELF_SIGNED_CERT_IN_CHAIN', /^certificate not trusted: pass --ca FILE/, true],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', /^certificate not trusted: pass --ca FILE/, true],
    ['CERT_HAS_EXPIRED', /expired/, true],
    ['ERR_TLS_CERT_ALTNAME_INVALID', /not for backup\.example\.net/, true],
    ['ERR_SSL_WRONG_VERSION_NUMBER', /does not speak TLS: use http:\/\//, true],
    ['ECONNRESET', /^connection reset$/, false],
    ['UND_ERR_SOCKET', /^the server closed the connection$/, false],
    ['UND_ERR_HEADERS_TIMEOUT', /^no answer within the --timeout$/, false],
    ['UND_ERR_BODY_TIMEOUT', /^no answer within the --timeout$/, false],
  ];
  for (const [code, text, reaching] of table) {
    it(`${code} in words`, () => {
      const f = describeNetFailure(Object.assign(new Error('raw'), { code }), base);
      assert.match(f.text, text);
      assert.ok(!f.text.includes(code), f.text);
      assert.equal(f.reaching, reaching);
    });
  }
  it('an unknown failure keeps its own words', () => {
    assert.equal(describeNetFailure(new Error('something odd'), base).text, 'something odd');
  });
});
