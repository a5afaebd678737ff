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
// keeps the packed panels in cache while they are reused. Packing is also where a batch of
// images can be read in place (see GemmBatch): a pointwise convolution multiplies all images at
// once without first copying them side by side. The sums are float32 runs of SUM_RUN steps of K
// added in float64 (see microTile); the WebAssembly twin of the micro-kernel (gemmColumnWasm)
// computes two panels' tiles at once in SIMD lanes, with the same bits.

import { isCached } from '../tensor/buffers.js';
import { emitModule, hasWasmSimd, i, I32, V128, type WasmFunction } from '../wasm/emit.js';
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
  /** Images side by side, read and written where they lie (see GemmBatch). */
  batch?: GemmBatch;
}

/**
 * A batch of NCHW images as one matrix, without copying them side by side. A 1x1 convolution
 * is Y_n = W X_n for each image n, where X_n (channels x pixels) is a row-major block of `size`
 * columns; putting the images' pixels one after another makes one GEMM of N * size columns,
 * whose column j is pixel j % size of image j / size: at offset (j / size) * stride + j % size
 * from the operand's offset, the next image's block `stride` floats further on.
 *   along 'columns': the columns of op(B) and of C are batched (B not transposed): the forward
 *     Y = W X, and the input gradient dX = W^T dY. beta must be 0.
 *   along 'depth': K is batched, in A (not transposed) and in B (transposed): the weight
 *     gradient dW = dY X^T, a sum over every pixel of every image.
 * The packed panels hold the same numbers in the same order as for images copied side by side,
 * so the results are the same bits.
 */
export interface GemmBatch {
  along: 'columns' | 'depth';
  /** Pixels (columns, or steps of K) per image. */
  size: number;
  /**
   * Floats from one image's block to the next, in A, B and C (0 for an operand that is not
   * batched; bStride = size for a B whose images lie side by side in each row, a plain matrix,
   * as an im2col column matrix of several images is).
   */
  aStride: number;
  bStride: number;
  cStride: number;
  /** The index in the batch of this GEMM's first column (a thread's share of the columns starts mid-batch). */
  firstColumn: number;
  /**
   * Along depth: end the blocks of K at each image's end, so that C is rounded after each image
   * exactly as image-by-image GEMMs with beta = 1 would round it (the same bits as those, in one
   * job). Without it a block of K may take the end of one image and the start of the next.
   */
  roundPerImage?: boolean;
}

/**
 * A convolution of a batch multiplies image by image only when each image's product has at least
 * this many multiply-adds; smaller products go through one GEMM for all images (GemmBatch), as
 * per-image GEMMs cost more in calls, and on two threads in hand-offs, than in arithmetic. Used by
 * the pointwise convolution (T1's 16x16 planes of 8 to 16 channels, 32K each: about 5% faster
 * batched on two threads) and by im2col convolutions (T1's first layer, 55K each, made 64 tiny
 * jobs a pass image by image).
 */
export const PER_IMAGE_GEMM_FROM_MULT_ADDS = 1 << 20;

/** Where pixel j of a batch lies, from the operand's offset: image j / size's block, then j % size. */
export function batchedIndex(j: number, size: number, stride: number): number {
  const image = Math.floor(j / size);
  return image * stride + (j - image * size);
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

// The packed panels, in one buffer allocated once: A's block at the start (at most MC x KC
// values), B's slice after it (at most NC x KC). One buffer rather than two because V8 checks an
// array's type and reloads its length and data pointer at every step of a loop: the micro-kernel
// reading both panels from the same array does that once per step instead of twice
// (bench/ceiling.ts's loop 5.0 -> 5.3 GFLOP/s). With the WebAssembly kernels the buffer is the
// module's memory, where the kernel reads it.
const PACKED_B_START = MC * KC;
/** Columns of the column sums: the WebAssembly kernel computes two NR-wide panels of B at once. */
const SUMS_COLUMNS = 2 * NR;
/** Steps of K summed in float32 before the sum is added in float64 (see microTile). */
export const SUM_RUN = 32;

/**
 * What MOBILENET_KERNELS asks for that cannot be had (an unknown value, or wasm without SIMD),
 * or null. Not thrown while modules load, where it would be a stack trace: the CLI reports it
 * as one line before any command runs, and the first GEMM of a library user throws it.
 */
export const KERNELS_PROBLEM: string | null = kernelsProblem();
/** Which kernels run: 'wasm' (WebAssembly SIMD, the default where the engine has it) or 'js' (`MOBILENET_KERNELS=js`). */
export const KERNELS: 'wasm' | 'js' = KERNELS_PROBLEM === null && askedKernels() !== 'js' && hasWasmSimd() ? 'wasm' : 'js';

function askedKernels(): string | undefined {
  return typeof process === 'object' ? process.env?.MOBILENET_KERNELS : undefined;
}

function kernelsProblem(): string | null {
  const asked = askedKernels();
  if (asked !== undefined && asked !== '' && asked !== 'js' && asked !== 'wasm') return `MOBILENET_KERNELS must be 'js' or 'wasm' (or unset), got '${asked}'`;
  if (asked === 'wasm' && !hasWasmSimd()) return 'MOBILENET_KERNELS=wasm, but this JavaScript engine has no WebAssembly SIMD (unset it to run the TypeScript kernels)';
  return null;
}

/** The micro-kernel module's bytes (see gemmColumnWasm), emitted once at start-up. */
const GEMM_WASM = KERNELS === 'wasm' ? emitModule({ memoryPages: Math.ceil(((MC + NC) * KC * 4 + MC * SUMS_COLUMNS * 8) / 65536), functions: [gemmColumnWasm(1), gemmColumnWasm(2)] }) : null;

/** The WebAssembly column kernels: (kc, rows, aByte, bByte, sumsByte), one B panel or two (see gemmColumnWasm). */
export interface GemmColumnKernels {
  one: (kc: number, rows: number, aByte: number, bByte: number, sumsByte: number) => void;
  two: (kc: number, rows: number, aByte: number, bByte: number, sumsByte: number) => void;
}

/**
 * The packing buffer and the column sums (MC x 2 NR: one column of micro-tiles, two panels wide,
 * from the micro-kernel to the store into C), in the WebAssembly module's memory when its kernel
 * runs, else in plain arrays; and the kernels (null: the TypeScript ones). Self-contained: the
 * workers call it too, with the same bytes.
 */
export function createGemmScratch(wasmBytes: Uint8Array<ArrayBuffer> | null): { packed: Float32Array; sums: Float64Array; kernels: GemmColumnKernels | null } {
  const packedLength = (MC + NC) * KC, sumsLength = MC * 2 * NR;
  if (wasmBytes === null) return { packed: new Float32Array(packedLength), sums: new Float64Array(sumsLength), kernels: null };
  const exports = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes)).exports;
  const memory = (exports.memory as WebAssembly.Memory).buffer;
  const kernels = { one: exports.gemmColumn1, two: exports.gemmColumn2 } as GemmColumnKernels;
  // Node compiles a module's functions with a quick baseline compiler first and the optimising
  // one after some calls; warm up now, so the first GEMM is not measured at the baseline speed.
  for (let k = 0; k < 200; k++) {
    kernels.one(KC, MC, 0, MC * KC * 4, packedLength * 4);
    kernels.two(KC, MC, 0, MC * KC * 4, packedLength * 4);
  }
  return { packed: new Float32Array(memory, 0, packedLength), sums: new Float64Array(memory, packedLength * 4, sumsLength), kernels };
}

const gemmScratch = createGemmScratch(GEMM_WASM);
const packed = gemmScratch.packed;
/** The column of micro-tiles' sums, from the micro-kernel to the store into C. */
const columnSums = gemmScratch.sums;
/** The WebAssembly micro-kernels, or null for the TypeScript one (tests switch them with `useGemmKernel`). */
let wasmColumns = gemmScratch.kernels;
const wasmColumnsLoaded = gemmScratch.kernels;

/** Run this thread's GEMMs with the given kernel ('js' is always there; 'wasm' where KERNELS is). For tests and benchmarks comparing the twins. */
export function useGemmKernel(kind: 'wasm' | 'js'): void {
  if (kind === 'wasm' && wasmColumnsLoaded === null) throw new RangeError('useGemmKernel: the WebAssembly kernels are not loaded (MOBILENET_KERNELS=js, or no WebAssembly SIMD)');
  wasmColumns = kind === 'wasm' ? wasmColumnsLoaded : null;
}
/** A column of tiles gathered from a batch's two images, and where its columns lie (see straddlingColumn). */
const straddleBlock = new Float32Array(MC * SUMS_COLUMNS);
const straddleColumns = new Int32Array(SUMS_COLUMNS);

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
  const { M, N, K, transA, transB, lda, ldb, ldc, batch } = a;
  if (M < 0 || N < 0 || K < 0) throw new RangeError(`gemm: negative size M=${M} N=${N} K=${K}`);
  if (batch !== undefined) {
    checkGemmBatch(a, batch);
    return;
  }
  const aRows = transA ? K : M, aCols = transA ? M : K;
  const bRows = transB ? N : K, bCols = transB ? K : N;
  if (lda < aCols || ldb < bCols || ldc < N) {
    throw new RangeError(`gemm: leading dimension too small (lda=${lda} for ${aCols} columns, ldb=${ldb} for ${bCols}, ldc=${ldc} for ${N})`);
  }
  checkMatrix('A', aRows, aCols, 'lda', lda, a.aOffset, a.A);
  checkMatrix('B', bRows, bCols, 'ldb', ldb, a.bOffset, a.B);
  checkMatrix('C', M, N, 'ldc', ldc, a.cOffset, a.C);
}

function checkExtent(name: string, what: string, buffer: Float32Array, needed: number): void {
  if (needed > buffer.length) throw new RangeError(`gemm: ${name} (${what}) overruns its buffer of ${buffer.length}`);
}

/** A rows x cols row-major operand (row stride ld, from offset) inside its buffer; an empty one always fits. */
function checkMatrix(name: string, rows: number, cols: number, ldName: string, ld: number, offset: number, buffer: Float32Array): void {
  checkExtent(name, `${rows}x${cols}, ${ldName} ${ld}, offset ${offset}`, buffer, rows === 0 || cols === 0 ? 0 : offset + extent(rows, cols, ld));
}

/** The batched layouts' rules (see GemmBatch) and extents: each image's block inside its buffer, blocks apart. */
function checkGemmBatch(a: GemmArgs, batch: GemmBatch): void {
  const { M, N, K, lda, ldb, ldc } = a;
  const { along, size, aStride, bStride, cStride, firstColumn } = batch;
  const fail = (why: string) => {
    throw new RangeError(`gemm: batch along ${along}: ${why}`);
  };
  if (!Number.isInteger(size) || size < 1) fail(`size must be an integer >= 1, got ${size}`);
  if (!Number.isInteger(firstColumn) || firstColumn < 0) fail(`firstColumn must be an integer >= 0, got ${firstColumn}`);
  // The block of `rows` rows (row stride ld, `size` columns) of each image, and where the last one ends.
  const blocks = (name: string, rows: number, ld: number, stride: number, last: number, offset: number, buffer: Float32Array) => {
    if (ld < size) fail(`${name}'s row stride ${ld} is less than the ${size} pixels of an image`);
    if (stride < rows * ld) fail(`${name}'s images are ${stride} floats apart, less than a block of ${rows} rows of ${ld}`);
    checkExtent(name, `${rows} rows of ${ld} per image, images ${stride} apart, offset ${offset}`, buffer, rows === 0 || last < 0 ? 0 : offset + (rows - 1) * ld + batchedIndex(last, size, stride) + 1);
  };
  // B, `rows` x `cols` (its columns the batch's): images in blocks, or with bStride = size side by
  // side in each row, that is a plain matrix.
  const operandB = (rows: number, cols: number, last: number) => {
    if (bStride === size) checkMatrix('B', rows, cols, 'ldb', ldb, a.bOffset, a.B);
    else blocks('B', rows, ldb, bStride, last, a.bOffset, a.B);
  };
  if (along === 'columns') {
    if (a.transB) fail('B must not be transposed');
    if (a.beta !== 0) fail(`beta must be 0, got ${a.beta}`);
    if (firstColumn % NR !== 0) fail(`firstColumn (${firstColumn}) must be a multiple of ${NR}`);
    const aRows = a.transA ? K : M, aCols = a.transA ? M : K;
    if (lda < aCols) fail(`lda=${lda} is less than A's ${aCols} columns`);
    checkMatrix('A', aRows, aCols, 'lda', lda, a.aOffset, a.A);
    operandB(K, firstColumn + N, N === 0 ? -1 : firstColumn + N - 1);
    blocks('C', M, ldc, cStride, N === 0 ? -1 : firstColumn + N - 1, a.cOffset, a.C);
  } else if (along === 'depth') {
    if (a.transA || !a.transB) fail('A must not be transposed and B must be');
    if (firstColumn !== 0) fail(`firstColumn must be 0 (K is never split), got ${firstColumn}`);
    if (ldc < N) fail(`ldc=${ldc} is less than C's ${N} columns`);
    blocks('A', M, lda, aStride, K - 1, a.aOffset, a.A);
    operandB(N, K, K - 1);
    checkMatrix('C', M, N, 'ldc', ldc, a.cOffset, a.C);
  } else fail(`along must be 'columns' or 'depth'`);
}

/** out[dst + 4p + r] = M[r0 + r * ld + p] for p < kc, r < 4: four rows of a row-major matrix, interleaved. */
export function interleaveFourRows(M: Float32Array, r0: number, ld: number, kc: number, out: Float32Array, dst: number): void {
  const r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
  for (let p = 0; p < kc; p++, dst += 4) {
    out[dst] = M[r0 + p];
    out[dst + 1] = M[r1 + p];
    out[dst + 2] = M[r2 + p];
    out[dst + 3] = M[r3 + p];
  }
}

/** out[dst + 4p + c] = M[src + p * ld + c] for p < kc, c < 4: four consecutive columns of a row-major matrix, interleaved. */
export function copyFourColumns(M: Float32Array, src: number, ld: number, kc: number, out: Float32Array, dst: number): void {
  for (let p = 0; p < kc; p++, src += ld, dst += 4) {
    out[dst] = M[src];
    out[dst + 1] = M[src + 1];
    out[dst + 2] = M[src + 2];
    out[dst + 3] = M[src + 3];
  }
}

/**
 * Pack rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-high panels:
 * out[outStart + panel * kc * MR + p * MR + r] = op(A)[i0 + panel*MR + r, p0 + p], zero beyond M.
 */
export function packA(A: Float32Array, aOffset: number, lda: number, transA: boolean, i0: number, mc: number, p0: number, kc: number, out: Float32Array, outStart: number): void {
  let dst = outStart;
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = Math.min(MR, mc - ir);
    if (rows === MR) {
      // Full panels, without a test per element: op(A)'s four rows are either four strided
      // streams (A stored M x K) or four consecutive floats of each row of A (stored K x M).
      if (transA) copyFourColumns(A, aOffset + p0 * lda + i0 + ir, lda, kc, out, dst);
      else interleaveFourRows(A, aOffset + (i0 + ir) * lda + p0, lda, kc, out, dst);
      dst += MR * kc;
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
 * out[outStart + panel * kc * NR + p * NR + c] = op(B)[p0 + p, j0 + panel*NR + c], zero beyond N.
 */
export function packB(B: Float32Array, bOffset: number, ldb: number, transB: boolean, p0: number, kc: number, j0: number, nc: number, out: Float32Array, outStart: number): void {
  let dst = outStart;
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = Math.min(NR, nc - jr);
    if (!transB && cols === NR) {
      // Common case: four consecutive floats of one row of B.
      copyFourColumns(B, bOffset + p0 * ldb + j0 + jr, ldb, kc, out, dst);
      dst += NR * kc;
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
 * packB for a batch along columns (see GemmBatch): the same panels, column j of op(B) read from
 * its image's block. `j0` counts from the start of the batch. When a panel's columns lie in one
 * image each step of p reads consecutive floats, as packB does.
 */
export function packBatchedColumns(B: Float32Array, bOffset: number, ldb: number, p0: number, kc: number, j0: number, nc: number, size: number, stride: number, out: Float32Array, outStart: number): void {
  let dst = outStart;
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = Math.min(NR, nc - jr);
    if (((j0 + jr) % size) + cols > size) {
      // The panel's columns straddle two images (or more, for planes under NR pixels): column by column.
      for (let c = 0; c < NR; c++) {
        let src = c < cols ? bOffset + batchedIndex(j0 + jr + c, size, stride) + p0 * ldb : -1;
        for (let p = 0, d = dst + c; p < kc; p++, src += ldb, d += 4) out[d] = c < cols ? B[src] : 0;
      }
      dst += NR * kc;
      continue;
    }
    let src = bOffset + batchedIndex(j0 + jr, size, stride) + p0 * ldb;
    if (cols === NR) {
      copyFourColumns(B, src, ldb, kc, out, dst);
      dst += NR * kc;
      continue;
    }
    for (let p = 0; p < kc; p++, src += ldb, dst += 4) {
      for (let c = 0; c < NR; c++) out[dst + c] = c < cols ? B[src + c] : 0;
    }
  }
}

/**
 * Rows [r0, r0 + count) x depth [p0, p0 + kc) of a matrix batched along depth (A, or B stored
 * transposed; see GemmBatch) into 4-row panels, as packA and packB lay them out:
 *   out[outStart + panel * kc * 4 + p * 4 + r] = M[offset + (r0 + panel*4 + r) * ld + batchedIndex(p0 + p)],
 * zero beyond the last row. K is read in runs that stay within one image.
 */
export function packBatchedDepth(M: Float32Array, offset: number, ld: number, r0: number, count: number, p0: number, kc: number, size: number, stride: number, out: Float32Array, outStart: number): void {
  for (let panel = 0; panel * 4 < count; panel++) {
    const rows = Math.min(4, count - panel * 4), rowStart = offset + (r0 + panel * 4) * ld, panelStart = outStart + panel * kc * 4;
    for (let p = 0; p < kc; ) {
      const image = Math.floor((p0 + p) / size), pixel = p0 + p - image * size;
      const run = Math.min(kc - p, size - pixel), src = rowStart + image * stride + pixel;
      if (rows === 4) interleaveFourRows(M, src, ld, run, out, panelStart + 4 * p);
      else for (let t = 0; t < run; t++) for (let r = 0; r < 4; r++) out[panelStart + 4 * (p + t) + r] = r < rows ? M[src + r * ld + t] : 0;
      p += run;
    }
  }
}

/**
 * The micro-kernel's arithmetic for one micro-tile: the MR x NR sums
 *   tile[t + r * 2NR + c] = sum over p < kc of P[aStart + p*MR + r] * P[bStart + p*NR + c]
 * (A's panel and B's both in the one packing buffer P; the tile's rows 2 NR apart, since the
 * column sums hold two panels side by side), p in order, in two levels:
 *   - runs of SUM_RUN steps of p in float32: each product rounded to float32, then each sum, as
 *     float32 SIMD lanes (the WebAssembly kernel) do without a fused multiply-add.
 *     Math.fround(x * y) of two float32 values is their float32 product, and Math.fround(s + q)
 *     their float32 sum (float64 holds more than twice float32's digits, so rounding twice
 *     gives the once-rounded result);
 *   - the runs' sums added up in float64.
 * Float32 runs are what make SIMD fast (four lanes instead of two); short runs keep the error
 * near float64's (a float32 sum of 256 terms, one run, made PyTorch parity tests of whole models
 * fail their bounds).
 * Sixteen accumulators and eight operands per step of p are more than the sixteen
 * floating-point registers V8 allocates, so how this loop is compiled decides the GEMM's speed:
 * as a small function of its own it runs 10-25% faster (K = 16 to 256, data in L1) than the same
 * loop inside the column loop below, which keeps its own variables live beside it.
 */
export function microTile(kc: number, P: Float32Array, aStart: number, bStart: number, tile: Float64Array, t: number): void {
  const f = Math.fround;
  for (let r = 0; r < 4; r++) tile[t + 8 * r] = tile[t + 8 * r + 1] = tile[t + 8 * r + 2] = tile[t + 8 * r + 3] = 0;
  for (let p0 = 0, a = aStart, b = bStart; p0 < kc; p0 += SUM_RUN) {
    let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
    let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
    let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
    let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
    for (let p = p0, end = Math.min(kc, p0 + SUM_RUN); p < end; p++, a += 4, b += 4) {
      const a0 = P[a], a1 = P[a + 1], a2 = P[a + 2], a3 = P[a + 3];
      const b0 = P[b], b1 = P[b + 1], b2 = P[b + 2], b3 = P[b + 3];
      c00 = f(c00 + f(a0 * b0)); c01 = f(c01 + f(a0 * b1)); c02 = f(c02 + f(a0 * b2)); c03 = f(c03 + f(a0 * b3));
      c10 = f(c10 + f(a1 * b0)); c11 = f(c11 + f(a1 * b1)); c12 = f(c12 + f(a1 * b2)); c13 = f(c13 + f(a1 * b3));
      c20 = f(c20 + f(a2 * b0)); c21 = f(c21 + f(a2 * b1)); c22 = f(c22 + f(a2 * b2)); c23 = f(c23 + f(a2 * b3));
      c30 = f(c30 + f(a3 * b0)); c31 = f(c31 + f(a3 * b1)); c32 = f(c32 + f(a3 * b2)); c33 = f(c33 + f(a3 * b3));
    }
    tile[t] += c00; tile[t + 1] += c01; tile[t + 2] += c02; tile[t + 3] += c03;
    tile[t + 8] += c10; tile[t + 9] += c11; tile[t + 10] += c12; tile[t + 11] += c13;
    tile[t + 16] += c20; tile[t + 17] += c21; tile[t + 18] += c22; tile[t + 19] += c23;
    tile[t + 24] += c30; tile[t + 25] += c31; tile[t + 26] += c32; tile[t + 27] += c33;
  }
}

/**
 * microTile's twin in WebAssembly SIMD, for a whole column of micro-tiles and `panels` (1 or 2)
 * NR-wide panels of B side by side: for each 4-row panel of the packed A block (byte address
 * `a`, `rows` rows rounded up to 4), the sums with the B panels at byte `b` (the second one a
 * panel further, kc * NR floats), written to `sums` (float64) as microTile writes them (rows 2 NR
 * apart, panel q in columns [q NR, q NR + NR)). A f32x4 lane holds one of microTile's float32
 * accumulators; SIMD has no fused multiply-add, so each product is rounded to float32 before it
 * is added, as microTile rounds it; each run's sums are widened to float64 and added to the
 * tile's, in the same order: the same bits. Two panels make a 4 x 8 tile, eight accumulators
 * (measured 49 GFLOP/s in registers against 36 for 4 x 4, 29 for 4 x 12, 19 for 8 x 4: more
 * accumulators spill, fewer leave the multipliers waiting).
 *   for r0 in 0, 4, .. < rows:                          (tiles)
 *     sums[r0 + r][..] = 0
 *     for each run of SUM_RUN steps of p:
 *       acc[r][q] = 0                                    (f32x4; r < 4, q < panels)
 *       for p in the run:
 *         bq = B panel q [p][0..3]
 *         acc[r][q] += splat(A[p][r]) * bq
 *       sums[r0 + r][q NR .. q NR + 3] += float64(acc[r][q])
 * Parameters: kc, rows, a, b, sums (i32; addresses in bytes).
 */
export function gemmColumnWasm(panels: 1 | 2): WasmFunction {
  const [kc, rows, a, b, sums] = [0, 1, 2, 3, 4];
  const [r0, p, ap, bp, bp2, left, run] = [5, 6, 7, 8, 9, 10, 11];
  const [splat, b0, b1, wide] = [12, 13, 14, 15];
  const acc = (r: number, q: number) => 16 + panels * r + q;
  const bv = [b0, b1];
  const body: number[] = [...i.i32Const(0), ...i.localSet(r0), ...i.block, ...i.loop];
  // while r0 < rows
  body.push(...i.localGet(r0), ...i.localGet(rows), ...i.i32GeS, ...i.brIf(1));
  for (let r = 0; r < 4; r++) {
    for (let half = 0; half < 2 * panels; half++) body.push(...i.localGet(sums), ...i.v128Zero, ...i.v128Store(8 * (SUMS_COLUMNS * r + 2 * half)));
  }
  // ap = a; bp = b; bp2 = b + kc * 16 (the next panel); left = kc
  body.push(...i.localGet(a), ...i.localSet(ap), ...i.localGet(b), ...i.localSet(bp), ...i.localGet(kc), ...i.localSet(left));
  body.push(...i.localGet(b), ...i.localGet(kc), ...i.i32Const(4), ...i.i32Shl, ...i.i32Add, ...i.localSet(bp2));
  // Runs: while left > 0: run = min(SUM_RUN, left); left -= run
  body.push(...i.block, ...i.loop, ...i.localGet(left), ...i.i32Eqz, ...i.brIf(1));
  body.push(...i.i32Const(SUM_RUN), ...i.localGet(left), ...i.i32Const(SUM_RUN), ...i.localGet(left), ...i.i32LtS, ...i.select, ...i.localTee(run), ...i.localSet(p));
  body.push(...i.localGet(left), ...i.localGet(run), ...i.i32Sub, ...i.localSet(left));
  for (let r = 0; r < 4; r++) for (let q = 0; q < panels; q++) body.push(...i.v128Zero, ...i.localSet(acc(r, q)));
  body.push(...i.block, ...i.loop, ...i.localGet(p), ...i.i32Eqz, ...i.brIf(1));
  body.push(...i.localGet(bp), ...i.v128Load(0), ...i.localSet(b0));
  if (panels === 2) body.push(...i.localGet(bp2), ...i.v128Load(0), ...i.localSet(b1));
  for (let r = 0; r < 4; r++) {
    body.push(...i.localGet(ap), ...i.v128Load32Splat(4 * r), ...i.localSet(splat));
    for (let q = 0; q < panels; q++) {
      body.push(...i.localGet(acc(r, q)), ...i.localGet(splat), ...i.localGet(bv[q]), ...i.f32x4Mul, ...i.f32x4Add, ...i.localSet(acc(r, q)));
    }
  }
  // ap += 16; bp += 16; bp2 += 16; p -= 1
  for (const ptr of [ap, bp, bp2]) body.push(...i.localGet(ptr), ...i.i32Const(16), ...i.i32Add, ...i.localSet(ptr));
  body.push(...i.localGet(p), ...i.i32Const(1), ...i.i32Sub, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  // The run's sums into the tile's float64 sums: lanes 0-1, then lanes 2-3 moved down.
  for (let r = 0; r < 4; r++) {
    for (let q = 0; q < panels; q++) {
      for (const high of [0, 1]) {
        const at = 8 * (SUMS_COLUMNS * r + NR * q + 2 * high);
        body.push(...i.localGet(acc(r, q)));
        if (high) body.push(...i.localGet(acc(r, q)), ...i.i8x16Shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]));
        body.push(...i.f64x2PromoteLowF32x4, ...i.localSet(wide));
        body.push(...i.localGet(sums), ...i.localGet(sums), ...i.v128Load(at), ...i.localGet(wide), ...i.f64x2Add, ...i.v128Store(at));
      }
    }
  }
  body.push(...i.br(0), ...i.end, ...i.end);
  // sums += 4 rows; a += kc * 16 (one A panel); r0 += 4
  body.push(...i.localGet(sums), ...i.i32Const(8 * 4 * SUMS_COLUMNS), ...i.i32Add, ...i.localSet(sums));
  body.push(...i.localGet(a), ...i.localGet(kc), ...i.i32Const(4), ...i.i32Shl, ...i.i32Add, ...i.localSet(a));
  body.push(...i.localGet(r0), ...i.i32Const(4), ...i.i32Add, ...i.localSet(r0), ...i.br(0), ...i.end, ...i.end);
  return { name: `gemmColumn${panels}`, params: [I32, I32, I32, I32, I32], results: [], locals: [I32, I32, I32, I32, I32, I32, I32, V128, V128, V128, V128, ...new Array(4 * panels).fill(V128)], body };
}

/**
 * The micro-kernel, for one column of micro-tiles up to two panels (2 NR columns) wide: for each
 * MR-row tile of the packed A block (rows [t*MR, t*MR+MR) of its `rows`), C[tile] += alpha *
 * (packed MR x kc panel) * (packed kc x cols panels of B), writing only the rows < rows and
 * columns < cols that exist (edge tiles). One call per column of tiles rather than per tile: the
 * B panels stay in L1 across the column, and the call's fixed cost is paid once per column
 * (measured 5-8% faster GEMMs for K <= 32, the pointwise layers of small models, and 0-2% for
 * large K).
 */
export function microKernelColumn(
  kc: number,
  P: Float32Array,
  rows: number,
  bStart: number,
  alpha: number,
  C: Float32Array,
  cStart: number,
  ldc: number,
  cols: number,
  overwrite: boolean,
): void {
  const t = columnSums;
  const panels = cols > 4 ? 2 : 1;
  // The sums of every tile of the column, tile after tile: in WebAssembly when its kernel is
  // loaded (P is then its memory), else microTile by microTile.
  if (wasmColumns !== null && P === packed) (panels === 2 ? wasmColumns.two : wasmColumns.one)(kc, rows, 0, bStart * 4, t.byteOffset);
  else {
    for (let q = 0; q < panels; q++) {
      for (let r0 = 0, aStart = 0; r0 < rows; r0 += MR, aStart += kc * MR) microTile(kc, P, aStart, bStart + q * kc * NR, t, r0 * 8 + q * 4);
    }
  }
  for (let r0 = 0, s = 0, cRow = cStart; r0 < rows; r0 += MR, s += 32, cRow += MR * ldc) {
    if (rows - r0 < MR || (cols !== 4 && cols !== 8)) {
      storeEdgeTile(t, s, alpha, C, cRow, ldc, Math.min(MR, rows - r0), cols, overwrite);
      continue;
    }
    // First K block of a GEMM with beta = 0: store instead of accumulating into a zeroed C (one
    // pass over C fewer). "+ 0" stores +0 where 0 + x would have, so the result is the same bits.
    for (let r = s, c = cRow; r < s + 32; r += 8, c += ldc) {
      if (overwrite) {
        C[c] = alpha * t[r] + 0; C[c + 1] = alpha * t[r + 1] + 0; C[c + 2] = alpha * t[r + 2] + 0; C[c + 3] = alpha * t[r + 3] + 0;
      } else {
        C[c] += alpha * t[r]; C[c + 1] += alpha * t[r + 1]; C[c + 2] += alpha * t[r + 2]; C[c + 3] += alpha * t[r + 3];
      }
      if (cols === 4) continue;
      if (overwrite) {
        C[c + 4] = alpha * t[r + 4] + 0; C[c + 5] = alpha * t[r + 5] + 0; C[c + 6] = alpha * t[r + 6] + 0; C[c + 7] = alpha * t[r + 7] + 0;
      } else {
        C[c + 4] += alpha * t[r + 4]; C[c + 5] += alpha * t[r + 5]; C[c + 6] += alpha * t[r + 6]; C[c + 7] += alpha * t[r + 7];
      }
    }
  }
}

/**
 * The tiles at C's right and bottom edges, with fewer than MR rows or a width other than one or
 * two panels: a loop of its own, so that the micro-kernel's hot path stays straight-line code (an
 * edge loop inside it made V8 deoptimise the kernel in some processes) and allocates nothing.
 * The tile's rows are 2 NR apart in `tile`.
 */
export function storeEdgeTile(tile: Float64Array, t: number, alpha: number, C: Float32Array, cStart: number, ldc: number, rows: number, cols: number, overwrite: boolean): void {
  for (let r = 0; r < rows; r++) {
    for (let s = 0; s < cols; s++) {
      const i = cStart + r * ldc + s;
      C[i] = overwrite ? alpha * tile[t + r * 8 + s] + 0 : C[i] + alpha * tile[t + r * 8 + s];
    }
  }
}

/**
 * The blocked GEMM on one thread, without argument checks: the body that `gemm` runs on each
 * thread's share of C. Self-contained (it uses only the functions and constants of this file),
 * because worker threads receive it as source text (see parallel.ts).
 */
export function gemmCore(args: GemmArgs): void {
  const { transA, transB, M, N, K, alpha, A, aOffset, lda, B, bOffset, ldb, beta, C, cOffset, ldc, batch } = args;
  const along = batch === undefined ? '' : batch.along;
  const size = batch === undefined ? 1 : batch.size, firstColumn = batch === undefined ? 0 : batch.firstColumn;
  const blocksEndAtImages = along === 'depth' && batch!.roundPerImage === true;
  // With beta = 0 the first K block stores into C instead of adding to a zeroed C.
  const overwriteFirst = beta === 0 && K > 0 && alpha !== 0;
  if (!overwriteFirst) {
    if (along === 'columns') zeroBatchedColumns(M, N, C, cOffset, ldc, firstColumn, size, batch!.cStride);
    else scaleC(M, N, beta, C, cOffset, ldc);
  }
  if (M === 0 || N === 0 || K === 0 || alpha === 0) return;
  for (let j0 = 0; j0 < N; j0 += NC) {
    const nc = Math.min(NC, N - j0);
    for (let p0 = 0, kc = 0; p0 < K; p0 += kc) {
      kc = Math.min(KC, K - p0, blocksEndAtImages ? size - (p0 % size) : KC);
      if (along === 'columns') packBatchedColumns(B, bOffset, ldb, p0, kc, firstColumn + j0, nc, size, batch!.bStride, packed, PACKED_B_START);
      else if (along === 'depth') packBatchedDepth(B, bOffset, ldb, j0, nc, p0, kc, size, batch!.bStride, packed, PACKED_B_START);
      else packB(B, bOffset, ldb, transB, p0, kc, j0, nc, packed, PACKED_B_START);
      for (let i0 = 0; i0 < M; i0 += MC) {
        const mc = Math.min(MC, M - i0);
        if (along === 'depth') packBatchedDepth(A, aOffset, lda, i0, mc, p0, kc, size, batch!.aStride, packed, 0);
        else packA(A, aOffset, lda, transA, i0, mc, p0, kc, packed, 0);
        for (let jr = 0; jr < nc; jr += 2 * NR) {
          const cols = Math.min(2 * NR, nc - jr), bStart = PACKED_B_START + (jr / NR) * kc * NR, overwrite = overwriteFirst && p0 === 0;
          if (along !== 'columns') {
            microKernelColumn(kc, packed, mc, bStart, alpha, C, cOffset + i0 * ldc + j0 + jr, ldc, cols, overwrite);
            continue;
          }
          const first = firstColumn + j0 + jr, cStart = cOffset + i0 * ldc;
          if ((first % size) + cols <= size) microKernelColumn(kc, packed, mc, bStart, alpha, C, cStart + batchedIndex(first, size, batch!.cStride), ldc, cols, overwrite);
          else straddlingColumn(kc, packed, mc, bStart, alpha, C, cStart, ldc, first, cols, size, batch!.cStride, overwrite);
        }
      }
    }
  }
}

/**
 * A column of tiles whose columns of C (up to 2 NR) straddle two images of a batch (see GemmBatch): the
 * tiles are gathered into a small contiguous block, computed there by microKernelColumn exactly
 * as in place (the same sums, added to the same values), and scattered back.
 */
export function straddlingColumn(kc: number, P: Float32Array, rows: number, bStart: number, alpha: number, C: Float32Array, cStart: number, ldc: number, first: number, cols: number, size: number, stride: number, overwrite: boolean): void {
  for (let c = 0; c < cols; c++) straddleColumns[c] = cStart + batchedIndex(first + c, size, stride);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) straddleBlock[r * SUMS_COLUMNS + c] = C[straddleColumns[c] + r * ldc];
  microKernelColumn(kc, P, rows, bStart, alpha, straddleBlock, 0, SUMS_COLUMNS, cols, overwrite);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) C[straddleColumns[c] + r * ldc] = straddleBlock[r * SUMS_COLUMNS + c];
}

/** C = 0 for a batch along columns (the beta = 0 of a GEMM that has nothing to add: K = 0 or alpha = 0). */
export function zeroBatchedColumns(M: number, N: number, C: Float32Array, cOffset: number, ldc: number, firstColumn: number, size: number, stride: number): void {
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) C[cOffset + i * ldc + batchedIndex(firstColumn + j, size, stride)] = 0;
}

/** The naive twin: the textbook triple loop, for tests (batches addressed element by element). */
export function gemmNaive(args: GemmArgs): void {
  checkGemmArgs(args);
  const { transA, transB, M, N, K, alpha, A, aOffset, lda, B, bOffset, ldb, beta, C, cOffset, ldc, batch } = args;
  const columns = batch?.along === 'columns', depth = batch?.along === 'depth';
  const pixel = (j: number, stride: number) => batchedIndex(j, batch!.size, stride);
  const aAt = (i: number, p: number) => (depth ? aOffset + i * lda + pixel(p, batch.aStride) : transA ? aOffset + p * lda + i : aOffset + i * lda + p);
  const bAt = (p: number, j: number) => (columns ? bOffset + p * ldb + pixel(batch.firstColumn + j, batch.bStride) : depth ? bOffset + j * ldb + pixel(p, batch.bStride) : transB ? bOffset + j * ldb + p : bOffset + p * ldb + j);
  const cAt = (i: number, j: number) => (columns ? cOffset + i * ldc + pixel(batch.firstColumn + j, batch.cStride) : cOffset + i * ldc + j);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      // The micro-kernel's arithmetic (see microTile): runs of SUM_RUN float32 multiply-adds,
      // added up in float64; for K <= KC the same bits as the blocked GEMM.
      let acc = 0;
      for (let p0 = 0; p0 < K; p0 += SUM_RUN) {
        let run = 0;
        for (let p = p0; p < Math.min(K, p0 + SUM_RUN); p++) run = Math.fround(run + Math.fround(A[aAt(i, p)] * B[bAt(p, j)]));
        acc += run;
      }
      const c = cAt(i, j);
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
function gemmSlice(p: Record<GemmIntName | 'alpha' | 'beta', number>, b: Record<'A' | 'B' | 'C', Float32Array | Float64Array>, lo: number, hi: number): void {
  const { M, N, K, lda, ldb, ldc, alpha, beta } = p;
  const transA = p.transA === 1, transB = p.transB === 1;
  const A = b.A as Float32Array, B = b.B as Float32Array, C = b.C as Float32Array;
  // batchAlong: 0 none, 1 columns, 2 depth (see GemmBatch).
  const batchOf = (firstColumn: number): GemmBatch | undefined =>
    p.batchAlong === 0 ? undefined : { along: p.batchAlong === 1 ? 'columns' : 'depth', size: p.batchSize, aStride: p.aBatchStride, bStride: p.bBatchStride, cStride: p.cBatchStride, firstColumn, roundPerImage: p.roundPerImage === 1 };
  if (p.splitRows === 1) {
    const i0 = lo * MR, i1 = Math.min(M, hi * MR);
    gemmCore({ transA, transB, M: i1 - i0, N, K, alpha, A, aOffset: p.aOffset + (transA ? i0 : i0 * lda), lda, B, bOffset: p.bOffset, ldb, beta, C, cOffset: p.cOffset + i0 * ldc, ldc, batch: batchOf(p.firstColumn) });
  } else if (p.batchAlong === 1) {
    // Batched columns: the share starts at column j0 of the batch, wherever that lies.
    const j0 = lo * NR, j1 = Math.min(N, hi * NR);
    gemmCore({ transA, transB, M, N: j1 - j0, K, alpha, A, aOffset: p.aOffset, lda, B, bOffset: p.bOffset, ldb, beta, C, cOffset: p.cOffset, ldc, batch: batchOf(p.firstColumn + j0) });
  } else {
    const j0 = lo * NR, j1 = Math.min(N, hi * NR);
    gemmCore({ transA, transB, M, N: j1 - j0, K, alpha, A, aOffset: p.aOffset, lda, B, bOffset: p.bOffset + (transB ? j0 * ldb : j0), ldb, beta, C, cOffset: p.cOffset + j0, ldc, batch: batchOf(0) });
  }
}

const GEMM_INTS = ['transA', 'transB', 'M', 'N', 'K', 'aOffset', 'lda', 'bOffset', 'ldb', 'cOffset', 'ldc', 'splitRows', 'batchAlong', 'batchSize', 'aBatchStride', 'bBatchStride', 'cBatchStride', 'firstColumn', 'roundPerImage'] as const;
type GemmIntName = (typeof GEMM_INTS)[number];

const GEMM_KERNEL = declareKernel({
  name: 'gemm',
  ints: GEMM_INTS,
  floats: ['alpha', 'beta'],
  reads: ['A', 'B'],
  writes: ['C'],
  large: [],
  splits: 'micro-tile rows of C (micro-tile columns when N > M)',
  // One chunk per thread: each chunk packs all of B (or A) again.
  chunksPerThread: 1,
  minWork: PARALLEL_MIN_MULT_ADDS,
  slice: gemmSlice,
  deps: [scaleC, interleaveFourRows, copyFourColumns, packA, packB, batchedIndex, packBatchedColumns, packBatchedDepth, zeroBatchedColumns, storeEdgeTile, microTile, microKernelColumn, straddlingColumn, gemmCore, createGemmScratch],
  // The workers load the same WebAssembly bytes (or none, as this thread).
  prelude: [
    `const MR = ${MR}, NR = ${NR}, KC = ${KC}, MC = ${MC}, NC = ${NC};`,
    `const PACKED_B_START = MC * KC, SUMS_COLUMNS = 2 * NR, SUM_RUN = ${SUM_RUN};`,
    `const gemmScratch = createGemmScratch(${GEMM_WASM === null ? 'null' : `new Uint8Array([${GEMM_WASM.join(',')}])`});`,
    'const packed = gemmScratch.packed, columnSums = gemmScratch.sums, wasmColumns = gemmScratch.kernels;',
    'const straddleBlock = new Float32Array(MC * SUMS_COLUMNS);',
    'const straddleColumns = new Int32Array(SUMS_COLUMNS);',
  ].join('\n'),
});

/** Extent of a row-major matrix slice: from its offset to one past its last element. */
function extent(rows: number, cols: number, ld: number): number {
  return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
}

/**
 * The GEMM: C = alpha op(A) op(B) + beta C (see the file comment). The one entry point: it checks
 * its arguments, then runs on all threads when the product is big enough to pay for the hand-off,
 * else on this one; the split never changes a number (every element of C is summed by one thread,
 * in the same order), so the result has the same bits for any thread count. An operand outside
 * shared memory is passed as the window the GEMM reads (so that only that much is copied for the
 * workers), the buffer cache's own buffers whole (used in place).
 */
export function gemm(args: GemmArgs): void {
  if (KERNELS_PROBLEM !== null) throw new RangeError(KERNELS_PROBLEM);
  checkGemmArgs(args);
  const { transA, transB, M, N, K, lda, ldb, ldc } = args;
  const window = (data: Float32Array, offset: number, length: number): [Float32Array, number] => (isCached(data) ? [data, offset] : [data.subarray(offset, offset + length), 0]);
  const batch = args.batch;
  // A batched operand is handed over whole, from its offset (its extent is not one block).
  const batchedA = batch?.along === 'depth', batchedB = batch !== undefined, batchedC = batch?.along === 'columns';
  const [A, aOffset] = batchedA ? [args.A, args.aOffset] : window(args.A, args.aOffset, transA ? extent(K, M, lda) : extent(M, K, lda));
  const [B, bOffset] = batchedB ? [args.B, args.bOffset] : window(args.B, args.bOffset, transB ? extent(N, K, ldb) : extent(K, N, ldb));
  const [C, cOffset] = batchedC ? [args.C, args.cOffset] : window(args.C, args.cOffset, extent(M, N, ldc));
  const splitRows = M >= N ? 1 : 0;
  const tiles = splitRows ? Math.ceil(M / MR) : Math.ceil(N / NR);
  if (tiles === 0) {
    gemmCore(args);
    return;
  }
  const batchInts = batch === undefined
    ? { batchAlong: 0, batchSize: 1, aBatchStride: 0, bBatchStride: 0, cBatchStride: 0, firstColumn: 0, roundPerImage: 0 }
    : { batchAlong: batch.along === 'columns' ? 1 : 2, batchSize: batch.size, aBatchStride: batch.aStride, bBatchStride: batch.bStride, cBatchStride: batch.cStride, firstColumn: batch.firstColumn, roundPerImage: batch.roundPerImage === true ? 1 : 0 };
  runKernel(GEMM_KERNEL, { transA: transA ? 1 : 0, transB: transB ? 1 : 0, M, N, K, aOffset, lda, bOffset, ldb, cOffset, ldc, splitRows, ...batchInts, alpha: args.alpha, beta: args.beta }, { A, B, C }, tiles, M * N * K);
}
