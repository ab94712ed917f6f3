import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { parseGrace } from '../src/cli/gc.js';

describe('xfer gc --grace', () => {
  it('reads 0 and durations with a unit (ms package: 90s, 30m, 1.5h, 7d, 2 days)', () => {
    assert.equal(parseGrace('0'), 0);
    assert.equal(parseGrace('90s'), 90_000);
    assert.equal(parseGrace('30m'), 1_800_000);
    assert.equal(parseGrace('1.5h'), 5_400_000);
    assert.equal(parseGrace('7d'), 604_800_000);
    assert.equal(parseGrace('2 days'), 172_800_000);
  });

  it('refuses a bare number (it would be read as milliseconds) and what is no duration, in one line', () => {
    for (const bad of ['24', '-1h', 'h', '1 fortnight', '', 'soon']) {
      assert.throws(() => parseGrace(bad), (e: Error) => /^--grace: expected 0 or a duration/.test(e.message) && !e.message.includes('\n'), bad);
    }
  });
});
