/**
 * The local store's list of chunks set aside, `<dir>/set-aside`: chunks found corrupt (a
 * get whose bytes did not hash to their digest, a verify), which no longer count as
 * present. Their bytes stay where they are, for inspection: a pack is never rewritten in
 * place. The next put of such a chunk appends it to a new pack, and the index points
 * there from then on.
 *
 * Format: one JSON object per line, appended (O_APPEND, then fdatasync) by any opener:
 *
 *   {"algorithm":"blake3","digest":"<64 hex>","pack":"<pack name>","offset":N,"length":N,"at":"<ISO time>"}
 *
 * `pack` is the pack whose record at `offset` holds the bad bytes; a version 1 chunk file
 * set aside is renamed `<file>.set-aside` and recorded with `pack` "" and `file` its new
 * path. A line that does not parse (a torn append) is ignored. An index record of a pack at
 * a place this list names is not loaded, so the chunk counts as present again only once it
 * is stored at another place.
 */
import path from 'node:path';
import { DIGEST_ALGORITHMS, type DigestAlgorithm } from '../../core/ids.js';
import { JsonLines } from '../../io/json-lines.js';
import { PACK_NAME_RE } from '../pack.js';

export const SET_ASIDE_FILE = 'set-aside';
/** What error messages about a chunk set aside tell the user (every store says the same). */
export const SET_ASIDE_HINT = 'the next push of a file that has it stores it again; pull --fallback <location> takes it from another store';

export interface SetAsideRecord {
  readonly algorithm: DigestAlgorithm;
  /** Lower-case hex. */
  readonly digest: string;
  /** Pack name ('' for a version 1 chunk file). */
  readonly pack: string;
  readonly offset: number;
  readonly length: number;
  /** When it was set aside (ISO 8601). */
  readonly at: string;
  /** A version 1 chunk file's new path. */
  readonly file?: string;
}

/** The key of a place in a pack, as PackIndex matches index records against the list. */
export function placeKey(pack: string, offset: number): string {
  return `${pack}@${offset}`;
}

/** `<dir>/set-aside`: read from where the last read ended, appended durably (io/json-lines.ts). */
export class SetAsideList {
  private readonly lines: JsonLines<SetAsideRecord>;

  constructor(dir: string) {
    this.lines = new JsonLines(path.join(dir, SET_ASIDE_FILE), 'set-aside list', parseRecord);
  }

  get file(): string {
    return this.lines.file;
  }

  /**
   * The records appended since the last call (all of them the first time). A caller that
   * calls this often pays one stat when nothing changed.
   */
  readNew(): Promise<SetAsideRecord[]> {
    return this.lines.readNew();
  }

  /** Appends `record`, durably, before the caller acts on it. */
  append(record: SetAsideRecord): Promise<void> {
    return this.lines.append(record);
  }
}

function parseRecord(v: Record<string, unknown>): SetAsideRecord | undefined {
  const r = v as Partial<SetAsideRecord>;
  if (!DIGEST_ALGORITHMS.includes(r.algorithm as DigestAlgorithm) || typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) return undefined;
  if (typeof r.pack !== 'string' || (r.pack !== '' && !PACK_NAME_RE.test(r.pack))) return undefined;
  if (!Number.isSafeInteger(r.offset) || r.offset! < 0 || !Number.isSafeInteger(r.length) || r.length! < 0) return undefined;
  return r as SetAsideRecord;
}
