/**
 * In-place updates keep files sparse (issue 14, item 1): where a file is rewritten in place
 * (`pull --in-place`, the server's in-place commit of a push) and a changed range's new
 * content is zeros, the range is punched out (fallocate PUNCH_HOLE | KEEP_SIZE) instead of
 * written, so the file's allocated size drops with it.
 */
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pull, push } from '../src/api.js';
import { KiB, MiB } from '../src/core/sizes.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { writeRandomFile } from './helpers/cli.js';

const FILE_BYTES = 16 * MiB;
/** The range the new version zeroes: 4 MiB, on 4 KiB file offsets. */
const ZERO_AT = 4 * MiB;
const ZERO_BYTES = 4 * MiB;
/** Chunk boundaries fall near the zeroed range's ends: those chunks' bytes are written, not punched. */
const SLACK_BYTES = 512 * KiB;

async function zeroRange(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(Buffer.alloc(ZERO_BYTES), 0, ZERO_BYTES, ZERO_AT);
  await fh.close();
}

async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}

describe('in-place updates punch holes where the new content is zeros', () => {
  let dir = '';
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-in-place-punch-'));
    server = await createServer({ root: join(dir, 'root'), port: 0, inPlaceAboveBytes: 1 * MiB });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('pull --in-place: a zeroed range leaves the file with that much less allocated, same inode, same content', async () => {
    const src = join(dir, 'img');
    await writeRandomFile(src, FILE_BYTES, 61);
    await mkdir(join(dir, 'store'));
    await push(src, `${join(dir, 'store')}/`);
    const dest = join(dir, 'dest.img');
    await pull(join(dir, 'store', 'img'), dest);
    const ino = (await stat(dest)).ino;
    // Dense: no hole. st_blocks also counts the filesystem's own blocks for the file (an
    // ext4 extent index block once it has more than 4 extents, as under concurrent writes).
    const before = await allocated(dest);
    assert.ok(before >= FILE_BYTES && before <= FILE_BYTES + SLACK_BYTES, `dense to begin with: ${before} bytes allocated for ${FILE_BYTES}`);
    await zeroRange(src);
    await push(src, `${join(dir, 'store')}/`);
    const r = await pull(join(dir, 'store', 'img'), dest, { inPlace: true });
    assert.equal((await stat(dest)).ino, ino, 'updated in place');
    assert.ok((await readFile(dest)).equals(await readFile(src)), 'the file is the new version');
    const now = await allocated(dest);
    assert.ok(now <= FILE_BYTES - ZERO_BYTES + SLACK_BYTES, `${now} bytes allocated after zeroing ${ZERO_BYTES} of ${FILE_BYTES}`);
    const punched = (r as { bytesPunched?: number }).bytesPunched ?? 0;
    assert.ok(punched >= ZERO_BYTES - SLACK_BYTES && punched <= r.bytesWritten!, `${punched} of ${r.bytesWritten} changed bytes punched`);
  });

  it("the server's in-place commit of a push: the copy keeps a hole where the pushed file has zeros", async () => {
    const src = join(dir, 'served');
    await writeRandomFile(src, FILE_BYTES, 62);
    await push(src, `${server.url}/`);
    const copy = join(dir, 'root', 'files', 'served');
    const ino = (await stat(copy)).ino;
    await zeroRange(src);
    await push(src, `${server.url}/`, { inPlace: true });
    assert.equal((await stat(copy)).ino, ino, 'updated in place');
    assert.ok((await readFile(copy)).equals(await readFile(src)), 'the copy is the new version');
    const now = await allocated(copy);
    assert.ok(now <= FILE_BYTES - ZERO_BYTES + SLACK_BYTES, `${now} bytes allocated after zeroing ${ZERO_BYTES} of ${FILE_BYTES}`);
  });
});
