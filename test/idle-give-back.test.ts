import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { DirectRangeReader, windowViews } from '../src/io/direct.js';
import { keepsLargeBuffers, largeBufferKeepers, sysIsNative, trimLargeBuffers } from '../src/io/sys.js';
import { push } from '../src/api.js';
import { createServer } from '../src/server/server.js';
import { ArrivalSlabs } from '../src/server/arrivals.js';
import { pseudoRandom } from './helpers/gen.js';
import { processIo } from './helpers/proc-io.js';

const MiB = 1024 * 1024;
const SYS = fileURLToPath(new URL('../src/io/sys.js', import.meta.url));

describe('an idle process gives back the large buffers kept for later', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-idle-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a server\'s free slabs go, and a held file\'s reader forgets its windows (the next read reads the file again)', async (t) => {
    if (!sysIsNative()) return t.diagnostic('the native addon is not built: buffers are not pooled');
    const slabs = new ArrivalSlabs();
    for (let i = 0; i < 3; i++) slabs.release(slabs.take(MiB));
    const chunks = Array.from({ length: 8 }, () => slabs.take(MiB));
    for (const c of chunks) slabs.release(c);
    assert.ok(slabs.freeSlabs > 0, 'slabs kept for the next chunks');

    const file = join(dir, 'held.bin');
    const content = pseudoRandom(12 * MiB, 5);
    await writeFile(file, content);
    const reader = await DirectRangeReader.open(file, content.length);
    try {
      const readOnce = async () => {
        const view = await reader.read(64 * 1024, 4 * MiB + 100);
        assert.ok(view.equals(content.subarray(4 * MiB + 100, 4 * MiB + 100 + 64 * 1024)));
        windowViews.release(view);
      };
      await readOnce();
      let before = processIo('rchar');
      await readOnce();
      assert.ok(processIo('rchar') - before < 4096, 'served from the window it keeps (reading /proc/self/io counts a little)');
      trimLargeBuffers(0);
      assert.equal(slabs.freeSlabs, 0, 'free slabs given back');
      before = processIo('rchar');
      await readOnce();
      assert.ok(processIo('rchar') - before >= 64 * 1024, 'the window was let go: read again');
      // Taken again after: slabs work as before.
      slabs.release(slabs.take(MiB));
    } finally {
      await reader.close();
    }
  });

  it('a reader closed is no longer among the owners told to give back (a busy server never idle gathers none)', async () => {
    const file = join(dir, 'keepers.bin');
    await writeFile(file, pseudoRandom(64 * 1024, 6));
    const before = largeBufferKeepers();
    const readers = await Promise.all([1, 2, 3].map(() => DirectRangeReader.open(file, 64 * 1024)));
    assert.equal(largeBufferKeepers(), before + 3);
    for (const r of readers) await r.close();
    assert.equal(largeBufferKeepers(), before);
  });

  it('a server gives back what it keeps as soon as its last client\'s session closes, without waiting for an idle spell', async (t) => {
    if (!sysIsNative()) return t.diagnostic('the native addon is not built: nothing is kept to give back');
    // Owners of kept buffers are told to give them back (relinquish) at the trim. The idle
    // timer would run LARGE_BUFFER_IDLE_MS (3 s) after the last use; the server runs it
    // LAST_SESSION_TRIM_DELAY_MS after its last session closed.
    const server = await createServer({ root: join(dir, 'root-last-session'), port: 0 });
    let told = 0;
    const owner = { relinquish: () => void told++ };
    const forget = keepsLargeBuffers(owner);
    try {
      const src = join(dir, 'last-session.bin');
      await writeFile(src, pseudoRandom(4 * MiB, 8));
      trimLargeBuffers(0); // an idle spell of earlier cases is over: none is due during the push
      const before = told;
      await push(src, `${server.url}/f.bin`);
      const pushed = Date.now();
      while (told === before && Date.now() - pushed < 1500) await new Promise((r) => setTimeout(r, 20));
      assert.ok(told > before, `not told to give back within ${Date.now() - pushed} ms of the push's end`);
    } finally {
      forget();
      await server.close();
    }
  });

  it('a server collects once when idle: large buffers its last command dropped are unmapped without waiting for V8', (t) => {
    if (!sysIsNative()) return t.diagnostic('the native addon is not built');
    // In children without --expose-gc: 32 MiB dropped stay mapped through an idle trim,
    // unless the process asked for the idle collection.
    const liveAfterTrim = (ask: boolean): number => {
      const child = `
        const { collectWhenIdle, largeBuffer, largeBufferStats, trimLargeBuffers } = await import(${JSON.stringify(SYS)});
        const stop = ${ask} ? collectWhenIdle() : () => {};
        let b = Array.from({ length: 4 }, () => largeBuffer(8 << 20).fill(1));
        b = undefined;
        trimLargeBuffers(0);
        await new Promise((r) => setTimeout(r, 100));
        stop();
        console.log(largeBufferStats().liveBytes);
      `;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return Number(r.stdout.trim());
    };
    const without = liveAfterTrim(false);
    assert.ok(without >= 32 * MiB, `${without / MiB} MiB mapped without the idle collection`);
    const collected = liveAfterTrim(true);
    assert.equal(collected, 0, `${collected / MiB} MiB still mapped after the idle collection`);
  });
});
