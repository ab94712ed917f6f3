import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { analyze } from '../src/scan/analyze.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { isOneLineError, runCli, sha256File, startCli, writeRandomFile } from './helpers/cli.js';
import { rawRequest, startRelay, startServeProcess } from './helpers/server.js';

const MiB = 1024 * 1024;
const BIG = 192 * MiB;

/** The chunks push would send for a file: digests with lengths. */
async function chunkList(path: string): Promise<{ digest: Buffer; length: number }[]> {
  const list: { digest: Buffer; length: number }[] = [];
  await analyze(path, { chunker: DEFAULT_CHUNKER, onChunk: (_p, _o, length, digest) => list.push({ digest: Buffer.from(digest), length }) });
  return list;
}

/** Bytes of `chunks` the server already holds (chunks/missing in batches). */
async function presentBytes(url: string, chunks: { digest: Buffer; length: number }[]): Promise<number> {
  let bytes = 0;
  for (let s = 0; s < chunks.length; s += 4096) {
    const part = chunks.slice(s, s + 4096);
    const r = await rawRequest(url, 'POST', '/v1/chunks/missing?algorithm=blake3', Buffer.concat(part.map((c) => c.digest)));
    part.forEach((c, i) => {
      if ((r.body[i >> 3]! & (1 << (i & 7))) === 0) bytes += c.length;
    });
  }
  return bytes;
}

/**
 * Starts the CLI and kills it with SIGKILL as soon as `ready()` says so (or it ends). A
 * killed client cannot remove its temp directory, so its TMPDIR is `tmp` (the test's own).
 */
async function killWhen(args: string[], tmp: string, ready: () => Promise<boolean>): Promise<{ killed: boolean }> {
  await mkdir(tmp, { recursive: true });
  const { child, exit: exited, running } = startCli(args, { env: { TMPDIR: tmp } });
  for (let i = 0; i < 600 && running(); i++) {
    if (await ready()) {
      child.kill('SIGKILL');
      await exited;
      return { killed: true };
    }
    await sleep(20);
  }
  await exited;
  return { killed: false };
}

/** How long a test waits for a transfer to reach the point where it is interrupted. */
const REACH_TIMEOUT_MS = 60_000;

/**
 * Polls `reached` until it holds; fails the test if `child` ends first or REACH_TIMEOUT_MS
 * pass, so that an interruption meant to strike mid-transfer never silently misses.
 */
async function waitUntil(what: string, child: { running: () => boolean; stderr: () => string }, reached: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + REACH_TIMEOUT_MS;
  for (;;) {
    if (await reached()) break;
    if (!child.running()) assert.fail(`the transfer ended before ${what}: ${child.stderr()}`);
    if (Date.now() > deadline) assert.fail(`no ${what} within ${REACH_TIMEOUT_MS} ms`);
    await sleep(5);
  }
  assert.ok(child.running(), `the transfer was still running when ${what}`);
}

describe('interrupted transfers resume and send only what is missing', () => {
  let dir: string;
  let src: string;
  let chunks: { digest: Buffer; length: number }[];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-resume-'));
    src = join(dir, 'big.bin');
    await writeRandomFile(src, BIG, 31);
    chunks = await chunkList(src);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('with an in-process server', () => {
    let server: XferServer;
    before(async () => {
      server = await createServer({ root: join(dir, 'root'), port: 0 });
    });
    after(async () => {
      await server.close();
    });

    it('a push killed mid-way completes when run again, resending no stored chunk', async () => {
      let seen = 0;
      const { killed } = await killWhen(['push', src, `${server.url}/big.bin`], join(dir, 'tmp'), async () => {
        seen = await presentBytes(server.url, chunks.slice(0, 400));
        return seen >= 8 * MiB;
      });
      assert.ok(killed, 'the first push was interrupted');
      const stored = await presentBytes(server.url, chunks);
      assert.ok(stored > 0 && stored < BIG, `stored ${stored} bytes before the kill`);
      const again = await runCli(['push', src, `${server.url}/big.bin`, '--json']);
      assert.equal(again.code, 0, again.stderr);
      const r = JSON.parse(again.stdout);
      assert.ok(r.bytesSent <= BIG - stored, `resent ${r.bytesSent} bytes though ${stored} were stored`);
      assert.equal(await sha256File(join(dir, 'root', 'files', 'big.bin')), await sha256File(src));
    });

    it('a connection cut during a push: requests are tried again, and no chunk the server stored goes twice', async () => {
      // A file of its own: the server holds big.bin's chunks already, and a push that sends
      // none would be over before any cut.
      const cutSrc = join(dir, 'cut-src.bin');
      const size = 64 * MiB;
      await writeRandomFile(cutSrc, size, 37);
      const cutChunks = await chunkList(cutSrc);
      assert.equal(await presentBytes(server.url, cutChunks), 0, 'the server holds none of its chunks yet');
      const relay = await startRelay(server.url);
      await mkdir(join(dir, 'tmp'), { recursive: true });
      try {
        const push = startCli(['push', cutSrc, `${relay.url}/cut.bin`, '--json'], { env: { TMPDIR: join(dir, 'tmp') } });
        await waitUntil('a quarter of the file went up', push, () => relay.bytesUp() >= size / 4);
        const connectionsBefore = relay.connections();
        // The network stays down while the server is asked (directly) what it stored: the
        // claim is about that, whatever the cut lost in flight (what the server had not read
        // yet: up to an upload batch per upload in flight when it lags, as under load).
        relay.hold();
        assert.ok(relay.cut() > 0, 'the cut broke open connections');
        const upAtCut = relay.bytesUp();
        await sleep(300); // chunks read whole before the cut are stored, or dropped with their stream
        const storedAtCut = await presentBytes(server.url, cutChunks);
        relay.release();
        assert.equal(await push.exit, 0, push.stderr());
        // The push could only complete over a new connection: its requests were tried again.
        assert.ok(relay.connections() > connectionsBefore, 'the push connected again after the cut');
        assert.equal(await sha256File(join(dir, 'root', 'files', 'cut.bin')), await sha256File(cutSrc));
        // After the cut, only what the server had not stored goes up again: the chunks it
        // lacked, their record headers, the queries and the manifest. Uploads in flight at
        // the cut ask first which of their chunks arrived. (One connection here: loopback
        // never grows to more.)
        const overhead = cutChunks.length * (4 + 32 + 32 + 32) + 1 * MiB;
        const upAfter = relay.bytesUp() - upAtCut;
        assert.ok(storedAtCut > 0, 'the server had stored chunks before the cut');
        assert.ok(upAfter <= size - storedAtCut + overhead, `${upAfter} bytes went up after the cut, for ${size - storedAtCut} bytes the server lacked`);
      } finally {
        await relay.close();
      }
    });

    it('a pull killed mid-way keeps its partial file and completes from it', async () => {
      const out = join(dir, 'pulled.bin');
      const partial = join(dir, '.xfer-pulled.bin.partial');
      const { killed } = await killWhen(['pull', `${server.url}/big.bin`, out], join(dir, 'tmp'), async () => {
        const st = await stat(partial).catch(() => undefined);
        return (st?.size ?? 0) >= 48 * MiB;
      });
      assert.ok(killed, 'the first pull was interrupted');
      await assert.rejects(stat(out), /ENOENT/, 'no destination before the pull completes');
      assert.ok((await stat(partial)).size > 0);
      const again = await runCli(['pull', `${server.url}/big.bin`, out, '--json']);
      assert.equal(again.code, 0, again.stderr);
      const r = JSON.parse(again.stdout);
      assert.ok(r.bytesReused > 0, 'chunks already in the partial file were kept');
      assert.ok(r.bytesReceived < BIG);
      assert.equal(r.bytesReceived + r.bytesReused, BIG);
      assert.equal(await sha256File(out), await sha256File(src));
      await assert.rejects(stat(partial), /ENOENT/, 'the partial file became the destination');
    });

    it('a tree push killed while its stage builds: the staging tree is discarded, a second push completes staged', async () => {
      const tree = join(dir, 'tree-src');
      await mkdir(join(tree, 'sub'), { recursive: true });
      for (let i = 0; i < 4; i++) await writeRandomFile(join(tree, i % 2 ? 'sub' : '', `part${i}.bin`), 40 * MiB, 60 + i);
      const files = join(dir, 'root', 'files');
      const staging = async () => (await readdir(files).catch(() => [] as string[])).filter((n) => n.startsWith('.xfer-tree-src'));
      const { killed } = await killWhen(['push', tree, `${server.url}/`], join(dir, 'tmp'), async () => (await staging()).length > 0);
      assert.ok(killed, 'the first push was interrupted while staged');
      for (let i = 0; i < 250 && (await staging()).length > 0; i++) await sleep(20);
      assert.deepEqual(await staging(), [], 'the stage of the killed push is gone');
      await assert.rejects(stat(join(files, 'tree-src')), /ENOENT/, 'nothing was committed');
      const before0 = server.stats();
      const again = await runCli(['push', tree, `${server.url}/`, '--json']);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(server.stats().commitsStaged - before0.commitsStaged, 1);
      for (let i = 0; i < 4; i++) {
        const rel = join(i % 2 ? 'sub' : '', `part${i}.bin`);
        assert.equal(await sha256File(join(files, 'tree-src', rel)), await sha256File(join(tree, rel)), rel);
      }
    });
  });

  /**
   * Waits until the server at `url` holds at least `bytes` of the first chunks of src,
   * with `push` still running; fails the test otherwise (see waitUntil).
   */
  async function storedAtLeast(url: string, bytes: number, push: { running: () => boolean; stderr: () => string }): Promise<void> {
    await waitUntil(`the server stored ${bytes} bytes`, push, async () => (await presentBytes(url, chunks.slice(0, 200))) >= bytes);
  }

  it('a server killed and restarted during a push: the push retries and completes by itself', async () => {
    const root = join(dir, 'restart-root');
    let srv = await startServeProcess(['--root', root, '--port', '0']);
    const port = new URL(srv.url).port;
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const push = startCli(['push', src, `${srv.url}/again.bin`, '--json'], { env: { TMPDIR: join(dir, 'tmp') } });
    await storedAtLeast(srv.url, 4 * MiB, push);
    await srv.stop('SIGKILL');
    await sleep(300); // the client meets a refused connection before the server is back
    srv = await startServeProcess(['--root', root, '--port', port]);
    try {
      assert.equal(await push.exit, 0, push.stderr());
      assert.equal(push.stderr(), '');
      const r = JSON.parse(push.stdout());
      assert.equal(r.bytesTotal, BIG);
      // Chunks lost with the killed server are sent again, but not everything twice.
      assert.ok(r.bytesSent < 2 * BIG, `sent ${r.bytesSent} bytes`);
      assert.equal(await sha256File(join(root, 'files', 'again.bin')), await sha256File(src));
    } finally {
      await srv.stop();
    }
  });

  it('a server stopped (SIGTERM) and started again during a push: the push completes by itself', async () => {
    const root = join(dir, 'term-restart-root');
    let srv = await startServeProcess(['--root', root, '--port', '0']);
    const port = new URL(srv.url).port;
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const push = startCli(['push', src, `${srv.url}/term-again.bin`, '--json'], { env: { TMPDIR: join(dir, 'tmp') } });
    await storedAtLeast(srv.url, 4 * MiB, push);
    assert.equal(await srv.stop('SIGTERM'), 0, 'the server stops cleanly');
    srv = await startServeProcess(['--root', root, '--port', port]);
    try {
      assert.equal(await push.exit, 0, push.stderr());
      assert.equal(JSON.parse(push.stdout()).bytesTotal, BIG);
      assert.equal(await sha256File(join(root, 'files', 'term-again.bin')), await sha256File(src));
    } finally {
      await srv.stop();
    }
  });

  it('with --retries 0 a push fails at once with one line when the server dies; run again, it completes', async () => {
    const root = join(dir, 'noretry-root');
    let srv = await startServeProcess(['--root', root, '--port', '0']);
    const port = new URL(srv.url).port;
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const push = startCli(['push', src, `${srv.url}/again.bin`, '--retries', '0'], { env: { TMPDIR: join(dir, 'tmp') } });
    await storedAtLeast(srv.url, 4 * MiB, push);
    await srv.stop('SIGKILL');
    const code = await push.exit;
    assert.equal(code, 14, push.stderr());
    assert.ok(isOneLineError(push.stderr()), push.stderr());
    srv = await startServeProcess(['--root', root, '--port', port]);
    try {
      const again = await runCli(['push', src, `${srv.url}/again.bin`, '--json']);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await sha256File(join(root, 'files', 'again.bin')), await sha256File(src));
    } finally {
      await srv.stop();
    }
  });

  it('a server killed and restarted during a pull: the pull retries and completes by itself', async () => {
    const root = join(dir, 'pull-restart-root');
    let srv = await startServeProcess(['--root', root, '--port', '0']);
    const port = new URL(srv.url).port;
    assert.equal((await runCli(['push', src, `${srv.url}/big.bin`])).code, 0);
    const out = join(dir, 'pulled-restart.bin');
    const partial = join(dir, '.xfer-pulled-restart.bin.partial');
    const pull = startCli(['pull', `${srv.url}/big.bin`, out, '--json'], { env: { TMPDIR: join(dir, 'tmp') } });
    await waitUntil('16 MiB were pulled', pull, async () => ((await stat(partial).catch(() => undefined))?.size ?? 0) >= 16 * MiB);
    await srv.stop('SIGKILL');
    await sleep(300);
    srv = await startServeProcess(['--root', root, '--port', port]);
    try {
      assert.equal(await pull.exit, 0, pull.stderr());
      const r = JSON.parse(pull.stdout());
      assert.equal(r.bytesReceived + r.bytesReused, BIG);
      assert.equal(await sha256File(out), await sha256File(src));
    } finally {
      await srv.stop();
    }
  });

  it('SIGTERM stops the server cleanly and leaves no partial files', async () => {
    const root = join(dir, 'term-root');
    const srv = await startServeProcess(['--root', root, '--port', '0']);
    await mkdir(join(dir, 'tmp'), { recursive: true });
    const push = startCli(['push', src, `${srv.url}/term.bin`], { env: { TMPDIR: join(dir, 'tmp') } });
    // The server builds the file in a staging copy while chunks arrive: stop it then.
    const staging = async () => (await readdir(join(root, 'files'))).filter((n) => n.startsWith('.xfer-'));
    await waitUntil('the server made its staging copy', push, async () => (await staging()).length > 0);
    const code = await srv.stop('SIGTERM');
    assert.equal(code, 0, 'the server exits 0 on SIGTERM');
    await push.exit;
    assert.deepEqual(await staging(), [], 'no staging leftovers');
    assert.deepEqual(await readdir(join(root, 'tmp')), [], "nothing left in the server's tmp/");
  });
});
