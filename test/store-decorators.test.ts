/*
 * Decorators composed by the location registry, once (issue 15 item 1): a store opened
 * through a location is wrapped in what its scheme declares (retry with the store's own
 * sorting of its errors, a limit of operations in flight), and the user's retry options
 * reach every kind of store alike, whether it is retried by the decorator (mem:) or in its
 * transport (http://, s3://). The failures come from test stores behind the real code (a
 * MemoryStore that fails on cue, a real server over one, moto behind a fault proxy), never
 * from a stand-in for a protocol.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Slots } from '../src/core/window.js';
import { openStoreLocation, parseLocation } from '../src/endpoint/open.js';
import type { StoreLocation } from '../src/endpoint/registry.js';
import {
  BusyError,
  IoError,
  isXferError,
  list,
  MemoryStore,
  PermissionDeniedError,
  ProtocolError,
  registerScheme,
  storeScheme,
  TransientError,
  unregisterScheme,
  type ManifestInfo,
  type OpOptions,
  type Scheme,
} from '../src/index.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { motoMissing, useS3Service } from './helpers/s3.js';
import { S3FaultProxy } from './helpers/s3-proxy.js';

/** A failure the test stores' scheme calls passing (its isPermanent says false). */
class PassingError extends IoError {}

/**
 * A MemoryStore whose listManifests and has fail with the errors queued in `failures`
 * (one per call, first in first out) before answering; it counts every call and the most
 * calls it ever had in flight at once.
 */
class FailingStore extends MemoryStore {
  failures: unknown[] = [];
  calls = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** How long each has() takes. */
  hasDelayMs = 0;

  override async listManifests(prefix: string, options?: OpOptions): Promise<ManifestInfo[]> {
    this.calls++;
    if (this.failures.length) throw this.failures.shift();
    return super.listManifests(prefix, options);
  }

  override async has(ids: Parameters<MemoryStore['has']>[0], options?: OpOptions): Promise<boolean[]> {
    this.calls++;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      if (this.hasDelayMs) await sleep(this.hasDelayMs);
      if (this.failures.length) throw this.failures.shift();
      return await super.has(ids, options);
    } finally {
      this.inFlight--;
    }
  }
}

const ID = { algorithm: 'blake3' as const, digest: new Uint8Array(32) };

describe('the registry composes the decorators a scheme declares around its stores', () => {
  const stores = new Map<string, FailingStore>();
  let schemes: Scheme[] = [];
  before(() => {
    const open = async (name: string) => stores.get(name)!;
    schemes = [
      // The mem: scheme of locations-store.test.ts, with decorators: its store's errors
      // sorted by the test's classifier, retried by the decorator; at most 2 operations at once.
      storeScheme('mem', 'mem:', open, { wire: false, decorators: { isPermanent: (e) => !(e instanceof PassingError), maxInFlight: 2 } }),
      // The same store with no decorators declared: nothing is retried or limited.
      storeScheme('bare', 'bare:', open, { wire: false }),
    ];
    for (const s of schemes) registerScheme(s);
  });
  after(() => {
    for (const s of schemes) unregisterScheme(s);
  });

  const opened = (text: string, options = {}) => openStoreLocation(parseLocation(text) as StoreLocation, options);

  it('a store opened through a location retries a passing failure, telling onRetry, and reports the retries made', async () => {
    const store = new FailingStore();
    stores.set('a', store);
    store.failures = [new PassingError('blip 1'), new PassingError('blip 2')];
    const events: number[] = [];
    const entries = await list('mem:a/', { retries: 3, onRetry: (e) => events.push(e.retry) });
    assert.deepEqual(entries, []);
    assert.equal(store.calls, 3, 'two failures, then the answer');
    assert.deepEqual(events, [1, 2]);

    store.failures = [new PassingError('blip')];
    store.calls = 0;
    const endpoint = await opened('mem:a/', { retries: 1 });
    assert.deepEqual(await endpoint.store.has([ID]), [false]);
    assert.equal(store.calls, 2);
    assert.equal(endpoint.retriesMade, 1);
    await endpoint.close();
  });

  it('a permanent failure is thrown at once, and a passing one once the retries are spent', async () => {
    const store = new FailingStore();
    stores.set('b', store);
    const denied = new PermissionDeniedError('denied by the test store');
    store.failures = [denied];
    let retries = 0;
    await assert.rejects(list('mem:b/', { retries: 3, onRetry: () => retries++ }), (err) => err === denied);
    assert.equal(store.calls, 1, 'not tried again');
    assert.equal(retries, 0);

    store.failures = [new PassingError('1'), new PassingError('2'), new PassingError('3')];
    store.calls = 0;
    await assert.rejects(list('mem:b/', { retries: 1 }), (err) => err instanceof PassingError && err.message === '2');
    assert.equal(store.calls, 2, 'the first attempt and one retry');
  });

  it('a scheme that declares no decorators gets none: its store is the one it opened', async () => {
    const store = new FailingStore();
    stores.set('c', store);
    const endpoint = await opened('bare:c/', { retries: 3 });
    assert.equal(endpoint.store, store);
    store.failures = [new PassingError('blip')];
    await assert.rejects(endpoint.store.has([ID]), PassingError);
    assert.equal(store.calls, 1);
  });

  it('the limit of operations in flight holds, and an operation waiting for its retry holds no slot', async () => {
    const store = new FailingStore();
    stores.set('d', store);
    store.hasDelayMs = 20;
    const endpoint = await opened('mem:d/');
    await Promise.all(Array.from({ length: 8 }, () => endpoint.store.has([ID])));
    assert.equal(store.calls, 8);
    assert.equal(store.maxInFlight, 2, 'never more than the scheme\'s maxInFlight, and that many');

    // Two calls fail and wait ~250 ms for their retries: were the limit outside the retry,
    // they would hold both slots meanwhile, and a third call would wait for them.
    store.hasDelayMs = 0;
    store.failures = [new PassingError('blip 1'), new PassingError('blip 2')];
    store.calls = 0;
    const retried = Promise.all([endpoint.store.has([ID]), endpoint.store.has([ID])]);
    await sleep(20);
    await endpoint.store.has([ID]);
    assert.equal(store.calls, 3, 'the third call ran while the two failed ones waited for their retries');
    await retried;
    assert.equal(store.calls, 5);
    await endpoint.close();
  });

  it('a scheme\'s decorators are checked when it is registered, with exact messages', () => {
    const bad: [object, string][] = [
      [{ maxInFlight: 0 }, 'options.decorators.maxInFlight must be a positive integer'],
      [{ maxInFlight: 1.5 }, 'options.decorators.maxInFlight must be a positive integer'],
      [{ isPermanent: true }, 'options.decorators.isPermanent must be a function'],
      [{ retryIn: 'somewhere' }, 'options.decorators.retryIn must be one of "store", "transport"'],
    ];
    for (const [decorators, message] of bad) {
      const scheme = storeScheme('odd', 'odd:', async () => new MemoryStore(), { wire: false, decorators: decorators as never });
      assert.throws(() => registerScheme(scheme), (err) => isXferError(err, 'XFER_INVALID_OPTION') && err.message === message, message);
    }
  });

  it('an aborted waiter for a slot stops waiting, and takes no slot', async () => {
    const slots = new Slots(1);
    let release!: () => void;
    const holder = slots.run(() => new Promise<void>((r) => (release = r)));
    const controller = new AbortController();
    const waiter = slots.run(async () => 'ran', controller.signal);
    controller.abort();
    await assert.rejects(waiter, (err) => isXferError(err, 'XFER_ABORTED'));
    release();
    await holder;
    assert.equal(slots.inFlight, 0);
    assert.equal(await slots.run(async () => 'next'), 'next');
  });

  it('weight admitted without waiting counts at once; untilRoom waits for a release and takes nothing', async () => {
    const slots = new Slots(Number.MAX_SAFE_INTEGER, 10);
    slots.admit(8);
    slots.admit(8); // over the limit: admitted all the same
    assert.equal(slots.tryAcquire(1), false);
    let roomAt = -1;
    const room = slots.untilRoom(3).then(() => (roomAt = slots.inFlight));
    slots.release(8);
    await new Promise((r) => setImmediate(r));
    assert.equal(roomAt, -1, 'still 8 of 10 bytes held: no room for 3');
    const aborted = new AbortController();
    const stopped = slots.untilRoom(3, aborted.signal);
    aborted.abort();
    await assert.rejects(stopped, (err) => isXferError(err, 'XFER_ABORTED'));
    slots.release(8);
    await room;
    assert.equal(roomAt, 0, 'untilRoom took no slot');
  });

  it('a limit given as a function is read at every check (uploads in flight per connection open)', async () => {
    let limit = 1;
    const slots = new Slots(() => limit);
    slots.admit();
    assert.equal(slots.tryAcquire(), false, 'one of 1 held');
    limit = 3;
    assert.equal(slots.tryAcquire(), true, 'the limit grew: room for more');
    assert.equal(slots.inFlight, 2);
    limit = 2;
    let waited = false;
    const room = slots.untilRoom().then(() => (waited = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(waited, false, 'two of 2 held: no room');
    slots.release();
    await room;
    limit = 0;
    assert.equal(slots.hasRoom(), false, 'one held, a limit under 1 counts as 1');
    slots.release();
    assert.equal(slots.hasRoom(), true);
  });
});

describe('the same composition reaches a server\'s store, retried in its transport (http://)', () => {
  let dir = '';
  let server: XferServer;
  const store = new FailingStore();
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-decorators-http-'));
    server = await createServer({ root: join(dir, 'root'), port: 0, host: '127.0.0.1', store });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the user\'s retries and onRetry apply, the HTTP store\'s classifier decides: busy (503) is retried, denied (403) is not', async () => {
    store.failures = [new BusyError('the test store is busy'), new BusyError('still busy')];
    store.calls = 0;
    const events: unknown[] = [];
    const endpoint = await openStoreLocation(parseLocation(`${server.url}/`) as StoreLocation, { retries: 2, onRetry: (e) => events.push(e.error) });
    try {
      assert.deepEqual(await endpoint.list(''), []);
      assert.equal(store.calls, 3);
      assert.equal(events.length, 2);
      assert.ok(events.every((e) => e instanceof TransientError), 'a 503 is the HTTP store\'s passing failure');
      assert.equal(endpoint.retriesMade, 2);

      store.failures = [new PermissionDeniedError('denied by the test store')];
      store.calls = 0;
      await assert.rejects(endpoint.list(''), (err) => isXferError(err, 'XFER_PERMISSION_DENIED') && !(err instanceof TransientError));
      assert.equal(store.calls, 1, 'not sent again');
      assert.equal(events.length, 2);
    } finally {
      await endpoint.close();
    }

    // Retries spent: the last failure, saying so (and only as many as asked for).
    store.failures = [new BusyError('1'), new BusyError('2'), new BusyError('3')];
    store.calls = 0;
    await assert.rejects(list(`${server.url}/`, { retries: 1 }), (err) => err instanceof ProtocolError && /gave up after 1 retry/.test(err.message));
    assert.equal(store.calls, 2);
    store.failures = [];
  });
});

describe('the same composition reaches an S3 store, retried in its transport (s3://)', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let proxy: S3FaultProxy;
  const env = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' };
  const saved: Record<string, string | undefined> = {};
  before(async () => {
    proxy = await S3FaultProxy.start(f.service.endpoint!);
    for (const [k, v] of Object.entries(env)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
  });
  after(async () => {
    await proxy.close();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('the user\'s retries and onRetry apply, the S3 store\'s classifier decides: SlowDown (503) is retried, AccessDenied (403) is not', async () => {
    const o = { s3Endpoint: proxy.endpoint, s3PathStyle: true };
    const events: number[] = [];
    proxy.log.length = 0;
    proxy.failNext(() => true, { kind: 'status', status: 503, code: 'SlowDown' }, 2);
    const endpoint = await openStoreLocation(parseLocation(f.service.base) as StoreLocation, { ...o, retries: 2, onRetry: (e) => events.push(e.retry) });
    try {
      assert.deepEqual(events, [1, 2]);
      assert.equal(endpoint.retriesMade, 2);
      assert.equal(proxy.log.filter((r) => r.fault).length, 2);
    } finally {
      await endpoint.close();
    }

    proxy.log.length = 0;
    proxy.failNext(() => true, { kind: 'status', status: 403, code: 'AccessDenied' }, 1);
    await assert.rejects(list(f.service.base, { ...o, retries: 2, onRetry: () => events.push(0) }), (err) => isXferError(err, 'XFER_PERMISSION_DENIED'));
    assert.equal(proxy.log.length, 1, 'not sent again');
    assert.deepEqual(events, [1, 2]);

    // Retries as the user asked: 1, not the default 5.
    proxy.log.length = 0;
    proxy.failNext(() => true, { kind: 'status', status: 503, code: 'SlowDown' }, 3);
    await assert.rejects(list(f.service.base, { ...o, retries: 1 }), (err) => isXferError(err) && /SlowDown/.test(err.message));
    assert.equal(proxy.log.length, 2);
  });
});
