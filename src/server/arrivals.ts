/**
 * The buffers uploaded chunks are kept in for the stages waiting for them (server/stage.ts),
 * carved from slabs that are reused. Fresh slabs cost the server's main thread twice per
 * byte pushed: page faults when first written, and the garbage collections V8 runs for the
 * external memory they add (profile of a 1 GiB push: about 0.3 s and 0.7 s).
 *
 * Contract (Lender, reconstruct/recent.ts): a buffer from take() has one holder, its
 * taker; whoever else keeps it calls hold() first, and every holder calls release() once
 * when done with it. A slab is carved again only once every chunk carved from it has been
 * released, so no view of it can see its bytes change. A holder that never releases only
 * keeps its slab out of the pool (it is then garbage collected like any buffer): a leak
 * costs speed, never correctness.
 */
import { MiB } from '../core/sizes.js';
import { keepsLargeBuffers, largeBuffer, recycleLargeBuffer, type KeepsLargeBuffers } from '../io/sys.js';
import type { Lender } from '../reconstruct/recent.js';

/** Slabs the chunks are carved from. */
export const ARRIVAL_SLAB_BYTES = 4 * MiB;
/**
 * Released slabs kept for reuse, at most (memory held while idle: this times
 * ARRIVAL_SLAB_BYTES). A steady push frees about one slab per slab it fills, so a few do;
 * more went over issue 14's 300 MiB bound on a server's peak in a 64 GiB sparse push.
 */
export const ARRIVAL_FREE_SLABS_MAX = 2;

interface Slab {
  readonly bytes: Buffer;
  /** Next free offset while carving. */
  used: number;
  /** Chunks carved from it not yet released, plus further holds. */
  holders: number;
  /** Being carved (the current slab): not reusable even with no holders. */
  carving: boolean;
}

export class ArrivalSlabs implements Lender, KeepsLargeBuffers {
  private readonly slabs = new WeakMap<ArrayBufferLike, Slab>();
  private readonly free: Slab[] = [];
  private current: Slab | undefined;
  /** Holds not yet released, over all slabs (a leak shows here). */
  private holds = 0;

  constructor(
    private readonly slabBytes = ARRIVAL_SLAB_BYTES,
    private readonly freeSlabsMax = ARRIVAL_FREE_SLABS_MAX,
  ) {
    keepsLargeBuffers(this);
  }

  /**
   * Idle: the free slabs, and the one being carved if nothing holds a part of it, go back
   * to the process's pool (a server between commands keeps none).
   */
  relinquish(): void {
    const s = this.current;
    if (s && s.holders === 0) {
      this.current = undefined;
      s.carving = false;
      this.free.push(s);
    }
    for (const f of this.free.splice(0)) {
      this.slabs.delete(f.bytes.buffer);
      recycleLargeBuffer(f.bytes);
    }
  }

  /** Chunks taken or held and not yet released (for tests: 0 once every holder is done). */
  get heldChunks(): number {
    return this.holds;
  }

  /** Released slabs waiting to be carved again (for tests and memory accounting). */
  get freeSlabs(): number {
    return this.free.length;
  }

  /**
   * A buffer of `n` bytes held once, by the caller. One larger than a quarter of a slab is
   * a buffer of its own, not lent (it would waste most of a slab): hold and release ignore it.
   */
  take(n: number): Buffer {
    if (n > this.slabBytes / 4) return largeBuffer(n);
    let s = this.current;
    if (!s || s.used + n > s.bytes.length) {
      if (s) {
        s.carving = false;
        if (s.holders === 0) this.retire(s);
      }
      s = this.free.pop() ?? this.newSlab();
      s.used = 0;
      s.carving = true;
      this.current = s;
    }
    const out = s.bytes.subarray(s.used, s.used + n);
    s.used += (n + 7) & ~7; // keep 8-byte alignment
    s.holders++;
    this.holds++;
    return out;
  }

  hold(data: Uint8Array): boolean {
    const s = this.slabs.get(data.buffer);
    if (!s) return false;
    s.holders++;
    this.holds++;
    return true;
  }

  release(data: Uint8Array): void {
    const s = this.slabs.get(data.buffer);
    if (!s) return;
    this.holds--;
    // More releases than holds would let a slab be carved under a holder's feet: such a
    // slab is dropped from the pool for good instead (a bug elsewhere costs speed only).
    if (--s.holders < 0) {
      this.slabs.delete(s.bytes.buffer);
      return;
    }
    if (s.holders === 0 && !s.carving) this.retire(s);
  }

  private newSlab(): Slab {
    const s: Slab = { bytes: largeBuffer(this.slabBytes), used: 0, holders: 0, carving: false };
    this.slabs.set(s.bytes.buffer, s);
    return s;
  }

  /**
   * A slab nothing holds: kept for reuse, or given back to the process's pool of large
   * buffers (recycleLargeBuffer), where the next slab or any other owner takes it. Left to
   * the garbage collector, a push's dropped slabs piled up dead: 90 MiB of large buffers
   * awaited a collection at a server's peak in a 64 GiB sparse push.
   */
  private retire(s: Slab): void {
    const tracked = this.slabs.has(s.bytes.buffer);
    if (tracked && this.free.length < this.freeSlabsMax) this.free.push(s);
    else {
      this.slabs.delete(s.bytes.buffer);
      if (tracked) recycleLargeBuffer(s.bytes);
    }
  }
}
