/**
 * A tree manifest's body on its own, as a server stage receives it while a push runs: the
 * writer hands out exactly the body's bytes as it writes them (onBody), and
 * openManifestBody reads them back into the same events, ending with the body's digest,
 * which is the digest in the finished manifest's header.
 */
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InvalidArgumentError, ManifestCorruptError } from '../src/core/errors.js';
import { HEADER_BYTES, ManifestWriter, openManifestBody, openManifestFile, type ManifestEvent, type ManifestHeader } from '../src/manifest/index.js';
import { TRAILER_BYTES } from '../src/manifest/format.js';
import { CDC_DEFAULT, pieces, withTempDir } from './manifest-helpers.js';

/** A tree of dirs, a symlink and files, the last with enough chunks to fill the writer's buffer twice. */
async function writeTree(path: string, onBody?: (b: Buffer) => void): Promise<ManifestHeader> {
  const w = await ManifestWriter.create(path, { kind: 'tree', digestAlgorithm: 'blake3', chunker: CDC_DEFAULT }, { onBody });
  await w.beginEntry({ type: 'dir', path: 'a', mode: 0o755, mtimeMs: 1_700_000_000_000, size: 0 });
  await w.beginEntry({ type: 'symlink', path: 'a/link', mode: 0o777, mtimeMs: 1_700_000_000_001, size: 0, linkTarget: '../big.bin' });
  await w.beginEntry({ type: 'file', path: 'a/small.txt', mode: 0o600, mtimeMs: 1_700_000_000_002, size: 20_000 });
  await w.addChunks([{ length: 20_000, digest: Buffer.alloc(32, 1) }]);
  await w.endEntry(20_000, Buffer.alloc(32, 2));
  const records = 70_000; // 36 bytes each: 2.4 MiB of body
  await w.beginEntry({ type: 'file', path: 'big.bin', mode: 0o644, mtimeMs: 1_700_000_000_003, size: records * 16_384 });
  for (let i = 0; i < records; i += 10_000) {
    await w.addChunks(Array.from({ length: 10_000 }, (_, k) => ({ length: 16_384, digest: Buffer.alloc(32, (i + k) % 251) })));
  }
  await w.endEntry(records * 16_384, Buffer.alloc(32, 3));
  return w.finish();
}

async function collect(events: AsyncIterable<ManifestEvent>): Promise<ManifestEvent[]> {
  const out: ManifestEvent[] = [];
  for await (const ev of events) out.push(ev);
  return out;
}

describe('manifest bodies, streamed while written', () => {
  it('the writer hands out every body byte once, in order, across buffer flushes', async () => {
    await withTempDir(async (dir) => {
      const taps: Buffer[] = [];
      await writeTree(join(dir, 'm'), (b) => taps.push(Buffer.from(b)));
      const file = await readFile(join(dir, 'm'));
      assert.ok(taps.length > 3, 'bytes come as the calls append them, not once at the end');
      assert.ok(Buffer.concat(taps).equals(file.subarray(HEADER_BYTES, file.length - TRAILER_BYTES)));
    });
  });

  it('openManifestBody reads a body into the manifest\'s events and ends with the header digest', async () => {
    await withTempDir(async (dir) => {
      const header = await writeTree(join(dir, 'm'));
      const file = await readFile(join(dir, 'm'));
      const body = file.subarray(HEADER_BYTES, file.length - TRAILER_BYTES + 1); // with the end marker
      const expected = await collect((await openManifestFile(join(dir, 'm'))).events());
      let digest: Buffer | undefined;
      const provisional: ManifestHeader = { ...header, totalBytes: 0, entryCount: 0, chunkCount: 0, digest: Buffer.alloc(32) };
      const reader = await openManifestBody(pieces(body, 4099), provisional, (d) => (digest = d));
      assert.deepEqual(await collect(reader.events()), expected);
      assert.ok(digest?.equals(header.digest));
    });
  });

  it('a body that is cut short, has bytes after its end marker, or belongs to a file manifest is refused', async () => {
    await withTempDir(async (dir) => {
      const header = await writeTree(join(dir, 'm'));
      const file = await readFile(join(dir, 'm'));
      const body = file.subarray(HEADER_BYTES, file.length - TRAILER_BYTES + 1);
      const read = async (bytes: Buffer) => collect((await openManifestBody(pieces(bytes, 1 << 16), header, () => {})).events());
      await assert.rejects(read(body.subarray(0, body.length - 1)), ManifestCorruptError); // no end marker
      await assert.rejects(read(body.subarray(0, 1000)), ManifestCorruptError);
      await assert.rejects(read(Buffer.concat([body, Buffer.from([0])])), /bytes after its end marker/);
      await assert.rejects(openManifestBody(pieces(body, 100), { ...header, kind: 'file' }, () => {}), InvalidArgumentError);
    });
  });
});
