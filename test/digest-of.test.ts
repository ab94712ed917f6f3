import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { it } from 'node:test';
import { digestOf, digestsOfAsync } from '../src/hash/digest.js';
import { loadAddon } from '../src/native/addon.js';
import { pseudoRandom } from './helpers/gen.js';
import { withNative } from './helpers/native.js';

/** Sizes around BLAKE3's 64-byte block, 1 KiB chunk and the SIMD batch edges, and a large chunk. */
const SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 4095, 16 * 1024 + 1, 65536, 1024 * 1024 + 7];

it('digestOf (BLAKE3): the addon\'s one-shot hash and the package\'s give b3sum\'s digest, for every size around the block and chunk edges', async (t) => {
  const native = loadAddon()?.blake3Hash !== undefined;
  if (!native) t.diagnostic('the native addon is not built: only the package is checked');
  for (const size of SIZES) {
    const data = pseudoRandom(size, size + 11);
    const expected = execFileSync('b3sum', ['--no-names'], { input: data, encoding: 'utf8', maxBuffer: 1024 }).trim();
    // A view at an odd offset: the native side must hash the view, not its whole buffer.
    const view = Buffer.concat([Buffer.from([9, 9, 9]), data, Buffer.from([7])]).subarray(3, 3 + size);
    if (native) assert.equal(withNative(true, () => digestOf('blake3', view)).toString('hex'), expected, `addon, ${size} bytes`);
    assert.equal(withNative(false, () => digestOf('blake3', view)).toString('hex'), expected, `package (XFER_NO_NATIVE=1), ${size} bytes`);
  }
  const many = SIZES.map((size) => pseudoRandom(size, size + 11));
  const batch = await digestsOfAsync('blake3', many);
  many.forEach((d, i) => assert.ok(batch[i]!.equals(digestOf('blake3', d)), `digestsOfAsync agrees at ${SIZES[i]} bytes`));
});
