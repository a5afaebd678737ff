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
import { gemm, gemmNaive, NR, PER_IMAGE_GEMM_FROM_MULT_ADDS, type Gemm, type GemmBatch } from './gemm.js';
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
 * Then one GEMM serves all images, X (Cin x N*HW) with the images' pixels one after another,
 * read where they lie (GemmBatch), or on the tiniest planes copied channel-major first. Larger
 * planes too, when each image's product is under PER_IMAGE_GEMM_FROM_MULT_ADDS.
 */
export const POINTWISE_BATCHED_BELOW_HW = 256;

/**
 * Planes of fewer pixels than this, unless a multiple of 4, are copied channel-major rather than
 * read in place: a micro-tile's 4 columns then often straddle two images (a third of them at
 * 3x3, all at 1x1), and each such tile is gathered and scattered one float at a time. Measured on
 * T3 (3x3 planes, 1.5% slower in place) and the default training run (7x7, 2% faster in place).
 */
export const POINTWISE_IN_PLACE_FROM_HW = 16;

/** (N, C, HW) -> (C, N*HW): out[c, n*HW + p] = x[n, c, p], for channels [c0, c1). */
export function toChannelMajor(x: Float32Array, N: number, C: number, HW: number, out: Float32Array, c0 = 0, c1 = C): Float32Array {
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const from = (n * C + c) * HW, to = c * N * HW + n * HW;
      for (let p = 0; p < HW; p++) out[to + p] = x[from + p];
    }
  }
  return out;
}

/** (C, N*HW) -> (N, C, HW), the inverse of toChannelMajor, for channels [c0, c1). */
export function fromChannelMajor(x: Float32Array, N: number, C: number, HW: number, out: Float32Array, c0 = 0, c1 = C): Float32Array {
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const from = c * N * HW + n * HW, to = (n * C + c) * HW;
      for (let p = 0; p < HW; p++) out[to + p] = x[from + p];
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

const regroupCommon = { ints: ['N', 'C', 'HW'], floats: [], reads: ['src'], writes: ['dst'], large: ['src', 'dst'], splits: 'channels', chunksPerThread: 4, minWork: PARALLEL_MIN_ELEMENTS } as const;
const TO_CHANNEL_MAJOR = declareKernel({ ...regroupCommon, name: 'toChannelMajor', slice: toChannelMajorSlice, deps: [toChannelMajor] });
const FROM_CHANNEL_MAJOR = declareKernel({ ...regroupCommon, name: 'fromChannelMajor', slice: fromChannelMajorSlice, deps: [fromChannelMajor] });

/** (N, C, HW) <-> (C, N*HW): the regrouping copy, on every thread when worth it. */
function regroup(direction: 'toChannelMajor' | 'fromChannelMajor', src: Float32Array, N: number, C: number, HW: number, dst: Float32Array): Float32Array {
  runKernel(direction === 'toChannelMajor' ? TO_CHANNEL_MAJOR : FROM_CHANNEL_MAJOR, { N, C, HW }, { src, dst }, C, src.length);
  return dst;
}

/** How a 1x1 convolution runs: a GEMM per image, one GEMM over the batch in place, or over a channel-major copy. */
function pointwisePlan(g: PointwiseGeometry): 'per image' | 'batched in place' | 'channel-major copy' {
  if (g.N === 1 || (g.HW >= POINTWISE_BATCHED_BELOW_HW && g.Cout * g.Cin * g.HW >= PER_IMAGE_GEMM_FROM_MULT_ADDS)) return 'per image';
  return g.HW % NR === 0 || g.HW >= POINTWISE_IN_PLACE_FROM_HW ? 'batched in place' : 'channel-major copy';
}

/** The batch of NCHW images read in place, along columns or depth (see GemmBatch). */
function imagesInPlace(along: 'columns' | 'depth', g: PointwiseGeometry, aChannels: number, bChannels: number, cChannels: number): GemmBatch {
  return { along, size: g.HW, aStride: aChannels * g.HW, bStride: bChannels * g.HW, cStride: cChannels * g.HW, firstColumn: 0 };
}

/** Y_n = W X_n for every image. */
export function pointwiseForward(x: Float32Array, weight: Float32Array, g: PointwiseGeometry, y: Float32Array, multiply: Gemm = gemm): void {
  const { N, Cin, Cout, HW } = g;
  const plan = pointwisePlan(g);
  if (plan === 'batched in place') {
    // Y (Cout x N*HW) = W (Cout x Cin) * X (Cin x N*HW), X and Y read and written where they lie.
    multiply({ transA: false, transB: false, M: Cout, N: N * HW, K: Cin, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: x, bOffset: 0, ldb: HW, beta: 0, C: y, cOffset: 0, ldc: HW, batch: imagesInPlace('columns', g, 0, Cin, Cout) });
    return;
  }
  if (plan === 'channel-major copy') {
    // The same product on copies of X and Y laid out channel-major.
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
export function pointwiseBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: PointwiseGeometry, dx: Float32Array | null, dweight: Float32Array | null, multiply: Gemm = gemm): void {
  const { N, Cin, Cout, HW } = g;
  const plan = pointwisePlan(g);
  if (plan === 'batched in place') {
    const cols = N * HW;
    // dW (Cout x Cin) = dY (Cout x N*HW) * X^T (N*HW x Cin): the batch along the depth of the product.
    if (dweight !== null) multiply({ transA: false, transB: true, M: Cout, N: Cin, K: cols, alpha: 1, A: dy, aOffset: 0, lda: HW, B: x, bOffset: 0, ldb: HW, beta: 0, C: dweight, cOffset: 0, ldc: Cin, batch: imagesInPlace('depth', g, Cout, Cin, 0) });
    // dX (Cin x N*HW) = W^T (Cin x Cout) * dY (Cout x N*HW)
    if (dx !== null) multiply({ transA: true, transB: false, M: Cin, N: cols, K: Cout, alpha: 1, A: weight, aOffset: 0, lda: Cin, B: dy, bOffset: 0, ldb: HW, beta: 0, C: dx, cOffset: 0, ldc: HW, batch: imagesInPlace('columns', g, 0, Cout, Cin) });
    return;
  }
  if (plan === 'channel-major copy') {
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
