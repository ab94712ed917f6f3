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
/** As many over HTTP as for the decoders (the stage crash that once cost a restart per ~50 inputs is fixed). */
const HTTP_PER_PARSER = PER_PARSER;

/**
 * Known failures of this short run on the current code, with what and a minimal repro
 * (test/harness/known.ts). The long run is `npm run fuzz`.
 */
const KNOWN: readonly KnownIssue[] = [];

describe('fuzz (short): every body the server parses, and the manifest decoder', () => {
  it(`${PER_PARSER} random and mutated inputs per decoder, ${HTTP_PER_PARSER} per HTTP parser: no 5xx, no crash, no hang, bounded memory, nothing left behind`, { timeout: 120_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-fuzz-test-'));
    try {
      const summary = await runFuzz({ dir: join(dir, 'run'), seed: seedFrom(process.env.FUZZ_SEED ?? '20261206'), perParser: PER_PARSER, httpPerParser: HTTP_PER_PARSER, concurrency: 96, stageGraceMs: 300,
        // In npm test the fuzzer shares two cores with other test files: a fetch of many
        // large chunks then took over 10 s now and then (replayed alone, milliseconds). A hang
        // is an answer that never comes; 30 s still finds it. The long run keeps 10 s, its bar.
        requestTimeoutMs: 30_000,
      });
      for (const p of DECODER_PARSERS) assert.equal(summary.kinds.get(p)?.count, PER_PARSER, `${p} ran every input`);
      // Requests lost to a server crash are not judged; the rest must be most of them.
      for (const p of HTTP_PARSERS) assert.ok((summary.kinds.get(p)?.count ?? 0) >= HTTP_PER_PARSER / 2, `${p} judged ${summary.kinds.get(p)?.count} inputs`);
      await reportAgainstKnown(t, summary, KNOWN);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
