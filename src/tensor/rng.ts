// Seeded random numbers: xoshiro128** (Blackman & Vigna), 128 bits of state in four uint32s.
//
// Every random choice in the library (weight init, shuffling, dropout masks, augmentation) takes
// an Rng object as an argument. There is no global generator, so a run is reproducible from its
// seed, and a checkpoint can store `getState()` and continue bit-for-bit after `setState()`.

/** The complete state of an Rng: four uint32 words. */
export type RngState = [number, number, number, number];

const TWO_POW_MINUS_32 = 1 / 4294967296;

/** splitmix32: spreads a (possibly small) seed over the 128-bit state so that seeds 0, 1, 2 differ well. */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/**
 * A seed derived from several integers (e.g. run seed, epoch, batch index): independent streams
 * that can be recreated from their coordinates, so a resumed run can jump to any batch.
 */
export function deriveSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    const next = splitmix32((part >>> 0) ^ h);
    h = (next() ^ Math.imul(h, 0x01000193)) >>> 0;
  }
  return h;
}

/** A seeded random generator (xoshiro128**) whose state can be saved and restored: every random choice takes one. */
export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  constructor(seed = 0) {
    if (!Number.isFinite(seed)) throw new RangeError(`Rng: seed must be a finite number, got ${seed}`);
    const next = splitmix32(Math.floor(seed));
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Next raw 32-bit unsigned integer. */
  nextUint32(): number {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    // result = rotl(s1 * 5, 7) * 9
    const x = Math.imul(s1, 5);
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.s1 = (s1 ^ n2) >>> 0;
    this.s0 = (s0 ^ n3) >>> 0;
    this.s2 = (n2 ^ t) >>> 0;
    this.s3 = ((n3 << 11) | (n3 >>> 21)) >>> 0;
    return result;
  }

  /** Uniform in [low, high). */
  uniform(low = 0, high = 1): number {
    return low + (high - low) * (this.nextUint32() * TWO_POW_MINUS_32);
  }

  /**
   * Normal(mean, std) by the Box-Muller transform. One pair of uniforms per call (the second
   * value is not cached, so the state is exactly the four words and nothing else).
   */
  normal(mean = 0, std = 1): number {
    // u1 in (0, 1] so that log(u1) is finite.
    const u1 = 1 - this.nextUint32() * TWO_POW_MINUS_32;
    const u2 = this.nextUint32() * TWO_POW_MINUS_32;
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Integer uniform in [low, high) without modulo bias (rejection sampling). */
  int(low: number, high: number): number {
    const range = high - low;
    if (!Number.isInteger(low) || !Number.isInteger(high) || range <= 0 || range > 4294967296) {
      throw new RangeError(`Rng.int: need integers low < high with high - low <= 2^32, got [${low}, ${high})`);
    }
    const limit = 4294967296 - (4294967296 % range);
    let r = this.nextUint32();
    while (r >= limit) r = this.nextUint32();
    return low + (r % range);
  }

  /** Fisher-Yates shuffle in place; returns the same array. */
  shuffle<T extends { length: number; [i: number]: unknown }>(array: T): T {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }

  /** A random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  getState(): RngState {
    return [this.s0, this.s1, this.s2, this.s3];
  }

  setState(state: readonly number[]): void {
    if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff)) {
      throw new RangeError(`Rng.setState: expected 4 uint32 words, got [${state.join(', ')}]`);
    }
    if (state.every((w) => w === 0)) throw new RangeError('Rng.setState: the all-zero state is invalid for xoshiro128**');
    [this.s0, this.s1, this.s2, this.s3] = state;
  }

  /** An independent copy that continues the same sequence. */
  clone(): Rng {
    const copy = new Rng(0);
    copy.setState(this.getState());
    return copy;
  }
}
