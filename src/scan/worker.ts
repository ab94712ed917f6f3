import { Piscina } from 'piscina';
import { scanSegment, type FileSegmentTask, type SegmentResult, type SegmentTask } from './segment.js';

/** What crosses back from a worker: a result, or an error reduced to its code and message. */
export type WorkerReply =
  | { readonly ok: true; readonly result: SegmentResult }
  | { readonly ok: false; readonly code: string; readonly message: string };

/**
 * Piscina worker entry: scans one segment and hands its buffers back without copying
 * (transferred, not cloned). Errors are returned as { code, message } because structured
 * cloning drops an Error's `code`; pool.ts turns them back into XferErrors.
 */
/** Several small whole files in one message (ScanPool.runGrouped); answered by one reply each, in order. */
export interface FilesTask {
  readonly kind: 'files';
  readonly tasks: readonly FileSegmentTask[];
}

/** Scans one task here, its error reduced to a reply (also what ScanPool runs inline). */
export function scanOne(task: SegmentTask): WorkerReply {
  try {
    return { ok: true, result: scanSegment(task) };
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    return {
      ok: false,
      code: typeof e?.code === 'string' ? e.code : 'XFER_INTERNAL',
      message: typeof e?.message === 'string' ? e.message : String(err),
    };
  }
}

export default function run(task: SegmentTask | FilesTask): unknown {
  const replies = task.kind === 'files' ? task.tasks.map(scanOne) : [scanOne(task)];
  const buffers = new Set<ArrayBuffer>();
  for (const r of replies) {
    if (!r.ok) continue;
    for (const b of [r.result.lengths.buffer, r.result.digests.buffer, r.result.data.buffer]) buffers.add(b as ArrayBuffer);
  }
  const reply = task.kind === 'files' ? replies : replies[0]!;
  const movable = {
    get [Piscina.transferableSymbol]() {
      return [...buffers];
    },
    get [Piscina.valueSymbol]() {
      return reply;
    },
  };
  // Piscina accepts a list of transferables here at run time; its typings name only one.
  return Piscina.move(movable as unknown as Parameters<typeof Piscina.move>[0]);
}
