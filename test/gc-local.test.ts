import { strict as assert } from 'node:assert';
import { pausedAtCommit } from './helpers/paused.js';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { gc } from '../src/gc.js';
import { verify } from '../src/inspect.js';
import { ScanPool } from '../src/scan/pool.js';
import { remove, versions } from '../src/targets.js';
import { LocalStore } from '../src/store/local.js';
import { BIN, runCli, sha256File, writeRandomFile } from './helpers/cli.js';

const MiB = 1024 * 1024;
const HOUR_MS = 3_600_000;

/** Bytes of the packs of the store in `<dest>/.xfer` (what gc frees). */
async function packBytes(dest: string): Promise<number> {
  let n = 0;
  const dir = join(dest, '.xfer', 'packs');
  for (const f of await readdir(dir)) if (f.endsWith('.pack')) n += (await stat(join(dir, f))).size;
  return n;
}

/** Every file of the store with its size and mtime: what a dry run must leave as it is. */
async function storeSnapshot(dest: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dest, '.xfer'), { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    const s = await stat(p);
    out.push(`${p} ${s.size} ${s.mtimeMs}`);
  }
  return out.sort();
}

/** SHA-256 of what writeRandomFile(path, size, seed) writes. */
async function sha256Of(size: number, seed: number): Promise<string> {
  const p = join(tmpdir(), `xfer-gc-ref-${process.pid}-${seed}`);
  await writeRandomFile(p, size, seed);
  try {
    return await sha256File(p);
  } finally {
    await rm(p, { force: true });
  }
}

/** Makes every pack of the store look written `ms` ago (time passing, for the "young pack" rule). */
async function agePacks(dest: string, ms: number): Promise<void> {
  const dir = join(dest, '.xfer', 'packs');
  const t = (Date.now() - ms) / 1000;
  for (const f of await readdir(dir)) await utimes(join(dir, f), t, t);
}

/** Removes target `name` of the destination as `xfer rm` does: its versions, manifest and copy (its chunks stay until gc). */
async function deleteTarget(dest: string, name: string): Promise<void> {
  const r = await remove(`${dest}/${name}`);
  assert.equal(r.removed.length, 1);
}

describe('gc of a local store', () => {
  let dir: string;
  let pool: ScanPool;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-gc-'));
    pool = new ScanPool();
    await writeRandomFile(join(dir, 'a.bin'), 6 * MiB, 1);
    await writeRandomFile(join(dir, 'b.bin'), 3 * MiB, 2);
  });
  after(async () => {
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('deletes the chunks no manifest refers to and keeps those one does (xfer gc --grace 0)', async () => {
    const dest = join(dir, 'd1');
    await push(join(dir, 'a.bin'), `${dest}/`, { pool });
    await push(join(dir, 'b.bin'), `${dest}/`, { pool });
    await deleteTarget(dest, 'a.bin');
    const before = await packBytes(dest);
    const r = await runCli(['gc', dest, '--grace', '0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { deletedPacks: number; freedBytes: number; manifests: number; storeBytes: number };
    assert.equal(report.manifests, 2, "b.bin's manifest and its one version");
    assert.equal(report.deletedPacks, 1);
    const afterBytes = await packBytes(dest);
    assert.ok(report.freedBytes >= 6 * MiB && before - afterBytes === report.freedBytes, `freed ${report.freedBytes}, store ${before} -> ${afterBytes}`);
    assert.ok(afterBytes < 3.1 * MiB, `the store holds b's chunks only: ${afterBytes}`);
    assert.equal(report.storeBytes, afterBytes);
    await pull(`${dest}/b.bin`, join(dir, 'b1.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'b1.bin')), await sha256File(join(dir, 'b.bin')));
    assert.deepEqual((await verify(dest)).damaged, []);
  });

  it('a dry run changes nothing and reports what the real run then does', async () => {
    const dest = join(dir, 'd2');
    await push(join(dir, 'a.bin'), `${dest}/`, { pool });
    await push(join(dir, 'b.bin'), `${dest}/`, { pool });
    await deleteTarget(dest, 'a.bin');
    const snapshot = await storeSnapshot(dest);
    const dry = await runCli(['gc', dest, '--grace', '0', '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(await storeSnapshot(dest), snapshot, 'no file of the store changed');
    const real = await runCli(['gc', dest, '--grace', '0', '--json']);
    const { dryRun: d1, ...wouldDo } = JSON.parse(dry.stdout) as Record<string, unknown>;
    const { dryRun: d2, ...did } = JSON.parse(real.stdout) as Record<string, unknown>;
    assert.deepEqual([d1, d2], [true, false]);
    assert.ok((did.freedBytes as number) > 0);
    assert.deepEqual(wouldDo, did);
  });

  it('repacks a pack only when more of it is unused than --max-unused', async () => {
    const dest = join(dir, 'd3');
    // One push stores both halves in one pack; the target that keeps the first half lives on.
    const whole = join(dir, 'whole.bin');
    const half = join(dir, 'half.bin');
    await writeRandomFile(whole, 8 * MiB, 3);
    await writeFile(half, (await readFile(whole)).subarray(0, 4 * MiB));
    await push(whole, `${dest}/`, { pool });
    await push(half, `${dest}/`, { pool });
    await deleteTarget(dest, 'whole.bin');
    const before = await packBytes(dest);
    const kept = await runCli(['gc', dest, '--grace', '0', '--max-unused', '60', '--json']);
    assert.equal(kept.code, 0, kept.stderr);
    assert.equal((JSON.parse(kept.stdout) as { repackedPacks: number }).repackedPacks, 0, 'about half unused: under 60%');
    assert.equal(await packBytes(dest), before);
    const repacked = await runCli(['gc', dest, '--grace', '0', '--max-unused', '40', '--json']);
    assert.equal(repacked.code, 0, repacked.stderr);
    const report = JSON.parse(repacked.stdout) as { repackedPacks: number; deletedPacks: number };
    assert.equal(report.repackedPacks, 1);
    assert.equal(report.deletedPacks, 1);
    const afterBytes = await packBytes(dest);
    assert.ok(afterBytes < 4.6 * MiB && afterBytes > 3.9 * MiB, `the store holds about the half: ${afterBytes}`);
    await pull(`${dest}/half.bin`, join(dir, 'half1.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'half1.bin')), await sha256File(half));
    assert.deepEqual((await verify(dest)).damaged, []);
  });

  it('keeps the chunks only an older version refers to, and frees them once forget --keep-last 1 removed that version', async () => {
    const dest = join(dir, 'd6');
    const v = join(dir, 'v', 'img.bin');
    await mkdir(join(dir, 'v'), { recursive: true });
    await writeRandomFile(v, 4 * MiB, 5);
    await push(v, `${dest}/`, { pool });
    await writeRandomFile(v, 2 * MiB, 6); // a new version sharing no chunk with the first
    await push(v, `${dest}/`, { pool });
    const kept = await runCli(['gc', dest, '--grace', '0', '--json']);
    assert.equal(kept.code, 0, kept.stderr);
    const first = JSON.parse(kept.stdout) as { manifests: number; deletedPacks: number; repackedPacks: number };
    assert.equal(first.manifests, 3, 'the current manifest and both versions');
    assert.deepEqual([first.deletedPacks, first.repackedPacks], [0, 0], 'the first version still refers to its chunks');
    await pull(`${dest}/img.bin@${(await versions(`${dest}/img.bin`)).versions[0]!.id}`, join(dir, 'img-v1.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'img-v1.bin')), await sha256Of(4 * MiB, 5));

    const f = await runCli(['forget', `${dest}/img.bin`, '--keep-last', '1']);
    assert.equal(f.code, 0, f.stderr);
    const before = await packBytes(dest);
    const r = await runCli(['gc', dest, '--grace', '0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { manifests: number; freedBytes: number };
    assert.equal(report.manifests, 2);
    const afterBytes = await packBytes(dest);
    assert.ok(report.freedBytes >= 4 * MiB && before - afterBytes === report.freedBytes, `freed ${report.freedBytes}, store ${before} -> ${afterBytes}`);
    assert.ok(afterBytes < 2.1 * MiB, `the store holds the last version only: ${afterBytes}`);
    await pull(`${dest}/img.bin`, join(dir, 'img-v2.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'img-v2.bin')), await sha256File(v));
    assert.deepEqual((await verify(dest)).damaged, []);
  });

  it('removes the orphaned pack of a killed xfer push', async () => {
    const dest = join(dir, 'd4');
    await push(join(dir, 'b.bin'), `${dest}/`, { pool });
    const big = join(dir, 'big.bin');
    await writeRandomFile(big, 160 * MiB, 4);
    const baseline = await packBytes(dest);
    const child = spawn(process.execPath, [BIN, 'push', big, `${dest}/`], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    // Killed once it has written 16 MiB of its pack: long before its first commit (COMMIT_BATCH_BYTES).
    for (let i = 0; (await packBytes(dest)) < baseline + 16 * MiB; i++) {
      assert.ok(i < 600, 'the push wrote its pack');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await exited;
    const orphaned = await packBytes(dest);
    assert.ok(orphaned >= baseline + 16 * MiB);
    const r = await runCli(['gc', dest, '--grace', '0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { orphanPacks: number; freedBytes: number };
    assert.equal(report.orphanPacks, 1);
    assert.equal(await packBytes(dest), baseline);
    assert.equal(report.freedBytes, orphaned - baseline);
    await pull(`${dest}/b.bin`, join(dir, 'b4.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'b4.bin')), await sha256File(join(dir, 'b.bin')));
  });

  it('is safe beside a push: chunks the push found present and skipped survive gc, and the push pulls bit-identical', async () => {
    const dest = join(dir, 'd5');
    const storeDir = join(dest, '.xfer');
    await push(join(dir, 'a.bin'), `${dest}/`, { pool });
    await deleteTarget(dest, 'a.bin'); // a.bin's chunks are garbage now...
    await agePacks(dest, 2 * HOUR_MS); // ...and were written long ago
    // A push of the same content to "again" into the store, paused at its commit: it asked
    // has(), was told every chunk is present, and uploaded nothing.
    const pushing = await LocalStore.open(storeDir, { create: false });
    const { store: paused, atCommit, release } = pausedAtCommit(pushing);
    const pushed = push(join(dir, 'a.bin'), { store: paused, path: 'again' }, { pool });
    await atCommit;
    const grace = { graceMs: HOUR_MS };
    const now = Date.now();
    // gc marks a.bin's pack (nothing refers to it yet), and a gc within the grace deletes nothing.
    const marking = await gc(dest, { ...grace, nowMs: now });
    assert.equal(marking.markedPacks, 1);
    assert.equal(marking.deletedPacks, 0);
    const early = await gc(dest, { ...grace, nowMs: now + HOUR_MS / 2 });
    assert.equal(early.deletedPacks, 0);
    assert.equal(early.waitingPacks, 1);
    release();
    const result = await pushed;
    assert.equal(result.chunksSent, 0, 'the push relied on the stored chunks');
    await pushing.close();
    // After the grace the pack is needed again (the push committed): it is recovered, not deleted.
    const late = await gc(dest, { ...grace, nowMs: now + 2 * HOUR_MS });
    assert.equal(late.deletedPacks, 0);
    assert.equal(late.recoveredPacks, 1);
    await pull(`${dest}/again`, join(dir, 'again.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'again.bin')), await sha256File(join(dir, 'a.bin')));
    assert.deepEqual((await verify(dest, { chunksOnly: true })).damaged, []);
  });

  it('a push after gc marked a pack stores its chunks again, so deleting the pack loses nothing', async () => {
    const dest = join(dir, 'd6');
    await push(join(dir, 'a.bin'), `${dest}/`, { pool });
    await deleteTarget(dest, 'a.bin');
    await agePacks(dest, 2 * HOUR_MS);
    const now = Date.now();
    assert.equal((await gc(dest, { graceMs: HOUR_MS, nowMs: now })).markedPacks, 1);
    const again = await push(join(dir, 'a.bin'), `${dest}/`, { pool });
    assert.ok(again.chunksSent > 0, 'the marked chunks count as absent');
    await agePacks(dest, 2 * HOUR_MS);
    const late = await gc(dest, { graceMs: HOUR_MS, nowMs: now + 2 * HOUR_MS });
    assert.equal(late.deletedPacks, 1);
    await pull(`${dest}/a.bin`, join(dir, 'a6.bin'), { pool });
    assert.equal(await sha256File(join(dir, 'a6.bin')), await sha256File(join(dir, 'a.bin')));
  });

  it('refuses a target instead of a store, in one line', async () => {
    const dest = join(dir, 'd1');
    const r = await runCli(['gc', join(dest, 'b.bin')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^xfer: .*gc collects a whole store/);
  });
});
