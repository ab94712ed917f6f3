/**
 * The disk-image system calls of io/sys.ts (issue 14): punchHole frees a range's blocks and
 * keeps the size (natively; the TypeScript twin writes zeros and says so), cloneRange
 * refuses in a way callers recognise (cloneUnsupported) where the file system cannot share
 * blocks (ext4 here) and in the twin. Sharing itself is tested on XFS and btrfs in
 * reflink.test.ts.
 */
import { strict as assert } from 'node:assert';
import { openSync, closeSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MiB } from '../src/core/sizes.js';
import { cloneRange, cloneUnsupported, punchHole, sysIsNative } from '../src/io/sys.js';
import { withTwin } from './helpers/native.js';


describe('punchHole and cloneRange', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-sys-punch-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const twin of [false, true]) {
    it(`punchHole (${twin ? 'twin' : 'native'}) makes the range read as zeros and keeps the size${twin ? '' : ', freeing its blocks'}`, (t) => {
      if (!twin && !sysIsNative()) return t.skip('the native addon is not built');
      const path = join(dir, `punch-${twin}`);
      const data = randomBytes(4 * MiB);
      writeFileSync(path, data);
      const fd = openSync(path, 'r+');
      let punched: boolean;
      try {
        punched = twin ? withTwin(() => punchHole(fd, 1 * MiB, 2 * MiB + 100)) : punchHole(fd, 1 * MiB, 2 * MiB + 100);
      } finally {
        closeSync(fd);
      }
      data.fill(0, 1 * MiB, 3 * MiB + 100);
      assert.ok(readFileSync(path).equals(data), 'the range reads as zeros, the rest as before');
      assert.equal(statSync(path).size, 4 * MiB);
      assert.equal(punched, !twin);
      if (!twin) assert.ok(statSync(path).blocks * 512 <= 2 * MiB + 8192, `${statSync(path).blocks * 512} bytes allocated`);
    });
  }

  it('cloneRange refuses where blocks cannot be shared (this ext4 or tmpfs; the twin always), as cloneUnsupported', () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    writeFileSync(a, randomBytes(1 * MiB));
    writeFileSync(b, '');
    const fa = openSync(a, 'r');
    const fb = openSync(b, 'r+');
    try {
      assert.throws(() => withTwin(() => cloneRange(fa, fb, 0, 1 * MiB)), (err: NodeJS.ErrnoException) => err.code === 'ENOTSUP' && cloneUnsupported(err));
      let refused: unknown;
      try {
        cloneRange(fa, fb, 0, 1 * MiB);
      } catch (err) {
        refused = err;
      }
      // A file system that can share (XFS, btrfs as /tmp) takes it: then b is a's copy.
      if (refused === undefined) assert.ok(readFileSync(b).equals(readFileSync(a)));
      else assert.ok(cloneUnsupported(refused), String(refused));
    } finally {
      closeSync(fa);
      closeSync(fb);
    }
  });
});
