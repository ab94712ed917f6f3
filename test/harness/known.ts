/**
 * Checks the short fault and fuzz runs in `npm test` are known to fail on the current code,
 * each with its minimal repro. A known failure is reported as a todo subtest (visible,
 * not failing the suite); any other failed check fails the test. Remove an entry once its
 * fix is merged: the check then guards the fix.
 */
import { strict as assert } from 'node:assert';
import type { TestContext } from 'node:test';
import type { Summary } from './summary.js';

/** Fails on any failed check not in `known`; files the known ones as todo subtests. */
export async function reportAgainstKnown(t: TestContext, summary: Summary, known: ReadonlyMap<string, string>): Promise<void> {
  t.diagnostic(`seed ${summary.seed}`);
  for (const line of summary.table().split('\n')) t.diagnostic(line);
  const failed = summary.failedChecks();
  const unexpected: string[] = [];
  for (const [check, findings] of failed) {
    const f = findings[0]!;
    const line = `${f.kind} [${check}] ${f.message}${f.repro ? ` -- repro: ${f.repro.slice(0, 600)}` : ''}`;
    if (known.has(check)) {
      await t.test(`known issue: ${check}`, { todo: known.get(check) }, () => assert.fail(line));
    } else unexpected.push(line);
  }
  for (const line of unexpected) t.diagnostic(`UNEXPECTED ${line}`);
  assert.equal(unexpected.length, 0, `${unexpected.length} unexpected failures (seed ${summary.seed}), first: ${unexpected[0]}`);
}
