/**
 * One copy on disk at the server (issue 17 item 5; docs/FORMAT.md, "Server root: one copy
 * on disk"): a file target's rebuilt copy (a tree's files) holds its chunks (server/held.ts), packs keep only
 * what no current file holds, and every guarantee stays: pulls of every version are
 * bit-identical, damage behind the server's back is never served and is named by verify,
 * a crash between any two commit steps leaves every committed version readable, rm and
 * gc lose nothing a manifest needs.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { constants as fsConstants, fstatSync, readdirSync, readFileSync } from 'node:fs';
import { directIoAvailable } from '../src/io/direct.js';
import { mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gc } from '../src/gc.js';
import { forget, pull, push, remove, verify, versions } from '../src/index.js';
import { setTimesNs } from '../src/io/sys.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { HELD_CRASH_ENV, HELD_DAMAGE_FILE, HELD_IDENTITY_RECHECK_MS, heldChunkPlaces, HeldStore } from '../src/server/held.js';
import { silentLogger } from '../src/server/log.js';
import { LocalStore } from '../src/store/local.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { pseudoRandom } from './helpers/gen.js';
import { startServeProcess } from './helpers/server.js';
import { apparentBytes, chunksOf, withServer } from './helpers/server-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bytes of the distinct chunks of `old` versions that `current` does not have. */
function uniqueOldBytes(old: readonly Buffer[], current: Buffer): number {
  const now = chunksOf(current);
  const unique = new Map<string, number>();
  for (const v of old) for (const [d, len] of chunksOf(v)) if (!now.has(d)) unique.set(d, len);
  return [...unique.values()].reduce((a, b) => a + b, 0);
}

/** `data` with `count` edits of 4 KiB of fresh bytes, spread over it (seeded). */
function edited(data: Buffer, seed: number, count = 3): Buffer {
  const out = Buffer.from(data);
  for (let k = 0; k < count; k++) {
    const at = Math.floor(((seed * 7919 + k * 104_729) % 1000) / 1000 * (data.length - 4 * KiB));
    pseudoRandom(4 * KiB, seed * 100 + k).copy(out, at);
  }
  return out;
}

/** Flips a byte of `file` at `offset` and puts its mtime back to the nanosecond: damage its identity does not show. */
async function damageKeepingIdentity(file: string, offset: number): Promise<void> {
  const before = await stat(file, { bigint: true });
  const fh = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, offset);
    one[0] ^= 0x5a;
    await fh.write(one, 0, 1, offset);
  } finally {
    await fh.close();
  }
  setTimesNs(file, before.atimeNs, before.mtimeNs);
}

/** Pulls `location` into a new file under `dir` and returns its bytes, or the error's message. */
async function pulled(location: string, dir: string, tag: string): Promise<Buffer | string> {
  const out = join(dir, `pulled-${tag}-${Math.random().toString(36).slice(2)}`);
  try {
    await pull(location, out);
    return await readFile(out);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

describe('xfer serve (default mode): one copy on disk', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('a first push of a 64 MiB file takes about 1.0x its size at the server (not 2x): the rebuilt file holds the chunks, the upload packs are released', async () => {
    const root = join(dir, 'first');
    const server = await createServer({ root, port: 0 });
    try {
      const data = pseudoRandom(64 * MiB, 1);
      const src = join(dir, 'first.bin');
      await writeFile(src, data);
      await push(src, `${server.url}/big.bin`);
      const used = await apparentBytes(root);
      assert.ok(used <= data.length * 1.01, `the root holds ${used} bytes for a ${data.length}-byte file (${(used / data.length).toFixed(3)}x)`);
      const back = await pulled(`${server.url}/big.bin`, dir, 'first');
      assert.ok(Buffer.isBuffer(back) && back.equals(data), 'the file pulls bit-identical');
    } finally {
      await server.close();
    }
  });

  it('ten edited versions: the root holds the file and the old versions\' unique chunks; after forget and gc every version left pulls bit-identical, also after a restart', async () => {
    const root = join(dir, 'ten');
    const src = join(dir, 'ten.bin');
    let server: XferServer = await createServer({ root, port: 0 });
    const contents: Buffer[] = [];
    try {
      let data = pseudoRandom(2 * MiB, 2);
      for (let v = 0; v < 10; v++) {
        if (v > 0) data = edited(data, v);
        contents.push(data);
        await writeFile(src, data);
        await push(src, `${server.url}/vol.bin`);
      }
      // The file, and the old versions' unique chunks (moved into packs as each version was
      // replaced), within 5% (pack headers and index records, their 4 KiB alignment,
      // manifests and versions).
      const used = await apparentBytes(root);
      const expected = data.length + uniqueOldBytes(contents.slice(0, -1), data);
      assert.ok(used <= expected * 1.05, `the root holds ${used} bytes, ${(used / expected).toFixed(3)}x the file and the old versions' unique chunks (${expected})`);
      await gc(`${server.url}/`, { graceMs: 0, maxUnusedPercent: 0 });
      const listed = (await versions(`${server.url}/vol.bin`)).versions;
      assert.equal(listed.length, 10);
      for (const [i, v] of listed.entries()) {
        const back = await pulled(`${server.url}/vol.bin@${v.id}`, dir, `v${i}`);
        assert.ok(Buffer.isBuffer(back) && back.equals(contents[i]!), `version ${i} pulls bit-identical after gc: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
      }
      // forget all but the last three, gc: the others' unique chunks go, the rest stays whole.
      await forget(`${server.url}/vol.bin`, { last: 3 });
      await gc(`${server.url}/`, { graceMs: 0, maxUnusedPercent: 0 });
      await server.close();
      server = await createServer({ root, port: 0 });
      const kept = (await versions(`${server.url}/vol.bin`)).versions;
      assert.equal(kept.length, 3);
      for (const [i, v] of kept.entries()) {
        const back = await pulled(`${server.url}/vol.bin@${v.id}`, dir, `k${i}`);
        assert.ok(Buffer.isBuffer(back) && back.equals(contents[7 + i]!), `kept version ${i} pulls bit-identical after forget, gc and a restart: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
      }
      const report = await verify(`${server.url}/`, { readData: true });
      assert.deepEqual(report.damaged, [], 'verify --read-data is clean');
    } finally {
      await server.close();
    }
  });

  it('a rebuilt file edited behind the server\'s back: get never serves the wrong bytes, verify names the damaged chunks, the next push repairs', async () => {
    const root = join(dir, 'edited');
    const src = join(dir, 'edited.bin');
    const server = await createServer({ root, port: 0 });
    try {
      const data = pseudoRandom(4 * MiB, 3);
      await writeFile(src, data);
      await push(src, `${server.url}/e.bin`);
      // Damage its identity does not show (the mtime put back): only the re-hash finds it.
      await damageKeepingIdentity(join(root, 'files', 'e.bin'), 2 * MiB + 17);
      const back = await pulled(`${server.url}/e.bin`, dir, 'edited');
      assert.ok(typeof back === 'string' || back.equals(data), 'a pull fails or gets the right bytes, never the damaged ones');
      const report = await verify(`${server.url}/`, { readData: true });
      assert.ok(report.damagedChunks.length >= 1, 'verify names the damaged chunk');
      assert.ok(report.damaged.some((d) => d.manifest.includes('e.bin') || d.path === ''), JSON.stringify(report.damaged));
      // The next push of the same file stores the chunk again (into a pack) and rebuilds the copy.
      await push(src, `${server.url}/e.bin`, { checksum: true });
      assert.ok((await readFile(join(root, 'files', 'e.bin'))).equals(data), 'the rebuilt copy is whole again');
      const again = await pulled(`${server.url}/e.bin`, dir, 'repaired');
      assert.ok(Buffer.isBuffer(again) && again.equals(data), 'and pulls bit-identical');
      assert.deepEqual((await verify(`${server.url}/`, { readData: true })).damaged, [], 'verify is clean again');
    } finally {
      await server.close();
    }
  });

  it('a held chunk found damaged (its file\'s identity unchanged) stays dropped after a restart: verify without --read-data names it, the next push (without --checksum) sends it again and rebuilds the file', async () => {
    const root = join(dir, 'damage-kept');
    const src = join(dir, 'damage-kept.bin');
    const data = pseudoRandom(4 * MiB, 31);
    await withServer(root, async (url) => {
      await writeFile(src, data);
      await push(src, `${url}/k.bin`);
      await damageKeepingIdentity(join(root, 'files', 'k.bin'), 1 * MiB + 3);
      assert.equal((await verify(`${url}/`, { readData: true })).damagedChunks.length, 1, 'verify --read-data finds the damaged chunk');
    });
    await withServer(root, async (url) => {
      const report = await verify(`${url}/`, { readData: false });
      assert.equal(report.damagedChunks.length, 1, `after a restart the chunk is still missing: ${JSON.stringify(report.damagedChunks)}`);
      const r = await push(src, `${url}/k.bin`);
      assert.ok(r.bytesSent > 0 && r.bytesSent <= 1 * MiB, `the next push sends the damaged chunk again, not the file: ${r.bytesSent} bytes`);
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data is clean again');
    });
  });

  it('rm of a file target whose chunks an older version of a tree target shares (found held, never sent): that version still pulls bit-identical', async () => {
    const root = join(dir, 'rm');
    const server = await createServer({ root, port: 0 });
    try {
      const x = pseudoRandom(3 * MiB, 4);
      const y = pseudoRandom(3 * MiB, 5);
      const fileX = join(dir, 'x.bin');
      await writeFile(fileX, x);
      await push(fileX, `${server.url}/b.bin`);
      // A tree with the same bytes: its chunks are found held by b.bin, not sent.
      const tree = join(dir, 'tree');
      await mkdir(tree, { recursive: true });
      await writeFile(join(tree, 'copy.bin'), x);
      await push(tree, `${server.url}/t`);
      // The tree's next version has other bytes: its older one relies on b.bin's chunks.
      await writeFile(join(tree, 'copy.bin'), y);
      await push(tree, `${server.url}/t`);
      await remove(`${server.url}/b.bin`);
      const old = (await versions(`${server.url}/t`)).versions[0]!;
      const out = join(dir, 'tree-back');
      await pull(`${server.url}/t@${old.id}`, out);
      assert.ok((await readFile(join(out, 'copy.bin'))).equals(x), 'the tree\'s older version pulls bit-identical');
      assert.deepEqual((await verify(`${server.url}/`, { readData: true })).damaged, [], 'verify --read-data is clean');
    } finally {
      await server.close();
    }
  });

  it('gc with held chunks: a pack copy of a chunk a current file holds goes, unless the held copy does not re-hash right', async () => {
    const root = join(dir, 'gc');
    const src = join(dir, 'gc.bin');
    const x = pseudoRandom(4 * MiB, 6);
    const y = edited(x, 11, 8);
    let server = await createServer({ root, port: 0 });
    try {
      await writeFile(src, x);
      await push(src, `${server.url}/g.bin`);
      await writeFile(src, y);
      await push(src, `${server.url}/g.bin`); // x's own chunks go into a pack
      await server.close();
      // A new server process: its packs are not its own, so a commit releases none of them.
      server = await createServer({ root, port: 0 });
      await writeFile(src, x);
      await push(src, `${server.url}/g.bin`); // x's chunks are held again, and still in that pack
      const packsBefore = await apparentBytes(join(root, 'store', 'packs'));
      // Damage, keeping the identity, a chunk of x's that y replaced (edited() put y's first
      // edit at 10.9% of the file): gc must keep its pack copy.
      await damageKeepingIdentity(join(root, 'files', 'g.bin'), Math.floor(0.109 * (x.length - 4 * KiB)) + 100);
      await gc(`${server.url}/`, { graceMs: 0, maxUnusedPercent: 0 });
      const packsAfter = await apparentBytes(join(root, 'store', 'packs'));
      // What stays in packs: y's own chunks (no current file holds them) and the damaged
      // chunk's pack copy (its held copy failed gc's re-hash), at most 256 KiB.
      const yOwn = uniqueOldBytes([y], x);
      assert.ok(packsBefore >= yOwn + uniqueOldBytes([x], y), `before gc, packs hold x's and y's own chunks: ${packsBefore} bytes`);
      assert.ok(packsAfter <= yOwn + 256 * KiB + 64 * KiB, `the pack copies of held chunks went: ${packsBefore} -> ${packsAfter} bytes (y's own: ${yOwn})`);
      const listed = (await versions(`${server.url}/g.bin`)).versions;
      for (const [i, v] of listed.entries()) {
        const back = await pulled(`${server.url}/g.bin@${v.id}`, dir, `g${i}`);
        assert.ok(Buffer.isBuffer(back) && back.equals([x, y, x][i]!), `version ${i} pulls bit-identical: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
      }
    } finally {
      await server.close();
    }
  });
});

describe('xfer serve: a crash between two commit steps of the held index', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-crash-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('a first push killed after its swap (step 6): the staged record is promoted and loaded at the next start, and a gc then keeps one copy', async () => {
    const root = join(dir, 'root-first-6');
    const src = join(dir, 'first-6.bin');
    const data = pseudoRandom(4 * MiB, 66);
    await writeFile(src, data);
    let serve = await startServeProcess(['--root', root, '--port', '0', '--quiet'], { [HELD_CRASH_ENV]: '6' });
    try {
      await assert.rejects(push(src, `${serve.url}/f.bin`, { retries: 0 }));
      assert.equal(await serve.stop(), null, 'the server was killed at the step');
      serve = await startServeProcess(['--root', root, '--port', '0', '--quiet']);
      assert.deepEqual((await readdir(join(root, 'held'))).filter((n) => n.endsWith('.held')).length, 1, 'one record, promoted');
      // The upload packs were never released (step 8): their chunks count as unused once held.
      await gc(`${serve.url}/`, { graceMs: 0, maxUnusedPercent: 0 });
      const used = await apparentBytes(root);
      assert.ok(used <= data.length * 1.02, `one copy after gc: ${used} bytes for ${data.length}`);
      const back = await pulled(`${serve.url}/f.bin`, dir, 'first-6');
      assert.ok(Buffer.isBuffer(back) && back.equals(data), 'the file pulls bit-identical');
    } finally {
      await serve.stop();
    }
  });

  // After step n (docs/FORMAT.md; 71: the record of step 7 written, the staged one not yet removed).
  for (const step of [3, 4, 5, 6, 7, 71]) {
    it(`killed after step ${step}: the restarted server follows the start-up rules, every committed version pulls bit-identical, the next push and verify are clean`, async () => {
      const root = join(dir, `root-${step}`);
      const src = join(dir, `crash-${step}.bin`);
      const v1 = pseudoRandom(2 * MiB, 20 + step);
      const v2 = edited(v1, step, 4);
      let serve = await startServeProcess(['--root', root, '--port', '0', '--quiet']);
      try {
        await writeFile(src, v1);
        await push(src, `${serve.url}/c.bin`);
        await serve.stop();
        serve = await startServeProcess(['--root', root, '--port', '0', '--quiet'], { [HELD_CRASH_ENV]: String(step) });
        await writeFile(src, v2);
        await assert.rejects(push(src, `${serve.url}/c.bin`, { retries: 0 }));
        assert.equal(await serve.stop(), null, 'the server was killed at the step');
        serve = await startServeProcess(['--root', root, '--port', '0', '--quiet']);
        const held = await readdir(join(root, 'held'));
        assert.ok(!held.some((n) => n.endsWith('.staged.held')), `no staged record after the start: ${held.join(', ')}`);
        const listed = (await versions(`${serve.url}/c.bin`)).versions;
        assert.equal(listed.length, step >= 5 ? 2 : 1, 'the new version is committed from step 5 on');
        for (const [i, v] of listed.entries()) {
          const back = await pulled(`${serve.url}/c.bin@${v.id}`, dir, `s${step}-${i}`);
          assert.ok(Buffer.isBuffer(back) && back.equals([v1, v2][i]!), `version ${i} pulls bit-identical: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
        }
        await push(src, `${serve.url}/c.bin`, { checksum: true });
        assert.ok((await readFile(join(root, 'files', 'c.bin'))).equals(v2));
        const report = await verify(`${serve.url}/`, { readData: true });
        assert.deepEqual(report.damaged, [], 'verify --read-data is clean');
      } finally {
        await serve.stop();
      }
    });
  }
});

/** Inode of `path` (to check that a copy really has new identities). */
async function inodeOf(path: string): Promise<bigint> {
  return (await stat(path, { bigint: true })).ino;
}

/** The inode a held record of `root` names for its file (one record expected). */
async function recordedInode(root: string): Promise<bigint> {
  const names = (await readdir(join(root, 'held'))).filter((n) => n.endsWith('.held') && !n.endsWith('.staged.held'));
  assert.equal(names.length, 1, `one held record: ${names.join(', ')}`);
  const line = (await readFile(join(root, 'held', names[0]!), 'utf8')).split('\n')[1]!;
  return BigInt((JSON.parse(line) as { ino: string }).ino);
}

describe('xfer serve: a server root copied (cp -a) or moved (mv) to a new place', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-moved-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('copied with cp -a (new inodes): every version pulls bit-identical, verify is clean, the held file is re-adopted durably, an incremental push sends only the changed chunks; then moved with mv: the same', async () => {
    const root = join(dir, 'orig');
    const src = join(dir, 'moved.bin');
    const v1 = pseudoRandom(4 * MiB, 71);
    const v2 = edited(v1, 72, 4);
    const v3 = edited(v2, 73, 2);
    await withServer(root, async (url) => {
      await writeFile(src, v1);
      await push(src, `${url}/m.bin`);
      await writeFile(src, v2);
      await push(src, `${url}/m.bin`); // v1's own chunks go into a pack
    });
    const copy = join(dir, 'copy');
    execFileSync('cp', ['-a', root, copy]);
    assert.notEqual(await inodeOf(join(copy, 'files', 'm.bin')), await inodeOf(join(root, 'files', 'm.bin')), 'cp -a gave the rebuilt file a new inode');
    await rm(root, { recursive: true, force: true });
    await withServer(copy, async (url) => {
      const listed = (await versions(`${url}/m.bin`)).versions;
      assert.equal(listed.length, 2);
      for (const [i, v] of listed.entries()) {
        const back = await pulled(`${url}/m.bin@${v.id}`, dir, `cp${i}`);
        assert.ok(Buffer.isBuffer(back) && back.equals([v1, v2][i]!), `version ${i} pulls bit-identical from the copy: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
      }
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data of the copy is clean');
      assert.equal(await recordedInode(copy), await inodeOf(join(copy, 'files', 'm.bin')), 'the record names the copy\'s inode now (re-adopted durably)');
      // Only v3's edits travel (not the whole file, as if nothing were held).
      await writeFile(src, v3);
      const r = await push(src, `${url}/m.bin`);
      const changed = uniqueOldBytes([v3], v2);
      assert.ok(r.bytesSent <= changed, `an incremental push after the copy sent ${r.bytesSent} bytes; v3's chunks that v2 lacks: ${changed}`);
    });
    const moved = join(dir, 'elsewhere', 'root');
    await mkdir(join(dir, 'elsewhere'));
    execFileSync('mv', [copy, moved]);
    await withServer(moved, async (url) => {
      const listed = (await versions(`${url}/m.bin`)).versions;
      assert.equal(listed.length, 3);
      for (const [i, v] of listed.entries()) {
        const back = await pulled(`${url}/m.bin@${v.id}`, dir, `mv${i}`);
        assert.ok(Buffer.isBuffer(back) && back.equals([v1, v2, v3][i]!), `version ${i} pulls bit-identical after mv: ${Buffer.isBuffer(back) ? 'other bytes' : back}`);
      }
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data after mv is clean');
    });
  });

  it('copied with cp -a and a byte of the copy changed (mtime kept): only that chunk is dropped, the rest re-adopted; it stays dropped after a restart; the next push repairs', async () => {
    const root = join(dir, 'dmg');
    const src = join(dir, 'dmg.bin');
    const data = pseudoRandom(4 * MiB, 74);
    await withServer(root, async (url) => {
      await writeFile(src, data);
      await push(src, `${url}/d.bin`);
    });
    const copy = join(dir, 'dmg-copy');
    execFileSync('cp', ['-a', root, copy]);
    await damageKeepingIdentity(join(copy, 'files', 'd.bin'), 3 * MiB + 5);
    for (const round of ['first start', 'restart']) {
      await withServer(copy, async (url) => {
        // Existence only (no --read-data): the damaged chunk is known missing, not re-found by reading.
        const report = await verify(`${url}/`, { readData: false });
        assert.equal(report.damagedChunks.length, 1, `${round}: verify names the one damaged chunk: ${JSON.stringify(report.damagedChunks)}`);
        assert.equal(await recordedInode(copy), await inodeOf(join(copy, 'files', 'd.bin')), `${round}: the rest of the file is re-adopted`);
      });
    }
    await withServer(copy, async (url) => {
      const r = await push(src, `${url}/d.bin`);
      assert.ok(r.bytesSent > 0 && r.bytesSent <= 1 * MiB, `the push sends the damaged chunk again, not the file: ${r.bytesSent} bytes`);
      const back = await pulled(`${url}/d.bin`, dir, 'dmg');
      assert.ok(Buffer.isBuffer(back) && back.equals(data), 'the file pulls bit-identical after the push');
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data is clean again');
    });
  });
});

/** Every file under `<root>/held` with its bytes (to check that nothing there changed). */
async function heldDir(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of (await readdir(join(root, 'held'))).sort()) out[n] = await readFile(join(root, 'held', n), 'utf8');
  return out;
}

describe('xfer verify <root> or <root>/store on the server\'s machine (no server)', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-local-verify-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('checks the root as its server would: held chunks count, --read-data re-hashes them and names a damaged one, a copied root verifies clean; under held/ only the damage list is written', async () => {
    const root = join(dir, 'root');
    const src = join(dir, 'lv.bin');
    const v1 = pseudoRandom(3 * MiB, 81);
    const v2 = edited(v1, 82, 3);
    await withServer(root, async (url) => {
      await writeFile(src, v1);
      await push(src, `${url}/lv.bin`);
      await writeFile(src, v2);
      await push(src, `${url}/lv.bin`);
    });
    const copy = join(dir, 'copy');
    execFileSync('cp', ['-a', root, copy]);
    const heldBefore = await heldDir(copy);
    for (const at of [join(root, 'store'), root, join(copy, 'store')]) {
      const report = await verify(at, { readData: true });
      assert.deepEqual(report.damaged, [], `verify --read-data ${at} is clean`);
      assert.ok(report.chunksRead > 0 && report.versions === 2 && report.filesChecked === 1, `${at}: chunks read, both versions and the rebuilt file checked: ${JSON.stringify({ ...report, damaged: undefined })}`);
    }
    assert.deepEqual(await heldDir(copy), heldBefore, 'the copy\'s held records are as they were (read-only)');
    await damageKeepingIdentity(join(root, 'files', 'lv.bin'), 1 * MiB + 9);
    const records = await heldDir(root);
    const report = await verify(join(root, 'store'), { readData: true });
    assert.equal(report.damagedChunks.length, 1, `verify --read-data names the damaged held chunk: ${JSON.stringify(report.damagedChunks)}`);
    // The damage goes to held/damaged, for a running server to read (HELD_DAMAGE_FILE); the records are untouched.
    const { [HELD_DAMAGE_FILE]: list, ...after } = await heldDir(root);
    assert.deepEqual(after, records, 'the held records are as they were');
    const lines = (list ?? '').trim().split('\n').map((l) => JSON.parse(l) as { target: string; entry: string; digest: string });
    assert.deepEqual(lines.map((l) => [l.target, l.entry, l.digest]), [['lv.bin', '', report.damagedChunks[0]!.digest]]);
  });
});

/** Every regular file under `dir` by its path in it (POSIX separators), with its bytes. */
async function treeFiles(dir: string, rel = ''): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
    const p = rel === '' ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) for (const [k, v] of await treeFiles(dir, p)) out.set(k, v);
    else if (e.isFile()) out.set(p, await readFile(join(dir, p)));
  }
  return out;
}

/** Whether two trees' files are the same paths with the same bytes (the first difference, or ''). */
function treeDifference(a: Map<string, Buffer>, b: Map<string, Buffer>): string {
  for (const [k, v] of a) if (!b.get(k)?.equals(v)) return `${k} differs`;
  for (const k of b.keys()) if (!a.has(k)) return `${k} is extra`;
  return '';
}

/**
 * A tree of mixed files: two large ones, a dozen small ones in a subdirectory, an empty one
 * (about 5.1 MiB). `version` 2 edits a.bin in four places, rewrites small/s3.txt, removes
 * b.bin and adds c.bin; 3 edits a.bin again.
 */
async function writeTree(dir: string, version: 1 | 2 | 3, seed: number): Promise<Map<string, Buffer>> {
  await mkdir(join(dir, 'small'), { recursive: true });
  const files = new Map<string, Buffer>();
  let a = pseudoRandom(3 * MiB, seed);
  if (version >= 2) a = edited(a, seed + 1, 4);
  if (version >= 3) a = edited(a, seed + 2, 2);
  files.set('a.bin', a);
  if (version === 1) files.set('b.bin', pseudoRandom(2 * MiB, seed + 3));
  else files.set('c.bin', pseudoRandom(1 * MiB, seed + 4));
  for (let i = 0; i < 12; i++) files.set(`small/s${i}.txt`, pseudoRandom(1 * KiB + i * 700, seed + 10 + i + (version >= 2 && i === 3 ? 100 : 0)));
  files.set('empty', Buffer.alloc(0));
  // Only what changed is written (the others keep their mtimes, as a user's unchanged files
  // do: the server keeps them, linked, by their size and mtime).
  for (const [p, data] of files) {
    const now = await readFile(join(dir, p)).catch(() => undefined);
    if (!now?.equals(data)) await writeFile(join(dir, p), data);
  }
  for (const p of (await treeFiles(dir)).keys()) if (!files.has(p)) await rm(join(dir, p));
  return files;
}

/** Pulls `location` (a tree) into a new directory under `dir`: its files, or the error's message. */
async function pulledTree(location: string, dir: string, tag: string): Promise<Map<string, Buffer> | string> {
  const out = join(dir, `pulled-${tag}-${Math.random().toString(36).slice(2)}`);
  try {
    await pull(location, out);
    return await treeFiles(out);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** Bytes of the distinct chunks of the files of `old` trees that no file of `current` has. */
function uniqueOldTreeBytes(old: readonly Map<string, Buffer>[], current: Map<string, Buffer>): number {
  const now = new Set<string>();
  for (const data of current.values()) for (const d of chunksOf(data).keys()) now.add(d);
  const unique = new Map<string, number>();
  for (const t of old) for (const data of t.values()) for (const [d, len] of chunksOf(data)) if (!now.has(d)) unique.set(d, len);
  return [...unique.values()].reduce((x, y) => x + y, 0);
}

function treeBytes(t: Map<string, Buffer>): number {
  return [...t.values()].reduce((n, b) => n + b.length, 0);
}

/** The lines of the (one) held record of `root`: entry and inode. */
async function recordedTreeLines(root: string): Promise<{ entry: string; ino: bigint }[]> {
  const names = (await readdir(join(root, 'held'))).filter((n) => n.endsWith('.held') && !n.endsWith('.staged.held'));
  assert.equal(names.length, 1, `one held record: ${names.join(', ')}`);
  const lines = (await readFile(join(root, 'held', names[0]!), 'utf8')).trim().split('\n').slice(1, -1);
  return lines.map((l) => JSON.parse(l) as { entry: string; ino: string }).map((l) => ({ entry: l.entry, ino: BigInt(l.ino) }));
}

describe('xfer serve (default mode): one copy on disk for a tree target', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-tree-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('a tree pushed twice with changes: its files hold their chunks (about one copy at the server after each push), both versions pull bit-identical, verify of the URL and of the root are clean', async () => {
    const root = join(dir, 'twice');
    const src = join(dir, 'twice-src');
    await withServer(root, async (url) => {
      const v1 = await writeTree(src, 1, 100);
      await push(src, `${url}/t`);
      const first = await apparentBytes(root);
      assert.ok(first <= treeBytes(v1) * 1.05, `after a first push the root holds ${first} bytes for a ${treeBytes(v1)}-byte tree (${(first / treeBytes(v1)).toFixed(3)}x)`);
      const v2 = await writeTree(src, 2, 100);
      await push(src, `${url}/t`);
      const expected = treeBytes(v2) + uniqueOldTreeBytes([v1], v2);
      const second = await apparentBytes(root);
      assert.ok(second <= expected * 1.05, `after a second version the root holds ${second} bytes, ${(second / expected).toFixed(3)}x the tree and the old version's unique chunks (${expected})`);
      const listed = (await versions(`${url}/t`)).versions;
      assert.equal(listed.length, 2);
      for (const [i, v] of listed.entries()) {
        const back = await pulledTree(`${url}/t@${v.id}`, dir, `twice${i}`);
        assert.equal(typeof back === 'string' ? back : treeDifference([v1, v2][i]!, back), '', `version ${i} pulls bit-identical`);
      }
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data of the URL is clean');
    });
    const report = await verify(root, { readData: true });
    assert.deepEqual(report.damaged, [], 'verify --read-data of the root is clean');
    assert.equal(report.versions, 2);
  });

  it('a held file of a tree edited behind the server\'s back is never served wrong: a pull fails or gets the right bytes, verify names it, the next push sends its chunks again and both versions pull bit-identical', async () => {
    const root = join(dir, 'edited');
    const src = join(dir, 'edited-src');
    await withServer(root, async (url) => {
      const v1 = await writeTree(src, 1, 200);
      await push(src, `${url}/t`);
      // Pack copies of held chunks a commit did not release (gc's to judge): gone, so the files are the only copy.
      await gc(`${url}/`, { graceMs: 0, maxUnusedPercent: 0 });
      // b.bin: changed, its mtime put back (only a re-hash finds it); a.bin: changed plainly.
      await damageKeepingIdentity(join(root, 'files', 't', 'b.bin'), 1 * MiB + 11);
      const fh = await open(join(root, 'files', 't', 'a.bin'), 'r+');
      await fh.write(Buffer.from('behind the server'), 0, 17, 2 * MiB);
      await fh.close();
      // Existence only: a.bin's identity changed, so its chunks count as missing without a
      // read, once the server checks it again (at most HELD_IDENTITY_RECHECK_MS after the last check: gc's).
      await sleep(HELD_IDENTITY_RECHECK_MS * 2);
      const quick = await verify(`${url}/`, { readData: false });
      assert.ok(quick.damagedChunks.length >= 1, `verify without --read-data names a.bin's chunks missing: ${JSON.stringify(quick.damagedChunks)}`);
      const back = await pulledTree(`${url}/t`, dir, 'edited');
      assert.ok(typeof back === 'string' || treeDifference(v1, back) === '', 'a pull fails or gets the right bytes, never the changed ones');
      const report = await verify(`${url}/`, { readData: true });
      assert.ok(report.damagedChunks.length > quick.damagedChunks.length, `verify --read-data also names b.bin's changed chunk: ${report.damagedChunks.length} against ${quick.damagedChunks.length}`);
      const r = await push(src, `${url}/t`);
      assert.ok(r.bytesSent > 0 && r.bytesSent < treeBytes(v1), `the push sends what was changed again: ${r.bytesSent} bytes`);
      const v2 = await writeTree(src, 2, 200);
      await push(src, `${url}/t`);
      const listed = (await versions(`${url}/t`)).versions;
      for (const [i, v] of listed.entries()) {
        const again = await pulledTree(`${url}/t@${v.id}`, dir, `edited${i}`);
        assert.equal(typeof again === 'string' ? again : treeDifference([v1, v1, v2][i]!, again), '', `version ${i} pulls bit-identical`);
      }
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data is clean again');
    });
  });

  it('a root with a tree copied with cp -a: every file re-adopted (the record names the copy\'s inodes), both versions pull bit-identical, verify is clean, the next version sends only its changed chunks', async () => {
    const root = join(dir, 'orig');
    const src = join(dir, 'cp-src');
    const v1 = await writeTree(src, 1, 300);
    await withServer(root, async (url) => {
      await push(src, `${url}/t`);
      await writeTree(src, 2, 300);
      await push(src, `${url}/t`);
    });
    const v2 = await treeFiles(src);
    const copy = join(dir, 'copy');
    execFileSync('cp', ['-a', root, copy]);
    await rm(root, { recursive: true, force: true });
    await withServer(copy, async (url) => {
      const listed = (await versions(`${url}/t`)).versions;
      assert.equal(listed.length, 2);
      for (const [i, v] of listed.entries()) {
        const back = await pulledTree(`${url}/t@${v.id}`, dir, `cp${i}`);
        assert.equal(typeof back === 'string' ? back : treeDifference([v1, v2][i]!, back), '', `version ${i} pulls bit-identical from the copy`);
      }
      assert.deepEqual((await verify(`${url}/`, { readData: true })).damaged, [], 'verify --read-data of the copy is clean');
      const lines = await recordedTreeLines(copy);
      assert.equal(lines.length, 14, `a line per non-empty file: ${lines.map((l) => l.entry).join(', ')}`);
      for (const l of lines) assert.equal(l.ino, await inodeOf(join(copy, 'files', 't', l.entry)), `${l.entry}: the record names the copy's inode (re-adopted durably)`);
      const v3 = await writeTree(src, 3, 300);
      const r = await push(src, `${url}/t`);
      const changed = uniqueOldTreeBytes([v3], v2);
      assert.ok(r.bytesSent <= changed, `the next version after the copy sent ${r.bytesSent} bytes; its chunks the last one lacks: ${changed}`);
    });
  });
});

/** Descriptors this process has open on files under `dir`. */
async function openUnder(dir: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const to = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (to.startsWith(`${dir}/`)) n++;
  }
  return n;
}

describe('the held index of a tree: open descriptors are bounded', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-fds-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('a tree of more held files than the descriptor budget: every held chunk reads back right, never more than the budget of its files open', async () => {
    const root = join(dir, 'root');
    const src = join(dir, 'src');
    const tree = await writeTree(src, 1, 500);
    await withServer(root, async (url) => {
      await push(src, `${url}/t`);
    });
    const budget = 3;
    const local = await LocalStore.open(join(root, 'store'), { create: false });
    // Counted all along, from the open (whose re-adoption pass opens every file) through two
    // rounds of reads, two at a time as a fetch and a rebuild may: the bound holds while
    // descriptors are being opened and closed, not only once the closes behind an eviction
    // are done.
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) most = Math.max(most, await openUnder(join(root, 'files')));
    })();
    const held = await HeldStore.open(local, { root, filesDir: join(root, 'files'), log: silentLogger, readOnly: true, maxOpenFiles: budget });
    try {
      const places = await heldChunkPlaces(root, local);
      assert.ok(new Set(places.map((p) => p.file)).size > budget * 4, `the tree has more held files than the budget: ${new Set(places.map((p) => p.file)).size}`);
      const readBack = async (p: (typeof places)[number]) => {
        const bytes = await held.get(p.id);
        const expected = tree.get(p.file.slice(join(root, 'files', 't').length + 1))!.subarray(p.offset, p.offset + p.length);
        assert.ok(bytes.equals(expected), `${p.file} at ${p.offset} reads back right`);
      };
      // Round after round over every file: each read after the first of a file reopens it.
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < places.length; i += 2) await Promise.all([readBack(places[i]!), places[i + 1] && readBack(places[i + 1]!)]);
      }
    } finally {
      sampling = false;
      await sampler;
      await held.close();
    }
    assert.ok(most <= budget, `at most ${budget} held files open at once: ${most}`);
  });
});

/**
 * Counts the reads (FileHandle.read calls) of the file whose inode is `ino` and the bytes
 * they asked for, while `fn` runs. Other reads of the process (a list checked now and then,
 * more often on a loaded machine) do not count.
 */
async function readsOf(ino: number, fn: () => Promise<void>): Promise<{ calls: number; bytes: number }> {
  const probe = await open(process.execPath, 'r');
  const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const original = proto.read;
  const counted = { calls: 0, bytes: 0 };
  proto.read = function (this: { fd: number }, ...args: unknown[]) {
    if (fstatSync(this.fd).ino === ino) {
      counted.calls++;
      counted.bytes += typeof args[2] === 'number' ? args[2] : 0;
    }
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto.read = original;
  }
  return counted;
}

describe('xfer serve: reads of a large held file', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-windows-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('its chunks asked in order come from a few read-ahead windows, not a read each; asked out of order, each is read exactly; every one reads back right', async () => {
    const root = join(dir, 'root');
    const data = pseudoRandom(32 * MiB, 41);
    const src = join(dir, 'big.bin');
    await writeFile(src, data);
    await withServer(root, async (url) => {
      await push(src, `${url}/big.bin`);
    });
    const local = await LocalStore.open(join(root, 'store'), { create: false });
    const held = await HeldStore.open(local, { root, filesDir: join(root, 'files'), log: silentLogger, readOnly: true });
    try {
      const places = (await heldChunkPlaces(root, local)).sort((a, b) => a.offset - b.offset);
      assert.ok(places.length > 200, `the file holds ${places.length} chunks`);
      const ino = (await stat(join(root, 'files', 'big.bin'))).ino;
      const readAll = (order: typeof places) =>
        readsOf(ino, async () => {
          for (const p of order) {
            const bytes = await held.get(p.id);
            assert.ok(bytes.equals(data.subarray(p.offset, p.offset + p.length)), `the chunk at ${p.offset} reads back right`);
          }
        });
      const inOrder = await readAll(places);
      // Read with O_DIRECT, as packs are (it was written with it: not in the page cache),
      // where the file system takes it.
      if (directIoAvailable()) {
        const flags = readdirSync('/proc/self/fd')
          .filter((fd) => { try { return fstatSync(Number(fd)).ino === ino; } catch { return false; } })
          .map((fd) => parseInt(/^flags:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8));
        assert.ok(flags.length > 0 && flags.every((f) => (f & fsConstants.O_DIRECT) !== 0), `the held file's descriptors' flags: ${flags.map((f) => f.toString(8)).join(', ')}`);
      }
      // 32 MiB in 4 MiB windows: 8 reads (one more at the end: the read-ahead past it).
      assert.ok(inOrder.calls <= 12, `${inOrder.calls} read calls for ${places.length} chunks asked in order`);
      // Each next chunk far from the last (97 chunks on, wrapping): read exactly, one read each.
      const scattered = places.map((_, i) => places[(i * 97) % places.length]!).slice(0, 100);
      const outOfOrder = await readAll(scattered);
      const asked = scattered.reduce((n, p) => n + p.length, 0);
      // Exactly: with O_DIRECT (a large held file is read with it) rounded out to 4 KiB blocks.
      const alignment = scattered.length * 2 * 4096;
      assert.ok(outOfOrder.bytes <= asked + alignment, `${outOfOrder.bytes} bytes read for ${asked} bytes of chunks asked far apart: each read exactly, not a 4 MiB window each`);
    } finally {
      await held.close();
    }
  });
});

describe('xfer serve: a crash between two commit steps of a tree target\'s held record', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-one-copy-tree-crash-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  for (const step of [3, 4, 5, 6, 7, 71]) {
    it(`killed after step ${step}: the restarted server serves every committed version of the tree bit-identical, the next push and verify are clean`, async () => {
      const root = join(dir, `root-${step}`);
      const src = join(dir, `src-${step}`);
      const v1 = await writeTree(src, 1, 400 + step);
      let serve = await startServeProcess(['--root', root, '--port', '0', '--quiet']);
      try {
        await push(src, `${serve.url}/t`);
        await serve.stop();
        serve = await startServeProcess(['--root', root, '--port', '0', '--quiet'], { [HELD_CRASH_ENV]: String(step) });
        const v2 = await writeTree(src, 2, 400 + step);
        await assert.rejects(push(src, `${serve.url}/t`, { retries: 0 }));
        assert.equal(await serve.stop(), null, 'the server was killed at the step');
        serve = await startServeProcess(['--root', root, '--port', '0', '--quiet']);
        const held = await readdir(join(root, 'held'));
        assert.ok(!held.some((n) => n.endsWith('.staged.held')), `no staged record after the start: ${held.join(', ')}`);
        const listed = (await versions(`${serve.url}/t`)).versions;
        assert.equal(listed.length, step >= 5 ? 2 : 1, 'the new version is committed from step 5 on');
        for (const [i, v] of listed.entries()) {
          const back = await pulledTree(`${serve.url}/t@${v.id}`, dir, `s${step}-${i}`);
          assert.equal(typeof back === 'string' ? back : treeDifference([v1, v2][i]!, back), '', `version ${i} pulls bit-identical`);
        }
        await push(src, `${serve.url}/t`, { checksum: true });
        assert.equal(treeDifference(v2, await treeFiles(join(root, 'files', 't'))), '');
        assert.deepEqual((await verify(`${serve.url}/`, { readData: true })).damaged, [], 'verify --read-data is clean');
      } finally {
        await serve.stop();
      }
    });
  }
});
