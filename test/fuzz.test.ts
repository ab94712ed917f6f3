import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runFuzz } from './harness/fuzz.js';
import { DECODER_PARSERS, HTTP_PARSERS } from './harness/fuzz-inputs.js';
import { reportAgainstKnown, type KnownIssue } from './harness/known.js';
import { seedFrom } from './harness/rng.js';

const PER_PARSER = 2000;
/**
 * Fewer over HTTP while the server crash below is open: each crash costs a restart (about
 * a second on a loaded machine) and about 40 of them in 2,000 inputs per parser took the file over 60 s.
 * Raise to PER_PARSER once it is fixed.
 */
const HTTP_PER_PARSER = 1200;

/**
 * Known failures of this short run on the current code, with what and a minimal repro
 * (test/harness/known.ts). The long run is `npm run fuzz`.
 */
const KNOWN: readonly KnownIssue[] = [
  {
    check: 'server-alive',
    match: /AbortedError/,
    why:
      'xfer serve dies (exit 1) on an unhandled rejection of a stage\'s AbortedError: "a newer push of the same target started" (StageHub.begin) or "the client closed the stage" (the stage request\'s close handler). ' +
      'Repro: npm run fuzz -- --seed 1 --count 300 (about one crash per 50 stage requests when stage and manifest requests run together on 64 streams; no two-request repro found yet)',
  },
  {
    check: 'no-5xx:stage-file:XFER_PROTOCOL',
    why:
      'a stage list that ends without its end record is answered 502 XFER_PROTOCOL, though the client broke the format (400). ' +
      'Repro: POST /v1/stage/x?algorithm=blake3&mode=420&mtimeMs=0&size=100 whose body is one 36-byte record and 20 bytes of an end record',
  },
  { check: 'no-5xx:stage-file:XFER_VERIFY_FAILED', why: 'a stage whose chunks do not hash to the announced whole-file digest is answered 500 XFER_VERIFY_FAILED: the client announced a wrong digest (4xx)' },
  { check: 'no-5xx:stage-tree:XFER_VERIFY_FAILED', why: 'a tree stage whose entry digest does not match its stored chunks is answered 500 XFER_VERIFY_FAILED (a client error: 4xx)' },
  { check: 'no-5xx:manifest-put:XFER_VERIFY_FAILED', why: 'PUT of a manifest whose whole-file digest does not match its stored chunks is answered 500 XFER_VERIFY_FAILED (a client error: 4xx)' },
  { check: 'server-tmp-empty', why: 'a server that died during PUT /v1/manifests leaves <root>/tmp/manifest-*; nothing removes them at the next start' },
  { check: 'no-staging-leftovers', why: 'a server that died leaves staging copies (files/**/.xfer-*.tmp, named with its pid); a restarted server removes them only when the same target is staged again' },
];

describe('fuzz (short): every body the server parses, and the manifest decoder', () => {
  it(`${PER_PARSER} random and mutated inputs per decoder, ${HTTP_PER_PARSER} per HTTP parser: no 5xx, no crash, no hang, bounded memory, nothing left behind`, { timeout: 120_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-fuzz-test-'));
    try {
      const summary = await runFuzz({ dir: join(dir, 'run'), seed: seedFrom(process.env.FUZZ_SEED ?? '20261206'), perParser: PER_PARSER, httpPerParser: HTTP_PER_PARSER, concurrency: 96, stageGraceMs: 300 });
      for (const p of DECODER_PARSERS) assert.equal(summary.kinds.get(p)?.count, PER_PARSER, `${p} ran every input`);
      // Requests lost to a server crash are not judged; the rest must be most of them.
      for (const p of HTTP_PARSERS) assert.ok((summary.kinds.get(p)?.count ?? 0) >= HTTP_PER_PARSER / 2, `${p} judged ${summary.kinds.get(p)?.count} inputs`);
      await reportAgainstKnown(t, summary, KNOWN);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
