/**
 * A tree pull from a server that finds its target unchanged leaves a snapshot of it
 * (reconstruct/snapshot.ts); the next pull skips the manifest when every entry is still as
 * recorded and the server's tree is still the same. The snapshot only ever saves work: each
 * change below, made after the snapshot, still leads to the pull the full way would make.
 *
 * How a test sees which way a pull went: the snapshot's recorded result is replaced by a
 * marker (bytesTotal MARK_BYTES), which only the shortcut returns. Its start time is moved
 * RACY_MARGIN_NS into the future, as if taken later (what the entries were then is what they
 * are now), so that the entries the first pull just wrote are not racily clean; the
 * racy-clean rule has a test of its own.
 */
import { strict as assert } from 'node:assert';
import { chmod, chown, link, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, truncate, unlink, utimes, writeFile } from 'node:fs/promises';
import { connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { listXattrs, setTimesNs, setXattr } from '../src/io/sys.js';
import { RACY_MARGIN_NS } from '../src/reconstruct/snapshot.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { runCli } from './helpers/cli.js';

/** What the shortcut reports as bytesTotal once a test has marked the snapshot. */
const MARK_BYTES = 12_345;
const OLD_S = 1_000_000_000;

describe('a pull with a snapshot of its target', () => {
  let dir = '';
  let server: XferServer;
  let cache = '';
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-pull-snapshot-'));
    cache = join(dir, 'cache');
    // Snapshots go to this test's own cache (read when each pull starts).
    process.env.XDG_CACHE_HOME = cache;
    server = await createServer({ root: join(dir, 'root'), port: 0 });
    const src = join(dir, 'src', 'tree');
    await mkdir(join(src, 'a', 'b'), { recursive: true });
    await writeFile(join(src, 'a', 'b', 'f.txt'), 'deep\n');
    await writeFile(join(src, 'top.txt'), 'top\n');
    await link(join(src, 'top.txt'), join(src, 'a', 'same.txt'));
    await writeFile(join(src, 'other.txt'), 'other\n');
    setXattr(join(src, 'top.txt'), 'user.k', Buffer.from('v'));
    await chmod(join(src, 'a'), 0o750);
    for (const f of ['a/b/f.txt', 'top.txt', 'other.txt']) await utimes(join(src, f), OLD_S, OLD_S);
    await push(src, `${server.url}/`);
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A fresh destination with the tree pulled twice (the second finds it unchanged and records it), the snapshot marked. */
  async function pulledAndMarked(opts: { delete?: boolean } = {}): Promise<{ dest: string; target: string; again: () => ReturnType<typeof pull> }> {
    const dest = join(dir, `d${++n}`);
    await mkdir(dest);
    const again = () => pull(`${server.url}/tree`, `${dest}/`, { delete: opts.delete });
    const first = await again();
    await again();
    await mark(first.target, { future: true });
    // The control: as it is, the marked snapshot is used.
    assert.equal((await again()).bytesTotal, MARK_BYTES, 'the shortcut is taken when nothing changed');
    return { dest, target: first.target, again };
  }

  /** The snapshot files of the cache. */
  async function snapshotFiles(): Promise<string[]> {
    const d = join(cache, 'xfer', 'snapshots');
    return (await readdir(d)).map((f) => join(d, f));
  }

  /**
   * Marks the snapshot of `target` (see the top); `future` also moves its start time on;
   * `racy` moves it back to 1 ms after the newest recorded ctime, as if taken right then.
   */
  async function mark(target: string, o: { future: boolean; racy?: boolean }): Promise<string> {
    for (const f of await snapshotFiles()) {
      const s = JSON.parse(await readFile(f, 'utf8'));
      if (s.target !== target) continue;
      s.result.bytesTotal = MARK_BYTES;
      if (o.future) s.takenNs += RACY_MARGIN_NS + 1e9;
      if (o.racy) s.takenNs = Math.max(...(s.nums as number[]).filter((_, i) => i % 4 === 3)) + 1e6;
      await writeFile(f, JSON.stringify(s));
      return f;
    }
    throw new Error(`no snapshot of ${target}`);
  }

  /** A pull the full way: the real figures, not the marker. */
  async function fullPull(again: () => ReturnType<typeof pull>): Promise<void> {
    const r = await again();
    assert.notEqual(r.bytesTotal, MARK_BYTES, 'the pull went the full way');
  }

  it('a file rewritten with its size and mtime put back (only its ctime differs) is not hidden', async () => {
    const { target, again } = await pulledAndMarked();
    const f = join(target, 'other.txt');
    const was = await stat(f, { bigint: true });
    await writeFile(f, 'OTHER\n');
    setTimesNs(f, was.atimeNs, was.mtimeNs);
    const now = await stat(f, { bigint: true });
    assert.deepEqual([now.ino, now.size, now.mtimeNs], [was.ino, was.size, was.mtimeNs], 'only the ctime tells');
    await fullPull(again);
  });

  it('a chmod, a chown, an xattr: each seen and put back', async () => {
    const { target, again } = await pulledAndMarked();
    await chmod(join(target, 'a'), 0o700);
    await fullPull(again);
    assert.equal((await stat(join(target, 'a'))).mode & 0o7777, 0o750);
    await mark(target, { future: true });

    await chown(join(target, 'other.txt'), 1234, 1234);
    await fullPull(again);
    assert.equal((await stat(join(target, 'other.txt'))).uid, process.getuid!() === 0 ? 0 : (await stat(join(dir, 'src', 'tree', 'other.txt'))).uid);
    await mark(target, { future: true });

    setXattr(join(target, 'a', 'b', 'f.txt'), 'user.x', Buffer.from('new'));
    await fullPull(again);
    assert.deepEqual(listXattrs(join(target, 'a', 'b', 'f.txt')).map((x) => x.name), []);
  });

  it('a file replaced by another inode of the same content, size and times is not hidden', async () => {
    const { target, again } = await pulledAndMarked();
    const f = join(target, 'other.txt');
    const was = await stat(f);
    await writeFile(`${f}.new`, await readFile(f), { mode: was.mode & 0o7777 });
    await utimes(`${f}.new`, was.atime, was.mtime);
    await rename(`${f}.new`, f);
    await fullPull(again);
    assert.equal(await readFile(f, 'utf8'), 'other\n');
  });

  it('an entry added to the destination is not hidden, and goes with --delete', async () => {
    const { target, again } = await pulledAndMarked({ delete: true });
    await writeFile(join(target, 'a', 'b', 'extra.txt'), 'extra\n');
    await fullPull(again);
    assert.deepEqual(await readdir(join(target, 'a', 'b')), ['f.txt']);
  });

  it('an entry removed from the destination is pulled again', async () => {
    const { target, again } = await pulledAndMarked();
    await unlink(join(target, 'a', 'b', 'f.txt'));
    await fullPull(again);
    assert.equal(await readFile(join(target, 'a', 'b', 'f.txt'), 'utf8'), 'deep\n');
  });

  it('a leftover of an interrupted pull beside the target is taken over the full way; another new neighbour is no reason to', async () => {
    const { dest, target, again } = await pulledAndMarked();
    await writeFile(join(dest, 'neighbour.txt'), 'x\n');
    assert.equal((await again()).bytesTotal, MARK_BYTES, 'the directory holding the target changed, but holds no leftover');
    await mkdir(join(dest, '.xfer-tree.partial'));
    await fullPull(again);
    assert.deepEqual((await readdir(dest)).sort(), ['neighbour.txt', 'tree']);
    assert.equal(await readFile(join(target, 'top.txt'), 'utf8'), 'top\n');
  });

  it('a changed tree on the server (another tag) is pulled', async () => {
    const src = join(dir, 'src2', 'tree2');
    await mkdir(src, { recursive: true });
    // Old times: a file written just now is one a push may find still being written.
    await writeFile(join(src, 'x.txt'), 'one\n');
    await utimes(join(src, 'x.txt'), OLD_S, OLD_S);
    await push(src, `${server.url}/`);
    const dest = join(dir, `d${++n}`);
    await mkdir(dest);
    const again = () => pull(`${server.url}/tree2`, `${dest}/`);
    const first = await again();
    await again();
    await mark(first.target, { future: true });
    assert.equal((await again()).bytesTotal, MARK_BYTES);
    await writeFile(join(src, 'x.txt'), 'two\n');
    await utimes(join(src, 'x.txt'), OLD_S + 1, OLD_S + 1);
    await push(src, `${server.url}/`);
    await fullPull(again);
    assert.equal(await readFile(join(first.target, 'x.txt'), 'utf8'), 'two\n');
  });

  it('a snapshot that is garbage or truncated is no snapshot', async () => {
    const { target, again } = await pulledAndMarked();
    const f = await mark(target, { future: true });
    const text = await readFile(f, 'utf8');
    await truncate(f, Math.floor(text.length / 2));
    await fullPull(again);
    await writeFile(f, 'garbage\n');
    await fullPull(again);
    // Well-formed, and every entry as recorded, but a path goes out of the target (and back).
    const s = JSON.parse(text);
    s.paths[1] = `../${basename(target)}/${s.paths[1]}`;
    await writeFile(f, JSON.stringify(s));
    await fullPull(again);
  });

  it('a snapshot whose entries were racily clean (ctime just before it was taken) is not used', async () => {
    const dest = join(dir, `d${++n}`);
    await mkdir(dest);
    const again = () => pull(`${server.url}/tree`, `${dest}/`);
    const first = await again();
    // As if taken 1 ms after the newest entry was written: within any racy margin.
    await mark(first.target, { future: false, racy: true });
    await fullPull(again);
  });

  it('a pull that wrote the tree records it: the very next pull is a no-op from the snapshot', async () => {
    const dest = join(dir, `d${++n}`);
    await mkdir(dest);
    const again = () => pull(`${server.url}/tree`, `${dest}/`);
    const first = await again();
    assert.ok(first.bytesReceived > 0, 'the first pull wrote the tree');
    // Marked as it is: its start time not moved, so the recording itself waited out the margin.
    await mark(first.target, { future: false });
    assert.equal((await again()).bytesTotal, MARK_BYTES, 'the second pull ends at the snapshot');
  });

  it('is not used under other options (--delete, --checksum)', async () => {
    const { dest } = await pulledAndMarked();
    assert.notEqual((await pull(`${server.url}/tree`, `${dest}/`, { delete: true })).bytesTotal, MARK_BYTES);
    assert.notEqual((await pull(`${server.url}/tree`, `${dest}/`, { checksum: true })).bytesTotal, MARK_BYTES);
  });

  it('xfer pull (the CLI) ends at the snapshot before loading the library, and otherwise pulls the full way', async () => {
    const dest = join(dir, `d${++n}`);
    await mkdir(dest);
    // process.env (XDG_CACHE_HOME) goes to the child.
    const cli = async () => {
      const r = await runCli(['pull', `${server.url}/tree`, `${dest}/`, '--json']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as { bytesTotal: number; bytesReceived: number };
    };
    await cli();
    await cli();
    const target = join(dest, 'tree');
    await mark(target, { future: true });
    assert.equal((await cli()).bytesTotal, MARK_BYTES);
    await chmod(join(target, 'a'), 0o700);
    assert.notEqual((await cli()).bytesTotal, MARK_BYTES);
    assert.equal((await stat(join(target, 'a'))).mode & 0o7777, 0o750);
  });

  it('the server answers If-None-Match with the tree\'s tag by 304 and no body, another tag by the manifest', async () => {
    const { target } = await pulledAndMarked();
    const s = JSON.parse(await readFile(await mark(target, { future: true }), 'utf8'));
    const hit = await getManifest(server.url, 'tree', `W/"x", "${s.tag}"`);
    assert.equal(hit.status, 304);
    assert.equal(hit.etag, `"${s.tag}"`);
    assert.equal(hit.bytes, 0);
    const miss = await getManifest(server.url, 'tree', '"tree.blake3.00"');
    assert.equal(miss.status, 200);
    assert.ok(miss.bytes > 0);
  });
});

/** GET /v1/manifests/<name> with If-None-Match: the status, the ETag and the body's length. */
async function getManifest(url: string, name: string, ifNoneMatch: string): Promise<{ status: number; etag: unknown; bytes: number }> {
  const session = connect(url);
  try {
    return await new Promise((resolve, reject) => {
      session.on('error', reject);
      const req = session.request({ ':method': 'GET', ':path': `/v1/manifests/${name}`, 'if-none-match': ifNoneMatch });
      let status = 0;
      let etag: unknown;
      let bytes = 0;
      req.on('response', (h) => {
        status = Number(h[':status']);
        etag = h.etag;
      });
      req.on('data', (d: Buffer) => (bytes += d.length));
      req.on('end', () => resolve({ status, etag, bytes }));
      req.on('error', reject);
      req.end();
    });
  } finally {
    session.close();
  }
}
