/**
 * Manifests are streams: writing and reading 2,000,000 chunk records (a 122 GiB file at
 * 64 KiB chunks) must not hold them in memory. Materialized, they would take several
 * hundred MiB (an object and a digest per record); the writer and reader together may add
 * well under 100 MiB of resident memory.
 */
import { strict as assert } from 'node:assert';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MiB } from '../src/core/sizes.js';
import { ManifestWriter, openManifestFile, type ChunkRecord } from '../src/manifest/index.js';
import { withTempDir } from './manifest-helpers.js';

const RECORDS = 2_000_000;
const BATCH_RECORDS = 4096;
const CHUNK_BYTES = 65_536;
const MAX_RSS_GROWTH_BYTES = 100 * MiB;
const MAX_SECONDS = 60;

describe('manifest streaming', () => {
  it(`writes and reads ${RECORDS} chunk records in bounded memory`, { timeout: 4 * MAX_SECONDS * 1000 }, async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'huge.xfm');
      const started = Date.now();
      const baseline = process.memoryUsage().rss;
      let peak = baseline;
      const sample = () => {
        peak = Math.max(peak, process.memoryUsage().rss);
      };

      // One reused batch: record i has length CHUNK_BYTES - (i % 7) and a digest
      // holding i, so the reader's output can be checked without keeping it.
      const digests = Buffer.alloc(BATCH_RECORDS * 32);
      const batch: ChunkRecord[] = [];
      let expectedBytes = 0;
      const writer = await ManifestWriter.create(path, {
        kind: 'file',
        digestAlgorithm: 'blake3',
        chunker: { algorithm: 'fixed', sizeBytes: CHUNK_BYTES },
      });
      await writer.beginEntry({ type: 'file', path: '', mode: 0o644, mtimeMs: 0, size: -1 });
      for (let i = 0; i < RECORDS; i += BATCH_RECORDS) {
        batch.length = 0;
        for (let j = 0; j < BATCH_RECORDS && i + j < RECORDS; j++) {
          digests.writeUInt32LE(i + j, j * 32);
          const length = CHUNK_BYTES - ((i + j) % 7);
          expectedBytes += length;
          batch.push({ length, digest: digests.subarray(j * 32, j * 32 + 32) });
        }
        await writer.addChunks(batch);
        if (i % (64 * BATCH_RECORDS) === 0) sample();
      }
      await writer.endEntry(expectedBytes, Buffer.alloc(32, 1));
      const header = await writer.finish();
      assert.equal(header.chunkCount, RECORDS);
      assert.equal(header.totalBytes, expectedBytes);
      assert.equal((await stat(path)).size, 96 + 23 + 16 + RECORDS * 36 + 4 + 40 + 9);

      const reader = await openManifestFile(path);
      let count = 0;
      let bytes = 0;
      let events = 0;
      for await (const event of reader.events()) {
        if (event.kind !== 'chunks') continue;
        for (const r of event.records) {
          if (r.length !== CHUNK_BYTES - (count % 7)) assert.fail(`record ${count} has length ${r.length}`);
          if (Buffer.from(r.digest.buffer, r.digest.byteOffset, 4).readUInt32LE(0) !== count) assert.fail(`record ${count} has the wrong digest`);
          bytes += r.length;
          count++;
        }
        if (++events % 64 === 0) sample();
      }
      sample();
      assert.equal(count, RECORDS);
      assert.equal(bytes, expectedBytes);

      const seconds = (Date.now() - started) / 1000;
      const growth = peak - baseline;
      assert.ok(growth < MAX_RSS_GROWTH_BYTES, `resident memory grew by ${(growth / MiB).toFixed(1)} MiB`);
      assert.ok(seconds < MAX_SECONDS, `took ${seconds.toFixed(1)} s`);
    });
  });
});
