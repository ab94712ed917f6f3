import { formatBytes } from '../core/sizes.js';

/*
 * What -v, -n and --stats print for push and pull, in rsync's spirit. Listings and
 * statistics go to stdout, as rsync prints them; progress and problems stay on stderr.
 *
 *   >f <path> (<size>)     a file whose content is (or, with -n, would be) transferred
 *   *deleting <path>       an entry of the destination tree removed (or, with -n, that would be)
 *
 * Paths are relative to the target (a single file is shown by its name).
 */

/** A file transferred, for listings. */
export interface ItemFile {
  readonly path: string;
  readonly size: number;
}

export function fileLine(f: ItemFile): string {
  return `>f ${f.path} (${formatBytes(f.size)})\n`;
}

export function deletedLine(path: string): string {
  return `*deleting ${path}\n`;
}

/** rsync's --stats figures, as xfer counts them (see statsText). */
export interface TransferStats {
  readonly files: number;
  readonly dirs: number;
  readonly symlinks: number;
  readonly devices: number;
  readonly specials: number;
  readonly deleted: number;
  readonly filesTransferred: number;
  /** Logical size of every file of the source. */
  readonly bytesTotal: number;
  /** Logical size of the files transferred. */
  readonly bytesTransferred: number;
  /** Chunk bytes that travelled (push: sent to the destination; pull: fetched from the store). */
  readonly literalBytes: number;
  /** Bytes of the transferred files that did not travel: chunks the other side had (deduplicated). */
  readonly matchedBytes: number;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  /** Total file size over the bytes sent and received, as rsync's "speedup". */
  readonly speedup: number;
}

export function makeStats(s: Omit<TransferStats, 'matchedBytes' | 'speedup'>): TransferStats {
  const wire = s.bytesSent + s.bytesReceived;
  return {
    ...s,
    matchedBytes: Math.max(0, s.bytesTransferred - s.literalBytes),
    speedup: Math.round((s.bytesTotal / Math.max(1, wire)) * 100) / 100,
  };
}

/** rsync's "reg: 2, dir: 1": the kinds there are, in its order; kinds with none are left out. */
function kinds(s: TransferStats): string {
  const parts: [string, number][] = [['reg', s.files], ['dir', s.dirs], ['link', s.symlinks], ['dev', s.devices], ['special', s.specials]];
  return parts.filter(([, n]) => n > 0).map(([k, n]) => `${k}: ${n.toLocaleString('en-US')}`).join(', ');
}

const exact = (n: number) => `${n.toLocaleString('en-US')} bytes`;

/** rsync's --stats block, with xfer's meaning of each line (chunk data; manifests and protocol not counted). */
export function statsText(s: TransferStats): string {
  return [
    '',
    `Number of files: ${s.files + s.dirs + s.symlinks + s.devices + s.specials} (${kinds(s)})`,
    `Number of deleted files: ${s.deleted}`,
    `Number of regular files transferred: ${s.filesTransferred}`,
    `Total file size: ${exact(s.bytesTotal)}`,
    `Total transferred file size: ${exact(s.bytesTransferred)}`,
    `Literal data: ${exact(s.literalBytes)}`,
    `Matched data: ${exact(s.matchedBytes)} (deduplicated: chunks the other side already had)`,
    `Total bytes sent: ${exact(s.bytesSent)}`,
    `Total bytes received: ${exact(s.bytesReceived)}`,
    '',
    `total size is ${exact(s.bytesTotal)}  speedup is ${s.speedup.toFixed(2)}`,
    '',
  ].join('\n');
}
