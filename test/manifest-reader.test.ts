/** The streaming reader's contract for consumers: single use, cancellation, releasing the source. */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { AbortedError, InvalidArgumentError } from '../src/core/errors.js';
import { openManifest } from '../src/manifest/index.js';
import { TREE_SHA256, dirEntry, encode, pieces } from './manifest-helpers.js';

/** An async iterable over `bytes` that records whether it was released early. */
function tracked(bytes: Uint8Array, pieceSize: number): { source: AsyncIterable<Uint8Array>; released: () => boolean } {
  let released = false;
  const source: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]() {
      const inner = pieces(bytes, pieceSize);
      return {
        next: () => inner.next(),
        return: async () => {
          released = true;
          return inner.return();
        },
      };
    },
  };
  return { source, released: () => released };
}

const DIRS = Array.from({ length: 50 }, (_, i) => dirEntry(`d${String(i).padStart(2, '0')}`));

describe('ManifestReader', () => {
  it('events() may be called only once', async () => {
    const { bytes } = await encode(TREE_SHA256, DIRS);
    const reader = await openManifest(pieces(bytes, 64));
    const events = reader.events();
    assert.throws(() => reader.events(), InvalidArgumentError);
    let n = 0;
    for await (const _ of events) n++;
    assert.equal(n, DIRS.length);
  });

  it('stopping early, or close() without reading, releases the source', async () => {
    const { bytes } = await encode(TREE_SHA256, DIRS);
    const early = tracked(bytes, 64);
    const reader = await openManifest(early.source);
    for await (const _ of reader.events()) break;
    assert.equal(early.released(), true);

    const unread = tracked(bytes, 64);
    await (await openManifest(unread.source)).close();
    assert.equal(unread.released(), true);
  });

  it('stops with AbortedError when its signal is aborted', async () => {
    const { bytes } = await encode(TREE_SHA256, DIRS);
    const controller = new AbortController();
    const reader = await openManifest(pieces(bytes, 64), { signal: controller.signal });
    let seen = 0;
    await assert.rejects(
      (async () => {
        for await (const _ of reader.events()) if (++seen === 3) controller.abort();
      })(),
      AbortedError,
    );
    assert.equal(seen, 3);
    await assert.rejects(openManifest(pieces(bytes, 64), { signal: controller.signal }), AbortedError);
  });

  it('rejects a source that yields something other than bytes', async () => {
    async function* strings(): AsyncGenerator<Uint8Array> {
      yield 'XFERMAN' as unknown as Uint8Array;
    }
    await assert.rejects(openManifest(strings()), InvalidArgumentError);
  });
});
