import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXT_MAGIC_OFFSET, IMAGE_CHUNKER, isExtImage } from '../src/chunker/image.js';
import { push } from '../src/index.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

const KiB = 1024;

/** `xfer chunk --json --list` of `path`: the chunk lengths. */
async function chunkLengths(path: string, ...options: string[]): Promise<number[]> {
  const r = await runCli(['chunk', path, '--json', '--list', ...options]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { list: Array<{ length: number }> }).list.map((c) => c.length);
}

describe('an ext2/3/4 image is chunked with the image chunker (4/16/64 KiB) unless a chunker option is given', () => {
  let dir: string;
  let image: string;
  let plain: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-image-chunker-'));
    const tree = join(dir, 'tree');
    await mkdir(tree);
    await writeFile(join(tree, 'a.bin'), pseudoRandom(300 * KiB, 1));
    image = join(dir, 'ext4.img');
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', tree, image, '16M']);
    // The same bytes but for the magic: not an image.
    plain = join(dir, 'plain.img');
    execFileSync('cp', ['--sparse=always', image, plain]);
    const fh = await open(plain, 'r+');
    await fh.write(Buffer.from([0, 0]), 0, 2, EXT_MAGIC_OFFSET);
    await fh.close();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('recognises the ext superblock magic at byte 1080, nothing else', () => {
    const head = Buffer.alloc(2 * KiB);
    assert.ok(!isExtImage(head));
    head.writeUInt16LE(0xef53, EXT_MAGIC_OFFSET);
    assert.ok(isExtImage(head));
    assert.ok(!isExtImage(head.subarray(0, EXT_MAGIC_OFFSET + 1)), 'too short to hold it');
    const elsewhere = Buffer.alloc(2 * KiB);
    elsewhere.writeUInt16LE(0xef53, EXT_MAGIC_OFFSET + 2);
    assert.ok(!isExtImage(elsewhere));
    const other = Buffer.alloc(2 * KiB);
    other.writeUInt16LE(0xef54, EXT_MAGIC_OFFSET);
    assert.ok(!isExtImage(other), 'another value there');
  });

  it('xfer chunk: the image gets chunks of at most 64 KiB; the same bytes without the magic, and the image with --max 256K, get the default 256 KiB zero runs', async () => {
    const lengths = await chunkLengths(image);
    assert.equal(Math.max(...lengths), 64 * KiB);
    assert.equal(Math.max(...(await chunkLengths(plain))), 256 * KiB);
    assert.equal(Math.max(...(await chunkLengths(image, '--max', '256K'))), 256 * KiB, 'an explicit size option wins');
    assert.equal(Math.max(...(await chunkLengths(image, '--fixed', '16K'))), 16 * KiB);
  });

  it('xfer push: the manifest of a pushed image records the image chunker', async () => {
    const dest = join(dir, 'dest');
    const r = await runCli(['push', '-q', image, `${dest}/`]);
    assert.equal(r.code, 0, r.stderr);
    const m = await runCli(['manifest', 'show', join(dest, 'ext4.img'), '--json']);
    assert.equal(m.code, 0, m.stderr);
    const header = JSON.parse(m.stdout) as { chunker: unknown };
    assert.deepEqual(header.chunker, IMAGE_CHUNKER);
  });

  it('the library push() applies the same rule: the image gets the image chunker, a chunker option wins, other files get the default', async () => {
    const chunkerOf = async (dest: string, name: string) => {
      const m = await runCli(['manifest', 'show', join(dest, name), '--json']);
      assert.equal(m.code, 0, m.stderr);
      return (JSON.parse(m.stdout) as { chunker: unknown }).chunker;
    };
    const dest = join(dir, 'lib');
    await push(image, `${dest}/`);
    assert.deepEqual(await chunkerOf(dest, 'ext4.img'), IMAGE_CHUNKER);
    await push(plain, `${dest}/`);
    assert.deepEqual(await chunkerOf(dest, 'plain.img'), DEFAULT_CHUNKER);
    const fixed = { algorithm: 'fixed', sizeBytes: 16 * KiB } as const;
    await push(image, join(dest, 'fixed.img'), { chunker: fixed });
    assert.deepEqual(await chunkerOf(dest, 'fixed.img'), fixed);
  });
});
