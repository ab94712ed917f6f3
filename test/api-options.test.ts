import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as errors from '../src/core/errors.js';
import { mapBounded, Window } from '../src/core/window.js';
import { untilAborted } from '../src/core/abort.js';
import { DEFAULT_CHUNKER } from '../src/chunker/params.js';
import { ScanPool } from '../src/scan/pool.js';
import * as xfer from '../src/index.js';
import { InvalidOptionError, pull, push, pushToDestination } from '../src/index.js';

/** Rejects with InvalidOptionError whose message is exactly `message`, within a second (not a hang). */
async function refused(run: () => Promise<unknown>, message: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within 1 s (expected: ${message})`)), 1000);
  });
  try {
    await assert.rejects(Promise.race([run(), hang]), (err: unknown) => {
      assert.ok(err instanceof InvalidOptionError, `${String(err)} is not an InvalidOptionError`);
      assert.equal(err.code, 'XFER_INVALID_OPTION');
      assert.equal(err.message, message);
      return true;
    });
  } finally {
    clearTimeout(timer);
  }
}

describe('library options are checked at the public edge', () => {
  let dir: string;
  let src: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-options-'));
    src = join(dir, 'a.txt');
    await writeFile(src, 'hello\n');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const bad = (options: Record<string, unknown>) => options as never;

  it('push refuses each bad numeric or enum option with its exact message, before touching the destination', async () => {
    const dest = join(dir, 'never');
    const cases: [Record<string, unknown>, string][] = [
      [{ concurrency: 0 }, 'options.concurrency must be a positive integer'], // hung for ever
      [{ concurrency: 1.5 }, 'options.concurrency must be a positive integer'],
      [{ concurrency: NaN }, 'options.concurrency must be a positive integer'],
      [{ concurrency: '4' }, 'options.concurrency must be a positive integer'],
      [{ retries: NaN }, 'options.retries must be a non-negative integer'], // retried without end
      [{ retries: -1 }, 'options.retries must be a non-negative integer'],
      [{ retries: Infinity }, 'options.retries must be a non-negative integer'],
      [{ bwlimitBytesPerSecond: 0 }, 'options.bwlimitBytesPerSecond must be a number of at least 1024'],
      [{ bwlimitBytesPerSecond: 100 }, 'options.bwlimitBytesPerSecond must be a number of at least 1024'],
      [{ answerTimeoutMs: -5 }, 'options.answerTimeoutMs must be a positive number'],
      [{ answerTimeoutMs: Infinity }, 'options.answerTimeoutMs must be a positive number'],
      [{ digestAlgorithm: 'md5' }, 'options.digestAlgorithm must be one of "blake3", "sha256"'],
      [{ chunker: 'fastcdc' }, 'options.chunker must be a chunker spec object'],
      [{ delete: 'yes' }, 'options.delete must be a boolean'],
      [{ signal: {} }, 'options.signal must be an AbortSignal'],
      [{ onProgress: 1 }, 'options.onProgress must be a function'],
    ];
    for (const [options, message] of cases) {
      await refused(() => push(src, `${dest}/`, bad(options)), message);
      await refused(() => push(src, 'http://127.0.0.1:9/x', bad(options)), message);
    }
    await assert.rejects(readdir(dest), { code: 'ENOENT' }, 'nothing was created');
  });

  it('pushToDestination refuses a concurrency of 0 instead of hanging', async () => {
    const neverUsed = {} as Parameters<typeof pushToDestination>[1];
    await refused(() => pushToDestination(src, neverUsed, bad({ concurrency: 0 })), 'options.concurrency must be a positive integer');
  });

  it('pull refuses each bad option with its exact message', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ retries: NaN }, 'options.retries must be a non-negative integer'],
      [{ retries: 2.5 }, 'options.retries must be a non-negative integer'],
      [{ bwlimitBytesPerSecond: -1 }, 'options.bwlimitBytesPerSecond must be a number of at least 1024'],
      [{ answerTimeoutMs: 0 }, 'options.answerTimeoutMs must be a positive number'],
      [{ seeds: 'a.txt' }, 'options.seeds must be an array of paths'],
      [{ checksum: 1 }, 'options.checksum must be a boolean'],
    ];
    for (const [options, message] of cases) {
      await refused(() => pull('http://127.0.0.1:9/x', join(dir, 'out'), bad(options)), message);
      await refused(() => pull(join(dir, 'missing', 'a.txt'), join(dir, 'out'), bad(options)), message);
    }
  });

  it('LocalStore.open refuses a pack size that would never rotate packs, and other bad options', async () => {
    const open = (options: Record<string, unknown>) => () => xfer.LocalStore.open(join(dir, 'store-never'), bad({ create: true, ...options }));
    await refused(open({ packTargetBytes: NaN }), 'options.packTargetBytes must be a positive integer');
    await refused(open({ packTargetBytes: 0 }), 'options.packTargetBytes must be a positive integer');
    await refused(open({ directIo: 'no' }), 'options.directIo must be a boolean');
    await refused(open({ create: 1 }), 'options.create must be a boolean');
    await assert.rejects(readdir(join(dir, 'store-never')), { code: 'ENOENT' }, 'no store was created');
  });

  it('good options pass: a push with every numeric option set completes', async () => {
    const r = await push(src, join(dir, 'ok/'), { concurrency: 1, retries: 0, digestAlgorithm: 'sha256', delete: false });
    assert.equal(r.bytesTotal, 6);
  });

  it('the library exports every error class it can throw, and isXferError', () => {
    const classes = Object.entries(errors).filter(([, v]) => typeof v === 'function' && (v === errors.XferError || v.prototype instanceof errors.XferError));
    assert.ok(classes.length >= 20, `found ${classes.length} error classes`);
    for (const [name, cls] of classes) assert.equal((xfer as Record<string, unknown>)[name], cls, `${name} is not exported by src/index.ts`);
    assert.equal(xfer.isXferError, errors.isXferError);
  });
});

describe('the one concurrency primitive and the one abort race', () => {
  it('a Window refuses a limit of no jobs (which would never start one)', () => {
    for (const n of [0, -1, 0.5, NaN]) assert.throws(() => new Window(n, Infinity), { code: 'XFER_INVALID_ARGUMENT' }, String(n));
  });

  it('mapBounded keeps order, never exceeds its limit, and throws the first error once running calls settle', async () => {
    let running = 0;
    let most = 0;
    const out = await mapBounded([5, 1, 4, 2, 3, 0, 6], 3, undefined, async (ms) => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, ms));
      running--;
      return ms * 10;
    });
    assert.deepEqual(out, [50, 10, 40, 20, 30, 0, 60]);
    assert.equal(most, 3);
    const started: number[] = [];
    let settled = 0;
    await assert.rejects(
      mapBounded([0, 1, 2, 3, 4, 5], 2, undefined, async (i) => {
        started.push(i);
        await new Promise((r) => setTimeout(r, i === 0 ? 1 : 20));
        settled++;
        if (i === 0) throw new Error('first');
      }),
      /first/,
    );
    assert.deepEqual(started, [0, 1], 'no call starts after a failure');
    assert.equal(settled, 2, 'the running call settled before the error was thrown');
  });

  it('untilAborted rejects with AbortedError when the signal fires first, and leaves no listener behind', async () => {
    const c = new AbortController();
    const never = new Promise<void>(() => {});
    const waiting = untilAborted(never, c.signal);
    c.abort(new Error('stopping'));
    await assert.rejects(waiting, { code: 'XFER_ABORTED', message: 'aborted: stopping' });
    await assert.rejects(untilAborted(never, AbortSignal.abort()), { code: 'XFER_ABORTED' });
    const s = new AbortController();
    let added = 0;
    let removed = 0;
    const add = s.signal.addEventListener.bind(s.signal);
    const remove = s.signal.removeEventListener.bind(s.signal);
    s.signal.addEventListener = ((...a: Parameters<typeof add>) => (added++, add(...a))) as typeof add;
    s.signal.removeEventListener = ((...a: Parameters<typeof remove>) => (removed++, remove(...a))) as typeof remove;
    assert.equal(await untilAborted(Promise.resolve(7), s.signal), 7);
    await assert.rejects(untilAborted(Promise.reject(new Error('own')), s.signal), /own/);
    assert.equal(added, 2);
    assert.equal(removed, 2);
  });

  it('work stopped by a signal says why, whichever layer noticed it (a file system call, a scan thread)', async () => {
    const c = new AbortController();
    c.abort(new Error('interrupted'));
    const fsError = await readFile('/proc/self/status', { signal: c.signal }).catch((e: unknown) => e);
    assert.equal(errors.fromSystemError(fsError, 'status', 'read').message, 'aborted: interrupted');
    const pool = new ScanPool({ threads: 1 });
    try {
      const bytes = { kind: 'bytes', bytes: new ArrayBuffer(1024), length: 1024, startLimit: 1024, eof: true, chunker: DEFAULT_CHUNKER, implementation: 'typescript', digestAlgorithm: 'blake3' } as const;
      await assert.rejects(pool.run(bytes, c.signal), { code: 'XFER_ABORTED', message: 'aborted: interrupted' });
      const small = { kind: 'file', path: '/proc/self/status', start: 0, end: 10, fileSize: 10, wholeFile: true, chunker: DEFAULT_CHUNKER, implementation: 'typescript', digestAlgorithm: 'blake3' } as const;
      await assert.rejects(pool.run(small, c.signal), { code: 'XFER_ABORTED', message: 'aborted: interrupted' });
    } finally {
      await pool.close();
    }
  });
});

describe('retrying', () => {
  it('refuses a policy whose retries would never run out', async () => {
    const { retrying, DEFAULT_RETRY_POLICY } = await import('../src/core/retry.js');
    for (const retries of [NaN, Infinity, -1]) {
      let calls = 0;
      await assert.rejects(retrying(async () => void calls++, { policy: { ...DEFAULT_RETRY_POLICY, retries }, transient: () => true }), { code: 'XFER_INVALID_ARGUMENT' });
      assert.equal(calls, 0);
    }
  });
});
