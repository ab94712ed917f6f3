/**
 * The benchmark report: Markdown tables and hand-written SVG charts from the results files
 * bench/run.ts writes (bench/results/<timestamp>.json).
 *
 * Contracts:
 * - Everything but the functions that read or write files (readResultsFile, listResultsFiles,
 *   writeReport, writeMergedReport) is pure and deterministic: the same input gives
 *   byte-identical output (no clock, no random ids), so committed reports regenerate cleanly.
 * - Any results file version is accepted: older files lack `machine`, a macro row's
 *   `inputBytes` and `sentLabel`, and carry micro rows as `{ suite, name, mbPerSecond }`.
 * - Several results files merge into one report (one full run may be split over several
 *   invocations): the newest row per macro (scenario, tool) and per micro (suite, name) wins,
 *   and every row keeps the run (date + command) it came from.
 * - Units: MB/s = 10^6 bytes of input per second of wall time; MB/GB = 10^6/10^9 bytes;
 *   MiB/GiB = 2^20/2^30 bytes; times in seconds.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import type { MacroRow } from './harness.js';
import type { MicroResult } from './micro.js';

// ---------------------------------------------------------------------------------------
// Input shapes

/** The machine a run was measured on (bench/run.ts; absent in older files). */
export interface Machine {
  readonly cpus?: number;
  readonly cpuModel?: string;
  readonly memGiB?: number;
  readonly kernel?: string;
}

/** A macro row as stored: older files lack `inputBytes` (and `sentLabel`). */
export type StoredMacroRow = Omit<MacroRow, 'inputBytes'> & { readonly inputBytes?: number };

/** A micro row as stored: older files carry `mbPerSecond` instead of `value` + `unit`. */
export interface StoredMicroRow {
  readonly suite: string;
  readonly name: string;
  readonly value?: number;
  readonly unit?: MicroResult['unit'] | string;
  readonly mbPerSecond?: number;
}

/** A results file as bench/run.ts writes it (any version); `file` is its name, if read from disk. */
export interface ResultsFile {
  readonly date?: string;
  readonly node?: string;
  readonly command?: string;
  readonly machine?: Machine;
  readonly micro?: readonly StoredMicroRow[];
  readonly macro?: readonly StoredMacroRow[];
  /** The scale run (bench/scale.ts); its shape is rendered generically. */
  readonly scale?: unknown;
  readonly file?: string;
}

// ---------------------------------------------------------------------------------------
// Normalized, merged shape

/** One run (one bench invocation) that contributed figures to a report. */
export interface Source {
  /** ISO date the run started ('' if unknown). */
  readonly date: string;
  readonly command: string;
  readonly node?: string;
  readonly machine?: Machine;
  /** Base name of its results file, if known. */
  readonly file?: string;
}

/** A macro row with `inputBytes` always set and the index (into `sources`) of its run. */
export interface ReportRow extends MacroRow {
  readonly source: number;
}

export interface ReportMicro {
  readonly suite: string;
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly source: number;
}

/** What a report is rendered from: rows in first-seen order, sources oldest first, all used. */
export interface MergedResults {
  readonly sources: readonly Source[];
  readonly macro: readonly ReportRow[];
  readonly micro: readonly ReportMicro[];
  readonly scale?: { readonly value: unknown; readonly source: number };
}

/** The scenario whose rows are physical limits (cat, b3sum): a note, not a table or a bar. */
export const LIMITS_SCENARIO = 'limits';
/** README markers; the text between them is generated, everything else is left alone. */
export const PERF_START_MARKER = '<!-- perf:start -->';
export const PERF_END_MARKER = '<!-- perf:end -->';
/** File name of the merged report inside its output directory. */
export const REPORT_FILE_NAME = 'report.md';
/** Subdirectory of the merged report's directory holding the results files it was made from. */
export const RUNS_DIR_NAME = 'runs';

const BYTES_PER_MB = 1e6;

/** A row of xfer itself (as opposed to a peer): its tool name starts with "xfer". */
export const isXfer = (tool: string): boolean => tool.startsWith('xfer');

/** Tool names that talk to a server: "xfer push -> xfer serve", "rsync -> rsync daemon". */
const LOOPBACK_TOOL_RE = /serve|daemon|loopback|->|<-|:\/\//;
const transport = (tool: string): 'loopback' | 'local' => (LOOPBACK_TOOL_RE.test(tool) ? 'loopback' : 'local');

/** `2026-11-22T01-36-59-335Z.json` (bench/run.ts's file names) -> `2026-11-22T01:36:59.335Z`. */
export function dateFromFileName(name: string): string | undefined {
  const m = /(\d{4}-\d\d-\d\d)T(\d\d)-(\d\d)-(\d\d)-(\d{3})Z/.exec(name);
  return m ? `${m[1]}T${m[2]}:${m[3]}:${m[4]}.${m[5]}Z` : undefined;
}

function requireNumber(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${what} is not a number`);
  return v;
}

/** A stored macro row with every field checked; `inputBytes` derived (MB/s × median) if absent. */
export function normalizeMacroRow(r: StoredMacroRow, source: number, where = 'macro row'): ReportRow {
  const at = `${where} (${String(r?.scenario)} / ${String(r?.tool)})`;
  if (typeof r?.scenario !== 'string' || typeof r.tool !== 'string') throw new Error(`${where} lacks scenario or tool`);
  const median = requireNumber(r.wallSeconds?.median, `${at}: wallSeconds.median`);
  const mbPerSecond = requireNumber(r.mbPerSecond, `${at}: mbPerSecond`);
  return {
    scenario: r.scenario,
    tool: r.tool,
    runs: requireNumber(r.runs, `${at}: runs`),
    wallSeconds: { median, min: requireNumber(r.wallSeconds.min, `${at}: wallSeconds.min`), max: requireNumber(r.wallSeconds.max, `${at}: wallSeconds.max`) },
    cpuSecondsMedian: requireNumber(r.cpuSecondsMedian, `${at}: cpuSecondsMedian`),
    maxRssMiB: requireNumber(r.maxRssMiB, `${at}: maxRssMiB`),
    mbPerSecond,
    inputBytes: r.inputBytes ?? Math.round(mbPerSecond * BYTES_PER_MB * median),
    ...(r.sentBytesMedian !== undefined ? { sentBytesMedian: requireNumber(r.sentBytesMedian, `${at}: sentBytesMedian`) } : {}),
    ...(r.sentLabel !== undefined ? { sentLabel: r.sentLabel } : {}),
    source,
  };
}

/** A stored micro row; old `{ mbPerSecond }` rows become `{ value, unit: 'MB/s' }`. */
export function normalizeMicroRow(r: StoredMicroRow, source: number, where = 'micro row'): ReportMicro {
  if (typeof r?.suite !== 'string' || typeof r.name !== 'string') throw new Error(`${where} lacks suite or name`);
  const value = requireNumber(r.value ?? r.mbPerSecond, `${where} (${r.suite} / ${r.name}): value`);
  return { suite: r.suite, name: r.name, value, unit: r.unit ?? 'MB/s', source };
}

const rowKey = (a: string, b: string) => `${a}\u0000${b}`;
/** Code-unit order (locale-independent, so merges are reproducible anywhere). */
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Merges results files: runs are ordered by date (then file name); for every macro
 * (scenario, tool), micro (suite, name) and the scale run, the newest run's row wins. Rows
 * keep the position where their key was first seen (oldest run first, file order within a
 * run), so scenarios read in the order the bench runs them. Runs that contributed no row are
 * dropped from `sources`.
 */
export function mergeResults(files: readonly ResultsFile[]): MergedResults {
  const ordered = files
    .map((f) => ({ f, date: f.date ?? (f.file ? dateFromFileName(f.file) : undefined) ?? '' }))
    .sort((a, b) => compare(a.date, b.date) || compare(a.f.file ?? '', b.f.file ?? ''));
  const macro = new Map<string, ReportRow>();
  const micro = new Map<string, ReportMicro>();
  let scale: MergedResults['scale'];
  ordered.forEach(({ f }, s) => {
    const where = f.file ?? `results ${s + 1}`;
    (f.macro ?? []).forEach((r, i) => macro.set(rowKey(r?.scenario, r?.tool), normalizeMacroRow(r, s, `${where}: macro row ${i + 1}`)));
    (f.micro ?? []).forEach((r, i) => micro.set(rowKey(r?.suite, r?.name), normalizeMicroRow(r, s, `${where}: micro row ${i + 1}`)));
    if (f.scale !== undefined && f.scale !== null) scale = { value: f.scale, source: s };
  });
  const all: Source[] = ordered.map(({ f, date }) => ({
    date,
    command: f.command ?? '(command not recorded)',
    ...(f.node ? { node: f.node } : {}),
    ...(f.machine ? { machine: f.machine } : {}),
    ...(f.file ? { file: f.file } : {}),
  }));
  // Keep only the runs rows came from, renumbered in date order.
  const used = [...new Set([...macro.values(), ...micro.values(), ...(scale ? [scale] : [])].map((r) => r.source))].sort((a, b) => a - b);
  const renumber = new Map(used.map((old, i) => [old, i]));
  const re = <T extends { source: number }>(r: T): T => ({ ...r, source: renumber.get(r.source)! });
  return {
    sources: used.map((i) => all[i]!),
    macro: [...macro.values()].map(re),
    micro: [...micro.values()].map(re),
    ...(scale ? { scale: re(scale) } : {}),
  };
}

const isMerged = (x: ResultsFile | MergedResults): x is MergedResults => Array.isArray((x as MergedResults).sources);
const toMerged = (x: ResultsFile | MergedResults): MergedResults => (isMerged(x) ? x : mergeResults([x]));

// ---------------------------------------------------------------------------------------
// Comparisons

export interface ScenarioGroup {
  readonly scenario: string;
  readonly rows: readonly ReportRow[];
}

/** Rows grouped by scenario, scenarios and rows in their given order. */
export function groupByScenario(rows: readonly ReportRow[]): ScenarioGroup[] {
  const groups = new Map<string, ReportRow[]>();
  for (const r of rows) groups.set(r.scenario, [...(groups.get(r.scenario) ?? []), r]);
  return [...groups].map(([scenario, rs]) => ({ scenario, rows: rs }));
}

/**
 * The xfer row a peer row is compared with: among the scenario's xfer rows, the first of the
 * same transport (a loopback peer such as "rsync -> rsync daemon" against "xfer push -> xfer
 * serve", a local one such as "borg create" against "xfer push (local)"), else the first.
 * Undefined for xfer rows themselves and in scenarios without xfer.
 */
export function referenceXferRow(row: ReportRow, scenarioRows: readonly ReportRow[]): ReportRow | undefined {
  if (isXfer(row.tool)) return undefined;
  const xfers = scenarioRows.filter((r) => isXfer(r.tool));
  return xfers.find((x) => transport(x.tool) === transport(row.tool)) ?? xfers[0];
}

/** xfer's median wall time divided by the peer's: below 1 means xfer is faster. */
export function xferPeerRatio(row: ReportRow, scenarioRows: readonly ReportRow[]): number | undefined {
  const ref = referenceXferRow(row, scenarioRows);
  return ref && row.wallSeconds.median > 0 ? ref.wallSeconds.median / row.wallSeconds.median : undefined;
}

// ---------------------------------------------------------------------------------------
// Number and text formatting (Markdown and SVG share these)

const DECIMAL_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'] as const;
const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/** Bytes in decimal units, three significant digits: 22031374 -> "22.0 MB". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${Math.round(n)} B`;
  let v = n;
  let u = 0;
  while (v >= 999.5 && u < DECIMAL_UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toPrecision(3)} ${DECIMAL_UNITS[u]}`;
}

/** Sizes in binary units, up to two decimals: 2147483648 -> "2 GiB". */
export function formatSize(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < BINARY_UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return `${Number(v.toFixed(2))} ${BINARY_UNITS[u]}`;
}

/** MB/s with precision that suits its size: 1556, 94.0, 9.96. */
export const formatMBps = (v: number): string => v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
export const formatSeconds = (s: number): string => s.toFixed(2);
export const formatMiB = (m: number): string => m.toFixed(0);
export const formatRatio = (r: number): string => r.toFixed(2);
const formatCount = (v: number): string => Math.round(v).toLocaleString('en-US');
const formatMicroValue = (v: number, unit: string): string => (unit === 'MB/s' ? formatMBps(v) : formatCount(v));
const formatSent = (r: MacroRow): string => (r.sentBytesMedian === undefined ? '' : `${formatBytes(r.sentBytesMedian)} ${r.sentLabel ?? 'sent'}`);

/** `2026-11-22T01:26:30.991Z` -> `2026-11-22 01:26 UTC` (bench dates are UTC ISO strings). */
export function formatDate(iso: string): string {
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(iso) ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : iso || 'date unknown';
}

export function formatMachine(m: Machine): string {
  const parts = [
    m.cpus !== undefined ? `${m.cpus} CPUs${m.cpuModel ? ` (${m.cpuModel.trim().replace(/\s+/g, ' ')})` : ''}` : m.cpuModel,
    m.memGiB !== undefined ? `${m.memGiB} GiB RAM` : undefined,
    m.kernel ? `Linux ${m.kernel}` : undefined,
  ];
  return parts.filter(Boolean).join(', ') || 'not recorded';
}

/** Text safe inside a Markdown table cell. */
export const escapeMarkdown = (s: string): string => s.replace(/([\\|*_`[\]])/g, '\\$1').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
/** A tool name as inline code (GitHub tables still need `|` escaped inside code spans). */
const code = (s: string): string => `\`${s.replace(/`/g, "'").replace(/\|/g, '\\|')}\``;
/** Text safe in SVG text and attributes. */
export const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');

function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** "run N" (1-based) when a row's run differs from the one its context names. */
const runTag = (source: number, contextSource: number): string => (source === contextSource ? '' : ` (run ${source + 1})`);

// ---------------------------------------------------------------------------------------
// SVG charts

export const CHART_WIDTH_PX = 800;
const CHART_PADDING_PX = 12;
const FONT_SIZE_PX = 12;
/** Average glyph advance of the sans-serif font at FONT_SIZE_PX, for layout estimates. */
const CHAR_WIDTH_PX = 6.6;
const TITLE_HEIGHT_PX = 26;
const LEGEND_ROW_HEIGHT_PX = 18;
const LEGEND_SWATCH_PX = 10;
const GROUP_TITLE_HEIGHT_PX = 18;
const BAR_HEIGHT_PX = 14;
const BAR_GAP_PX = 4;
const GROUP_GAP_PX = 8;
const AXIS_HEIGHT_PX = 36;
const LABEL_GAP_PX = 6;
const MIN_LABEL_WIDTH_PX = 80;
const MAX_LABEL_CHARS = 40;
const TARGET_TICKS = 5;
const LINE_PLOT_HEIGHT_PX = 200;
const Y_AXIS_WIDTH_PX = 64;
const FONT_FAMILY = "-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif";
const BACKGROUND = '#ffffff';
const TEXT_COLOR = '#1f2328';
const GRID_COLOR = '#d0d7de';
const XFER_COLOR = '#0072b2';
/** Okabe-Ito colours (distinguishable with colour blindness), one per peer family. */
const PEER_COLORS = ['#e69f00', '#009e73', '#cc79a7', '#d55e00', '#56b4e9', '#999999', '#f0e442'] as const;

export interface Bar {
  readonly label: string;
  readonly value: number;
  readonly valueLabel: string;
  readonly color: string;
  /** Optional [low, high] drawn as a line over the bar (min–max of runs). */
  readonly range?: readonly [number, number];
}
export interface BarGroup {
  readonly title: string;
  readonly bars: readonly Bar[];
}
export interface BarChartSpec {
  readonly title: string;
  readonly axisLabel: string;
  readonly groups: readonly BarGroup[];
  readonly legend: readonly { readonly label: string; readonly color: string }[];
  /** Logarithmic axis (one grid line per decade) for values spanning decades; 0 draws no bar. */
  readonly logScale?: boolean;
  readonly formatTick?: (v: number) => string;
}

/** Coordinates rounded to 0.1 px keep the SVG small and stable. */
const px = (v: number): number => Math.round(v * 10) / 10;
const textWidth = (s: string): number => s.length * CHAR_WIDTH_PX;
const clip = (s: string): string => (s.length > MAX_LABEL_CHARS ? `${s.slice(0, MAX_LABEL_CHARS - 1)}…` : s);
const text = (x: number, y: number, s: string, attrs = ''): string => `<text x="${px(x)}" y="${px(y)}"${attrs}>${escapeXml(s)}</text>`;

/** An axis from 0 to a "nice" maximum ≥ max, with a 1/2/5×10^k step giving about TARGET_TICKS ticks. */
export function niceAxis(max: number): { max: number; ticks: number[] } {
  if (!(max > 0)) return { max: 1, ticks: [0, 1] };
  const raw = max / TARGET_TICKS;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].find((m) => m * mag >= raw)! * mag;
  const n = Math.ceil(max / step - 1e-9);
  const ticks = Array.from({ length: n + 1 }, (_, i) => Number((i * step).toPrecision(12)));
  return { max: ticks.at(-1)!, ticks };
}
const formatTick = (v: number): string => String(Number(v.toPrecision(6)));

/** A decade axis [10^a, 10^b] with 10^a below every positive value (so each gets a visible bar) and 10^b ≥ all. */
export function logAxis(values: readonly number[]): { min: number; max: number; ticks: number[] } {
  const pos = values.filter((v) => v > 0);
  if (!pos.length) return { min: 1, max: 10, ticks: [1, 10] };
  const lo = Math.ceil(Math.log10(Math.min(...pos))) - 1;
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...pos))));
  const ticks = Array.from({ length: hi - lo + 1 }, (_, i) => Number((10 ** (lo + i)).toPrecision(12)));
  return { min: ticks[0]!, max: ticks.at(-1)!, ticks };
}

/** Maps values to x over [plotX, plotX + width]: linear from 0, or by decades; ≤ 0 maps to plotX. */
function xScale(values: readonly number[], log: boolean, plotX: number, width: number): { ticks: number[]; xOf(v: number): number } {
  if (log) {
    const a = logAxis(values);
    const span = Math.log10(a.max) - Math.log10(a.min);
    return { ticks: a.ticks, xOf: (v) => (v > 0 ? plotX + ((Math.log10(v) - Math.log10(a.min)) / span) * width : plotX) };
  }
  const a = niceAxis(Math.max(0, ...values));
  return { ticks: a.ticks, xOf: (v) => plotX + (Math.max(0, v) / a.max) * width };
}

function svgDocument(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${px(height)}" viewBox="0 0 ${width} ${px(height)}" font-family="${escapeXml(FONT_FAMILY)}" font-size="${FONT_SIZE_PX}" fill="${TEXT_COLOR}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="100%" height="100%" fill="${BACKGROUND}"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** Legend items left to right, wrapping; returns the SVG lines and the height used. */
function legendLines(items: BarChartSpec['legend'], top: number, width: number): { lines: string[]; height: number } {
  const lines: string[] = [];
  let x = CHART_PADDING_PX;
  let row = 0;
  for (const item of items) {
    const w = LEGEND_SWATCH_PX + 4 + textWidth(item.label) + 16;
    if (x > CHART_PADDING_PX && x + w > width - CHART_PADDING_PX) {
      x = CHART_PADDING_PX;
      row++;
    }
    const y = top + row * LEGEND_ROW_HEIGHT_PX;
    lines.push(`<rect class="key" x="${px(x)}" y="${px(y + 2)}" width="${LEGEND_SWATCH_PX}" height="${LEGEND_SWATCH_PX}" fill="${item.color}"/>`, text(x + LEGEND_SWATCH_PX + 4, y + 11, item.label));
    x += w;
  }
  return { lines, height: items.length ? (row + 1) * LEGEND_ROW_HEIGHT_PX : 0 };
}

/**
 * A grouped horizontal bar chart: one group per scenario (bold title), one bar per tool with
 * its label on the left and its value label after it, a linear axis from 0 with grid lines,
 * a legend. Each bar is a `<rect class="bar">`; white background for dark-mode viewers.
 */
export function barChart(spec: BarChartSpec): string {
  const bars = spec.groups.flatMap((g) => g.bars);
  const labelWidth = Math.max(MIN_LABEL_WIDTH_PX, ...bars.map((b) => textWidth(clip(b.label)))) + LABEL_GAP_PX;
  const valueWidth = Math.max(0, ...bars.map((b) => textWidth(b.valueLabel))) + LABEL_GAP_PX * 2;
  const plotX = CHART_PADDING_PX + labelWidth;
  const plotWidth = CHART_WIDTH_PX - plotX - valueWidth - CHART_PADDING_PX;
  const axis = xScale(bars.flatMap((b) => [b.value, ...(b.range ?? [])]), spec.logScale ?? false, plotX, plotWidth);
  const xOf = axis.xOf;
  const tickLabel = spec.formatTick ?? formatTick;

  const legend = legendLines(spec.legend, CHART_PADDING_PX + TITLE_HEIGHT_PX, CHART_WIDTH_PX);
  const plotTop = CHART_PADDING_PX + TITLE_HEIGHT_PX + legend.height + 4;
  const body: string[] = [];
  let y = plotTop;
  for (const g of spec.groups) {
    body.push(text(CHART_PADDING_PX, y + 13, g.title, ' font-weight="bold"'));
    y += GROUP_TITLE_HEIGHT_PX;
    for (const b of g.bars) {
      const end = xOf(b.value);
      const mid = y + BAR_HEIGHT_PX / 2;
      body.push(
        `<rect class="bar" x="${px(plotX)}" y="${px(y)}" width="${px(end - plotX)}" height="${BAR_HEIGHT_PX}" fill="${b.color}"/>`,
        text(plotX - LABEL_GAP_PX, mid + 4, clip(b.label), ' text-anchor="end"'),
      );
      let labelX = end;
      if (b.range) {
        const [lo, hi] = [xOf(b.range[0]), xOf(b.range[1])];
        body.push(`<path class="range" d="M${px(lo)} ${px(mid)}H${px(hi)}M${px(lo)} ${px(mid - 4)}v8M${px(hi)} ${px(mid - 4)}v8" stroke="${TEXT_COLOR}" fill="none"/>`);
        labelX = Math.max(end, hi);
      }
      body.push(text(labelX + LABEL_GAP_PX, mid + 4, b.valueLabel));
      y += BAR_HEIGHT_PX + BAR_GAP_PX;
    }
    y += GROUP_GAP_PX;
  }
  const plotBottom = y;
  const grid = axis.ticks.flatMap((t) => [
    `<path d="M${px(xOf(t))} ${px(plotTop)}V${px(plotBottom)}" stroke="${GRID_COLOR}"/>`,
    text(xOf(t), plotBottom + 14, tickLabel(t), ' text-anchor="middle"'),
  ]);
  return svgDocument(CHART_WIDTH_PX, plotBottom + AXIS_HEIGHT_PX + CHART_PADDING_PX, spec.title, [
    text(CHART_PADDING_PX, CHART_PADDING_PX + 16, spec.title, ' font-size="15" font-weight="bold"'),
    ...legend.lines,
    ...grid,
    ...body,
    text(plotX + plotWidth / 2, plotBottom + 30, spec.axisLabel, ' text-anchor="middle"'),
  ]);
}

export interface LineChartSpec {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly points: readonly (readonly [number, number])[];
  readonly color: string;
}

/** A single-series line chart with linear axes from 0 (`<polyline class="line">`). */
export function lineChart(spec: LineChartSpec): string {
  const plotX = CHART_PADDING_PX + Y_AXIS_WIDTH_PX;
  const plotTop = CHART_PADDING_PX + TITLE_HEIGHT_PX + 8;
  const plotWidth = CHART_WIDTH_PX - plotX - CHART_PADDING_PX * 2;
  const plotBottom = plotTop + LINE_PLOT_HEIGHT_PX;
  const xAxis = niceAxis(Math.max(0, ...spec.points.map((p) => p[0])));
  const yAxis = niceAxis(Math.max(0, ...spec.points.map((p) => p[1])));
  const xOf = (v: number) => plotX + (v / xAxis.max) * plotWidth;
  const yOf = (v: number) => plotBottom - (v / yAxis.max) * LINE_PLOT_HEIGHT_PX;
  const yLabelX = CHART_PADDING_PX + 10;
  const yLabelY = plotTop + LINE_PLOT_HEIGHT_PX / 2;
  return svgDocument(CHART_WIDTH_PX, plotBottom + AXIS_HEIGHT_PX + CHART_PADDING_PX, spec.title, [
    text(CHART_PADDING_PX, CHART_PADDING_PX + 16, spec.title, ' font-size="15" font-weight="bold"'),
    ...xAxis.ticks.flatMap((t) => [`<path d="M${px(xOf(t))} ${px(plotTop)}V${px(plotBottom)}" stroke="${GRID_COLOR}"/>`, text(xOf(t), plotBottom + 14, formatTick(t), ' text-anchor="middle"')]),
    ...yAxis.ticks.flatMap((t) => [`<path d="M${px(plotX)} ${px(yOf(t))}H${px(plotX + plotWidth)}" stroke="${GRID_COLOR}"/>`, text(plotX - LABEL_GAP_PX, yOf(t) + 4, formatTick(t), ' text-anchor="end"')]),
    `<polyline class="line" points="${spec.points.map(([x, y]) => `${px(xOf(x))},${px(yOf(y))}`).join(' ')}" fill="none" stroke="${spec.color}" stroke-width="2"/>`,
    text(plotX + plotWidth / 2, plotBottom + 30, spec.xLabel, ' text-anchor="middle"'),
    text(yLabelX, yLabelY, spec.yLabel, ` text-anchor="middle" transform="rotate(-90 ${px(yLabelX)} ${px(yLabelY)})"`),
  ]);
}

/** "xfer" for xfer's rows, else the tool's first word ("borg create" -> "borg"). */
export const toolFamily = (tool: string): string => (isXfer(tool) ? 'xfer' : (/^[\w.+-]+/.exec(tool)?.[0] ?? tool).toLowerCase());

/** One colour per tool family, stable across a report's charts: xfer blue, peers in first-seen order. */
export function familyColors(tools: readonly string[]): Map<string, string> {
  const colors = new Map<string, string>([['xfer', XFER_COLOR]]);
  for (const t of tools) {
    const f = toolFamily(t);
    if (!colors.has(f)) colors.set(f, PEER_COLORS[(colors.size - 1) % PEER_COLORS.length]!);
  }
  return colors;
}

/** A per-scenario metric charted as bars; `value` undefined means "not measured" (no bar). */
interface MacroMetric {
  readonly name: string;
  readonly title: string;
  readonly axisLabel: string;
  value(r: MacroRow): number | undefined;
  valueLabel(r: MacroRow): string;
  range?(r: MacroRow): readonly [number, number];
  readonly logScale?: boolean;
  formatTick?(v: number): string;
}

const MACRO_METRICS: readonly MacroMetric[] = [
  { name: 'throughput', title: 'Throughput per scenario (higher is better)', axisLabel: 'MB/s (10^6 bytes of input per second of wall time)', value: (r) => r.mbPerSecond, valueLabel: (r) => `${formatMBps(r.mbPerSecond)} MB/s` },
  {
    name: 'wall',
    title: 'Wall time per scenario, median; line: min–max of runs (lower is better)',
    axisLabel: 'seconds',
    value: (r) => r.wallSeconds.median,
    valueLabel: (r) => `${formatSeconds(r.wallSeconds.median)} s`,
    range: (r) => [r.wallSeconds.min, r.wallSeconds.max],
  },
  { name: 'rss', title: 'Peak memory (max RSS) per scenario (lower is better)', axisLabel: 'MiB', value: (r) => r.maxRssMiB, valueLabel: (r) => `${formatMiB(r.maxRssMiB)} MiB` },
  {
    name: 'sent',
    title: 'Bytes sent or stored per scenario, where measured (lower is better)',
    axisLabel: 'bytes, log scale (kB, MB, GB = 10^3, 10^6, 10^9)',
    value: (r) => r.sentBytesMedian,
    valueLabel: formatSent,
    logScale: true,
    formatTick: (v) => formatBytes(v).replace(/\.0+ /, ' '),
  },
];

/** The bar chart of one metric over every scenario but the physical limits; undefined if nothing to draw. */
export function macroChart(rows: readonly ReportRow[], metric: MacroMetric, colors: Map<string, string>): string | undefined {
  const groups = groupByScenario(rows.filter((r) => r.scenario !== LIMITS_SCENARIO))
    .map((g) => ({
      title: g.scenario,
      bars: g.rows
        .filter((r) => metric.value(r) !== undefined)
        .map((r) => ({ label: r.tool, value: metric.value(r)!, valueLabel: metric.valueLabel(r), color: colors.get(toolFamily(r.tool))!, ...(metric.range ? { range: metric.range(r) } : {}) })),
    }))
    .filter((g) => g.bars.length > 0);
  if (!groups.length) return undefined;
  const families = new Set(groups.flatMap((g) => g.bars.map((b) => toolFamily(b.label))));
  const legend = [...colors].filter(([f]) => families.has(f)).map(([label, color]) => ({ label, color }));
  return barChart({ title: metric.title, axisLabel: metric.axisLabel, groups, legend, ...(metric.logScale ? { logScale: true } : {}), ...(metric.formatTick ? { formatTick: metric.formatTick } : {}) });
}

/** One point of a scale run's progress, if bench/scale.ts records them. */
export interface ScaleSample {
  readonly bytes: number;
  readonly seconds: number;
  readonly mbPerSecond: number;
  readonly rssMiB: number;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The well-formed `samples` of a scale result (others skipped), in time order. */
export function scaleSamples(scale: unknown): ScaleSample[] {
  if (!isRecord(scale) || !Array.isArray(scale.samples)) return [];
  return scale.samples
    .filter((s): s is ScaleSample => isRecord(s) && ['bytes', 'seconds', 'mbPerSecond', 'rssMiB'].every((k) => typeof s[k] === 'number' && Number.isFinite(s[k])))
    .sort((a, b) => a.seconds - b.seconds);
}

/**
 * The scalar top-level fields of a scale result (numbers, strings, booleans), in their
 * order. Integers (sizes, counts, seeds) are exact; fractions get six significant digits.
 */
export function scaleScalars(scale: unknown): [string, string][] {
  if (!isRecord(scale)) return [];
  return Object.entries(scale)
    .filter(([, v]) => ['number', 'string', 'boolean'].includes(typeof v))
    .map(([k, v]) => [k, typeof v === 'number' ? formatScalar(v) : String(v)]);
}

const formatScalar = (v: number): string => (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6))));

const MICRO_CHART_UNIT = 'MB/s';

export interface Chart {
  /** File name (`throughput.svg`). */
  readonly name: string;
  /** Alt text / caption. */
  readonly title: string;
  readonly svg: string;
}

/** Every chart of a report, in a fixed order; charts with nothing to draw are left out. */
export function buildCharts(merged: MergedResults): Chart[] {
  const colors = familyColors(merged.macro.filter((r) => r.scenario !== LIMITS_SCENARIO).map((r) => r.tool));
  const charts: Chart[] = [];
  for (const m of MACRO_METRICS) {
    const svg = macroChart(merged.macro, m, colors);
    if (svg) charts.push({ name: `${m.name}.svg`, title: m.title, svg });
  }
  const micro = merged.micro.filter((r) => r.unit === MICRO_CHART_UNIT);
  if (micro.length) {
    const title = 'Micro benchmarks, one core (higher is better)';
    const groups = [...new Set(micro.map((r) => r.suite))].map((suite) => ({
      title: suite,
      bars: micro.filter((r) => r.suite === suite).map((r) => ({ label: r.name, value: r.value, valueLabel: `${formatMBps(r.value)} MB/s`, color: XFER_COLOR })),
    }));
    charts.push({ name: 'micro.svg', title, svg: barChart({ title, axisLabel: 'MB/s (10^6 bytes per second)', groups, legend: [] }) });
  }
  const samples = scaleSamples(merged.scale?.value);
  if (samples.length) {
    const series = [
      { name: 'scale-throughput.svg', title: 'Scale run: throughput over time', yLabel: 'MB/s', y: (s: ScaleSample) => s.mbPerSecond },
      { name: 'scale-rss.svg', title: 'Scale run: RSS over time', yLabel: 'RSS MiB', y: (s: ScaleSample) => s.rssMiB },
    ];
    for (const c of series) charts.push({ name: c.name, title: c.title, svg: lineChart({ title: c.title, xLabel: 'seconds since start', yLabel: c.yLabel, points: samples.map((s) => [s.seconds, c.y(s)]), color: XFER_COLOR }) });
  }
  return charts;
}

// ---------------------------------------------------------------------------------------
// Markdown

const distinct = <T>(xs: readonly T[]): T[] => [...new Set(xs)];

/** What a run contributed: its scenarios, "micro", "scale". */
function contributions(merged: MergedResults, source: number): string[] {
  return [
    ...distinct(merged.macro.filter((r) => r.source === source).map((r) => r.scenario)),
    ...(merged.micro.some((r) => r.source === source) ? ['micro benchmarks'] : []),
    ...(merged.scale?.source === source ? ['scale run'] : []),
  ];
}

/** Date(s), machine(s), Node version(s) and the numbered list of runs (commands) the figures come from. */
export function renderProvenance(merged: MergedResults, options: { withFiles?: boolean } = {}): string {
  const s = merged.sources;
  const machines = distinct(s.filter((x) => x.machine).map((x) => formatMachine(x.machine!)));
  const unrecorded = s.map((x, i) => (x.machine ? 0 : i + 1)).filter(Boolean);
  const machine = machines.length
    ? `${machines.join('; ')}${unrecorded.length ? ` (not recorded by run${unrecorded.length > 1 ? 's' : ''} ${unrecorded.join(', ')})` : ''}`
    : 'not recorded in these results files';
  const nodes = distinct(s.map((x) => x.node ?? '')).filter(Boolean);
  const runs = s.map((x, i) => {
    const file = options.withFiles && x.file ? ` (${code(x.file)})` : '';
    return `   ${i + 1}. ${code(x.command)}, ${formatDate(x.date)}${file}: ${contributions(merged, i).map(escapeMarkdown).join(', ')}`;
  });
  return [
    `- **Date:** ${distinct(s.map((x) => x.date.slice(0, 10) || 'unknown')).join(', ')} (UTC)`,
    `- **Machine:** ${escapeMarkdown(machine)}`,
    `- **Node:** ${nodes.join(', ') || 'not recorded'}`,
    `- **Commands** (the run numbers below refer to these):`,
    ...runs,
  ].join('\n');
}

/** The physical-limits rows as one sentence, or '' if there are none. */
export function limitsNote(rows: readonly ReportRow[]): string {
  const limits = rows.filter((r) => r.scenario === LIMITS_SCENARIO);
  if (!limits.length) return '';
  const run = limits[0]!.source;
  const items = limits.map((r) => `${code(r.tool)} ${formatSeconds(r.wallSeconds.median)} s, ${formatMBps(r.mbPerSecond)} MB/s${runTag(r.source, run)}`);
  return `Physical limits (run ${run + 1}, input in page cache): ${items.join('; ')}.`;
}

const SCENARIO_TABLE_HEADER = ['tool', 'runs', 'median wall s (min–max)', 'MB/s', 'CPU s', 'peak RSS MiB', 'sent/stored', 'ratio xfer/peer', 'run'] as const;

/** One scenario's table: one line per tool, in the given order. */
export function renderScenarioTable(group: ScenarioGroup): string {
  const several = group.rows.filter((r) => isXfer(r.tool)).length > 1;
  const rows = group.rows.map((r) => {
    const ratio = xferPeerRatio(r, group.rows);
    const ref = referenceXferRow(r, group.rows);
    const wall = r.wallSeconds;
    return [
      code(r.tool),
      String(r.runs),
      `${formatSeconds(wall.median)} (${formatSeconds(wall.min)}–${formatSeconds(wall.max)})`,
      formatMBps(r.mbPerSecond),
      formatSeconds(r.cpuSecondsMedian),
      formatMiB(r.maxRssMiB),
      escapeMarkdown(formatSent(r)) || '—',
      ratio === undefined ? '—' : `${formatRatio(ratio)}${several && ref ? ` (vs ${code(ref.tool)})` : ''}`,
      String(r.source + 1),
    ];
  });
  return markdownTable(SCENARIO_TABLE_HEADER, rows);
}

export function renderMicroTable(micro: readonly ReportMicro[]): string {
  return markdownTable(
    ['suite', 'benchmark', 'value', 'unit', 'run'],
    micro.map((r) => [escapeMarkdown(r.suite), escapeMarkdown(r.name), formatMicroValue(r.value, r.unit), escapeMarkdown(r.unit), String(r.source + 1)]),
  );
}

function renderScale(scale: NonNullable<MergedResults['scale']>, charts: readonly Chart[], chartPrefix: string): string {
  const scalars = scaleScalars(scale.value);
  const samples = scaleSamples(scale.value);
  const parts = [`From run ${scale.source + 1}.`];
  if (scalars.length) parts.push(markdownTable(['field', 'value'], scalars.map(([k, v]) => [escapeMarkdown(k), escapeMarkdown(v)])));
  if (samples.length) parts.push(`${samples.length} samples.`, ...charts.filter((c) => c.name.startsWith('scale-')).map((c) => image(c, chartPrefix)));
  if (!scalars.length && !samples.length) parts.push(`\`\`\`json\n${JSON.stringify(scale.value, null, 2)}\n\`\`\``);
  return parts.join('\n\n');
}

/** The scenario's input size(s): "2 GiB" (several if its rows come from runs with different --size). */
const inputSizes = (g: ScenarioGroup): string => distinct(g.rows.map((r) => formatSize(r.inputBytes))).join(' or ');

const image = (c: Chart, prefix: string): string => `![${escapeMarkdown(c.title)}](${prefix}${c.name})`;

export interface RenderOptions {
  /** Prefix of the charts' links relative to the Markdown file ('' = same directory). */
  readonly chartPrefix?: string;
  /** List each run's results file name. */
  readonly withFiles?: boolean;
}

/** The full report: header (provenance), charts, a table per scenario, micro, scale. */
export function renderReport(results: ResultsFile | MergedResults, options: RenderOptions = {}): { markdown: string; charts: Chart[] } {
  const merged = toMerged(results);
  const prefix = options.chartPrefix ?? '';
  const charts = buildCharts(merged);
  const out = ['# xfer benchmark report', renderProvenance(merged, { withFiles: options.withFiles ?? true })];
  out.push(
    'Each figure is the median of alternating runs (xfer, peer, xfer, peer, ...). MB/s is input bytes (10^6) per second of wall time; ' +
      'CPU s is user + system time; peak RSS is the largest of the runs. The ratio is xfer’s median wall time divided by the peer’s: below 1 means xfer is faster.',
  );
  const macroCharts = charts.filter((c) => !c.name.startsWith('scale-'));
  if (macroCharts.length) out.push('## Charts', ...macroCharts.map((c) => image(c, prefix)));
  const groups = groupByScenario(merged.macro.filter((r) => r.scenario !== LIMITS_SCENARIO));
  const note = limitsNote(merged.macro);
  if (groups.length || note) out.push('## Scenarios');
  if (note) out.push(`> ${note}`);
  for (const g of groups) {
    out.push(`### ${escapeMarkdown(g.scenario)}`, `Input: ${inputSizes(g)}.`, renderScenarioTable(g));
  }
  if (merged.micro.length) out.push('## Micro benchmarks', renderMicroTable(merged.micro));
  if (merged.scale) out.push('## Scale run', renderScale(merged.scale, charts, prefix));
  return { markdown: `${out.join('\n\n')}\n`, charts };
}

const xferCell = (r: ReportRow, run: number) =>
  `${code(r.tool)} ${formatSeconds(r.wallSeconds.median)} s, ${formatMBps(r.mbPerSecond)} MB/s, ${formatMiB(r.maxRssMiB)} MiB RSS${r.sentBytesMedian !== undefined ? `, ${escapeMarkdown(formatSent(r))}` : ''}${runTag(r.source, run)}`;

function peerCell(r: ReportRow, rows: readonly ReportRow[], run: number): string {
  const ratio = xferPeerRatio(r, rows);
  const sent = r.sentBytesMedian !== undefined ? `, ${escapeMarkdown(formatSent(r))}` : '';
  return `${code(r.tool)} ${formatSeconds(r.wallSeconds.median)} s, ${formatMBps(r.mbPerSecond)} MB/s${sent}${ratio === undefined ? '' : ` (xfer/peer ${formatRatio(ratio)})`}${runTag(r.source, run)}`;
}

/** Scenario (input, runs) | xfer | peers | run: one line per scenario; rows from another run than the scenario's are tagged. */
export function renderCompactTable(rows: readonly ReportRow[]): string {
  const lines = groupByScenario(rows.filter((r) => r.scenario !== LIMITS_SCENARIO)).map((g) => {
    const xfers = g.rows.filter((r) => isXfer(r.tool));
    const peers = g.rows.filter((r) => !isXfer(r.tool));
    const run = (xfers[0] ?? g.rows[0]!).source;
    const runs = distinct(g.rows.map((r) => `${r.runs} run${r.runs === 1 ? '' : 's'}`)).join(' or ');
    return [`${escapeMarkdown(g.scenario)} (${inputSizes(g)}, ${runs})`, xfers.map((r) => xferCell(r, run)).join('<br>') || '—', peers.map((r) => peerCell(r, g.rows, run)).join('<br>') || '—', String(run + 1)];
  });
  return markdownTable(['scenario', 'xfer', 'peers (same run unless marked)', 'run'], lines);
}

/** The micro results as one line per suite. */
function microSummary(micro: readonly ReportMicro[]): string[] {
  return distinct(micro.map((r) => r.suite)).map((suite) => {
    const rs = micro.filter((r) => r.suite === suite);
    const run = rs[0]!.source;
    return `- ${escapeMarkdown(suite)} (run ${run + 1}): ${rs.map((r) => `${escapeMarkdown(r.name)} ${formatMicroValue(r.value, r.unit)} ${escapeMarkdown(r.unit)}${runTag(r.source, run)}`).join(', ')}`;
  });
}

export interface ReadmeOptions {
  /** Prefix of the chart links relative to the README (`docs/perf/`). */
  readonly chartPrefix: string;
  /** Link to the full report relative to the README (`docs/perf/report.md`). */
  readonly reportLink: string;
}

/** The generated part of the README's Performance section (goes between the markers). */
export function renderReadmeSection(results: ResultsFile | MergedResults, options: ReadmeOptions): string {
  const merged = toMerged(results);
  const out = [
    '<!-- Generated by `npm run bench:report` from bench/results/*.json: edit the text outside the perf markers. -->',
    renderProvenance(merged),
  ];
  if (merged.macro.some((r) => r.scenario !== LIMITS_SCENARIO)) out.push(renderCompactTable(merged.macro));
  const note = limitsNote(merged.macro);
  if (note) out.push(note);
  if (merged.micro.length) out.push(['Micro benchmarks (one core):', '', ...microSummary(merged.micro)].join('\n'));
  if (merged.scale) {
    const scalars = scaleScalars(merged.scale.value);
    out.push(`Scale run (run ${merged.scale.source + 1})${scalars.length ? `: ${scalars.map(([k, v]) => `${escapeMarkdown(k)} ${escapeMarkdown(v)}`).join(', ')}` : ''}.`);
  }
  out.push(...buildCharts(merged).map((c) => image(c, options.chartPrefix)));
  out.push(`Every column (min–max, CPU, bytes sent, ratios) and the micro results: [${escapeMarkdown(options.reportLink)}](${options.reportLink}).`);
  return out.join('\n\n');
}

/**
 * `text` with everything strictly between PERF_START_MARKER and PERF_END_MARKER replaced by
 * `section` (on its own lines); the markers and all text outside them are kept byte for byte.
 * Throws unless each marker occurs exactly once, start before end.
 */
export function replaceBetweenMarkers(text: string, section: string): string {
  const count = (m: string) => text.split(m).length - 1;
  const start = text.indexOf(PERF_START_MARKER);
  const end = text.indexOf(PERF_END_MARKER);
  if (count(PERF_START_MARKER) !== 1 || count(PERF_END_MARKER) !== 1 || end < start) {
    throw new Error(`expected one ${PERF_START_MARKER} followed by one ${PERF_END_MARKER}`);
  }
  return `${text.slice(0, start + PERF_START_MARKER.length)}\n${section.trim()}\n${text.slice(end)}`;
}

// ---------------------------------------------------------------------------------------
// Files

/** Reads a results file; `file` is set to its base name and `date` from the name if absent. */
export async function readResultsFile(path: string): Promise<ResultsFile> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  if (!isRecord(parsed)) throw new Error(`${path}: not a results object`);
  const file = basename(path);
  const r = parsed as ResultsFile;
  const date = r.date ?? dateFromFileName(file);
  return { ...r, file, ...(date ? { date } : {}) };
}

/** Every `*.json` in a results directory, sorted by name (bench/run.ts names them by time). */
export async function listResultsFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.json')).sort().map((n) => join(dir, n));
}

/** Writes the charts into `dir` (created) and removes other `.svg` files there, so it holds exactly this set. */
async function writeCharts(dir: string, charts: readonly Chart[]): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names = new Set(charts.map((c) => c.name));
  for (const n of await readdir(dir)) if (n.endsWith('.svg') && !names.has(n)) await rm(join(dir, n));
  await Promise.all(charts.map((c) => writeFile(join(dir, c.name), c.svg)));
  return charts.map((c) => join(dir, c.name));
}

/** Writes a file only if its content changes (keeps mtimes of unchanged files). */
async function writeIfChanged(path: string, content: string): Promise<void> {
  const old = await readFile(path, 'utf8').catch(() => undefined);
  if (old !== content) await writeFile(path, content);
}

/**
 * The report of one results file: `<dir>/<ts>.md` with its charts in `<dir>/<ts>/`.
 * Returns the Markdown file's path. (Called by bench/run.ts after each run.)
 */
export async function writeReport(resultsFile: string): Promise<string> {
  const stem = basename(resultsFile).replace(/\.json$/, '');
  const dir = dirname(resultsFile);
  const { markdown, charts } = renderReport(await readResultsFile(resultsFile), { chartPrefix: `${stem}/` });
  await writeCharts(join(dir, stem), charts);
  const md = join(dir, `${stem}.md`);
  await writeFile(md, markdown);
  return md;
}

/**
 * Copies the results files the merged report draws on into `dir` (and removes others
 * there), so the published figures can be traced to, and regenerated from, committed data:
 * `npm run bench:report -- docs/perf/runs/*.json`.
 */
async function copyContributingRuns(files: readonly string[], merged: MergedResults, dir: string): Promise<void> {
  const wanted = new Set(merged.sources.map((s) => s.file).filter((f): f is string => f !== undefined));
  await mkdir(dir, { recursive: true });
  for (const f of files) if (wanted.has(basename(f))) await writeIfChanged(join(dir, basename(f)), await readFile(f, 'utf8'));
  for (const name of await readdir(dir)) if (!wanted.has(name)) await rm(join(dir, name), { force: true });
}

/** A relative link from `fromDir` to `to`, with forward slashes. */
const link = (fromDir: string, to: string): string => relative(fromDir, to).split(sep).join('/');

export interface MergedReportOptions {
  readonly files: readonly string[];
  /** Directory for report.md and the charts (docs/perf). */
  readonly outDir: string;
  /** README whose Performance section (between the markers) is rewritten; omitted: none. */
  readonly readme?: string;
}

/**
 * Merges results files and writes `<outDir>/report.md`, `<outDir>/*.svg` and, if given, the
 * README section. Idempotent: the same files give byte-identical output.
 */
export async function writeMergedReport(o: MergedReportOptions): Promise<{ report: string; charts: string[]; merged: MergedResults }> {
  if (!o.files.length) throw new Error('no results files');
  const merged = mergeResults(await Promise.all(o.files.map(readResultsFile)));
  const { markdown, charts } = renderReport(merged, { chartPrefix: '' });
  const written = await writeCharts(o.outDir, charts);
  const report = join(o.outDir, REPORT_FILE_NAME);
  await writeIfChanged(report, markdown);
  await copyContributingRuns(o.files, merged, join(o.outDir, RUNS_DIR_NAME));
  if (o.readme) {
    const readmeDir = dirname(o.readme);
    const section = renderReadmeSection(merged, { chartPrefix: `${link(readmeDir, o.outDir)}/`, reportLink: link(readmeDir, report) });
    await writeIfChanged(o.readme, replaceBetweenMarkers(await readFile(o.readme, 'utf8'), section));
  }
  return { report, charts: written, merged };
}
