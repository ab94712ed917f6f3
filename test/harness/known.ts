/**
 * Failures the short fault and fuzz runs in `npm test` are known to meet on the current
 * code, each with its minimal repro. A known failure is reported as a todo subtest
 * (visible, not failing the suite); any other failed check fails the test. Remove an entry
 * once its fix is merged: the check then guards the fix.
 */
import { strict as assert } from 'node:assert';
import type { TestContext } from 'node:test';
import type { Finding, Summary } from './summary.js';

export interface KnownIssue {
  /** The check id (Finding.check). */
  readonly check: string;
  /** Only findings whose message matches (default: all of the check). */
  readonly match?: RegExp;
  /** What is wrong and how to see it: shown as the todo's reason. */
  readonly why: string;
}

/** Fails on any finding no known issue covers; files the known ones met as todo subtests. */
export async function reportAgainstKnown(t: TestContext, summary: Summary, known: readonly KnownIssue[]): Promise<void> {
  t.diagnostic(`seed ${summary.seed}`);
  for (const line of summary.table().split('\n')) t.diagnostic(line);
  for (const n of summary.notes) t.diagnostic(n);
  const describe = (f: Finding) => `${f.kind} [${f.check}] ${f.message}${f.repro ? ` -- repro: ${f.repro.slice(0, 600)}` : ''}`;
  const met = new Map<KnownIssue, Finding>();
  const unexpected: string[] = [];
  for (const f of summary.findings) {
    const k = known.find((k) => k.check === f.check && (!k.match || k.match.test(f.message)));
    if (k) {
      if (!met.has(k)) met.set(k, f);
    } else unexpected.push(describe(f));
  }
  for (const [k, f] of met) await t.test(`known issue: ${k.check}`, { todo: k.why }, () => assert.fail(describe(f)));
  for (const line of unexpected) t.diagnostic(`UNEXPECTED ${line}`);
  assert.equal(unexpected.length, 0, `${unexpected.length} unexpected failures (seed ${summary.seed}), first: ${unexpected[0]}`);
}
