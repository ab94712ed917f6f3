import { strict as assert } from 'node:assert';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { alignedBuffer, DIRECT_ALIGN_BYTES, DIRECT_BLOCK_BYTES, DIRECT_MIN_FILE_BYTES, DirectBlockWriter, directIoAvailable, DirectRangeReader, openDirect, windowViews } from '../src/io/direct.js';
import { addonLoadError, loadAddon } from '../src/native/addon.js';
import { Staging } from '../src/reconstruct/staging.js';
import type { EntryMeta } from '../src/manifest/types.js';
import { pseudoRandom } from './helpers/gen.js';

/** Writes `data` to `w` as pieces of the given lengths, in a shuffled (but fixed) order. */
async function writeShuffled(write: (d: Uint8Array, pos: number) => Promise<void>, data: Buffer, lengths: number[]): Promise<void> {
  const pieces: [number, number][] = [];
  for (let pos = 0, k = 0; pos < data.length; k++) {
    const n = Math.min(lengths[k % lengths.length]!, data.length - pos);
    pieces.push([pos, n]);
    pos += n;
  }
  // A deterministic shuffle within windows of 16 pieces: out of order, as chunks complete.
  for (let i = 0; i < pieces.length; i++) {
    const j = i + ((i * 7919) % Math.min(16, pieces.length - i));
    [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
  }
  await Promise.all(pieces.map(([pos, n]) => write(data.subarray(pos, pos + n), pos)));
}

describe('direct I/O (O_DIRECT block writes)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-direct-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is on exactly on Linux with the native addon loaded (required in CI), off with XFER_NO_DIRECT_IO=1; its files are opened with O_DIRECT', async () => {
    const possible = process.platform === 'linux' && typeof loadAddon()?.addressMod === 'function';
    if (process.env.XFER_REQUIRE_NATIVE === '1') assert.ok(possible, `the native addon is required: ${addonLoadError() ?? 'it lacks addressMod'}`);
    assert.equal(directIoAvailable(), possible);
    const p = join(dir, 'flags.bin');
    await writeFile(p, Buffer.alloc(DIRECT_ALIGN_BYTES));
    const fh = await openDirect(p, 'r');
    try {
      if (possible) {
        assert.ok(fh, 'the test filesystem accepts O_DIRECT');
        // The kernel's own word on the open file's flags (octal), not what we asked for.
        const flags = parseInt(/^flags:\s*([0-7]+)$/m.exec(await readFile(`/proc/self/fdinfo/${fh.fd}`, 'utf8'))![1]!, 8);
        assert.notEqual(flags & constants.O_DIRECT, 0, 'the file is open with O_DIRECT');
      } else assert.equal(fh, undefined);
    } finally {
      await fh?.close();
    }
    process.env.XFER_NO_DIRECT_IO = '1';
    try {
      assert.equal(directIoAvailable(), false);
      assert.equal(await openDirect(p, 'r'), undefined);
    } finally {
      delete process.env.XFER_NO_DIRECT_IO;
    }
  });

  it('alignedBuffer returns buffers of the requested length starting on the alignment', (t) => {
    if (!directIoAvailable()) return t.skip('direct I/O unavailable');
    for (const n of [DIRECT_ALIGN_BYTES, 3 * DIRECT_ALIGN_BYTES, DIRECT_BLOCK_BYTES]) {
      const b = alignedBuffer(n);
      assert.equal(b.length, n);
      assert.equal(loadAddon()!.addressMod!(b, DIRECT_ALIGN_BYTES), 0);
    }
    assert.equal(loadAddon()!.addressMod!(Buffer.alloc(DIRECT_ALIGN_BYTES * 2).subarray(1), 1), 0);
  });

  it('rebuilds a file from out-of-order writes of any length, byte for byte', async (t) => {
    if (!directIoAvailable()) return t.skip('direct I/O unavailable');
    const size = 3 * DIRECT_BLOCK_BYTES + 12_345;
    const data = pseudoRandom(size, 3);
    const p = join(dir, 'rebuilt.bin');
    await writeFile(p, '');
    const fh = await openDirect(p, 'w');
    assert.ok(fh, 'the test filesystem accepts O_DIRECT');
    const w = new DirectBlockWriter(fh, size);
    await writeShuffled((d, pos) => w.write(d, pos), data, [65_536, 1, 300_001, 17, 4096, 1_000_000]);
    await w.finish();
    // The last block went out padded to the alignment; the owner truncates.
    assert.equal((await stat(p)).size, Math.ceil(size / DIRECT_ALIGN_BYTES) * DIRECT_ALIGN_BYTES);
    const h = await open(p, 'r+');
    await h.truncate(size);
    await h.close();
    assert.ok((await readFile(p)).equals(data));
  });

  it('writes a stream of unknown size in order, learning the size at finish', async (t) => {
    if (!directIoAvailable()) return t.skip('direct I/O unavailable');
    for (const size of [0, 1, DIRECT_ALIGN_BYTES + 3, DIRECT_BLOCK_BYTES - 1, DIRECT_BLOCK_BYTES, 2 * DIRECT_BLOCK_BYTES + 777]) {
      const data = pseudoRandom(size, 30 + size % 97);
      const p = join(dir, `stream-${size}.bin`);
      await writeFile(p, '');
      const w = new DirectBlockWriter((await openDirect(p, 'w'))!, Infinity);
      for (let pos = 0; pos < size; pos += 65_537) await w.write(data.subarray(pos, pos + 65_537), pos);
      await w.finish(size);
      const h = await open(p, 'r+');
      await h.truncate(size);
      await h.close();
      assert.ok((await readFile(p)).equals(data), `size ${size}`);
    }
    // A stream that ends inside a block it never filled up to its end is a hole.
    await writeFile(join(dir, 'stream-hole.bin'), '');
    const w = new DirectBlockWriter((await openDirect(join(dir, 'stream-hole.bin'), 'w'))!, Infinity);
    await w.write(Buffer.alloc(100, 1), 0);
    await assert.rejects(w.finish(200), /never completely written/);
  });

  it('refuses to finish a file with a hole, and a write beyond the declared size', async (t) => {
    if (!directIoAvailable()) return t.skip('direct I/O unavailable');
    const size = DIRECT_BLOCK_BYTES + 100;
    const p = join(dir, 'holes.bin');
    await writeFile(p, '');
    const w = new DirectBlockWriter((await openDirect(p, 'w'))!, size);
    await w.write(pseudoRandom(DIRECT_BLOCK_BYTES, 1), 0);
    await w.write(pseudoRandom(50, 2), DIRECT_BLOCK_BYTES); // 50 of the last 100 bytes
    await assert.rejects(w.write(Buffer.alloc(51), DIRECT_BLOCK_BYTES + 50), { code: 'XFER_VERIFY_FAILED' });
    await assert.rejects(w.finish(), { code: 'XFER_INTERNAL' });
  });

  it('a staged file of bulk size is written directly and ends identical to a buffered one', async (t) => {
    if (!directIoAvailable()) return t.skip('direct I/O unavailable');
    const size = DIRECT_MIN_FILE_BYTES + 777;
    const data = pseudoRandom(size, 9);
    const meta: EntryMeta = { path: '', type: 'file', mode: 0o640, mtimeMs: 1_700_000_000_000, size };
    const results: Buffer[] = [];
    for (const disable of ['0', '1']) {
      process.env.XFER_NO_DIRECT_IO = disable;
      try {
        const target = join(dir, `staged-${disable}.bin`);
        const staging = await Staging.create(target, 'file');
        const f = await staging.openFile(meta);
        assert.equal(f.isDirect, disable === '0');
        await writeShuffled((d, pos) => f.write(d, pos), data, [70_000, 123, 250_000]);
        await f.finish(size);
        await staging.commit();
        const st = await stat(target);
        assert.equal(st.size, size);
        assert.equal(st.mode & 0o777, 0o640);
        results.push(await readFile(target));
      } finally {
        delete process.env.XFER_NO_DIRECT_IO;
      }
    }
    assert.ok(results[0]!.equals(data));
    assert.ok(results[1]!.equals(data));
  });

  it('DirectRangeReader reads any range, in order, out of order and concurrently, directly or buffered', async () => {
    const data = pseudoRandom(9 * DIRECT_BLOCK_BYTES + 12_345, 13);
    const p = join(dir, 'ranges.bin');
    await writeFile(p, data);
    for (const disable of ['0', '1']) {
      process.env.XFER_NO_DIRECT_IO = disable;
      try {
        const reader = await DirectRangeReader.open(p, data.length);
        // In order, chunk-sized pieces that straddle window boundaries, many in flight (so
        // windows are evicted and their buffers reused while others are still being read).
        const pieces: Promise<Buffer>[] = [];
        const starts: number[] = [];
        for (let pos = 0, i = 0; pos < data.length; i++) {
          const len = 40_000 + ((i * 7919) % 90_000);
          starts.push(pos);
          pieces.push(reader.read(len, pos));
          pos += len;
        }
        const got = await Promise.all(pieces);
        got.forEach((b, i) => assert.ok(b.equals(data.subarray(starts[i]!, starts[i]! + b.length)), `piece ${i}, XFER_NO_DIRECT_IO=${disable}`));
        assert.equal(got.reduce((a, b) => a + b.length, 0), data.length);
        // Backwards, and past the end.
        for (const pos of [8 * DIRECT_BLOCK_BYTES - 5, 3 * DIRECT_BLOCK_BYTES + 1, 17]) {
          assert.ok((await reader.read(10_000, pos)).equals(data.subarray(pos, pos + 10_000)), `at ${pos}`);
        }
        assert.ok((await reader.read(100_000, data.length - 10)).equals(data.subarray(data.length - 10)));
        assert.equal((await reader.read(10, data.length)).length, 0);
        await reader.close();
      } finally {
        delete process.env.XFER_NO_DIRECT_IO;
      }
    }
  });

  it('DirectRangeReader: a window whose views were all given back (windowViews.release) is read into again; a view not given back keeps its window and its bytes', async () => {
    const windows = 16;
    const data = pseudoRandom(windows * DIRECT_BLOCK_BYTES, 14);
    const p = join(dir, 'views.bin');
    await writeFile(p, data);
    const CHUNK = 64 * 1024;
    const buffersUsed = async (giveBack: boolean) => {
      const reader = await DirectRangeReader.open(p, data.length);
      const seen = new Set<ArrayBufferLike>();
      let kept: { view: Buffer; at: number } | undefined;
      for (let pos = 0; pos < data.length; pos += CHUNK) {
        const view = await reader.read(CHUNK, pos);
        assert.ok(view.equals(data.subarray(pos, pos + CHUNK)), `at ${pos}`);
        seen.add(view.buffer);
        if (pos === 3 * DIRECT_BLOCK_BYTES) kept = { view, at: pos }; // never given back
        else if (giveBack) {
          assert.ok(windowViews.hold(view), 'a window view is known as lent');
          windowViews.release(view); // the hold just taken
          windowViews.release(view); // read()'s
        }
      }
      assert.ok(kept!.view.equals(data.subarray(kept!.at, kept!.at + CHUNK)), 'a view kept is never read into');
      await reader.close();
      return seen.size;
    };
    assert.equal(await buffersUsed(false), windows, 'views kept: a buffer per window');
    const reused = await buffersUsed(true);
    assert.ok(reused <= 9, `views given back: ${reused} buffers for ${windows} windows`);
    assert.equal(windowViews.hold(Buffer.alloc(10)), false, 'other buffers are not lent');
  });
});
