/**
 * A stage's request body (endpoint/http-stage.ts StageList) carries what was queued during
 * a turn of the event loop in one piece: a tree's manifest body is tapped a few dozen bytes
 * at a time (three writes per file), and each piece cost the push an HTTP/2 stream write.
 */
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { StageList } from '../src/endpoint/http-stage.js';
import { END_MARKER } from '../src/manifest/format.js';

describe('stage list body', () => {
  it("gathers the pieces queued in one turn of the event loop into one, in order, then the end marker's", async () => {
    const list = new StageList();
    const body = list.body();
    const first = body.next(); // waiting for the first piece, as the HTTP client does
    // Queued between awaits, as a push taps its manifest writer: one turn, many microtasks.
    for (let i = 0; i < 3000; i++) {
      list.addBytes(Buffer.from([i & 0xff, i >> 8]));
      await Promise.resolve();
    }
    const { value } = await first;
    assert.equal(value!.length, 6000);
    for (let i = 0; i < 3000; i++) assert.deepEqual([...value!.subarray(2 * i, 2 * i + 2)], [i & 0xff, i >> 8]);
    list.addBytes(Buffer.from('next turn'));
    list.endBody();
    const rest: Buffer[] = [];
    for await (const piece of body) rest.push(piece);
    assert.equal(rest.length, 1);
    assert.deepEqual(rest[0], Buffer.concat([Buffer.from('next turn'), Buffer.from([END_MARKER])]));
  });

  it('ends without another piece once stopped', async () => {
    const list = new StageList();
    const body = list.body();
    const first = body.next();
    list.addBytes(Buffer.from('abc'));
    list.stop();
    assert.equal((await first).done, true);
  });
});
