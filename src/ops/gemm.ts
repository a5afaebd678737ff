// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, float32 storage.
//
// op(A) is M x K, op(B) is K x N, C is M x N. `transA` means A is stored K x M (so op(A) = A^T),
// likewise `transB`. Leading dimensions (lda, ldb, ldc) are row strides, and offsets let a call
// work on a slice of a bigger buffer (one image of a batch, one group of a grouped conv).
//
// The fast path is the classic blocked scheme (Goto / BLIS):
//   for each KC-deep slice of K: pack B's slice into NR-wide column panels,
//     for each MC-high block of rows: pack A's block into MR-high row panels,
//       for each NR-wide column of tiles: the micro-kernel walks down the column's MR x NR
//       tiles, keeping each 4x4 tile of C in 16 local variables (registers) while it streams
//       the two packed panels through them.
// Packing makes the micro-kernel's loads sequential whatever the transposes are, and blocking
// keeps the packed panels in cache while they are reused. 4x4 is among the fastest tiles in V8
// on x86-64 (bench/ceiling.ts measures 2x4 to 8x8 within 4-5.4 GFLOP/s): its 16 accumulators and
// 8 operands are a little more than the 16 FP registers, and larger tiles spill more.

import { isCached } from '../tensor/buffers.js';
import { declareKernel, PARALLEL_MIN_MULT_ADDS, runKernel } from './parallel.js';

/** C = alpha op(A) op(B) + beta C on row-major float32 buffers, with transposes, leading dimensions and offsets (see gemm.ts). */
export interface GemmArgs {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  alpha: number;
  A: Float32Array;
  aOffset: number;
  lda: number;
  B: Float32Array;
  bOffset: number;
  ldb: number;
  beta: number;
  C: Float32Array;
  cOffset: number;
  ldc: number;
}

/** A GEMM implementation (the blocked one on all threads, or the naive twin in tests). */
export type Gemm = (args: GemmArgs) => void;

/**
 * Micro-tile: MR rows of C by NR columns. The hot loops (microTile, the packing and the stores)
 * step by 4 written as a number: V8 loads a module constant from memory at every use, which
 * cost the micro-kernel 10-20% when its loop stepped by MR and NR.
 */
export const MR = 4;
/** Columns of the micro-kernel's tile of C. */
export const NR = 4;
/** Cache blocking, tuned with `npm run bench -- --workloads G1` on the 2-core reference machine. */
export const KC = 256;
/** Rows of A packed per cache block. */
export const MC = 96;
/** Columns of B packed per cache block. */
export const NC = 2048;

// Packing buffers, grown on demand and reused, so a GEMM call does not allocate once warm.
// They hold float64: the micro-kernel then reads doubles directly instead of converting each
// float32 load (measured ~2% faster on G1; the packed panels are small).
let packedA = new Float64Array(MC * KC);
let packedB = new Float64Array(NC * KC);
/** One micro-tile's sums, from microTile to the store into C (preallocated: no allocation per tile). */
const tileSums = new Float64Array(MR * NR);

/** Scale C by beta first (beta = 0 overwrites, so NaN garbage in C does not leak through 0 * NaN). */
export function scaleC(M: number, N: number, beta: number, C: Float32Array, cOffset: number, ldc: number): void {
  if (beta === 1) return;
  for (let i = 0; i < M; i++) {
    const row = cOffset + i * ldc;
    if (beta === 0) C.fill(0, row, row + N);
    else for (let j = row; j < row + N; j++) C[j] *= beta;
  }
}

/** Check a GEMM's sizes against its buffers; errors name the operand and the sizes. */
export function checkGemmArgs(a: GemmArgs): void {
  const { M, N, K, transA, transB, lda, ldb, ldc } = a;
  if (M < 0 || N < 0 || K < 0) throw new RangeError(`gemm: negative size M=${M} N=${N} K=${K}`);
  const aRows = transA ? K : M, aCols = transA ? M : K;
  const bRows = transB ? N : K, bCols = transB ? K : N;
  if (lda < aCols || ldb < bCols || ldc < N) {
    throw new RangeError(`gemm: leading dimension too small (lda=${lda} for ${aCols} columns, ldb=${ldb} for ${bCols}, ldc=${ldc} for ${N})`);
  }
  const need = (rows: number, ld: number, cols: number, off: number) => (rows === 0 || cols === 0 ? 0 : off + (rows - 1) * ld + cols);
  if (need(aRows, lda, aCols, a.aOffset) > a.A.length) throw new RangeError(`gemm: A (${aRows}x${aCols}, lda ${lda}, offset ${a.aOffset}) overruns its buffer of ${a.A.length}`);
  if (need(bRows, ldb, bCols, a.bOffset) > a.B.length) throw new RangeError(`gemm: B (${bRows}x${bCols}, ldb ${ldb}, offset ${a.bOffset}) overruns its buffer of ${a.B.length}`);
  if (need(M, ldc, N, a.cOffset) > a.C.length) throw new RangeError(`gemm: C (${M}x${N}, ldc ${ldc}, offset ${a.cOffset}) overruns its buffer of ${a.C.length}`);
}

/** out[dst + 4p + r] = M[r0 + r * ld + p] for p < kc, r < 4: four rows of a row-major matrix, interleaved. */
export function interleaveFourRows(M: Float32Array, r0: number, ld: number, kc: number, out: Float64Array, dst: number): void {
  const r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
  for (let p = 0; p < kc; p++, dst += 4) {
    out[dst] = M[r0 + p];
    out[dst + 1] = M[r1 + p];
    out[dst + 2] = M[r2 + p];
    out[dst + 3] = M[r3 + p];
  }
}

/**
 * Pack rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-high panels:
 * packedA[panel * kc * MR + p * MR + r] = op(A)[i0 + panel*MR + r, p0 + p], zero beyond M.
 */
export function packA(A: Float32Array, aOffset: number, lda: number, transA: boolean, i0: number, mc: number, p0: number, kc: number, out: Float64Array): void {
  let dst = 0;
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = Math.min(MR, mc - ir);
    if (rows === MR) {
      // Full panels, without a test per element: op(A)'s four rows are either four strided
      // streams (A stored M x K) or four consecutive floats of each row of A (stored K x M).
      if (transA) {
        for (let p = 0, src = aOffset + p0 * lda + i0 + ir; p < kc; p++, src += lda, dst += 4) {
          out[dst] = A[src];
          out[dst + 1] = A[src + 1];
          out[dst + 2] = A[src + 2];
          out[dst + 3] = A[src + 3];
        }
      } else {
        interleaveFourRows(A, aOffset + (i0 + ir) * lda + p0, lda, kc, out, dst);
        dst += MR * kc;
      }
      continue;
    }
    for (let p = 0; p < kc; p++) {
      for (let r = 0; r < MR; r++) {
        if (r < rows) {
          const i = i0 + ir + r;
          const k = p0 + p;
          out[dst + r] = transA ? A[aOffset + k * lda + i] : A[aOffset + i * lda + k];
        } else out[dst + r] = 0;
      }
      dst += MR;
    }
  }
}

/**
 * Pack depth [p0, p0+kc) x columns [j0, j0+nc) of op(B) into NR-wide panels:
 * packedB[panel * kc * NR + p * NR + c] = op(B)[p0 + p, j0 + panel*NR + c], zero beyond N.
 */
export function packB(B: Float32Array, bOffset: number, ldb: number, transB: boolean, p0: number, kc: number, j0: number, nc: number, out: Float64Array): void {
  let dst = 0;
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = Math.min(NR, nc - jr);
    if (!transB && cols === NR) {
      // Common case: four consecutive floats of one row of B.
      let src = bOffset + p0 * ldb + j0 + jr;
      for (let p = 0; p < kc; p++, src += ldb, dst += 4) {
        out[dst] = B[src];
        out[dst + 1] = B[src + 1];
        out[dst + 2] = B[src + 2];
        out[dst + 3] = B[src + 3];
      }
      continue;
    }
    if (cols === NR) {
      // B stored N x K: op(B)'s four columns are four rows of B.
      interleaveFourRows(B, bOffset + (j0 + jr) * ldb + p0, ldb, kc, out, dst);
      dst += NR * kc;
      continue;
    }
    for (let p = 0; p < kc; p++) {
      for (let c = 0; c < NR; c++) {
        if (c < cols) {
          const j = j0 + jr + c;
          const k = p0 + p;
          out[dst + c] = transB ? B[bOffset + j * ldb + k] : B[bOffset + k * ldb + j];
        } else out[dst + c] = 0;
      }
      dst += NR;
    }
  }
}

/**
 * The micro-kernel's arithmetic for one micro-tile: the MR x NR sums
 *   tile[r * NR + c] = sum over p < kc of Ap[aStart + p*MR + r] * Bp[bStart + p*NR + c]
 * in float64, p in order. Sixteen accumulators and eight operands per step of p are more than
 * the sixteen floating-point registers V8 allocates, so how this loop is compiled decides the
 * GEMM's speed: as a small function of its own it runs 10-25% faster (K = 16 to 256, data in
 * L1) than the same loop inside the column loop below, which keeps its own variables live
 * beside it.
 */
export function microTile(kc: number, Ap: Float64Array, aStart: number, Bp: Float64Array, bStart: number, tile: Float64Array): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0, a = aStart, b = bStart; p < kc; p++, a += 4, b += 4) {
    const a0 = Ap[a], a1 = Ap[a + 1], a2 = Ap[a + 2], a3 = Ap[a + 3];
    const b0 = Bp[b], b1 = Bp[b + 1], b2 = Bp[b + 2], b3 = Bp[b + 3];
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
  }
  tile[0] = c00; tile[1] = c01; tile[2] = c02; tile[3] = c03;
  tile[4] = c10; tile[5] = c11; tile[6] = c12; tile[7] = c13;
  tile[8] = c20; tile[9] = c21; tile[10] = c22; tile[11] = c23;
  tile[12] = c30; tile[13] = c31; tile[14] = c32; tile[15] = c33;
}

/**
 * The micro-kernel, for one column of micro-tiles: for each MR-row tile t of the packed A block
 * (rows [t*MR, t*MR+MR) of its `rows`), C[tile] += alpha * (packed MR x kc panel) * (packed
 * kc x NR panel of B), writing only the rows < rows and columns < cols that exist (edge tiles).
 * One call per column of tiles rather than per tile: the B panel stays in L1 across the column,
 * and the call's fixed cost is paid once per column (measured 5-8% faster GEMMs for K <= 32,
 * the pointwise layers of small models, and 0-2% for large K).
 */
export function microKernelColumn(
  kc: number,
  Ap: Float64Array,
  rows: number,
  Bp: Float64Array,
  bStart: number,
  alpha: number,
  C: Float32Array,
  cStart: number,
  ldc: number,
  cols: number,
  overwrite: boolean,
): void {
  const t = tileSums;
  for (let r0 = 0, aStart = 0, cRow = cStart; r0 < rows; r0 += MR, aStart += kc * MR, cRow += MR * ldc) {
    microTile(kc, Ap, aStart, Bp, bStart, t);
    if (rows - r0 < MR || cols < NR) {
      storeEdgeTile(t, alpha, C, cRow, ldc, Math.min(MR, rows - r0), cols, overwrite);
      continue;
    }
    if (overwrite) {
      // First K block of a GEMM with beta = 0: store instead of accumulating into a zeroed C (one
      // pass over C fewer). "+ 0" stores +0 where 0 + x would have, so the result is the same bits.
      for (let r = 0, c = cRow; r < 16; r += 4, c += ldc) {
        C[c] = alpha * t[r] + 0; C[c + 1] = alpha * t[r + 1] + 0; C[c + 2] = alpha * t[r + 2] + 0; C[c + 3] = alpha * t[r + 3] + 0;
      }
    } else {
      for (let r = 0, c = cRow; r < 16; r += 4, c += ldc) {
        C[c] += alpha * t[r]; C[c + 1] += alpha * t[r + 1]; C[c + 2] += alpha * t[r + 2]; C[c + 3] += alpha * t[r + 3];
      }
    }
  }
}

/**
 * The tiles at C's right and bottom edges, with fewer than MR rows or NR columns: a loop of
 * its own, so that the micro-kernel's hot path stays straight-line code (an edge loop inside it
 * made V8 deoptimise the kernel in some processes) and allocates nothing.
 */
export function storeEdgeTile(tile: Float64Array, alpha: number, C: Float32Array, cStart: number, ldc: number, rows: number, cols: number, overwrite: boolean): void {
  for (let r = 0; r < rows; r++) {
    for (let s = 0; s < cols; s++) {
      const i = cStart + r * ldc + s;
      C[i] = overwrite ? alpha * tile[r * NR + s] + 0 : C[i] + alpha * tile[r * NR + s];
    }
  }
}

/** Blocked, packed GEMM (see the file comment), on one thread; `parallelGemm` splits it over threads. */
export function gemm(args: GemmArgs): void {
  checkGemmArgs(args);
  gemmCore(args);
}

/**
 * The blocked GEMM without argument checks. Self-contained (it uses only the functions and
 * constants of this file), because worker threads receive it as source text (see parallel.ts).
 */
export function gemmCore(args: GemmArgs): void {
  const { transA, transB, M, N, K, alpha, A, aOffset, lda, B, bOffset, ldb, beta, C, cOffset, ldc } = args;
  // With beta = 0 the first K block stores into C instead of adding to a zeroed C.
  const overwriteFirst = beta === 0 && K > 0 && alpha !== 0;
  if (!overwriteFirst) scaleC(M, N, beta, C, cOffset, ldc);
  if (M === 0 || N === 0 || K === 0 || alpha === 0) return;
  const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;
  for (let j0 = 0; j0 < N; j0 += NC) {
    const nc = Math.min(NC, N - j0);
    for (let p0 = 0; p0 < K; p0 += KC) {
      const kc = Math.min(KC, K - p0);
      const needB = roundUp(nc, NR) * kc;
      if (packedB.length < needB) packedB = new Float64Array(needB);
      packB(B, bOffset, ldb, transB, p0, kc, j0, nc, packedB);
      for (let i0 = 0; i0 < M; i0 += MC) {
        const mc = Math.min(MC, M - i0);
        const needA = roundUp(mc, MR) * kc;
        if (packedA.length < needA) packedA = new Float64Array(needA);
        packA(A, aOffset, lda, transA, i0, mc, p0, kc, packedA);
        for (let jr = 0; jr < nc; jr += NR) {
          const cols = Math.min(NR, nc - jr);
          microKernelColumn(kc, packedA, mc, packedB, (jr / NR) * kc * NR, alpha, C, cOffset + i0 * ldc + j0 + jr, ldc, cols, overwriteFirst && p0 === 0);
        }
      }
    }
  }
}

/** The naive twin: the textbook triple loop, for tests. */
export function gemmNaive(args: GemmArgs): void {
  checkGemmArgs(args);
  const { transA, transB, M, N, K, alpha, A, aOffset, lda, B, bOffset, ldb, beta, C, cOffset, ldc } = args;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let acc = 0;
      for (let p = 0; p < K; p++) {
        const a = transA ? A[aOffset + p * lda + i] : A[aOffset + i * lda + p];
        const b = transB ? B[bOffset + j * ldb + p] : B[bOffset + p * ldb + j];
        acc += a * b;
      }
      const c = cOffset + i * ldc + j;
      C[c] = (beta === 0 ? 0 : beta * C[c]) + alpha * acc;
    }
  }
}

// =============================================================================================
// On every thread: GEMM as a declared kernel (see parallel.ts).
// =============================================================================================

/**
 * The part of C in micro-tile rows [lo, hi) (or, when `splitRows` is 0, micro-tile columns) of
 * C = alpha op(A) op(B) + beta C. The longer of M and N is split, never K: each element of C is
 * computed exactly as on one thread. Self-contained like gemmCore: workers run it as source.
 */
function gemmSlice(p: Record<'transA' | 'transB' | 'M' | 'N' | 'K' | 'aOffset' | 'lda' | 'bOffset' | 'ldb' | 'cOffset' | 'ldc' | 'splitRows' | 'alpha' | 'beta', number>, b: Record<'A' | 'B' | 'C', Float32Array | Float64Array>, lo: number, hi: number): void {
  const { M, N, K, lda, ldb, ldc, alpha, beta } = p;
  const transA = p.transA === 1, transB = p.transB === 1;
  const A = b.A as Float32Array, B = b.B as Float32Array, C = b.C as Float32Array;
  if (p.splitRows === 1) {
    const i0 = lo * MR, i1 = Math.min(M, hi * MR);
    gemmCore({ transA, transB, M: i1 - i0, N, K, alpha, A, aOffset: p.aOffset + (transA ? i0 : i0 * lda), lda, B, bOffset: p.bOffset, ldb, beta, C, cOffset: p.cOffset + i0 * ldc, ldc });
  } else {
    const j0 = lo * NR, j1 = Math.min(N, hi * NR);
    gemmCore({ transA, transB, M, N: j1 - j0, K, alpha, A, aOffset: p.aOffset, lda, B, bOffset: p.bOffset + (transB ? j0 * ldb : j0), ldb, beta, C, cOffset: p.cOffset + j0, ldc });
  }
}

const GEMM_KERNEL = declareKernel({
  name: 'gemm',
  ints: ['transA', 'transB', 'M', 'N', 'K', 'aOffset', 'lda', 'bOffset', 'ldb', 'cOffset', 'ldc', 'splitRows'],
  floats: ['alpha', 'beta'],
  reads: ['A', 'B'],
  writes: ['C'],
  large: [],
  splits: 'micro-tile rows of C (micro-tile columns when N > M)',
  // One chunk per thread: each chunk packs all of B (or A) again.
  chunksPerThread: 1,
  minWork: PARALLEL_MIN_MULT_ADDS,
  slice: gemmSlice,
  deps: [scaleC, interleaveFourRows, packA, packB, storeEdgeTile, microTile, microKernelColumn, gemmCore],
  prelude: `const MR = ${MR}, NR = ${NR}, KC = ${KC}, MC = ${MC}, NC = ${NC};\nlet packedA = new Float64Array(MC * KC);\nlet packedB = new Float64Array(NC * KC);\nconst tileSums = new Float64Array(MR * NR);`,
});

/** Extent of a row-major matrix slice: from its offset to one past its last element. */
function extent(rows: number, cols: number, ld: number): number {
  return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
}

/**
 * GEMM on all threads when it is big enough to pay for the hand-off, else on this one. An
 * operand outside shared memory is passed as the window the GEMM reads (so that only that much
 * is copied for the workers), the buffer cache's own buffers whole (used in place).
 */
export function parallelGemm(args: GemmArgs): void {
  checkGemmArgs(args);
  const { transA, transB, M, N, K, lda, ldb, ldc } = args;
  const window = (data: Float32Array, offset: number, length: number): [Float32Array, number] => (isCached(data) ? [data, offset] : [data.subarray(offset, offset + length), 0]);
  const [A, aOffset] = window(args.A, args.aOffset, transA ? extent(K, M, lda) : extent(M, K, lda));
  const [B, bOffset] = window(args.B, args.bOffset, transB ? extent(N, K, ldb) : extent(K, N, ldb));
  const [C, cOffset] = window(args.C, args.cOffset, extent(M, N, ldc));
  const splitRows = M >= N ? 1 : 0;
  const tiles = splitRows ? Math.ceil(M / MR) : Math.ceil(N / NR);
  if (tiles === 0) {
    gemmCore(args);
    return;
  }
  runKernel(GEMM_KERNEL, { transA: transA ? 1 : 0, transB: transB ? 1 : 0, M, N, K, aOffset, lda, bOffset, ldb, cOffset, ldc, splitRows, alpha: args.alpha, beta: args.beta }, { A, B, C }, tiles, M * N * K);
}

/** Shorthand for the common dense case: C(MxN) = op(A) * op(B) (+ C if accumulate). */
export function matmulInto(
  A: Float32Array,
  B: Float32Array,
  C: Float32Array,
  M: number,
  N: number,
  K: number,
  options: { transA?: boolean; transB?: boolean; accumulate?: boolean; aOffset?: number; bOffset?: number; cOffset?: number } = {},
): void {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  parallelGemm({
    transA,
    transB,
    M,
    N,
    K,
    alpha: 1,
    A,
    aOffset: options.aOffset ?? 0,
    lda: transA ? M : K,
    B,
    bOffset: options.bOffset ?? 0,
    ldb: transB ? K : N,
    beta: options.accumulate ? 1 : 0,
    C,
    cOffset: options.cOffset ?? 0,
    ldc: N,
  });
}
