import { Piscina } from 'piscina';
import { scanSegment, type SegmentResult, type SegmentTask } from './segment.js';

/** What crosses back from a worker: a result, or an error reduced to its code and message. */
export type WorkerReply =
  | { readonly ok: true; readonly result: SegmentResult }
  | { readonly ok: false; readonly code: string; readonly message: string };

/**
 * Piscina worker entry: scans one segment and hands its buffers back without copying
 * (transferred, not cloned). Errors are returned as { code, message } because structured
 * cloning drops an Error's `code`; pool.ts turns them back into XferErrors.
 */
export default function run(task: SegmentTask): unknown {
  let result: SegmentResult;
  try {
    result = scanSegment(task);
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    const reply: WorkerReply = {
      ok: false,
      code: typeof e?.code === 'string' ? e.code : 'XFER_INTERNAL',
      message: typeof e?.message === 'string' ? e.message : String(err),
    };
    return reply;
  }
  const reply: WorkerReply = { ok: true, result };
  const buffers = new Set<ArrayBuffer>([
    result.lengths.buffer as ArrayBuffer, result.digests.buffer as ArrayBuffer, result.data.buffer as ArrayBuffer,
  ]);
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
