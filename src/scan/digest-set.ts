/**
 * A set of digests for counting distinct chunks: open addressing over the first 8 bytes of
 * each digest (two uint32 columns, 8 bytes a slot, load <= 1/2). For up to millions of
 * chunks the chance of two distinct digests sharing 8 bytes is negligible (~n^2 / 2^65);
 * this is a statistic, never used to decide what to store or send.
 * Grows up to maxEntries; past that it stops tracking and `exact` turns false.
 */
export class DigestSet {
  private hi: Uint32Array;
  private lo: Uint32Array;
  private mask: number;
  private count = 0;
  exact = true;

  constructor(private readonly maxEntries: number, initialSlots = 1 << 12) {
    this.hi = new Uint32Array(initialSlots);
    this.lo = new Uint32Array(initialSlots);
    this.mask = initialSlots - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Adds digest[0..8); returns true if it was not present. Slot value 0/0 means empty. */
  add(digest: Uint8Array): boolean {
    if (!this.exact) return false;
    let h = (digest[0]! | (digest[1]! << 8) | (digest[2]! << 16) | (digest[3]! << 24)) >>> 0;
    let l = (digest[4]! | (digest[5]! << 8) | (digest[6]! << 16) | (digest[7]! << 24)) >>> 0;
    if (h === 0 && l === 0) l = 1; // reserve 0/0 for empty
    let i = (h ^ Math.imul(l, 0x9e3779b1)) & this.mask;
    for (;;) {
      const sh = this.hi[i]!;
      const sl = this.lo[i]!;
      if (sh === 0 && sl === 0) break;
      if (sh === h && sl === l) return false;
      i = (i + 1) & this.mask;
    }
    if (this.count + 1 > this.maxEntries) {
      this.exact = false;
      return false;
    }
    this.hi[i] = h;
    this.lo[i] = l;
    this.count++;
    if (this.count * 2 > this.hi.length) this.grow();
    return true;
  }

  private grow(): void {
    const oh = this.hi;
    const ol = this.lo;
    this.hi = new Uint32Array(oh.length * 2);
    this.lo = new Uint32Array(oh.length * 2);
    this.mask = this.hi.length - 1;
    for (let j = 0; j < oh.length; j++) {
      const h = oh[j]!;
      const l = ol[j]!;
      if (h === 0 && l === 0) continue;
      let i = (h ^ Math.imul(l, 0x9e3779b1)) & this.mask;
      while (this.hi[i] !== 0 || this.lo[i] !== 0) i = (i + 1) & this.mask;
      this.hi[i] = h;
      this.lo[i] = l;
    }
  }
}
