/**
 * In-place pulls onto regular files (issue 14, item 3): only the ranges whose chunks differ
 * are written, into the same file (same inode); chunks that moved within the file are
 * copied from their old place before it is overwritten; the size follows the content; an
 * interrupted run is completed by the next one.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { EXIT_CODES } from '../src/core/errors.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { isOneLineError, runCli } from './helpers/cli.js';

const FIXED_4K = { algorithm: 'fixed', sizeBytes: 4 * KiB } as const;

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
