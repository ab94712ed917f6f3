/**
 * Tallies of a fault or fuzz run: per kind of fault (or parser), how many cases ran, passed
 * and failed, plus every finding with what reproduces it. Printing is the caller's (bench/).
 */
import { writeFile } from 'node:fs/promises';

export interface Finding {
  /** The kind of fault or the parser, as in the table. */
  readonly kind: string;
  /** Which check failed: stable ids, so a test can list the failures it expects (KNOWN_ISSUES). */
  readonly check: string;
  /** One line: what was seen. */
  readonly message: string;
  /** How to see it again: the case's parameters, a command, the request. */
  readonly repro?: string;
}

export interface KindTally {
  count: number;
  passed: number;
  failed: number;
  /** Cases that could not run here (e.g. no tmpfs): not a pass, not a failure. */
  skipped: number;
}

export class Summary {
  readonly kinds = new Map<string, KindTally>();
  readonly findings: Finding[] = [];
  readonly notes: string[] = [];
  /** Figures beyond the table (e.g. peak server RSS), for the JSON file. */
  readonly figures: Record<string, number> = {};
  private readonly started = Date.now();

  constructor(readonly tool: 'soak' | 'fuzz', readonly seed: number) {}

  private tally(kind: string): KindTally {
    let t = this.kinds.get(kind);
    if (!t) this.kinds.set(kind, (t = { count: 0, passed: 0, failed: 0, skipped: 0 }));
    return t;
  }

  /** One case of `kind`: passed unless it has findings (recorded with fail()). */
  pass(kind: string): void {
    const t = this.tally(kind);
    t.count++;
    t.passed++;
  }

  /** One failed case of `kind`, with its findings (at least one). */
  fail(kind: string, findings: readonly Omit<Finding, 'kind'>[]): void {
    const t = this.tally(kind);
    t.count++;
    t.failed++;
    for (const f of findings) this.findings.push({ kind, ...f });
  }

  /** One case of `kind` that could not be judged; each distinct `why` is noted once. */
  skip(kind: string, why: string): void {
    this.tally(kind).skipped++;
    const note = `${kind}: skipped: ${why}`;
    if (!this.notes.includes(note)) this.notes.push(note);
  }

  get failed(): number {
    let n = 0;
    for (const t of this.kinds.values()) n += t.failed;
    return n;
  }

  /** Checks that failed, with how often: what a test compares with its list of known issues. */
  failedChecks(): Map<string, Finding[]> {
    const m = new Map<string, Finding[]>();
    for (const f of this.findings) m.set(f.check, [...(m.get(f.check) ?? []), f]);
    return m;
  }

  /** The summary table, as fixed-width text. */
  table(): string {
    const rows = [['kind', 'count', 'passed', 'failed', 'skipped']];
    const total: KindTally = { count: 0, passed: 0, failed: 0, skipped: 0 };
    for (const [kind, t] of [...this.kinds].sort((a, b) => a[0].localeCompare(b[0]))) {
      rows.push([kind, String(t.count), String(t.passed), String(t.failed), String(t.skipped)]);
      total.count += t.count;
      total.passed += t.passed;
      total.failed += t.failed;
      total.skipped += t.skipped;
    }
    rows.push(['total', String(total.count), String(total.passed), String(total.failed), String(total.skipped)]);
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
  }

  toJSON(): unknown {
    return {
      tool: this.tool,
      seed: this.seed,
      seconds: (Date.now() - this.started) / 1000,
      kinds: Object.fromEntries(this.kinds),
      figures: this.figures,
      findings: this.findings,
      notes: this.notes,
    };
  }

  async writeJson(path: string): Promise<void> {
    await writeFile(path, JSON.stringify(this.toJSON(), null, 2) + '\n');
  }

  /**
   * What `npm run soak` / `npm run fuzz` print at the end: the table, each finding with its
   * repro, the notes and figures; then the JSON is written to `json`. Resolves with the exit
   * code: 1 if anything failed.
   */
  async report(json: string, print: (line: string) => void = (line) => console.log(line)): Promise<number> {
    print('');
    print(this.table());
    for (const f of this.findings) print(`FINDING ${f.kind} [${f.check}] ${f.message}${f.repro ? `\n  repro: ${f.repro}` : ''}`);
    for (const n of this.notes) print(`note: ${n}`);
    for (const [k, v] of Object.entries(this.figures)) print(`${k}: ${v}`);
    await this.writeJson(json);
    print(`seed ${this.seed}; summary written to ${json}`);
    return this.failed > 0 ? 1 : 0;
  }
}
