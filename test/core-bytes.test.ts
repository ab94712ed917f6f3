import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ByteQueue } from '../src/core/bytes.js';
import { pseudoRandom } from './helpers/gen.js';

describe('ByteQueue: records taken from arbitrarily split pieces', () => {
  it('returns the same bytes whatever the piece boundaries', () => {
    const data = pseudoRandom(10_000, 5);
    for (const piece of [1, 3, 7, 100, 4096, 10_000]) {
      const q = new ByteQueue();
      for (let o = 0; o < data.length; o += piece) q.push(data.subarray(o, o + piece));
      assert.equal(q.length, data.length);
      const out: Buffer[] = [];
      const sizes = [1, 4, 36, 1000, 2, 5000];
      let k = 0;
      while (q.length > 0) {
        const n = Math.min(sizes[k++ % sizes.length]!, q.length);
        if (n >= 4) assert.equal(q.readUInt32LE(0), q.peek(4).readUInt32LE(0));
        out.push(Buffer.from(q.take(n)));
      }
      assert.ok(Buffer.concat(out).equals(data), `piece size ${piece}`);
    }
  });

  it('peek does not consume; readUInt32LE reads across pieces', () => {
    const q = new ByteQueue();
    q.push(Buffer.from([1, 2]));
    q.push(Buffer.from([0, 0, 9]));
    assert.equal(q.readUInt32LE(0), 0x0201);
    assert.equal(q.length, 5);
    assert.deepEqual([...q.take(5)], [1, 2, 0, 0, 9]);
    assert.equal(q.length, 0);
  });

  it('take with a scratch buffer assembles a record spanning pieces in it; one piece stays a view', () => {
    const q = new ByteQueue();
    const a = Buffer.from([1, 2, 3]);
    q.push(a);
    q.push(Buffer.from([4, 5, 6]));
    const scratch = Buffer.alloc(8);
    const one = q.take(2, scratch);
    assert.deepEqual([...one], [1, 2]);
    assert.equal(one.buffer, a.buffer, 'within one piece: a view of it');
    const spanning = q.take(3, scratch);
    assert.deepEqual([...spanning], [3, 4, 5]);
    assert.equal(spanning.buffer, scratch.buffer, 'across pieces: copied into scratch');
    q.push(Buffer.from([7, 8]));
    const tooSmall = Buffer.alloc(1);
    const fresh = q.take(3, tooSmall);
    assert.deepEqual([...fresh], [6, 7, 8]);
    assert.notEqual(fresh.buffer, tooSmall.buffer, 'a scratch too small is not used');
  });
});
