/*
 * The order of an S3Store's writes (packs, then an index naming them, then the manifest) means a
 * client that dies at any point never leaves a manifest whose chunks are not stored: a
 * child process pushing chunks and a manifest through the fault proxy is killed with
 * SIGKILL right after each of its PUTs in turn reached the server, and a fresh store
 * then finds every chunk of every manifest there is.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { digestFromHex } from '../src/core/ids.js';
import type { S3Store } from '../src/store/s3/index.js';
import { bytesSource, makeChunk, readAll, rejectsWith } from './store-conformance.js';
import { CRASH_CHUNKS } from './helpers/s3-crash-plan.js';
import { S3FaultProxy } from './helpers/s3-proxy.js';
import { freshLocation, listKeys, motoMissing, openTestStore, useS3Service } from './helpers/s3.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'helpers', 's3-crash-child.js');
/** Two packs, the index object naming both, the manifest. */
const PUTS_OF_A_PUSH = 4;
/** A test that hangs (a child that never exits) fails instead. */
const TEST_TIMEOUT_MS = 60_000;

describe('S3Store: a crash at any point leaves no manifest whose chunks are missing', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let proxy: S3FaultProxy;
  before(async () => {
    proxy = await S3FaultProxy.start(f.service.endpoint!);
  });
  after(async () => {
    await proxy?.close();
  });

  /** Runs the child through the proxy; kills it right after its `killAfterPut`-th PUT was stored. */
  async function runChild(url: string, killAfterPut: number | undefined): Promise<{ code: number | null; signal: string | null; puts: number }> {
    proxy.log.length = 0;
    const child = spawn(process.execPath, [CHILD, proxy.endpoint, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    let puts = 0;
    proxy.fault = (r) => {
      if (r.method !== 'PUT') return undefined;
      puts++;
      return puts === killAfterPut ? { kind: 'drop-after', then: () => child.kill('SIGKILL') } : undefined;
    };
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
    proxy.fault = undefined;
    if (killAfterPut === undefined) assert.equal(code, 0, err);
    return { code, signal, puts };
  }

  /** Every manifest in the store at `url` names only chunks a fresh store holds and reads back. */
  async function checkManifests(url: string): Promise<string[]> {
    const store = await openTestStore(f.service, url);
    try {
      const names = (await store.listManifests('')).map((m) => m.name);
      for (const name of names) {
        const ids = (await readAll(await store.getManifest(name))).toString().split('\n').map((hex) => ({ algorithm: 'blake3' as const, digest: digestFromHex(hex) }));
        assert.equal(ids.length, CRASH_CHUNKS);
        assert.deepEqual(await store.has(ids), ids.map(() => true), `manifest ${name} names chunks that are not stored`);
        for (const id of ids) await store.get(id);
      }
      return names;
    } finally {
      await store.close();
    }
  }

  it(`a push without a crash makes ${PUTS_OF_A_PUSH} PUTs, the manifest last`, { timeout: TEST_TIMEOUT_MS }, async () => {
    const url = freshLocation(f.service);
    const { puts } = await runChild(url, undefined);
    assert.equal(puts, PUTS_OF_A_PUSH);
    assert.ok(proxy.log.filter((r) => r.method === 'PUT').at(-1)!.path.endsWith('/manifests/m'));
    assert.deepEqual(await checkManifests(url), ['m']);
  });

  for (let k = 1; k <= PUTS_OF_A_PUSH; k++) {
    it(`killed right after PUT ${k} of ${PUTS_OF_A_PUSH}: ${k < PUTS_OF_A_PUSH ? 'no manifest' : 'the manifest and all its chunks'}`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const url = freshLocation(f.service);
      const { signal } = await runChild(url, k);
      assert.equal(signal, 'SIGKILL');
      const keys = await listKeys(f.service, url);
      // Uploads of two packs overlap: at least k objects reached the server, the kth not answered.
      assert.ok(keys.length >= k, `objects stored: ${keys.join(', ')}`);
      assert.deepEqual(await checkManifests(url), k < PUTS_OF_A_PUSH ? [] : ['m']);
    });
  }

  it('a putManifest aborted while an index upload hangs stores no manifest', { timeout: TEST_TIMEOUT_MS }, async () => {
    const url = freshLocation(f.service);
    const store: S3Store = await openTestStore(f.service, url, { endpoint: proxy.endpoint });
    const chunks = [1, 2, 3].map((seed) => makeChunk('blake3', 10_000, seed));
    for (const c of chunks) await store.put(c.id, c.data);
    proxy.failNext((r) => r.method === 'PUT' && r.path.endsWith('.idx'), { kind: 'hang' });
    const controller = new AbortController();
    const put = store.putManifest('m', bytesSource('m'), { signal: controller.signal });
    while (!proxy.log.some((r) => r.fault === 'hang')) await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    await rejectsWith(put, 'XFER_ABORTED');
    assert.deepEqual((await listKeys(f.service, url)).filter((k) => k.startsWith('manifests/')), []);
    proxy.fault = undefined;
    proxy.releaseHanging();
    await store.close();
  });
});
