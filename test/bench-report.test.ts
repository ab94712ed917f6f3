import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  barChart,
  buildCharts,
  mergeResults,
  PERF_END_MARKER,
  PERF_START_MARKER,
  renderReadmeSection,
  renderReport,
  replaceBetweenMarkers,
  writeMergedReport,
  xferPeerRatio,
  type ReportRow,
  type ResultsFile,
  type StoredMacroRow,
} from '../bench/report.js';

const GIB = 2 ** 30;

/** A stored macro row (current shape) with a 2 GiB input. */
function row(scenario: string, tool: string, median: number, extra: Partial<StoredMacroRow> = {}): StoredMacroRow {
  return {
    scenario,
    tool,
    runs: 3,
    wallSeconds: { median, min: median * 0.9, max: median * 1.2 },
    cpuSecondsMedian: median * 1.5,
    maxRssMiB: 100 + median,
    mbPerSecond: (2 * GIB) / median / 1e6,
    inputBytes: 2 * GIB,
    ...extra,
  };
}

const RUN: ResultsFile = {
  date: '2026-11-22T01:00:00.000Z',
  node: 'v20.20.2',
  command: 'npm run bench -- --macro --size 2G --runs 3',
  machine: { cpus: 2, cpuModel: 'Test CPU', memGiB: 24, kernel: '6.1.0' },
  macro: [
    row('limits', 'cat > /dev/null', 0.23),
    row('push to empty', 'xfer push (local)', 8),
    row('push to empty', 'borg create', 6.4),
    row('push to empty', 'xfer push -> xfer serve', 20),
    row('push to empty', 'rsync -> rsync daemon', 4, { sentBytesMedian: 2 * GIB, sentLabel: 'literal data' }),
    row('incremental', 'xfer push -> xfer serve', 12, { sentBytesMedian: 22_031_374, sentLabel: 'chunk bytes sent' }),
    row('incremental', 'rsync --no-whole-file', 5),
  ],
  micro: [{ suite: 'chunker', name: 'native', value: 2013.26592, unit: 'MB/s' }],
};

/** The body rows of the table under `### <scenario>`, split into cells. */
function tableRows(markdown: string, scenario: string): string[][] {
  const lines = markdown.split('\n');
  const at = lines.indexOf(`### ${scenario}`);
  assert.ok(at >= 0, `no section for ${scenario}`);
  const table: string[] = [];
  for (const l of lines.slice(at + 1)) {
    if (l.startsWith('#')) break;
    if (l.startsWith('|')) table.push(l);
  }
  return table.slice(2).map((l) => l.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim()));
}

const TOOL = 0;
const WALL = 2;
const MBPS = 3;
const RSS = 5;
const SENT = 6;
const RATIO = 7;

describe('report tables: one row per (scenario, tool) with the figures of the input', () => {
  const { markdown } = renderReport(RUN);

  it('has exactly one row per tool of each scenario, in input order, with its median, MB/s and RSS', () => {
    for (const scenario of ['push to empty', 'incremental']) {
      const input = RUN.macro!.filter((r) => r.scenario === scenario);
      const rows = tableRows(markdown, scenario);
      assert.deepEqual(
        rows.map((c) => c[TOOL]),
        input.map((r) => `\`${r.tool}\``),
      );
      rows.forEach((c, i) => {
        const r = input[i]!;
        assert.match(c[WALL]!, new RegExp(`^${r.wallSeconds.median.toFixed(2)} \\(${r.wallSeconds.min.toFixed(2)}–${r.wallSeconds.max.toFixed(2)}\\)$`));
        assert.equal(Number(c[MBPS]), Number(r.mbPerSecond.toFixed(r.mbPerSecond >= 100 ? 0 : 1)));
        assert.equal(c[RSS], r.maxRssMiB.toFixed(0));
      });
    }
  });

  it('shows the limits as a note, not as a scenario table', () => {
    assert.ok(!markdown.includes('### limits'));
    assert.match(markdown, /Physical limits \(run 1, input in page cache\): `cat > \/dev\/null` 0\.23 s/);
  });

  it('shows bytes sent with their label, and a dash where not measured', () => {
    const rows = tableRows(markdown, 'incremental');
    assert.equal(rows[0]![SENT], '22.0 MB chunk bytes sent');
    assert.equal(rows[1]![SENT], '—');
  });

  it('states date, machine, Node version and the exact command', () => {
    assert.match(markdown, /\*\*Date:\*\* 2026-11-22 \(UTC\)/);
    assert.match(markdown, /\*\*Machine:\*\* 2 CPUs \(Test CPU\), 24 GiB RAM, Linux 6\.1\.0/);
    assert.match(markdown, /\*\*Node:\*\* v20\.20\.2/);
    assert.ok(markdown.includes('`npm run bench -- --macro --size 2G --runs 3`, 2026-11-22 01:00 UTC'));
  });

  it('reads older results files: no machine, no inputBytes or sentLabel, micro rows in mbPerSecond', () => {
    const { inputBytes: _, ...old } = row('restore', 'xfer pull <- xfer serve', 11.27, { sentBytesMedian: 2 * GIB });
    const { markdown: md } = renderReport({ date: '2026-11-22T00:00:00.000Z', command: 'npm run bench', macro: [old], micro: [{ suite: 'hash', name: 'blake3 64K', mbPerSecond: 6175.9 }] });
    assert.match(md, /Input: 2 GiB\./);
    assert.equal(tableRows(md, 'restore')[0]![SENT], '2.15 GB sent');
    assert.match(md, /\| hash \| blake3 64K \| 6176 \| MB\/s \| 1 \|/);
    assert.match(md, /\*\*Machine:\*\* not recorded/);
  });
});

describe('ratio xfer/peer: xfer median wall divided by the peer median (below 1: xfer is faster)', () => {
  const rows = mergeResults([RUN]).macro;
  const scenario = (s: string) => rows.filter((r) => r.scenario === s);
  const find = (s: string, tool: string) => scenario(s).find((r) => r.tool === tool)!;

  it('compares like with like: a local peer with "(local)", a loopback peer with "xfer serve"', () => {
    assert.equal(xferPeerRatio(find('push to empty', 'borg create'), scenario('push to empty')), 8 / 6.4);
    assert.equal(xferPeerRatio(find('push to empty', 'rsync -> rsync daemon'), scenario('push to empty')), 20 / 4);
  });

  it('uses the only xfer row otherwise, and gives none for xfer rows', () => {
    assert.equal(xferPeerRatio(find('incremental', 'rsync --no-whole-file'), scenario('incremental')), 12 / 5);
    assert.equal(xferPeerRatio(find('incremental', 'xfer push -> xfer serve'), scenario('incremental')), undefined);
    assert.equal(xferPeerRatio(find('limits', 'cat > /dev/null'), scenario('limits')), undefined);
  });

  it('appears in the table with two decimals, naming the xfer row when there are several', () => {
    const { markdown } = renderReport(RUN);
    const push = tableRows(markdown, 'push to empty');
    assert.deepEqual(
      push.map((c) => c[RATIO]),
      ['—', '1.25 (vs `xfer push (local)`)', '—', '5.00 (vs `xfer push -> xfer serve`)'],
    );
    assert.deepEqual(
      tableRows(markdown, 'incremental').map((c) => c[RATIO]),
      ['—', '2.40'],
    );
  });
});

describe('SVG charts', () => {
  const charts = buildCharts(mergeResults([RUN]));
  const chart = (name: string) => charts.find((c) => c.name === name)!.svg;
  const count = (s: string, needle: string) => s.split(needle).length - 1;
  const charted = RUN.macro!.filter((r) => r.scenario !== 'limits');

  it('draws throughput, wall time, RSS and bytes sent; each an <svg> on a white background', () => {
    assert.deepEqual(
      charts.map((c) => c.name),
      ['throughput.svg', 'wall.svg', 'rss.svg', 'sent.svg', 'micro.svg'],
    );
    for (const c of charts) {
      assert.ok(c.svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'), c.name);
      assert.ok(c.svg.trimEnd().endsWith('</svg>'), c.name);
      assert.match(c.svg, /<rect width="100%" height="100%" fill="#ffffff"\/>/);
    }
  });

  it('has one bar per (scenario, tool) row, limits excluded; bytes sent only where measured', () => {
    for (const name of ['throughput.svg', 'wall.svg', 'rss.svg']) assert.equal(count(chart(name), 'class="bar"'), charted.length, name);
    assert.equal(count(chart('sent.svg'), 'class="bar"'), charted.filter((r) => r.sentBytesMedian !== undefined).length);
    assert.ok(chart('throughput.svg').includes('>push to empty</text>'));
    assert.ok(!chart('throughput.svg').includes('cat &gt; /dev/null'));
  });

  it('scales bars linearly: twice the value, twice the width', () => {
    const svg = barChart({
      title: 't',
      axisLabel: 'a',
      legend: [],
      groups: [{ title: 'g', bars: [1, 2].map((v) => ({ label: `b${v}`, value: v, valueLabel: String(v), color: '#000' })) }],
    });
    const widths = [...svg.matchAll(/class="bar"[^>]* width="([\d.]+)"/g)].map((m) => Number(m[1]));
    assert.equal(widths.length, 2);
    assert.ok(Math.abs(widths[1]! - 2 * widths[0]!) <= 0.2, `${widths}`);
  });

  it('on the log scale of bytes sent, each decade has the same width and 0 draws an empty bar', () => {
    const svg = barChart({
      title: 't',
      axisLabel: 'a',
      legend: [],
      logScale: true,
      groups: [{ title: 'g', bars: [1e3, 1e4, 1e5, 0].map((v) => ({ label: `b${v}`, value: v, valueLabel: String(v), color: '#000' })) }],
    });
    const [w3, w4, w5, w0] = [...svg.matchAll(/class="bar"[^>]* width="([\d.]+)"/g)].map((m) => Number(m[1]));
    assert.ok(w3! > 0, 'the smallest value still has a bar');
    assert.ok(Math.abs(w4! - w3! - (w5! - w4!)) <= 0.2, `${[w3, w4, w5]}`);
    assert.equal(w0, 0);
    assert.equal(count(chart('sent.svg'), '>1 GB</text>'), 1, 'decade ticks labelled in bytes');
  });

  it('escapes < & " in titles and labels', () => {
    const svg = barChart({ title: 'a < b & "c"', axisLabel: 'x', legend: [], groups: [{ title: 'g<&', bars: [{ label: 'tool <&>', value: 1, valueLabel: '1 & 2', color: '#000' }] }] });
    assert.ok(svg.includes('a &lt; b &amp; &quot;c&quot;'));
    assert.ok(svg.includes('g&lt;&amp;') && svg.includes('tool &lt;&amp;&gt;') && svg.includes('1 &amp; 2'));
    const textOnly = svg.replace(/<[^>]*>/g, '');
    assert.ok(!/[<>]|&(?!(amp|lt|gt|quot|#39);)/.test(textOnly), 'raw < > or & left in text');
  });

  it('is deterministic: the same input renders byte-identical Markdown and SVG', () => {
    const a = renderReport(RUN);
    const b = renderReport(structuredClone(RUN));
    assert.equal(a.markdown, b.markdown);
    assert.deepEqual(a.charts, b.charts);
    assert.ok(!/id=|\d{4}-\d\d-\d\dT/.test(a.charts.map((c) => c.svg).join('')), 'no ids or timestamps in SVG');
  });

  it('draws throughput and RSS over time for scale samples and prints scale scalars', () => {
    const scale = { sizeBytes: 1099511627776, seed: 20261122, rssFlatness: 1.1378123, mode: 'push', samples: [0, 1, 2].map((i) => ({ bytes: i * 1e9, seconds: i * 5, mbPerSecond: 200 + i, rssMiB: 150 })) };
    const { markdown, charts: cs } = renderReport({ date: '2026-11-23T00:00:00.000Z', command: 'npm run bench -- --scale 1T', scale });
    assert.deepEqual(
      cs.map((c) => c.name),
      ['scale-throughput.svg', 'scale-rss.svg'],
    );
    assert.equal(count(cs[0]!.svg.match(/points="([^"]*)"/)![1]!, ','), 3);
    assert.match(markdown, /\| sizeBytes \| 1099511627776 \|/, 'integers exact');
    assert.match(markdown, /\| seed \| 20261122 \|/);
    assert.match(markdown, /\| rssFlatness \| 1\.13781 \|/, 'fractions to six significant digits');
    assert.match(markdown, /\| mode \| push \|/);
  });
});

describe('merging several results files', () => {
  const older: ResultsFile = {
    date: '2026-11-22T01:00:00.000Z',
    command: 'npm run bench -- --macro',
    macro: [row('push to empty', 'xfer push (local)', 9), row('push to empty', 'borg create', 7)],
    micro: [{ suite: 'chunker', name: 'native', value: 1000, unit: 'MB/s' }],
  };
  const newer: ResultsFile = {
    date: '2026-11-22T02:00:00.000Z',
    command: 'npm run bench -- --macro --only b',
    macro: [row('push to empty', 'xfer push (local)', 5), row('first copy', 'xfer push -> xfer serve', 20)],
  };
  const micro: ResultsFile = { date: '2026-11-22T03:00:00.000Z', command: 'npm run bench -- --micro', micro: [{ suite: 'chunker', name: 'native', value: 2000, unit: 'MB/s' }] };
  const unused: ResultsFile = { date: '2026-11-21T00:00:00.000Z', command: 'npm run bench -- --old', micro: [{ suite: 'chunker', name: 'native', value: 1, unit: 'MB/s' }] };

  it('keeps the newest row per (scenario, tool) and per micro (suite, name), whatever the input order', () => {
    for (const files of [
      [older, newer, micro, unused],
      [micro, unused, newer, older],
    ]) {
      const m = mergeResults(files);
      const get = (s: string, t: string) => m.macro.find((r) => r.scenario === s && r.tool === t)!;
      assert.equal(m.macro.length, 3);
      assert.equal(get('push to empty', 'xfer push (local)').wallSeconds.median, 5);
      assert.equal(get('push to empty', 'borg create').wallSeconds.median, 7);
      assert.equal(get('first copy', 'xfer push -> xfer serve').wallSeconds.median, 20);
      assert.deepEqual(
        m.micro.map((r) => r.value),
        [2000],
      );
    }
  });

  it('keeps each row’s provenance and lists only the runs that contributed, oldest first', () => {
    const m = mergeResults([micro, unused, newer, older]);
    assert.deepEqual(
      m.sources.map((s) => s.command),
      [older.command, newer.command, micro.command],
    );
    const cmd = (r: { source: number }) => m.sources[r.source]!.command;
    assert.deepEqual(
      m.macro.map((r) => [r.tool, cmd(r)]),
      [
        ['xfer push (local)', newer.command],
        ['borg create', older.command],
        ['xfer push -> xfer serve', newer.command],
      ],
    );
    assert.equal(cmd(m.micro[0]!), micro.command);
  });

  it('marks peers measured in another run than xfer in the README table, and lists every command', () => {
    const section = renderReadmeSection(mergeResults([older, newer, micro]), { chartPrefix: 'docs/perf/', reportLink: 'docs/perf/report.md' });
    assert.match(section, /\| push to empty \(2 GiB, 3 runs\) \| `xfer push \(local\)` 5\.00 s[^|]*\| `borg create` 7\.00 s, [^|]*\(xfer\/peer 0\.71\) \(run 1\) \| 2 \|/);
    for (const c of [older, newer, micro]) assert.ok(section.includes(`\`${c.command}\``), c.command);
    assert.ok(section.includes('![Throughput per scenario (higher is better)](docs/perf/throughput.svg)'));
    assert.ok(section.includes('[docs/perf/report.md](docs/perf/report.md)'));
  });
});

describe('README Performance section', () => {
  const README = ['# x', '', '## Performance', '', 'Intro by humans.', '', PERF_START_MARKER, 'old generated text', PERF_END_MARKER, '', 'Notes by humans.', '', '## Next', ''].join('\n');

  it('replaces only the text between the markers and is idempotent', () => {
    const once = replaceBetweenMarkers(README, 'NEW');
    const [before, after] = README.split('old generated text');
    assert.ok(once.startsWith(`${before!}NEW\n`));
    assert.ok(once.endsWith(after!));
    assert.ok(!once.includes('old generated text'));
    assert.equal(replaceBetweenMarkers(once, 'NEW'), once);
  });

  it('refuses a README without both markers, or with them twice', () => {
    assert.throws(() => replaceBetweenMarkers('no markers', 'x'), /perf:start/);
    assert.throws(() => replaceBetweenMarkers(`${PERF_START_MARKER}\n${PERF_END_MARKER}\n${PERF_END_MARKER}`, 'x'), /perf:start/);
    assert.throws(() => replaceBetweenMarkers(`${PERF_END_MARKER}\n${PERF_START_MARKER}`, 'x'), /perf:start/);
  });

  describe('writeMergedReport on a temp copy', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'xfer-bench-report-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes report.md and the charts, rewrites the README between markers, and a second run changes nothing', async () => {
      const files = [join(dir, '2026-11-22T01-00-00-000Z.json'), join(dir, '2026-11-22T02-00-00-000Z.json')];
      await writeFile(files[0]!, JSON.stringify({ ...RUN, date: undefined }));
      await writeFile(files[1]!, JSON.stringify({ date: '2026-11-22T02:00:00.000Z', command: 'npm run bench -- --micro', micro: [{ suite: 'chunker', name: 'native', value: 1, unit: 'MB/s' }] }));
      const readme = join(dir, 'README.md');
      await writeFile(readme, README);
      const out = join(dir, 'docs', 'perf');
      await writeFile(join(dir, 'stale.svg'), 'not ours'); // outside outDir: must stay

      const snapshot = async () => {
        const names = (await readdir(out, { recursive: true })).sort();
        const files = names.filter((n) => n.includes('.'));
        return { names, contents: await Promise.all([...files.map((n) => readFile(join(out, n), 'utf8')), readFile(readme, 'utf8')]) };
      };
      await writeMergedReport({ files, outDir: out, readme });
      const first = await snapshot();
      await writeMergedReport({ files, outDir: out, readme });
      assert.deepEqual(await snapshot(), first);

      assert.deepEqual(first.names, ['micro.svg', 'report.md', 'rss.svg', 'runs', 'runs/2026-11-22T01-00-00-000Z.json', 'runs/2026-11-22T02-00-00-000Z.json', 'sent.svg', 'throughput.svg', 'wall.svg']);
      assert.equal(await readFile(join(out, 'runs', '2026-11-22T02-00-00-000Z.json'), 'utf8'), await readFile(files[1]!, 'utf8'), 'the runs behind the report are copied beside it');
      const text = await readFile(readme, 'utf8');
      assert.ok(text.startsWith(README.split('old generated text')[0]!));
      assert.ok(text.endsWith(README.split('old generated text')[1]!));
      assert.match(text, /native 1\.00 MB\/s/);
      assert.ok(text.includes('](docs/perf/wall.svg)'));
      assert.equal(await readFile(join(dir, 'stale.svg'), 'utf8'), 'not ours');
      const report = await readFile(join(out, 'report.md'), 'utf8');
      assert.ok(report.includes('2026-11-22 01:00 UTC (`2026-11-22T01-00-00-000Z.json`)'), 'date taken from the file name when absent');
    });
  });
});

// A row type check: ReportRow carries the run it came from.
const _typecheck: (r: ReportRow) => number = (r) => r.source;
void _typecheck;
