// Pointwise (1x1) convolution: a GEMM straight on the NCHW planes, no im2col.
//
//   x: (N, Cin, H, W)   weight: (Cout, Cin, 1, 1)   bias: (Cout)   y: (N, Cout, H, W)
//   For each image n, with X_n = x[n] viewed as a (Cin x H*W) matrix:  Y_n = W (Cout x Cin) * X_n.
// In NCHW each channel's plane is already a contiguous row of X_n, so the convolution is a
// matrix product over memory that is already in place.

import { alloc, release } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { addBiasPerChannel, convolutionGrads } from './conv2d.js';
import { gemmNaive, type Gemm } from './gemm.js';
import { parallelGemm } from './gemm.js';
import { declareKernel, PARALLEL_MIN_ELEMENTS, runKernel } from './parallel.js';

/** Sizes of a 1x1 convolution: images, input and output channels, pixels per plane. */
export interface PointwiseGeometry {
  N: number;
  Cin: number;
  Cout: number;
  HW: number;
}

/** Check a 1x1 convolution's shapes and return its geometry. */
export function pointwiseGeometry(x: Tensor, weight: Tensor, bias: Tensor | null): PointwiseGeometry {
  if (x.rank !== 4) throw new ShapeError(`pointwiseConv2d: input must be (N, C, H, W), got ${formatShape(x.shape)}`);
  const isOneByOne = weight.rank === 4 && weight.shape[2] === 1 && weight.shape[3] === 1;
  if (!isOneByOne && weight.rank !== 2) throw new ShapeError(`pointwiseConv2d: weight must be (Cout, Cin, 1, 1), got ${formatShape(weight.shape)}`);
  const [Cout, Cin] = weight.shape;
  if (Cin !== x.shape[1]) {
    throw new ShapeError(`pointwiseConv2d: input has ${x.shape[1]} channels but weight expects ${Cin} (weight shape ${formatShape(weight.shape)})`);
  }
  if (bias !== null && (bias.rank !== 1 || bias.shape[0] !== Cout)) throw new ShapeError(`pointwiseConv2d: bias must have shape [${Cout}], got ${formatShape(bias.shape)}`);
  return { N: x.shape[0], Cin, Cout, HW: x.shape[2] * x.shape[3] };
}


/**
 * Below this many pixels per plane, the per-image GEMMs are too thin to run well (late
 * MobileNet layers have 7x7 down to 1x1 planes: a 1-column GEMM is all packing, no reuse).
 * Then the batch is regrouped channel-major, X (Cin x N*HW), and one GEMM serves all images.
 */
export const POINTWISE_BATCHED_BELOW_HW = 256;

/**
 * Runs of at least this many floats are copied with TypedArray.set (a memory copy, 4-9x faster
 * than an element loop from 64 floats up), shorter ones element by element (a subarray view per
 * run costs more than the copy).
 */
const COPY_WITH_SET_FROM = 64;

/** out[to + p] = x[from + p] for p < length: with TypedArray.set from COPY_WITH_SET_FROM floats up. */
function copyRun(x: Float32Array, from: number, out: Float32Array, to: number, length: number): void {
  if (length >= COPY_WITH_SET_FROM) out.set(x.subarray(from, from + length), to);
  else for (let p = 0; p < length; p++) out[to + p] = x[from + p];
}

/** (N, C, HW) -> (C, N*HW): out[c, n*HW + p] = x[n, c, p], for channels [c0, c1). */
export function toChannelMajor(x: Float32Array, N: number, C: number, HW: number, out: Float32Array, c0 = 0, c1 = C): Float32Array {
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      copyRun(x, (n * C + c) * HW, out, c * N * HW + n * HW, HW);
    }
  }
  return out;
}

/** (C, N*HW) -> (N, C, HW), the inverse of toChannelMajor, for channels [c0, c1). */
export function fromChannelMajor(x: Float32Array, N: number, C: number, HW: number, out: Float32Array, c0 = 0, c1 = C): Float32Array {
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      copyRun(x, c * N * HW + n * HW, out, (n * C + c) * HW, HW);
    }
  }
  return out;
}

// On every thread: the two regrouping copies as declared kernels, split by channels (parallel.ts).
type RegroupParams = Record<'N' | 'C' | 'HW', number>;

function toChannelMajorSlice(p: RegroupParams, b: Record<'src' | 'dst', Float32Array | Float64Array>, lo: number, hi: number): void {
  toChannelMajor(b.src as Float32Array, p.N, p.C, p.HW, b.dst as Float32Array, lo, hi);
}

function fromChannelMajorSlice(p: RegroupParams, b: Record<'src' | 'dst', Float32Array | Float64Array>, lo: number, hi: number): void {
  fromChannelMajor(b.src as Float32Array, p.N, p.C, p.HW, b.dst as Float32Array, lo, hi);
}

const regroupCommon = { ints: ['N', 'C', 'HW'], floats: [], reads: ['src'], writes: ['dst'], large: ['src', 'dst'], splits: 'channels', chunksPerThread: 4, minWork: PARALLEL_MIN_ELEMENTS, prelude: `const COPY_WITH_SET_FROM = ${COPY_WITH_SET_FROM};` } as const;
const TO_CHANNEL_MAJOR = declareKernel({ ...regroupCommon, name: 'toChannelMajor', slice: toChannelMajorSlice, deps: [copyRun, toChannelMajor] });
const FROM_CHANNEL_MAJOR = declareKernel({ ...regroupCommon, name: 'fromChannelMajor', slice: fromChannelMajorSlice, deps: [copyRun, fromChannelMajor] });

/** (N, C, HW) <-> (C, N*HW): the regrouping copy, on every thread when worth it. */
function regroup(direction: 'toChannelMajor' | 'fromChannelMajor', src: Float32Array, N: number, C: number, HW: number, dst: Float32Array): Float32Array {
  runKernel(direction === 'toChannelMajor' ? TO_CHANNEL_MAJOR : FROM_CHANNEL_MAJOR, { N, C, HW }, { src, dst }, C, src.length);
  return dst;
}

function useBatched(g: PointwiseGeometry): boolean {
  return g.N > 1 && g.HW < POINTWISE_BATCHED_BELOW_HW;
}

/** Y_n = W X_n for every image. */
export function pointwiseForward(x: Float32Array, weight: Float32Array, g: PointwiseGeometry, y: Float32Array, multiply: Gemm = parallelGemm): void {
  const { N, Cin, Cout, HW } = g;
  if (useBatched(g)) {
    // Y (Cout x N*HW) = W (Cout x Cin) * X (Cin x N*HW)
    const cols = N * HW;
    const xT = regroup('toChannelMajor', x, N, Cin, HW, alloc(Cin * cols, false));
    const yT = alloc(Cout * cols, false);
    multiply({ transA: false, transB: false, M: Cout, N: cols, K: Cin, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: xT, bOffset: 0, ldb: cols, beta: 0, C: yT, cOffset: 0, ldc: cols });
    regroup('fromChannelMajor', yT, N, Cout, HW, y);
    release(xT);
    release(yT);
    return;
  }
  for (let n = 0; n < N; n++) {
    multiply({ transA: false, transB: false, M: Cout, N: HW, K: Cin, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: x, bOffset: n * Cin * HW, ldb: HW, beta: 0, C: y, cOffset: n * Cout * HW, ldc: HW });
  }
}

/**
 * Backward of Y_n = W X_n:  dX_n = W^T dY_n  (Cin x HW),  dW = sum_n dY_n X_n^T  (Cout x Cin).
 */
export function pointwiseBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: PointwiseGeometry, dx: Float32Array | null, dweight: Float32Array | null, multiply: Gemm = parallelGemm): void {
  const { N, Cin, Cout, HW } = g;
  if (useBatched(g)) {
    const cols = N * HW;
    const dyT = regroup('toChannelMajor', dy, N, Cout, HW, alloc(Cout * cols, false));
    if (dweight !== null) {
      const xT = regroup('toChannelMajor', x, N, Cin, HW, alloc(Cin * cols, false));
      // dW (Cout x Cin) = dY (Cout x N*HW) * X^T (N*HW x Cin)
      multiply({ transA: false, transB: true, M: Cout, N: Cin, K: cols, alpha: 1, A: dyT, aOffset: 0, lda: cols, B: xT, bOffset: 0, ldb: cols, beta: 0, C: dweight, cOffset: 0, ldc: Cin });
      release(xT);
    }
    if (dx !== null) {
      // dX (Cin x N*HW) = W^T (Cin x Cout) * dY (Cout x N*HW)
      const dxT = alloc(Cin * cols, false);
      multiply({ transA: true, transB: false, M: Cin, N: cols, K: Cout, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: dyT, bOffset: 0, ldb: cols, beta: 0, C: dxT, cOffset: 0, ldc: cols });
      regroup('fromChannelMajor', dxT, N, Cin, HW, dx);
      release(dxT);
    }
    release(dyT);
    return;
  }
  for (let n = 0; n < N; n++) {
    if (dx !== null) {
      multiply({ transA: true, transB: false, M: Cin, N: HW, K: Cout, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: dy, bOffset: n * Cout * HW, ldb: HW, beta: 0, C: dx, cOffset: n * Cin * HW, ldc: HW });
    }
    if (dweight !== null) {
      multiply({ transA: false, transB: true, M: Cout, N: Cin, K: HW, alpha: 1, A: dy, aOffset: n * Cout * HW, lda: HW, B: x, bOffset: n * Cin * HW, ldb: HW, beta: n === 0 ? 0 : 1, C: dweight, cOffset: 0, ldc: Cin });
    }
  }
}

/** 1x1 convolution (stride 1, no padding) as an autograd op. */
export function pointwiseConv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const g = pointwiseGeometry(x, weight, bias);
  const y = alloc(g.N * g.Cout * g.HW);
  pointwiseForward(x.data, weight.data, g, y);
  if (bias !== null) addBiasPerChannel(y, bias.data, g.N, g.Cout, g.HW);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp(new Tensor(y, [g.N, g.Cout, x.shape[2], x.shape[3]]), {
    op: 'pointwiseConv2d', inputs,
    formula: 'Y_n = W X_n  (1x1 conv)  ->  dX_n = W^T dY_n, dW = sum_n dY_n X_n^T',
    saved: { x: x.data, weight: weight.data, g },
    backward: (dy, s, needs) => convolutionGrads(dy, needs, s, inputs.length === 3, s.g.HW, (dx, dweight) => pointwiseBackward(s.x, s.weight, dy, s.g, dx, dweight)),
    apply: (xs) => pointwiseConv2d(xs[0], xs[1], xs[2] ?? null),
  });
}

/** Naive twin: the same products with the textbook triple-loop GEMM. */
export function pointwiseNaiveForward(x: Float32Array, weight: Float32Array, g: PointwiseGeometry): Float32Array {
  const y = alloc(g.N * g.Cout * g.HW);
  pointwiseForward(x, weight, g, y, gemmNaive);
  return y;
}

/** The naive twin of the pointwise backward pass, for tests. */
export function pointwiseNaiveBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: PointwiseGeometry): { dx: Float32Array; dweight: Float32Array } {
  const dx = alloc(x.length), dweight = alloc(weight.length);
  pointwiseBackward(x, weight, dy, g, dx, dweight, gemmNaive);
  return { dx, dweight };
}
