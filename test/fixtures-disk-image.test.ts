import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { isXferError } from '../src/core/errors.js';
import { GiB, KiB, MiB } from '../src/core/sizes.js';
import { BLOCK_BYTES, DEFAULT_INSERT_BYTES, DEFAULT_SCATTERED_COUNT, diskImage, readAll, type DiskImageOptions, type DiskImageVersion } from '../fixtures/index.js';

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const bytesOf = (opts: DiskImageOptions, pieceBytes?: number) => readAll(diskImage(opts).stream(pieceBytes ? { pieceBytes } : undefined));

/** Small enough to compare in memory, large enough for several extents and 200 overwrites. */
const SMALL_BYTES = 4 * MiB + 1234;

describe('disk-image is deterministic', () => {
  /** Seed 3 lays out all four extent kinds within this size. */
  const PINNED_SEED = 3;
  const PINNED_BYTES = 32 * MiB + 1234;
  // Pinned: a change here changes every benchmark input. Update only on purpose.
  const PINNED: Record<DiskImageVersion, string> = {
    base: '359ef9252300f442c17ee078d057f2bd1984e63f6b483fbb733a4c8b6f5c4b14',
    scattered: '9533bf2f829659aa1b27782ff058da753b805e8ccad2c241fb178ad587905c74',
    insert: '7eb4747cf4bf2a7223abd3c426dd7ccd8603a4ccdfb7bc61e29a0ed7289945e4',
    delete: 'e1f28be4e105af28eac92bc778f98162294193d9d9fd3b1c1ac287d7539dff4f',
  };
  for (const version of Object.keys(PINNED) as DiskImageVersion[]) {
    it(`seed ${PINNED_SEED}, ${PINNED_BYTES} bytes, version ${version} hashes to its pinned value`, () => {
      assert.equal(sha256(bytesOf({ sizeBytes: PINNED_BYTES, seed: PINNED_SEED, version })), PINNED[version]);
    });
  }

  it('the same options give the same bytes; another seed gives other bytes', () => {
    const a = bytesOf({ sizeBytes: MiB, seed: 42 });
    assert.ok(a.equals(bytesOf({ sizeBytes: MiB, seed: 42 })));
    assert.ok(!a.equals(bytesOf({ sizeBytes: MiB, seed: 43 })));
  });

  it('an image is a prefix of any larger image with the same seed', () => {
    const large = bytesOf({ sizeBytes: 3 * MiB, seed: 5 });
    assert.ok(bytesOf({ sizeBytes: MiB + 17, seed: 5 }).equals(large.subarray(0, MiB + 17)));
  });
});

describe('disk-image streams in pieces', () => {
  it('yields exactly sizeBytes, also for sizes that are not whole blocks', () => {
    for (const sizeBytes of [0, 1, BLOCK_BYTES - 1, BLOCK_BYTES + 1, 3 * MiB + 5]) {
      const image = diskImage({ sizeBytes, seed: 2 });
      assert.equal(image.sizeBytes, sizeBytes);
      assert.equal(readAll(image.stream()).length, sizeBytes);
    }
  });

  it('the concatenation does not depend on the piece size, and no piece exceeds it', () => {
    for (const version of ['base', 'insert'] as const) {
      const opts = { sizeBytes: 2 * MiB + 999, seed: 9, version };
      const reference = bytesOf(opts);
      for (const pieceBytes of [1000, BLOCK_BYTES, 65537, 3 * MiB]) {
        const pieces = [...diskImage(opts).stream({ pieceBytes })];
        assert.ok(pieces.every((p) => p.length > 0 && p.length <= pieceBytes));
        assert.ok(Buffer.concat(pieces).equals(reference), `${version}, pieces of ${pieceBytes}`);
      }
    }
  });

  it('readInto renders any range, at any alignment, as the stream does', () => {
    const image = diskImage({ sizeBytes: 2 * MiB, seed: 9, version: 'delete' });
    const whole = readAll(image.stream());
    for (const [offset, length] of [[0, 10], [4093, 9000], [MiB - 3, 70001], [2 * MiB - 65536 - 77 - 5000, 5000]] as const) {
      const out = new Uint8Array(length);
      image.readInto(out, offset);
      assert.ok(Buffer.from(out).equals(whole.subarray(offset, offset + length)), `range at ${offset}`);
    }
    assert.throws(() => image.readInto(new Uint8Array(10), image.sizeBytes - 5), RangeError);
  });

  it('a 1 TiB image is described instantly and any part of it renders without the rest', () => {
    const image = diskImage({ sizeBytes: 1024 * GiB, seed: 1, version: 'insert' });
    assert.equal(image.sizeBytes, 1024 * GiB + DEFAULT_INSERT_BYTES);
    const first = image.stream()[Symbol.iterator]().next();
    assert.equal(first.value?.length, MiB);
    const tail = new Uint8Array(MiB);
    image.readInto(tail, image.sizeBytes - MiB);
  });
});

describe('disk-image layout', () => {
  it('extents are contiguous, 4 KiB aligned and cover the image', () => {
    const size = 64 * MiB + 100;
    let next = 0;
    for (const e of diskImage({ sizeBytes: size, seed: 3 }).extents()) {
      assert.equal(e.offset, next);
      assert.equal(e.offset % BLOCK_BYTES, 0);
      assert.ok(e.length > 0);
      next += e.length;
    }
    assert.equal(next, size);
  });

  it('bytes split about 30% zeros, 15% repeats, 15% text, 40% random over a large image', () => {
    const size = 256 * GiB;
    const bytes = { zero: 0, repeat: 0, text: 0, random: 0 };
    for (const e of diskImage({ sizeBytes: size, seed: 11 }).extents()) bytes[e.kind] += e.length;
    const percent = (n: number) => (100 * n) / size;
    assert.ok(Math.abs(percent(bytes.zero) - 30) < 3, `zero ${percent(bytes.zero)}`);
    assert.ok(Math.abs(percent(bytes.repeat) - 15) < 3, `repeat ${percent(bytes.repeat)}`);
    assert.ok(Math.abs(percent(bytes.text) - 15) < 3, `text ${percent(bytes.text)}`);
    assert.ok(Math.abs(percent(bytes.random) - 40) < 3, `random ${percent(bytes.random)}`);
  });

  it('each extent holds what its kind says', () => {
    const image = diskImage({ sizeBytes: 96 * MiB, seed: 4 });
    const seen = new Set<string>();
    const blocksSeen = new Set<string>();
    for (const e of image.extents()) {
      seen.add(e.kind);
      const bytes = Buffer.alloc(Math.min(e.length, 256 * KiB));
      image.readInto(bytes, e.offset);
      switch (e.kind) {
        case 'zero':
          assert.ok(bytes.every((b) => b === 0));
          break;
        case 'repeat': {
          // A 4 KiB or 64 KiB unit tiled over the extent.
          const period = bytes.subarray(BLOCK_BYTES).equals(bytes.subarray(0, bytes.length - BLOCK_BYTES)) ? BLOCK_BYTES : 64 * KiB;
          if (bytes.length > period) assert.ok(bytes.subarray(period).equals(bytes.subarray(0, bytes.length - period)), `repeat at ${e.offset}`);
          break;
        }
        case 'text':
          assert.ok(bytes.every((b) => b === 0x0a || (b >= 0x20 && b < 0x7f)), `text at ${e.offset}`);
          break;
        case 'random':
          // Never a repeated block anywhere, and every byte value about equally often.
          for (let p = 0; p + BLOCK_BYTES <= bytes.length; p += BLOCK_BYTES) {
            const digest = sha256(bytes.subarray(p, p + BLOCK_BYTES));
            assert.ok(!blocksSeen.has(digest), `random block at ${e.offset + p} repeats`);
            blocksSeen.add(digest);
          }
          if (bytes.length >= 64 * KiB) {
            const counts = new Array<number>(256).fill(0);
            for (const b of bytes) counts[b]!++;
            const expected = bytes.length / 256;
            assert.ok(counts.every((c) => Math.abs(c - expected) < expected / 2), `random at ${e.offset}`);
          }
          break;
      }
    }
    assert.deepEqual([...seen].sort(), ['random', 'repeat', 'text', 'zero']);
  });
});

describe('disk-image versions', () => {
  const base = bytesOf({ sizeBytes: SMALL_BYTES, seed: 7 });

  it('scattered: same size, differs from base in exactly the listed 4 KiB blocks', () => {
    const image = diskImage({ sizeBytes: SMALL_BYTES, seed: 7, version: 'scattered' });
    const bytes = readAll(image.stream());
    assert.equal(bytes.length, base.length);
    assert.equal(image.edits.length, DEFAULT_SCATTERED_COUNT);
    const listed = new Set<number>();
    for (const e of image.edits) {
      assert.equal(e.kind, 'overwrite');
      assert.equal(e.offset % BLOCK_BYTES, 0);
      assert.equal(e.length, BLOCK_BYTES);
      listed.add(e.offset);
    }
    assert.equal(listed.size, image.edits.length, 'distinct blocks');
    assert.deepEqual([...listed], [...listed].sort((a, b) => a - b), 'sorted by offset');
    const differing = new Set<number>();
    for (let p = 0; p < base.length; p += BLOCK_BYTES) {
      if (!bytes.subarray(p, p + BLOCK_BYTES).equals(base.subarray(p, p + BLOCK_BYTES))) differing.add(p);
    }
    assert.deepEqual(differing, listed);
  });

  it('scattered: the number of overwrites is an option, and must fit the image', () => {
    assert.equal(diskImage({ sizeBytes: MiB, seed: 1, version: 'scattered', scatteredCount: 3 }).edits.length, 3);
    assert.throws(() => diskImage({ sizeBytes: 100 * BLOCK_BYTES, seed: 1, version: 'scattered' }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
  });

  it('insert: grows by the inserted length at one unaligned offset; bytes before are identical, bytes after shifted', () => {
    const image = diskImage({ sizeBytes: SMALL_BYTES, seed: 7, version: 'insert' });
    const bytes = readAll(image.stream());
    const [edit] = image.edits;
    assert.ok(edit && image.edits.length === 1 && edit.kind === 'insert');
    assert.equal(edit.length, DEFAULT_INSERT_BYTES);
    assert.notEqual(edit.offset % BLOCK_BYTES, 0);
    assert.equal(bytes.length, base.length + edit.length);
    assert.ok(bytes.subarray(0, edit.offset).equals(base.subarray(0, edit.offset)));
    assert.ok(bytes.subarray(edit.offset + edit.length).equals(base.subarray(edit.offset)));
    assert.ok(!bytes.subarray(edit.offset, edit.offset + edit.length).equals(base.subarray(edit.offset, edit.offset + edit.length)));
  });

  it('delete: shrinks by the deleted length at one unaligned offset; bytes before are identical, bytes after shifted', () => {
    const image = diskImage({ sizeBytes: SMALL_BYTES, seed: 7, version: 'delete', deleteBytes: 5000 });
    const bytes = readAll(image.stream());
    const [edit] = image.edits;
    assert.ok(edit && image.edits.length === 1 && edit.kind === 'delete');
    assert.equal(edit.length, 5000);
    assert.notEqual(edit.offset % BLOCK_BYTES, 0);
    assert.equal(bytes.length, base.length - edit.length);
    assert.equal(image.sizeBytes, bytes.length);
    assert.ok(bytes.subarray(0, edit.offset).equals(base.subarray(0, edit.offset)));
    assert.ok(bytes.subarray(edit.offset).equals(base.subarray(edit.offset + edit.length)));
  });

  it('rejects bad options with XFER_INVALID_ARGUMENT', () => {
    const invalid = (e: unknown) => isXferError(e, 'XFER_INVALID_ARGUMENT');
    assert.throws(() => diskImage({ sizeBytes: MiB, seed: -1 }), invalid);
    assert.throws(() => diskImage({ sizeBytes: 1.5, seed: 1 }), invalid);
    assert.throws(() => diskImage({ sizeBytes: MiB, seed: 1, version: 'nope' as DiskImageVersion }), invalid);
    assert.throws(() => diskImage({ sizeBytes: 1000, seed: 1, version: 'delete' }), invalid);
    assert.throws(() => [...diskImage({ sizeBytes: MiB, seed: 1 }).stream({ pieceBytes: 0 })], invalid);
  });
});
