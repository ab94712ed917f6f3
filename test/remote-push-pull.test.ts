import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../src/hash/digest.js';
import { damageStoredChunk, storedChunks } from './helpers/damage.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { isOneLineError, runCli, sha256File } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { rawRequest } from './helpers/server.js';
import { chunksOf, withServer } from './helpers/server-root.js';

const MiB = 1024 * 1024;

describe('push and pull over HTTP/2 (h2c) with an in-process server', () => {
  let dir: string;
  let server: XferServer;
  let root: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-remote-'));
    root = join(dir, 'root');
    server = await createServer({ root, port: 0 });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('first push sends every chunk; an incremental push sends exactly the changed chunks', async () => {
    const src = join(dir, 'volume.bin');
    const v1 = pseudoRandom(32 * MiB, 5);
    await writeFile(src, v1);
    const p1 = await runCli(['push', src, `${server.url}/imaging/`, '--json']);
    assert.equal(p1.code, 0, p1.stderr);
    const r1 = JSON.parse(p1.stdout);
    assert.equal(r1.bytesSent, v1.length);
    assert.equal(r1.chunksSent, r1.chunksTotal);
    assert.ok((await readFile(join(root, 'files', 'imaging', 'volume.bin'))).equals(v1), 'server rebuilt the file bit-identically');

    const v2 = Buffer.from(v1);
    for (const off of [1 * MiB + 5, 9 * MiB + 100_000, 20 * MiB + 3, 31 * MiB]) pseudoRandom(4096, off).copy(v2, off);
    await writeFile(src, v2);
    const before1 = chunksOf(v1);
    let expectedBytes = 0;
    let expectedChunks = 0;
    for (const [d, len] of chunksOf(v2)) {
      if (!before1.has(d)) {
        expectedBytes += len;
        expectedChunks++;
      }
    }
    const p2 = await runCli(['push', src, `${server.url}/imaging/volume.bin`, '--json', '--no-delta']);
    assert.equal(p2.code, 0, p2.stderr);
    const r2 = JSON.parse(p2.stdout);
    assert.equal(r2.bytesSent, expectedBytes, 'bytes sent are exactly the changed chunks');
    assert.equal(r2.chunksSent, expectedChunks);
    assert.equal(r2.chunksDelta, 0);
    assert.ok(expectedChunks >= 4 && expectedChunks <= 12);
    assert.ok((await readFile(join(root, 'files', 'imaging', 'volume.bin'))).equals(v2));

    const l = await runCli(['ls', `${server.url}/imaging/`, '--json']);
    assert.equal(l.code, 0, l.stderr);
    const entries = JSON.parse(l.stdout).entries;
    assert.equal(entries.length, 1);
    assert.equal(entries[0].path, 'imaging/volume.bin');
    assert.equal(entries[0].bytes, v2.length);
    assert.equal(entries[0].digest, digestOf('blake3', v2).toString('hex'));

    // pull into an empty destination, then pull again: the unchanged file receives nothing
    const out = join(dir, 'pulled.bin');
    const q1 = await runCli(['pull', `${server.url}/imaging/volume.bin`, out, '--json']);
    assert.equal(q1.code, 0, q1.stderr);
    assert.equal(JSON.parse(q1.stdout).bytesReceived, v2.length);
    assert.ok((await readFile(out)).equals(v2));
    const q2 = await runCli(['pull', `${server.url}/imaging/volume.bin`, out, '--json']);
    assert.equal(JSON.parse(q2.stdout).bytesReceived, 0, 'an unchanged file receives 0 chunk bytes');
    // a seed: the old version lets a fresh pull fetch only the changed chunks
    const seed = join(dir, 'old.bin');
    await writeFile(seed, v1);
    const q3 = await runCli(['pull', `${server.url}/imaging/volume.bin`, join(dir, 'fresh.bin'), '--seed', seed, '--json']);
    assert.equal(q3.code, 0, q3.stderr);
    assert.equal(JSON.parse(q3.stdout).bytesReceived, expectedBytes);
    assert.ok((await readFile(join(dir, 'fresh.bin'))).equals(v2));
  });

  it('sends a changed chunk as the blocks that differ from the chunk it replaces (delta uploads)', async () => {
    const src = join(dir, 'disk.img');
    const v1 = pseudoRandom(24 * MiB, 51);
    await writeFile(src, v1);
    assert.equal((await runCli(['push', src, `${server.url}/vm/disk.img`])).code, 0);
    // Overwrites in place, as a VM or an anonymizer does: 4 KiB at arbitrary offsets, and
    // 100 bytes near a chunk boundary's neighbourhood (the start of the file).
    const edits = [5 * MiB + 123, 11 * MiB + 7, 17 * MiB + 4096, 23 * MiB + 999];
    const v2 = Buffer.from(v1);
    for (const off of edits) pseudoRandom(4096, off).copy(v2, off);
    pseudoRandom(100, 9).copy(v2, 10);
    await writeFile(src, v2);
    const before1 = chunksOf(v1);
    let changedBytes = 0;
    let changedChunks = 0;
    for (const [d, len] of chunksOf(v2)) {
      if (before1.has(d)) continue;
      changedBytes += len;
      changedChunks++;
    }
    const p = await runCli(['push', src, `${server.url}/vm/disk.img`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout);
    assert.equal(r.chunksSent, changedChunks, 'the same chunks are stored as without deltas');
    assert.equal(r.chunksDelta, changedChunks, 'each went as a delta');
    // Each 4 KiB edit touches at most three 2 KiB blocks (plus header and bitmap per chunk),
    // in at most two chunks; the 100 bytes one block.
    const bound = edits.length * 2 * (3 * 2048 + 120) + 2048 + 120;
    assert.ok(r.bytesSent >= edits.length * 4096 + 100 && r.bytesSent <= bound, `sent ${r.bytesSent} bytes (changed chunks: ${changedBytes})`);
    assert.ok(r.bytesSent < changedBytes / 5);
    assert.ok((await readFile(join(root, 'files', 'vm', 'disk.img'))).equals(v2), 'rebuilt bit-identically');
    const out = join(dir, 'disk-pulled.img');
    assert.equal((await runCli(['pull', `${server.url}/vm/disk.img`, out])).code, 0);
    assert.ok((await readFile(out)).equals(v2));
  });

  it('an edit inside a disk image\'s empty space goes as a delta against the zero chunk it replaces', async () => {
    // A zero chunk is in no store (chunker/zero.ts): both sides take it as zeros.
    const src = join(dir, 'sparse-edit.img');
    const v1 = Buffer.alloc(16 * MiB);
    pseudoRandom(4 * MiB, 61).copy(v1, 0);
    await writeFile(src, v1);
    assert.equal((await runCli(['push', src, `${server.url}/vm/sparse-edit.img`])).code, 0);
    const edits = [6 * MiB + 4096, 9 * MiB + 77, 13 * MiB + 8192];
    const v2 = Buffer.from(v1);
    for (const off of edits) pseudoRandom(4096, off).copy(v2, off);
    await writeFile(src, v2);
    const p = await runCli(['push', src, `${server.url}/vm/sparse-edit.img`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout);
    assert.ok(r.chunksSent >= edits.length && r.chunksDelta === r.chunksSent, `${r.chunksDelta} of ${r.chunksSent} chunks sent as deltas`);
    // Each edit's blocks (at most three 2 KiB blocks per chunk it touches), not whole chunks.
    assert.ok(r.bytesSent <= edits.length * 2 * (3 * 2048 + 120), `sent ${r.bytesSent} bytes`);
    assert.ok((await readFile(join(root, 'files', 'vm', 'sparse-edit.img'))).equals(v2), 'rebuilt bit-identically');
  });

  it('a tree pushed again after its files changed in place sends deltas, per file', async () => {
    const tree = join(dir, 'series-delta');
    await mkdir(tree, { recursive: true });
    const files = Array.from({ length: 6 }, (_, i) => pseudoRandom(300_000 + i * 1000, 60 + i));
    for (const [i, f] of files.entries()) await writeFile(join(tree, `IM${i}.dcm`), f);
    assert.equal((await runCli(['push', tree, `${server.url}/pacs/`])).code, 0);
    // "Anonymized": a header value rewritten near the start of every file, in place in
    // half of them and 8 bytes longer in the others (the rest of the file shifts).
    for (const [i, f] of files.entries()) {
      const name = Buffer.from('ANONYMIZED^PATIENT'.padEnd(64, ' '));
      files[i] = i % 2 === 0 ? Buffer.concat([f.subarray(0, 200), name, f.subarray(264)]) : Buffer.concat([f.subarray(0, 200), name, Buffer.alloc(8, 0x20), f.subarray(264)]);
      await writeFile(join(tree, `IM${i}.dcm`), files[i]!);
    }
    const p = await runCli(['push', tree, `${server.url}/pacs/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const r = JSON.parse(p.stdout);
    assert.equal(r.chunksDelta, r.chunksSent, 'every changed chunk went as a delta');
    assert.ok(r.chunksSent >= files.length);
    assert.ok(r.bytesSent <= r.chunksSent * (2 * 2048 + 120), `sent ${r.bytesSent}`);
    for (const [i, f] of files.entries()) assert.ok((await readFile(join(root, 'files', 'pacs', 'series-delta', `IM${i}.dcm`))).equals(f));
  });

  it("a chunk damaged in the server's store does not fail a push that needs it: the server sets it aside at the commit, the client sends it again (issue 16)", async () => {
    const ownRoot = join(dir, 'root-commit-damaged');
    const src = join(dir, 'commit-damaged.bin');
    const data = pseudoRandom(3 * MiB, 91);
    await writeFile(src, data);
    await withServer(ownRoot, async (url) => {
      assert.equal((await runCli(['push', src, `${url}/one.bin`])).code, 0);
    });
    const ids = await storedChunks(join(ownRoot, 'store'));
    const victim = ids[ids.length >> 1]!;
    await damageStoredChunk(join(ownRoot, 'store'), victim, 50);
    await withServer(ownRoot, async (url) => {
      // Every chunk is stored already: the server rebuilds two.bin from its store alone.
      const p = await runCli(['push', src, `${url}/two.bin`]);
      assert.equal(p.code, 0, p.stderr);
      assert.ok((await readFile(join(ownRoot, 'files', 'two.bin'))).equals(data));
      // The committed file is untouched, but for the damaged byte when it is the damaged copy
      // (one copy on disk: a rebuilt file holds its chunks, server/held.ts).
      const one = await readFile(join(ownRoot, 'files', 'one.bin'));
      let differing = 0;
      for (let i = 0; i < one.length; i++) if (one[i] !== data[i]) differing++;
      assert.ok(one.length === data.length && differing <= 1, `the committed file is untouched (${differing} bytes differ)`);
    });
  });

  it('sends a chunk whole when the server cannot give its base (damaged there)', async () => {
    const ownRoot = join(dir, 'root-base-damaged');
    const src = join(dir, 'base-damaged.bin');
    const v1 = pseudoRandom(4 * MiB, 81);
    await writeFile(src, v1);
    await withServer(ownRoot, async (url) => {
      assert.equal((await runCli(['push', src, `${url}/b.bin`])).code, 0);
    });
    // Damage, in the server's store, the old chunk that the edit below replaces.
    const edit = 2 * MiB;
    let start = 0;
    let baseDigest = '';
    for (const [d, len] of chunksOf(v1)) {
      if (edit < start + len) {
        baseDigest = d;
        break;
      }
      start += len;
    }
    await damageStoredChunk(join(ownRoot, 'store'), { algorithm: 'blake3', digest: Buffer.from(baseDigest, 'hex') });
    const v2 = Buffer.from(v1);
    pseudoRandom(4096, 82).copy(v2, edit);
    await writeFile(src, v2);
    await withServer(ownRoot, async (url) => {
      const p = await runCli(['push', src, `${url}/b.bin`, '--json']);
      assert.equal(p.code, 0, p.stderr);
      const r = JSON.parse(p.stdout);
      assert.ok(r.chunksSent >= 1);
      assert.equal(r.chunksDelta, 0, 'no delta against a base the server cannot read');
      assert.ok((await readFile(join(ownRoot, 'files', 'b.bin'))).equals(v2));
    });
  });

  it('refuses a delta that does not rebuild its chunk, and one whose base it lacks', async () => {
    const base = pseudoRandom(20_000, 70);
    const baseDigest = digestOf('blake3', base);
    const head = Buffer.alloc(36);
    head.writeUInt32LE(base.length, 0);
    baseDigest.copy(head, 4);
    assert.equal((await rawRequest(server.url, 'POST', '/v1/chunks?algorithm=blake3', Buffer.concat([head, base]))).status, 200);
    const target = Buffer.from(base);
    target[5000] ^= 1;
    const claimed = digestOf('blake3', pseudoRandom(20_000, 71)); // not what the delta makes
    const record = (digest: Buffer, baseOf: Buffer): Buffer => {
      const h = Buffer.alloc(76);
      digest.copy(h, 0);
      baseOf.copy(h, 32);
      h.writeInt32LE(0, 64); // shift A: same offsets
      h.writeInt32LE(0, 68); // shift B: same length, same thing
      h.writeUInt32LE(target.length, 72);
      const blocks = Math.ceil(target.length / 2048);
      const map = Buffer.alloc(Math.ceil(blocks / 4), 0b01010101); // every block from shift A...
      map[0] = 0b01000101; // ...but block 2 (bytes 4096..6143): literal
      return Buffer.concat([h, map, target.subarray(4096, 6144)]);
    };
    const bad = await rawRequest(server.url, 'POST', '/v1/chunks/delta?algorithm=blake3', record(claimed, baseDigest));
    assert.equal(bad.status, 422);
    assert.equal(JSON.parse(bad.body.toString()).code, 'XFER_CHUNK_CORRUPT');
    const m = await rawRequest(server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', claimed);
    assert.equal(m.body[0]! & 1, 1, 'nothing was stored under the claimed digest');
    const noBase = await rawRequest(server.url, 'POST', '/v1/chunks/delta?algorithm=blake3', record(digestOf('blake3', target), digestOf('blake3', Buffer.from('no such base'))));
    assert.equal(noBase.status, 404);
    assert.equal(JSON.parse(noBase.body.toString()).code, 'XFER_CHUNK_MISSING');
    const good = await rawRequest(server.url, 'POST', '/v1/chunks/delta?algorithm=blake3', record(digestOf('blake3', target), baseDigest));
    assert.equal(good.status, 200, good.body.toString());
    assert.deepEqual(JSON.parse(good.body.toString()), { stored: 1, present: 0 });
  });

  it('a tree of 200 small files plus large ones, pushed and pulled', async () => {
    const tree = join(dir, 'series');
    await mkdir(join(tree, 'frames'), { recursive: true });
    for (let i = 0; i < 200; i++) await writeFile(join(tree, 'frames', `IM${String(i).padStart(4, '0')}.dcm`), pseudoRandom(2000 + i * 37, i + 1));
    await writeFile(join(tree, 'volume-a.bin'), pseudoRandom(20 * MiB, 1));
    await writeFile(join(tree, 'volume-b.bin'), pseudoRandom(9 * MiB + 1, 2));
    await writeFile(join(tree, 'empty'), '');
    const p = await runCli(['push', tree, `${server.url}/studies/`, '--json']);
    assert.equal(p.code, 0, p.stderr);
    const same = async (a: string, b: string) => {
      const names = (await readdir(join(a, 'frames'))).sort();
      assert.deepEqual((await readdir(join(b, 'frames'))).sort(), names);
      for (const n of names) assert.ok((await readFile(join(a, 'frames', n))).equals(await readFile(join(b, 'frames', n))), n);
      for (const n of ['volume-a.bin', 'volume-b.bin', 'empty']) assert.equal(await sha256File(join(b, n)), await sha256File(join(a, n)), n);
    };
    await same(tree, join(root, 'files', 'studies', 'series'));
    const q = await runCli(['pull', `${server.url}/studies/series`, join(dir, 'series-copy'), '--json']);
    assert.equal(q.code, 0, q.stderr);
    await same(tree, join(dir, 'series-copy'));
    // Into the existing tree (studies/series/) cp would nest series/series, which a pushed
    // tree cannot hold: refused at once with what to do, before anything is uploaded.
    const nested = await runCli(['push', tree, `${server.url}/studies/series/`]);
    assert.equal(nested.code, 5, nested.stderr);
    assert.ok(isOneLineError(nested.stderr), nested.stderr);
    assert.match(nested.stderr, /studies\/series is a pushed tree: a copy cannot go inside it\. To replace it, push a tree to http:\/\/[^ ]+\/studies\/series \(no trailing \/\)/);
    const again = await runCli(['push', tree, `${server.url}/studies/`, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).bytesSent, 0);
  });

  it('refuses a chunk whose bytes do not match its digest, and stores nothing', async () => {
    const data = pseudoRandom(10_000, 3);
    const wrong = digestOf('blake3', pseudoRandom(10_000, 4));
    const head = Buffer.alloc(36);
    head.writeUInt32LE(data.length, 0);
    wrong.copy(head, 4);
    const r = await rawRequest(server.url, 'POST', '/v1/chunks?algorithm=blake3', Buffer.concat([head, data]));
    assert.equal(r.status, 422);
    const body = JSON.parse(r.body.toString());
    assert.equal(body.code, 'XFER_CHUNK_CORRUPT');
    assert.match(body.message, new RegExp(wrong.toString('hex')));
    const m = await rawRequest(server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', wrong);
    assert.equal(m.body[0]! & 1, 1, 'the corrupt chunk was not stored');
  });

  it("a chunk damaged in the server's store fails the pull with one line naming it; no destination is left", async () => {
    const ownRoot = join(dir, 'root-damaged');
    const src = join(dir, 'damaged-src.bin');
    await writeFile(src, pseudoRandom(3 * MiB, 77));
    await withServer(ownRoot, async (url) => {
      const p = await runCli(['push', src, `${url}/d.bin`]);
      assert.equal(p.code, 0, p.stderr);
    });
    // Damage the middle chunk where the server keeps it (a fresh server: no cached reads).
    const ids = await storedChunks(join(ownRoot, 'store'));
    const victim = ids[ids.length >> 1]!;
    await damageStoredChunk(join(ownRoot, 'store'), victim, 100);
    await withServer(ownRoot, async (url) => {
      const out = join(dir, 'damaged-out.bin');
      const q = await runCli(['pull', `${url}/d.bin`, out]);
      assert.equal(q.code, 7, q.stderr);
      assert.ok(isOneLineError(q.stderr), q.stderr);
      assert.match(q.stderr, new RegExp(`chunk ${Buffer.from(victim.digest).toString('hex')} is corrupt`));
      await assert.rejects(stat(out), /ENOENT/);
    });
  });

  it('refuses a manifest that references chunks it does not have (409)', async () => {
    const src = join(dir, 'local-only.bin');
    await writeFile(src, pseudoRandom(300_000, 8));
    const local = join(dir, 'local-backup');
    assert.equal((await runCli(['push', src, `${local}/`])).code, 0);
    const manifest = await readFile(join(local, '.xfer', 'manifests', 'local-only.bin'));
    const r = await rawRequest(server.url, 'PUT', '/v1/manifests/sneaky.bin', manifest);
    assert.equal(r.status, 409);
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_MANIFEST_INCOMPLETE');
    await assert.rejects(stat(join(root, 'files', 'sneaky.bin')), /ENOENT/);
    const bad = await rawRequest(server.url, 'PUT', '/v1/manifests/garbage.bin', Buffer.from('not a manifest at all'));
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.body.toString()).code, 'XFER_MANIFEST_CORRUPT');
  });

  it('rejects traversal attempts before touching the file system', async () => {
    // Each is a real endpoint (PUT and GET of a manifest, GET of stat) named by a path that
    // would leave the server's folders or reach its store: refused as such (400), never
    // "no such endpoint" or "no such manifest" (404).
    const attempts: [string, string][] = [
      ['PUT', '/v1/manifests/../escape'],
      ['PUT', '/v1/manifests/a/%2e%2e/b'],
      ['PUT', '/v1/manifests/%2e%2e%2fescape'],
      ['PUT', '/v1/manifests/a%5cb'],
      ['PUT', '/v1/manifests/a%00b'],
      ['PUT', '/v1/manifests//abs'],
      ['PUT', '/v1/manifests/.xfer/x'],
      ['GET', '/v1/manifests/../escape'],
      ['GET', '/v1/manifests/a/%2e%2e/%2e%2e/etc'],
      ['GET', '/v1/stat/..'],
      ['GET', '/v1/stat/a/%2e%2e/%2e%2e'],
    ];
    for (const [method, p] of attempts) {
      const r = await rawRequest(server.url, method, p, method === 'PUT' ? Buffer.from('x') : undefined);
      assert.equal(r.status, 400, `${method} ${p}: ${r.body.toString()}`);
      assert.equal(JSON.parse(r.body.toString()).code, 'XFER_INVALID_ARGUMENT', `${method} ${p}`);
    }
    const list = await rawRequest(server.url, 'GET', '/v1/list?prefix=../');
    assert.equal(list.status, 400);
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('escape')), []);
  });

  it('limits request sizes', async () => {
    const r = await rawRequest(server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', Buffer.alloc(32 * 65537));
    assert.equal(r.status, 413);
    assert.equal(JSON.parse(r.body.toString()).code, 'XFER_TOO_LARGE');
    const odd = await rawRequest(server.url, 'POST', '/v1/chunks/missing?algorithm=blake3', Buffer.alloc(33));
    assert.equal(odd.status, 400);
  });

  it("errors name what is missing without telling clients where the server's root is", async () => {
    const raw = await rawRequest(server.url, 'GET', '/v1/manifests/nowhere/nothing');
    assert.equal(raw.status, 404);
    const body = JSON.parse(raw.body.toString());
    assert.equal(body.code, 'XFER_NOT_FOUND');
    assert.match(body.message, /no manifest named "nowhere\/nothing" in the server's store/);
    assert.ok(!body.message.includes(root), body.message);
    const r = await runCli(['pull', `${server.url}/nowhere/nothing`, join(dir, 'nothing')]);
    assert.equal(r.code, 3);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.ok(!r.stderr.includes(root), r.stderr);
  });

  it('a missing source is reported as missing, whatever the destination would make of it', async () => {
    const tree = join(dir, 'existing-tree');
    await mkdir(tree);
    await writeFile(join(tree, 'f'), 'x');
    assert.equal((await runCli(['push', tree, `${server.url}/pushed-tree`])).code, 0);
    // The destination names a pushed tree, which a tree would update and a file could not
    // go into (exit 5): the missing source must be what the user hears about.
    const r = await runCli(['push', join(dir, 'no-such-source'), `${server.url}/pushed-tree`]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /no-such-source: no such file or directory/);
    assert.ok(isOneLineError(r.stderr), r.stderr);
  });
});

describe('authentication and TLS', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-auth-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('with a token, every endpoint needs Authorization: Bearer <token>', async () => {
    const server = await createServer({ root: join(dir, 'root'), port: 0, token: 's3cret' });
    try {
      const src = join(dir, 'a.bin');
      await writeFile(src, pseudoRandom(100_000, 1));
      const none = await runCli(['push', src, `${server.url}/a.bin`], { env: { XFER_TOKEN: '' } });
      assert.equal(none.code, 12, none.stderr);
      assert.ok(isOneLineError(none.stderr), none.stderr);
      const wrong = await runCli(['push', src, `${server.url}/a.bin`, '--token', 'nope']);
      assert.equal(wrong.code, 12);
      const ok = await runCli(['push', src, `${server.url}/a.bin`], { env: { XFER_TOKEN: 's3cret' } });
      assert.equal(ok.code, 0, ok.stderr);
      for (const [m, p] of [['GET', '/v1/info'], ['GET', '/v1/list'], ['GET', '/v1/manifests/a.bin'], ['POST', '/v1/chunks/missing?algorithm=blake3']]) {
        const r = await rawRequest(server.url, m!, p!, m === 'POST' ? Buffer.alloc(32) : undefined);
        assert.equal(r.status, 401, `${m} ${p}`);
        assert.equal(JSON.parse(r.body.toString()).code, 'XFER_UNAUTHORIZED');
      }
    } finally {
      await server.close();
    }
  });

  it('serves TLS with ALPN h2; the client trusts --ca, refuses an unknown certificate, or accepts it with --insecure', async () => {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const server = await createServer({ root: join(dir, 'tls-root'), port: 0, tlsCertFile: cert, tlsKeyFile: key });
    try {
      assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const src = join(dir, 'b.bin');
      const data = pseudoRandom(3 * MiB, 2);
      await writeFile(src, data);
      const untrusted = await runCli(['push', src, `${server.url}/b.bin`]);
      assert.notEqual(untrusted.code, 0);
      assert.ok(isOneLineError(untrusted.stderr), untrusted.stderr);
      const trusted = await runCli(['push', src, `${server.url}/b.bin`, '--ca', cert, '--json']);
      assert.equal(trusted.code, 0, trusted.stderr);
      const out = join(dir, 'b-out.bin');
      const pulled = await runCli(['pull', `${server.url}/b.bin`, out, '--insecure', '--json']);
      assert.equal(pulled.code, 0, pulled.stderr);
      assert.ok((await readFile(out)).equals(data));
    } finally {
      await server.close();
    }
  });
});

