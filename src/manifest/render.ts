/**
 * `xfer manifest show`: renders a manifest as text for people or as JSON for programs,
 * streaming: one write per header, entry and batch of chunk records, never the whole
 * output at once.
 */
import { describeChunkerSpec, digestToHex } from '../core/ids.js';
import { KiB, formatBytes } from '../core/sizes.js';
import type { ManifestReader } from './reader.js';
import type { EntryMeta, ManifestHeader } from './types.js';

export interface RenderOptions {
  /** JSON (one object, see renderManifest) instead of text. */
  readonly json: boolean;
}

/**
 * Writes the manifest behind `reader` (whose events() must not have been called) through
 * `write`, awaiting each call, so a slow sink applies backpressure. Validation errors of
 * the reader propagate; output written before the error is then incomplete.
 *
 * Text: a header block ("key: value" lines), a blank line, then per entry a line
 * `type mode(octal) size mtime(ISO) path [-> target]`; under a file entry its chunks as
 * indented `offset length digest` lines and a final `size N digest HEX` line. Paths that
 * are empty or contain control characters are printed JSON-quoted.
 *
 * JSON: `{"formatVersion", "kind", "digestAlgorithm", "chunker", "totalBytes",
 * "entryCount", "chunkCount", "digest", "entries": [...]}` with one entry object per line:
 * `{"type", "path", "mode", "mtimeMs", "size", "linkTarget"?}` for dirs and symlinks,
 * `{"type", "path", "mode", "mtimeMs", "chunks": [{"offset", "length", "digest"}...],
 * "size", "digest"}` for files (size and digest follow the chunks: a stream learns them
 * last). Digests are lowercase hex; all numbers are integers.
 */
export async function renderManifest(
  reader: ManifestReader,
  write: (text: string) => void | Promise<void>,
  options: RenderOptions,
): Promise<void> {
  const { json } = options;
  await write(json ? jsonHeader(reader.header) : textHeader(reader.header));
  let entries = 0;
  let offset = 0;
  let firstChunk = true;
  for await (const event of reader.events()) {
    if (event.kind === 'entry') {
      const meta = event.meta;
      offset = 0;
      firstChunk = true;
      await write(json ? `${entries === 0 ? '\n' : ',\n'}${jsonEntryStart(meta)}` : textEntry(meta));
      entries++;
    } else if (event.kind === 'chunks') {
      const lines: string[] = [];
      for (const { length, digest } of event.records) {
        const hex = digestToHex(digest);
        lines.push(json
          ? `${firstChunk ? '' : ','}{"offset":${offset},"length":${length},"digest":"${hex}"}`
          : `    ${String(offset).padStart(CHUNK_OFFSET_WIDTH)} ${String(length).padStart(CHUNK_LENGTH_WIDTH)} ${hex}\n`);
        offset += length;
        firstChunk = false;
      }
      await write(lines.join(''));
    } else {
      const hex = digestToHex(event.digest);
      await write(json ? `],"size":${event.size},"digest":"${hex}"}` : `    size ${event.size} digest ${hex}\n`);
    }
  }
  if (json) await write(`${entries === 0 ? '' : '\n'}]}\n`);
}

/** Column widths of chunk lines in text form (wider values just push the columns). */
const CHUNK_OFFSET_WIDTH = 12;
const CHUNK_LENGTH_WIDTH = 8;
const SIZE_WIDTH = 12;
const TYPE_WIDTH = 7;

function textHeader(h: ManifestHeader): string {
  const bytes = `${h.totalBytes} ${h.totalBytes === 1 ? 'byte' : 'bytes'}`;
  const size = h.totalBytes < KiB ? bytes : `${bytes} (${formatBytes(h.totalBytes)})`;
  const digestName = h.kind === 'file' ? 'file digest' : 'body digest';
  return [
    `format version:   ${h.formatVersion}`,
    `kind:             ${h.kind}`,
    `digest algorithm: ${h.digestAlgorithm}`,
    `chunker:          ${describeChunkerSpec(h.chunker)}`,
    `total size:       ${size}`,
    `entries:          ${h.entryCount}`,
    `chunks:           ${h.chunkCount}`,
    `${(digestName + ':').padEnd(17)} ${digestToHex(h.digest)}`,
    '',
    '',
  ].join('\n');
}

function textEntry(meta: EntryMeta): string {
  const size = meta.type !== 'file' ? '-' : meta.size === -1 ? '?' : String(meta.size);
  const target = meta.type === 'symlink' ? ` -> ${displayText(meta.linkTarget!)}` : '';
  return `${meta.type.padEnd(TYPE_WIDTH)} ${modeOctal(meta.mode)} ${size.padStart(SIZE_WIDTH)} ${isoTime(meta.mtimeMs)} ${displayText(meta.path)}${target}\n`;
}

function jsonHeader(h: ManifestHeader): string {
  const fields = {
    formatVersion: h.formatVersion,
    kind: h.kind,
    digestAlgorithm: h.digestAlgorithm,
    chunker: h.chunker,
    totalBytes: h.totalBytes,
    entryCount: h.entryCount,
    chunkCount: h.chunkCount,
    digest: digestToHex(h.digest),
  };
  // Everything but the closing brace, then the entries array is streamed into it.
  return `${JSON.stringify(fields).slice(0, -1)},"entries":[`;
}

/** A dir or symlink entry completely; a file entry up to the opening of its chunks array. */
function jsonEntryStart(meta: EntryMeta): string {
  const common = `{"type":"${meta.type}","path":${JSON.stringify(meta.path)},"mode":${meta.mode},"mtimeMs":${meta.mtimeMs}`;
  if (meta.type === 'file') return `${common},"chunks":[`;
  const target = meta.type === 'symlink' ? `,"linkTarget":${JSON.stringify(meta.linkTarget)}` : '';
  return `${common},"size":${meta.size}${target}}`;
}

function modeOctal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/** ISO 8601 in UTC, or the raw milliseconds for times a Date cannot represent. */
function isoTime(mtimeMs: number): string {
  const d = new Date(mtimeMs);
  return Number.isNaN(d.getTime()) ? `${mtimeMs}ms` : d.toISOString();
}

const CONTROL_RE = /[\u0000-\u001f\u007f]/;

/** Keeps one entry per line: text with control characters (or empty) is JSON-quoted. */
function displayText(text: string): string {
  return text === '' || CONTROL_RE.test(text) ? JSON.stringify(text) : text;
}
