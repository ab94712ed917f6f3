/**
 * `xfer manifest show`: renders a manifest as text for people or as JSON for programs,
 * streaming: one write per header, entry and batch of chunk records, never the whole
 * output at once.
 */
import { describeChunkerSpec, digestToHex } from '../core/ids.js';
import { KiB, formatBytes } from '../core/sizes.js';
import { FORMAT_VERSION_1 } from './format.js';
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
 * `type mode(octal) size mtime(ISO) path [-> target]`; from version 2
 * `type mode(octal) size mtime(ISO, to the ns) owner:group path [-> target | => file]`, where
 * size is `major,minor` for a device, owner and group are `name(id)`, `id`, or `-` when not
 * recorded, and each xattr follows on an indented line `xattr NAME = VALUE` (VALUE
 * JSON-quoted if it is printable UTF-8, else 0x and hex). Under a file entry its chunks as
 * indented `offset length digest` lines and a final `size N digest HEX` line. Paths that
 * are empty or contain control characters are printed JSON-quoted.
 *
 * JSON: `{"formatVersion", "kind", "digestAlgorithm", "chunker", "totalBytes",
 * "entryCount", "chunkCount", "digest", "entries": [...]}` with one entry object per line:
 * `{"type", "path", "mode", "mtimeMs", ...attributes, "size", "linkTarget"?}` for every
 * type but file, `{"type", "path", "mode", "mtimeMs", ...attributes, "chunks": [{"offset",
 * "length", "digest"}...], "size", "digest"}` for files (size and digest follow the chunks:
 * a stream learns them last). The attributes (version 2, each only where recorded):
 * "mtimeExtraNs", "uid", "gid", "owner", "group", "devMajor", "devMinor", "xattrs":
 * [{"name", "value" (base64)}]. Digests are lowercase hex; all numbers are integers.
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
      await write(json ? `${entries === 0 ? '\n' : ',\n'}${jsonEntryStart(meta)}` : textEntry(meta, reader.header.formatVersion));
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

function textEntry(meta: EntryMeta, version: number): string {
  const size = meta.devMajor !== undefined ? `${meta.devMajor},${meta.devMinor}` : meta.type !== 'file' ? '-' : meta.size === -1 ? '?' : String(meta.size);
  const target = meta.type === 'symlink' ? ` -> ${displayText(meta.linkTarget!)}` : meta.type === 'hardlink' ? ` => ${displayText(meta.linkTarget!)}` : '';
  const v2 = version !== FORMAT_VERSION_1;
  const time = v2 ? isoTimeNs(meta.mtimeMs, meta.mtimeExtraNs ?? 0) : isoTime(meta.mtimeMs);
  const owner = v2 ? ` ${who(meta.owner, meta.uid)}:${who(meta.group, meta.gid)}` : '';
  const xattrs = (meta.xattrs ?? []).map((x) => `    xattr ${displayText(x.name)} = ${xattrValueText(x.value)}\n`).join('');
  return `${meta.type.padEnd(TYPE_WIDTH)} ${modeOctal(meta.mode)} ${size.padStart(SIZE_WIDTH)} ${time}${owner} ${displayText(meta.path)}${target}\n${xattrs}`;
}

/** `name(id)`, `id`, or `-` when the id is not recorded. */
function who(name: string | undefined, id: number | undefined): string {
  if (id === undefined) return '-';
  return name === undefined ? String(id) : `${displayText(name)}(${id})`;
}

/** Printable UTF-8 as a JSON string, anything else as 0x and hex (getfattr shows the same bytes). */
function xattrValueText(value: Uint8Array): string {
  const text = Buffer.from(value).toString('utf8');
  const printable = Buffer.from(text, 'utf8').equals(value) && !CONTROL_RE.test(text);
  return printable ? JSON.stringify(text) : `0x${Buffer.from(value).toString('hex')}`;
}

/** isoTime with nine decimals: the ms digits and then the nanoseconds past them. */
function isoTimeNs(mtimeMs: number, extraNs: number): string {
  const iso = isoTime(mtimeMs);
  return iso.endsWith('Z') ? `${iso.slice(0, -1)}${String(extraNs).padStart(6, '0')}Z` : `${mtimeMs}ms+${extraNs}ns`;
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
  const attributes = {
    mtimeExtraNs: meta.mtimeExtraNs,
    uid: meta.uid,
    gid: meta.gid,
    owner: meta.owner,
    group: meta.group,
    devMajor: meta.devMajor,
    devMinor: meta.devMinor,
    xattrs: meta.xattrs?.map((x) => ({ name: x.name, value: Buffer.from(x.value).toString('base64') })),
  };
  const extra = JSON.stringify(attributes).slice(1, -1); // undefined fields are left out
  const common = `{"type":"${meta.type}","path":${JSON.stringify(meta.path)},"mode":${meta.mode},"mtimeMs":${meta.mtimeMs}${extra ? `,${extra}` : ''}`;
  if (meta.type === 'file') return `${common},"chunks":[`;
  const target = meta.linkTarget !== undefined ? `,"linkTarget":${JSON.stringify(meta.linkTarget)}` : '';
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
