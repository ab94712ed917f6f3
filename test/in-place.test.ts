/**
 * In-place pulls onto regular files (issue 14, item 3): only the ranges whose chunks differ
 * are written, into the same file (same inode); chunks that moved within the file are
 * copied from their old place before it is overwritten; the size follows the content; an
 * interrupted run is completed by the next one.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { EXIT_CODES } from '../src/core/errors.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { setTimesNs } from '../src/io/sys.js';
import { treeBinding } from '../src/hash/tree.js';
import { isOneLineError, runCli } from './helpers/cli.js';

const FIXED_4K = { algorithm: 'fixed', sizeBytes: 4 * KiB } as const;
/** With the addon's BLAKE3 subtree functions, a scan keeps segment CVs (scan/scanner.ts). */
const hasNativeTree = treeBinding() !== null;

describe('pull --in-place onto a regular file', () => {
  let dir = '';
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-in-place-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Pushes `content` as `<store>/img`; returns the pull source. */
  async function pushed(content: Buffer, options: Parameters<typeof push>[2] = {}): Promise<string> {
    const d = join(dir, `case${n++}`);
    await mkdir(join(d, 'store'), { recursive: true });
    await writeFile(join(d, 'img'), content);
    await push(join(d, 'img'), `${join(d, 'store')}/`, options);
    return join(d, 'store', 'img');
  }

  it('writes only the chunks a 4 KiB edit changed, into the same file', async () => {
    const old = randomBytes(8 * MiB);
    const edited = Buffer.from(old);
    randomBytes(4 * KiB).copy(edited, 3 * MiB + 100);
    const source = await pushed(edited);
    const dest = join(dir, 'dest-edit.img');
    await writeFile(dest, old);
    const ino = (await stat(dest)).ino;
    const r = await pull(source, dest, { inPlace: true });
    assert.ok((await readFile(dest)).equals(edited), 'content is the pushed file');
    assert.equal((await stat(dest)).ino, ino, 'the same file, written in place');
    // The edit touches one or two CDC chunks (at most 256 KiB each).
    assert.ok(r.bytesWritten! > 0 && r.bytesWritten! <= 2 * 256 * KiB, `bytes written: ${r.bytesWritten}`);
    assert.equal(r.bytesReceived, r.bytesWritten);
  });

  it('copies chunks that moved within the file from their old place before overwriting it', async () => {
    // Fixed 4 KiB blocks in reverse order: each block's source is another's destination,
    // and half of them lie where earlier writes go (more blocks than the chunks written at
    // once, so a late block's old place has been overwritten unless it was read first).
    const blocks = Array.from({ length: 2048 }, () => randomBytes(4 * KiB));
    const old = Buffer.concat(blocks);
    const swapped = Buffer.concat([...blocks].reverse());
    const source = await pushed(swapped, { chunker: FIXED_4K });
    const dest = join(dir, 'dest-moved.img');
    await writeFile(dest, old);
    const r = await pull(source, dest, { inPlace: true });
    assert.ok((await readFile(dest)).equals(swapped), 'content is the pushed file');
    assert.equal(r.bytesWritten, old.length, 'every block moved');
    assert.equal(r.bytesReceived, 0, 'no block fetched: all copied from the file itself');
  });

  it('writes a region zeroed since as zeros, though zero chunks are in no store', async () => {
    const old = randomBytes(4 * MiB);
    const zeroed = Buffer.from(old);
    zeroed.fill(0, 1 * MiB, 2 * MiB);
    const source = await pushed(zeroed, { chunker: FIXED_4K });
    const dest = join(dir, 'dest-zeroed.img');
    await writeFile(dest, old);
    const r = await pull(source, dest, { inPlace: true });
    assert.ok((await readFile(dest)).equals(zeroed), 'content is the pushed file');
    assert.equal(r.bytesWritten, 1 * MiB, 'only the zeroed blocks are written');
    assert.equal(r.bytesReceived, 0, 'no zero chunk fetched');
  });

  it('cuts a file that shrank and extends one that grew, at its end', async () => {
    const base = randomBytes(1 * MiB);
    const shorter = base.subarray(0, 600 * KiB);
    const longer = Buffer.concat([base, randomBytes(300 * KiB)]);
    for (const [content, name] of [[shorter, 'shrink'], [longer, 'grow']] as const) {
      const source = await pushed(content);
      const dest = join(dir, `dest-${name}.img`);
      await writeFile(dest, base);
      const r = await pull(source, dest, { inPlace: true });
      assert.ok((await readFile(dest)).equals(content), `${name}: content is the pushed file`);
      assert.ok(r.bytesWritten! < content.length, `${name}: not rewritten whole (${r.bytesWritten} bytes written)`);
    }
  });

  it('the check after the writes reads back only the segments written, whatever the size did', async () => {
    // 32 MiB: four segments of 8 MiB (scan/scanner.ts SEGMENT_BYTES). The digest is merged
    // from the comparison's segment CVs where nothing was written, so a segment left out of
    // the read-back that did change fails the pull's final check. (Over half of it written,
    // all of it is read back: MAX_READ_BACK_SHARE.)
    const SEGMENT = 8 * MiB;
    const base = randomBytes(4 * SEGMENT);
    const edited = Buffer.from(base);
    randomBytes(4 * KiB).copy(edited, SEGMENT + 3 * MiB);
    const shorter = base.subarray(0, 3 * SEGMENT + 300 * KiB);
    const longer = Buffer.concat([base, randomBytes(5 * KiB)]);
    // Cut at a block boundary, in fixed 4 KiB blocks, nothing is written and nothing read
    // back: the comparison hashed the target only as far as the content reaches.
    for (const [content, name, most, fixed] of [[edited, 'edit', 1, false], [shorter, 'shrink', 0, true], [longer, 'grow', 2, false]] as const) {
      const source = await pushed(content, fixed ? { chunker: FIXED_4K } : {});
      const dest = join(dir, `dest-segments-${name}.img`);
      await writeFile(dest, base);
      const r = await pull(source, dest, { inPlace: true, checksum: true });
      assert.ok((await readFile(dest)).equals(content), `${name}: content is the pushed file`);
      if (fixed) assert.equal(r.bytesWritten, 0, `${name}: nothing written`);
      if (hasNativeTree) {
        assert.ok((most === 0 || r.bytesReadBack! > 0) && r.bytesReadBack! <= most * SEGMENT, `${name}: ${r.bytesReadBack} bytes read back`);
      } else assert.equal(r.bytesReadBack, content.length, `${name}: all of it read back without the addon's tree hashing`);
    }
  });

  it('an interrupted in-place pull is completed by running it again', async () => {
    // Every 4 KiB chunk differs, and there are more of them (1,024) than a pull writes at once.
    const old = randomBytes(4 * MiB);
    const changed = randomBytes(4 * MiB);
    const source = await pushed(changed, { chunker: FIXED_4K });
    const dest = join(dir, 'dest-resume.img');
    await writeFile(dest, old);
    const ac = new AbortController();
    await assert.rejects(
      pull(source, dest, { inPlace: true, signal: ac.signal, onProgress: (p) => p.bytesDone >= 512 * KiB && ac.abort() }),
      { code: 'XFER_ABORTED' },
    );
    const partial = await readFile(dest);
    assert.ok(!partial.equals(old) && !partial.equals(changed), 'interrupted part way');
    const r = await pull(source, dest, { inPlace: true });
    assert.ok((await readFile(dest)).equals(changed), 'completed');
    assert.ok(r.bytesWritten! < changed.length, `only what the first run left (${r.bytesWritten} bytes written)`);
  });

  it('keeps a file whose size, mtime and mode are the manifest\'s without reading it (quick check); --checksum compares it', async () => {
    const content = randomBytes(512 * KiB);
    const source = await pushed(content);
    const dest = join(dir, 'dest-quick.img');
    await writeFile(dest, randomBytes(512 * KiB));
    await pull(source, dest, { inPlace: true });
    // Damaged behind unchanged metadata: the quick check cannot see it, as rsync's cannot.
    const st = await stat(dest, { bigint: true });
    const damaged = Buffer.from(content);
    damaged[70_000] ^= 0xff;
    await writeFile(dest, damaged);
    setTimesNs(dest, st.atimeNs, st.mtimeNs);
    const quick = await pull(source, dest, { inPlace: true });
    assert.equal(quick.bytesWritten, 0);
    assert.ok((await readFile(dest)).equals(damaged), 'kept as it is, unread');
    const full = await pull(source, dest, { inPlace: true, checksum: true });
    assert.ok(full.bytesWritten! > 0 && full.bytesWritten! <= 256 * KiB, `one chunk rewritten: ${full.bytesWritten}`);
    assert.ok((await readFile(dest)).equals(content), 'repaired');
  });

  it('says on stderr that the file is inconsistent until the pull completes; a tree is refused', async () => {
    const old = randomBytes(512 * KiB);
    const edited = Buffer.from(old);
    edited[1000] ^= 1;
    const source = await pushed(edited);
    const dest = join(dir, 'dest-cli.img');
    await writeFile(dest, old);
    const r = await runCli(['pull', source, dest, '--in-place', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^xfer: writing .*dest-cli\.img in place: it is inconsistent until this pull completes/m);
    assert.ok(JSON.parse(r.stdout).bytesWritten > 0);
    assert.ok((await readFile(dest)).equals(edited));

    const tree = join(dir, 'tree');
    await mkdir(tree);
    await writeFile(join(tree, 'f'), 'x');
    const store = join(dir, 'treestore');
    assert.equal((await runCli(['push', tree, `${store}/`])).code, 0);
    const t = await runCli(['pull', join(store, 'tree'), join(dir, 'tree-copy'), '--in-place']);
    assert.equal(t.code, EXIT_CODES.XFER_INVALID_ARGUMENT, t.stderr);
    assert.ok(isOneLineError(t.stderr), t.stderr);
  });
});

describe('push --in-place to a server', () => {
  let dir = '';
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-in-place-server-'));
    server = await createServer({ root: join(dir, 'root'), port: 0, inPlaceAboveBytes: 1 * MiB });
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Pushes `content` as `name` to the server; returns the server's copy's path. */
  async function pushAs(name: string, content: Buffer, inPlace: boolean): Promise<string> {
    const src = join(dir, name);
    await writeFile(src, content);
    await push(src, `${server.url}/${name}`, { inPlace });
    return join(dir, 'root', 'files', name);
  }

  it('rewrites a copy over the threshold where it is when asked, and rebuilds it atomically when not', async () => {
    const v1 = randomBytes(4 * MiB);
    const copy = await pushAs('big.img', v1, false);
    const v2 = Buffer.from(v1);
    randomBytes(4 * KiB).copy(v2, 1 * MiB + 7);
    const ino = (await stat(copy)).ino;
    await pushAs('big.img', v2, true);
    assert.ok((await readFile(copy)).equals(v2), 'the server has the new content');
    assert.equal((await stat(copy)).ino, ino, 'the same file, rewritten in place');
    // Without the flag: rebuilt beside and swapped in (a new file).
    const v3 = Buffer.from(v2);
    v3[5] ^= 1;
    await pushAs('big.img', v3, false);
    assert.ok((await readFile(copy)).equals(v3));
    assert.notEqual((await stat(copy)).ino, ino, 'rebuilt atomically without --in-place');
  });

  it('keeps the atomic rebuild for a copy at or under the threshold, and never writes through a symlink in the files directory', async () => {
    const small = randomBytes(512 * KiB);
    const copy = await pushAs('small.img', small, false);
    const ino = (await stat(copy)).ino;
    small[9] ^= 1;
    await pushAs('small.img', small, true);
    assert.ok((await readFile(copy)).equals(small));
    assert.notEqual((await stat(copy)).ino, ino, 'under the threshold: rebuilt and swapped in');

    const outside = join(dir, 'outside.img');
    const was = randomBytes(2 * MiB);
    await writeFile(outside, was);
    await symlink(outside, join(dir, 'root', 'files', 'link.img'));
    await assert.rejects(pushAs('link.img', randomBytes(2 * MiB), true), /symbolic link on the server/);
    assert.ok((await readFile(outside)).equals(was), 'the file the symlink points to is untouched');
  });

  it('a local push refuses --in-place with a one-line error', async () => {
    const src = join(dir, 'local.bin');
    await writeFile(src, 'x');
    const r = await runCli(['push', src, join(dir, 'localdest') + '/', '--in-place']);
    assert.equal(r.code, EXIT_CODES.XFER_INVALID_ARGUMENT, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
  });
});
