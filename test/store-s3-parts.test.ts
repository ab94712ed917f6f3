/*
 * The parts of S3Store that need no server: which S3 errors are retried (the
 * classification, as restic's IsPermanentError), what an error tells the user, how
 * s3:// locations parse, the chunk table's lookups and size, and how reads coalesce.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { ChunkCorruptError, IoError, isXferError } from '../src/core/errors.js';
import { isPermanentS3Error, s3Failure } from '../src/store/s3/errors.js';
import { decodeIndexObject, encodeIndexObject } from '../src/store/s3/index-object.js';
import { newPackName } from '../src/store/pack.js';
import { s3From, s3Options, type S3Flags } from '../src/cli/options.js';
import { parseS3Location } from '../src/store/s3/location.js';
import { coalesceReads, S3_COALESCE_GAP_BYTES, S3_MAX_COALESCED_READ_BYTES } from '../src/store/s3/reads.js';
import { ChunkTable, TABLE_ENTRY_BYTES } from '../src/store/s3/table.js';
import { pseudoRandom } from './helpers/gen.js';

function serviceError(name: string, status: number): S3ServiceException {
  return new S3ServiceException({ name, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status }, message: `${name} happened` });
}

function networkError(code: string): Error {
  return Object.assign(new Error(`socket: ${code}`), { code });
}

describe('S3 error classification', () => {
  it('retries 5xx, SlowDown, throttling and request timeouts', () => {
    for (const [name, status] of [
      ['InternalError', 500],
      ['ServiceUnavailable', 503],
      ['SlowDown', 503],
      ['BadGateway', 502],
      ['TooManyRequests', 429],
      ['RequestTimeout', 400],
      ['Throttling', 400],
    ] as const) {
      assert.equal(isPermanentS3Error(serviceError(name, status)), false, `${name} ${status}`);
    }
  });

  it('retries broken connections and short bodies', () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT']) assert.equal(isPermanentS3Error(networkError(code)), false, code);
    assert.equal(isPermanentS3Error(Object.assign(new Error('socket hang up'), { name: 'TimeoutError' })), false);
    assert.equal(isPermanentS3Error(new IoError('GET x: 10 bytes came of the 20 asked for')), false);
  });

  it('never retries a 4xx that cannot succeed, an abort, or a corrupt chunk', () => {
    for (const [name, status] of [
      ['AccessDenied', 403],
      ['NoSuchBucket', 404],
      ['NoSuchKey', 404],
      ['InvalidArgument', 400],
      ['InvalidRange', 416],
      ['BadDigest', 400],
    ] as const) {
      assert.equal(isPermanentS3Error(serviceError(name, status)), true, `${name} ${status}`);
    }
    assert.equal(isPermanentS3Error(Object.assign(new Error('aborted'), { name: 'AbortError' })), true);
    assert.equal(isPermanentS3Error(new ChunkCorruptError('ab', 'changed')), true);
    assert.equal(isPermanentS3Error(new TypeError('x is not a function')), true);
  });

  it('ends in one-line XferErrors naming the request', () => {
    const cases = [
      [serviceError('AccessDenied', 403), 'XFER_PERMISSION_DENIED'],
      [serviceError('NoSuchBucket', 404), 'XFER_NOT_FOUND'],
      [serviceError('InternalError', 500), 'XFER_IO'],
      [networkError('ECONNRESET'), 'XFER_IO'],
      [Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 'XFER_UNAUTHORIZED'],
      [new Error('Region is missing'), 'XFER_INVALID_ARGUMENT'],
    ] as const;
    for (const [error, code] of cases) {
      const failure = s3Failure(error, 'PUT s3://b/p/x');
      assert.ok(isXferError(failure, code), `${String(error)} -> ${failure.code}`);
      assert.ok(failure.message.startsWith('PUT s3://b/p/x: '), failure.message);
      assert.ok(!failure.message.includes('\n'), failure.message);
    }
  });
});

describe('s3:// locations', () => {
  it('parse into a bucket and a prefix ending in /', () => {
    assert.deepEqual(parseS3Location('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Location('s3://my-bucket/'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Location('s3://my.bucket/backups/host1'), { bucket: 'my.bucket', prefix: 'backups/host1/' });
    assert.deepEqual(parseS3Location('s3://b12/a/'), { bucket: 'b12', prefix: 'a/' });
  });

  it('refuse bad buckets and prefixes with InvalidArgumentError naming the location', () => {
    for (const bad of ['s3:/b', 'http://bucket/x', 's3://', 's3://B', 's3://ab', 's3://bucket//x', 's3://bucket/a/../b', 's3://bucket/./a', 's3://bucket/a?b', 's3://bucket/a\\b']) {
      assert.throws(() => parseS3Location(bad), (err: unknown) => isXferError(err, 'XFER_INVALID_ARGUMENT') && err.message.includes(JSON.stringify(bad)), bad);
    }
  });
});

describe('ChunkTable', () => {
  it(`finds every chunk added, by algorithm and digest, in ${TABLE_ENTRY_BYTES} bytes per chunk once merged`, () => {
    const table = new ChunkTable();
    const count = 50_000;
    const digests = Array.from({ length: count }, (_, i) => pseudoRandom(32, i + 1));
    digests.forEach((d, i) => table.add(i % 2 ? 'blake3' : 'sha256', d, { pack: i >> 8, offset: i * 7, length: i }));
    assert.equal(table.size, count);
    digests.forEach((d, i) => {
      assert.deepEqual(table.find(i % 2 ? 'blake3' : 'sha256', d), { pack: i >> 8, offset: i * 7, length: i });
      assert.equal(table.find(i % 2 ? 'sha256' : 'blake3', d), undefined);
    });
    assert.equal(table.find('blake3', pseudoRandom(32, count + 1)), undefined);
    // Most entries are in the sorted table, the rest wait in the Map for the next merge.
    assert.ok(table.tableBytes >= (count * 7 / 8) * TABLE_ENTRY_BYTES && table.tableBytes <= count * TABLE_ENTRY_BYTES, String(table.tableBytes));
  });

  it('keeps the first place of a chunk added twice', () => {
    const table = new ChunkTable();
    const d = pseudoRandom(32, 9);
    table.add('blake3', d, { pack: 1, offset: 2, length: 3 });
    table.add('blake3', d, { pack: 4, offset: 5, length: 6 });
    assert.deepEqual(table.find('blake3', d), { pack: 1, offset: 2, length: 3 });
    assert.equal(table.size, 1);
  });
});

describe('coalesceReads', () => {
  it('joins neighbouring reads of a pack into one range, in offset order', () => {
    const reads = [
      { pack: 'b', offset: 0, length: 10 },
      { pack: 'a', offset: 100, length: 50 },
      { pack: 'a', offset: 0, length: 100 },
      { pack: 'a', offset: 150 + S3_COALESCE_GAP_BYTES, length: 10 },
      { pack: 'a', offset: 160 + 2 * S3_COALESCE_GAP_BYTES + 1, length: 10 },
    ];
    const groups = coalesceReads(reads).map((g) => [g.pack, g.start, g.end, g.reads.length]);
    assert.deepEqual(groups, [
      ['a', 0, 160 + S3_COALESCE_GAP_BYTES, 3],
      ['a', 160 + 2 * S3_COALESCE_GAP_BYTES + 1, 170 + 2 * S3_COALESCE_GAP_BYTES + 1, 1],
      ['b', 0, 10, 1],
    ]);
  });

  it(`keeps a range within ${S3_MAX_COALESCED_READ_BYTES} bytes`, () => {
    const half = S3_MAX_COALESCED_READ_BYTES / 2;
    const reads = [0, 1, 2].map((i) => ({ pack: 'a', offset: i * half, length: half }));
    assert.deepEqual(coalesceReads(reads).map((g) => g.reads.length), [2, 1]);
  });
});

describe('S3 index objects', () => {
  const packs = [
    { name: newPackName(), entries: [1, 2, 3].map((i) => ({ algorithm: 'blake3' as const, digest: pseudoRandom(32, i), offset: 8 + i * 100, length: 52 })) },
    { name: newPackName(), entries: [] },
    { name: newPackName(), entries: [{ algorithm: 'sha256' as const, digest: pseudoRandom(32, 9), offset: 56, length: 0 }] },
  ];

  it('round-trip any number of packs and their entries', () => {
    const back = decodeIndexObject(encodeIndexObject(packs))!;
    assert.deepEqual(
      back.map((p) => [p.name, p.entries.map((e) => [e.algorithm, Buffer.from(e.digest).toString('hex'), e.offset, e.length])]),
      packs.map((p) => [p.name, p.entries.map((e) => [e.algorithm, Buffer.from(e.digest).toString('hex'), e.offset, e.length])]),
    );
    assert.deepEqual(decodeIndexObject(encodeIndexObject([])), []);
  });

  it('are refused whole when damaged anywhere: a changed byte, a cut, another magic', () => {
    const good = encodeIndexObject(packs);
    for (let at = 0; at < good.length; at += 7) {
      const bad = Buffer.from(good);
      bad[at] = bad[at]! ^ 0x40;
      assert.equal(decodeIndexObject(bad), undefined, `byte ${at} changed`);
    }
    for (const cut of [0, 4, 8, 12, good.length - 1]) assert.equal(decodeIndexObject(good.subarray(0, cut)), undefined, `cut at ${cut}`);
  });
});

describe('--s3-endpoint and --s3-path-style', () => {
  it('map to the options endpoint and forcePathStyle; an endpoint that is not an http(s) URL is refused', async () => {
    const { Command } = await import('commander');
    const parse = (...args: string[]): S3Flags => {
      const cmd = new Command().exitOverride();
      for (const o of s3Options()) cmd.addOption(o);
      return cmd.parse(args, { from: 'user' }).opts<S3Flags>();
    };
    assert.deepEqual(s3From(parse()), {});
    assert.deepEqual(s3From(parse('--s3-endpoint', 'http://127.0.0.1:9000', '--s3-path-style')), { endpoint: 'http://127.0.0.1:9000', forcePathStyle: true });
    assert.throws(() => s3From(parse('--s3-endpoint', 'minio:9000')), (err: unknown) => isXferError(err, 'XFER_INVALID_ARGUMENT') && err.message.startsWith('--s3-endpoint: '));
  });
});
