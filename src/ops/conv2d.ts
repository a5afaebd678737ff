// Standard 2-D convolution (cross-correlation, as in PyTorch): im2col + GEMM.
//
//   x: (N, Cin, H, W)   weight: (Cout, Cin/groups, kH, kW)   bias: (Cout)   y: (N, Cout, Hout, Wout)
//   Hout = floor((H + 2 pad - dilation (kH - 1) - 1) / stride) + 1   (likewise Wout)
//
//   y[n, co, oy, ox] = bias[co] + sum_{ci, ky, kx} weight[co, ci, ky, kx] * x[n, g*Cg + ci, oy*s - p + ky*d, ox*s - p + kx*d]
//
// im2col gathers, for one image and one group, every receptive field into a column:
//   col[(ci*kH + ky)*kW + kx, oy*Wout + ox] = x[n, g*Cg + ci, oy*s - p + ky*d, ox*s - p + kx*d]   (0 in the padding)
// so that the convolution becomes one matrix product per image and group:
//   Y_g (Cout/g x Hout*Wout) = W_g (Cout/g x Cg*kH*kW) * col (Cg*kH*kW x Hout*Wout).

import { alloc, inReuseScope, isCached, release } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { gemm, PER_IMAGE_GEMM_FROM_MULT_ADDS } from './gemm.js';
import { declareKernel, getThreads, PARALLEL_MIN_ELEMENTS, runKernel } from './parallel.js';

/** Options of conv2d: stride, padding, dilation, groups. */
export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
}

/** The defaults of conv2d: stride 1, no padding, dilation 1, one group. */
export const CONV2D_DEFAULTS: Required<Conv2dOptions> = { stride: 1, padding: 0, dilation: 1, groups: 1 };

/** Every size a convolution kernel needs, computed and checked once. */
export interface ConvGeometry {
  N: number;
  Cin: number;
  H: number;
  W: number;
  Cout: number;
  kH: number;
  kW: number;
  stride: number;
  padding: number;
  dilation: number;
  groups: number;
  Hout: number;
  Wout: number;
}

/** Output size of a convolution along one axis: floor((size + 2 padding - dilation (k - 1) - 1) / stride) + 1. */
export function convOutputSize(size: number, kernel: number, stride: number, padding: number, dilation: number): number {
  return Math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}

/** Validate shapes and options for conv2d (and its depthwise/pointwise specialisations). */
export function convGeometry(op: string, x: Tensor, weight: Tensor, bias: Tensor | null, options: Conv2dOptions): ConvGeometry {
  const { stride, padding, dilation, groups } = { ...CONV2D_DEFAULTS, ...options };
  if (x.rank !== 4) throw new ShapeError(`${op}: input must be (N, C, H, W), got ${formatShape(x.shape)}`);
  if (weight.rank !== 4) throw new ShapeError(`${op}: weight must be (Cout, Cin/groups, kH, kW), got ${formatShape(weight.shape)}`);
  for (const [name, v, min] of [['stride', stride, 1], ['padding', padding, 0], ['dilation', dilation, 1], ['groups', groups, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`${op}: ${name} must be an integer >= ${min}, got ${v}`);
  }
  const [N, Cin, H, W] = x.shape;
  const [Cout, CinPerGroup, kH, kW] = weight.shape;
  if (Cin % groups !== 0 || Cout % groups !== 0) {
    throw new ShapeError(`${op}: groups=${groups} must divide input channels ${Cin} and output channels ${Cout}`);
  }
  if (CinPerGroup * groups !== Cin) {
    throw new ShapeError(`${op}: input has ${Cin} channels but weight expects ${CinPerGroup * groups} (weight shape ${formatShape(weight.shape)}, groups ${groups})`);
  }
  if (bias !== null && (bias.rank !== 1 || bias.shape[0] !== Cout)) {
    throw new ShapeError(`${op}: bias must have shape [${Cout}], got ${formatShape(bias.shape)}`);
  }
  const Hout = convOutputSize(H, kH, stride, padding, dilation);
  const Wout = convOutputSize(W, kW, stride, padding, dilation);
  if (Hout < 1 || Wout < 1) {
    throw new ShapeError(`${op}: input ${formatShape(x.shape)} is too small for a ${kH}x${kW} kernel with padding ${padding} (output would be ${Hout}x${Wout})`);
  }
  return { N, Cin, H, W, Cout, kH, kW, stride, padding, dilation, groups, Hout, Wout };
}

/** The range of output positions o in [0, outSize) for which o*stride + offset lands inside [0, size). */
export function validOutputRange(offset: number, stride: number, size: number, outSize: number): [number, number] {
  const lo = Math.max(0, Math.ceil(-offset / stride));
  const hi = Math.min(outSize, Math.floor((size - 1 - offset) / stride) + 1);
  return [lo, Math.max(lo, hi)];
}

// =============================================================================================
// im2col / col2im
// =============================================================================================

/**
 * Gather channels [c0, c0+Cg) of image n into col (Cg*kH*kW x Hout*Wout), zeros in the padding.
 * Rows [r0, r1) of col only (row = (ci*kH + ky)*kW + kx), so that threads can split them. The
 * image's columns start at `colStart` in rows `ld` floats long (a batch's images side by side).
 */
export function im2col(x: Float32Array, g: ConvGeometry, n: number, c0: number, Cg: number, col: Float32Array, r0 = 0, r1 = Cg * g.kH * g.kW, ld = g.Hout * g.Wout, colStart = 0): void {
  const { H, W, kH, kW, stride, padding, dilation, Hout, Wout, Cin } = g;
  for (let row = r0; row < r1; row++) {
    const ci = Math.floor(row / (kH * kW)), ky = Math.floor(row / kW) % kH, kx = row % kW;
    const plane = (n * Cin + c0 + ci) * H * W;
    const rowStart = colStart + row * ld;
    const xOffset = kx * dilation - padding; // ix = ox*stride + xOffset
    const [oxLo, oxHi] = validOutputRange(xOffset, stride, W, Wout);
    for (let oy = 0; oy < Hout; oy++) {
      const iy = oy * stride - padding + ky * dilation;
      const dst = rowStart + oy * Wout;
      if (iy < 0 || iy >= H) {
        col.fill(0, dst, dst + Wout);
        continue;
      }
      const src = plane + iy * W + xOffset;
      for (let ox = 0; ox < oxLo; ox++) col[dst + ox] = 0;
      if (stride === 1) for (let ox = oxLo; ox < oxHi; ox++) col[dst + ox] = x[src + ox];
      else for (let ox = oxLo; ox < oxHi; ox++) col[dst + ox] = x[src + ox * stride];
      for (let ox = oxHi; ox < Wout; ox++) col[dst + ox] = 0;
    }
  }
}

/**
 * The adjoint of im2col: scatter-add col back into channels [c0, c0+Cg) of image n of dx; of
 * those, channels c0+ci for ci in [ci0, ci1) only (each channel's plane is written by its own rows).
 */
export function col2im(col: Float32Array, g: ConvGeometry, n: number, c0: number, Cg: number, dx: Float32Array, ci0 = 0, ci1 = Cg): void {
  const { H, W, kH, kW, stride, padding, dilation, Hout, Wout, Cin } = g;
  const HWout = Hout * Wout;
  for (let ci = ci0; ci < ci1; ci++) {
    const plane = (n * Cin + c0 + ci) * H * W;
    for (let ky = 0; ky < kH; ky++) {
      for (let kx = 0; kx < kW; kx++) {
        const rowStart = ((ci * kH + ky) * kW + kx) * HWout;
        const xOffset = kx * dilation - padding;
        const [oxLo, oxHi] = validOutputRange(xOffset, stride, W, Wout);
        for (let oy = 0; oy < Hout; oy++) {
          const iy = oy * stride - padding + ky * dilation;
          if (iy < 0 || iy >= H) continue;
          const src = rowStart + oy * Wout;
          const dst = plane + iy * W + xOffset;
          for (let ox = oxLo; ox < oxHi; ox++) dx[dst + ox * stride] += col[src + ox];
        }
      }
    }
  }
}

// =============================================================================================
// im2col and col2im on every thread (rows of col, or channels for col2im), when x or dx is in
// shared memory. Each element is written by exactly one thread: bit-identical results.
// =============================================================================================

// On every thread: im2col and col2im as declared kernels (parallel.ts).
type ColumnParams = Record<'n' | 'images' | 'c0' | 'Cg' | 'N' | 'Cin' | 'H' | 'W' | 'Cout' | 'kH' | 'kW' | 'stride' | 'padding' | 'dilation' | 'groups' | 'Hout' | 'Wout', number>;
const COLUMN_INTS = ['n', 'images', 'c0', 'Cg', 'N', 'Cin', 'H', 'W', 'Cout', 'kH', 'kW', 'stride', 'padding', 'dilation', 'groups', 'Hout', 'Wout'] as const;

/**
 * Rows [lo, hi) of the column matrix of images [n, n + images), channels [c0, c0 + Cg): the
 * images' columns side by side, each row of col images * Hout * Wout floats long.
 */
function im2colSlice(p: ColumnParams, b: Record<'image' | 'col', Float32Array | Float64Array>, lo: number, hi: number): void {
  const HWout = p.Hout * p.Wout;
  for (let i = 0; i < p.images; i++) im2col(b.image as Float32Array, p, p.n + i, p.c0, p.Cg, b.col as Float32Array, lo, hi, p.images * HWout, i * HWout);
}

const columnsCommon = { ints: COLUMN_INTS, floats: [], large: ['image', 'col'], chunksPerThread: 4, minWork: PARALLEL_MIN_ELEMENTS } as const;
const IM2COL = declareKernel({ ...columnsCommon, name: 'im2col', reads: ['image'], writes: ['col'], splits: 'rows of the column matrix (channel x tap)', slice: im2colSlice, deps: [validOutputRange, im2col] });

/** Channels [lo, hi) of image n's gradient, accumulated from the column matrix. */
function col2imSlice(p: ColumnParams, b: Record<'col' | 'image', Float32Array | Float64Array>, lo: number, hi: number): void {
  col2im(b.col as Float32Array, p, p.n, p.c0, p.Cg, b.image as Float32Array, lo, hi);
}

const COL2IM = declareKernel({ ...columnsCommon, name: 'col2im', reads: ['col'], writes: ['image'], splits: 'channels', slice: col2imSlice, deps: [validOutputRange, col2im] });

/**
 * im2col (x -> col) of images [n, n + images) side by side, or col2im (col -> dx) of image n
 * (images = 1), channel group [c0, c0 + Cg).
 */
function runColumns(direction: 'im2col' | 'col2im', image: Float32Array, g: ConvGeometry, n: number, c0: number, Cg: number, col: Float32Array, images = 1): void {
  const rows = Cg * g.kH * g.kW;
  const p = { n, images, c0, Cg, N: g.N, Cin: g.Cin, H: g.H, W: g.W, Cout: g.Cout, kH: g.kH, kW: g.kW, stride: g.stride, padding: g.padding, dilation: g.dilation, groups: g.groups, Hout: g.Hout, Wout: g.Wout };
  if (direction === 'im2col') runKernel(IM2COL, p, { image, col }, rows, rows * images * g.Hout * g.Wout);
  else runKernel(COL2IM, p, { col, image }, Cg, rows * g.Hout * g.Wout);
}

/**
 * With threads, an input outside shared memory (a network's input batch) is copied into the
 * buffer cache once, so im2col can split over threads: a pass over x against the kH*kW passes
 * im2col writes. Returns x itself when that cannot help.
 */
function shareInput(x: Float32Array): Float32Array {
  if (getThreads() === 1 || isCached(x) || !inReuseScope()) return x;
  const copy = alloc(x.length, false);
  copy.set(x);
  return copy;
}

// =============================================================================================
// Forward and backward
// =============================================================================================

/** The most floats a batched column matrix holds (16 MB): the images are taken in groups that fit. */
export const IM2COL_BATCH_MAX_FLOATS = 1 << 22;

/**
 * How many images im2col takes at a time: one when an image's product W_g col has at least
 * PER_IMAGE_GEMM_FROM_MULT_ADDS multiply-adds, else as many as fit in IM2COL_BATCH_MAX_FLOATS,
 * their columns side by side in one column matrix: one im2col job and one GEMM for all of them.
 * Each output is the same sum over K, so the results are the same bits either way.
 */
export function imagesPerColumnMatrix(g: ConvGeometry): number {
  const K = (g.Cin / g.groups) * g.kH * g.kW, HWout = g.Hout * g.Wout;
  if ((g.Cout / g.groups) * K * HWout >= PER_IMAGE_GEMM_FROM_MULT_ADDS) return 1;
  return Math.max(1, Math.min(g.N, Math.floor(IM2COL_BATCH_MAX_FLOATS / (K * HWout))));
}

/**
 * y = conv(x, weight) + bias via im2col + GEMM, per group and per image, or per group of images
 * side by side when each image's product is small (imagesPerColumnMatrix).
 */
export function conv2dForward(x: Float32Array, weight: Float32Array, bias: Float32Array | null, g: ConvGeometry, y: Float32Array): void {
  const { N, Cin, Cout, kH, kW, groups, Hout, Wout } = g;
  const Cg = Cin / groups, Cog = Cout / groups, K = Cg * kH * kW, HWout = Hout * Wout;
  const perMatrix = imagesPerColumnMatrix(g);
  const col = alloc(K * perMatrix * HWout, false);
  const xs = shareInput(x);
  for (let n0 = 0; n0 < N; n0 += perMatrix) {
    const images = Math.min(perMatrix, N - n0), columns = images * HWout;
    for (let gi = 0; gi < groups; gi++) {
      runColumns('im2col', xs, g, n0, gi * Cg, Cg, col, images);
      // y[n0.., group gi] (Cog x images*HWout) = W_g (Cog x K) * col (K x images*HWout), each
      // image's HWout columns of the product stored in its own block of y (GemmBatch).
      const batch = images > 1 ? { along: 'columns' as const, size: HWout, aStride: 0, bStride: HWout, cStride: Cout * HWout, firstColumn: 0 } : undefined;
      gemm({ transA: false, transB: false, M: Cog, N: columns, K, alpha: 1, A: weight, aOffset: gi * Cog * K, lda: K, B: col, bOffset: 0, ldb: columns, beta: 0, C: y, cOffset: (n0 * Cout + gi * Cog) * HWout, ldc: HWout, batch });
    }
  }
  release(col);
  if (xs !== x) release(xs);
  if (bias !== null) addBiasPerChannel(y, bias, N, Cout, HWout);
}

/** y[n, c, :] += bias[c], in place, for an (N, C, HW) buffer. */
export function addBiasPerChannel(y: Float32Array, bias: Float32Array, N: number, C: number, HW: number): void {
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const b = bias[c];
      const start = (n * C + c) * HW;
      for (let i = start; i < start + HW; i++) y[i] += b;
    }
  }
}

/** dbias[c] = sum over n, oy, ox of dy[n, c, oy, ox]. */
export function biasGradPerChannel(dy: Float32Array, N: number, C: number, HW: number): Float32Array {
  const dbias = alloc(C);
  for (let c = 0; c < C; c++) {
    let acc = 0;
    for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW;
      for (let i = start; i < start + HW; i++) acc += dy[i];
    }
    dbias[c] = acc;
  }
  return dbias;
}

/**
 * Backward of y = W * col(x):
 *   dW_g  += dY_g (Cog x HW) * col^T (HW x K)        (summed over images)
 *   dcol   = W_g^T (K x Cog) * dY_g (Cog x HW),  dx = col2im(dcol)
 * The columns are rebuilt from x rather than kept from the forward: cheap next to the GEMMs,
 * and it saves K*HW floats per image of memory between forward and backward.
 */
export function conv2dBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: ConvGeometry, dx: Float32Array | null, dweight: Float32Array | null): void {
  const { N, Cin, Cout, kH, kW, groups, Hout, Wout } = g;
  const Cg = Cin / groups, Cog = Cout / groups, K = Cg * kH * kW, HWout = Hout * Wout;
  // The weight gradient reads the columns of several images at a time when they are small, as
  // the forward does; the input gradient's dcol is one image's (col2im takes one image).
  const perMatrix = dweight !== null ? imagesPerColumnMatrix(g) : 1;
  const col = alloc(K * perMatrix * HWout, false);
  const dcol = dx === null ? null : perMatrix === 1 ? col : alloc(K * HWout, false);
  const xs = dweight !== null ? shareInput(x) : x;
  for (let n0 = 0; n0 < N; n0 += perMatrix) {
    const images = Math.min(perMatrix, N - n0), columns = images * HWout;
    for (let gi = 0; gi < groups; gi++) {
      if (dweight !== null) {
        runColumns('im2col', xs, g, n0, gi * Cg, Cg, col, images);
        // dW_g += dY_g col^T over the images' pixels, dY_g read from each image's block; rounded
        // after each image (roundPerImage), as image-by-image GEMMs with beta = 1 round it.
        const batch = images > 1 ? { along: 'depth' as const, size: HWout, aStride: Cout * HWout, bStride: HWout, cStride: 0, firstColumn: 0, roundPerImage: true } : undefined;
        gemm({ transA: false, transB: true, M: Cog, N: K, K: columns, alpha: 1, A: dy, aOffset: (n0 * Cout + gi * Cog) * HWout, lda: HWout, B: col, bOffset: 0, ldb: columns, beta: 1, C: dweight, cOffset: gi * Cog * K, ldc: K, batch });
      }
      // dx, image by image: dcol = W_g^T dY_g(n), then col2im (with one image per column matrix
      // dcol is col itself, whose columns the weight gradient has used by now).
      for (let n = n0; n < n0 + images && dcol !== null; n++) {
        gemm({ transA: true, transB: false, M: K, N: HWout, K: Cog, alpha: 1, A: weight, aOffset: gi * Cog * K, lda: K, B: dy, bOffset: (n * Cout + gi * Cog) * HWout, ldb: HWout, beta: 0, C: dcol, cOffset: 0, ldc: HWout });
        runColumns('col2im', dx!, g, n, gi * Cg, Cg, dcol);
      }
    }
  }
  if (dcol !== null && dcol !== col) release(dcol);
  release(col);
  if (xs !== x) release(xs);
}

/**
 * The gradients of a convolution y = W * x + b: dx and dW (each only where needed) from the
 * kernel's backward, db[c] = sum over images and positions of dy[n, c]. Shared by conv2d and
 * the pointwise op. `saved` has the input and weight data and the output's geometry.
 */
export function convolutionGrads(dy: Float32Array, needs: readonly boolean[], saved: { x: Float32Array; weight: Float32Array; g: { N: number; Cout: number } }, hasBias: boolean, outputPlane: number, backward: (dx: Float32Array | null, dweight: Float32Array | null) => void): (Float32Array | null)[] {
  const dx = needs[0] ? alloc(saved.x.length) : null;
  const dweight = needs[1] ? alloc(saved.weight.length) : null;
  backward(dx, dweight);
  const grads: (Float32Array | null)[] = [dx, dweight];
  if (hasBias) grads.push(needs[2] ? biasGradPerChannel(dy, saved.g.N, saved.g.Cout, outputPlane) : null);
  return grads;
}

/** conv2d as an autograd op. */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: Conv2dOptions = {}): Tensor {
  const g = convGeometry('conv2d', x, weight, bias, options);
  const y = alloc(g.N * g.Cout * g.Hout * g.Wout);
  conv2dForward(x.data, weight.data, bias?.data ?? null, g, y);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp(new Tensor(y, [g.N, g.Cout, g.Hout, g.Wout]), {
    op: 'conv2d', inputs,
    formula: `y = W * im2col(x) + b  (k${g.kH}x${g.kW} s${g.stride} p${g.padding}${g.groups > 1 ? ` g${g.groups}` : ''})  ->  dW = dy col^T, dx = col2im(W^T dy), db = sum dy`,
    saved: { x: x.data, weight: weight.data, g },
    backward: (dy, s, needs) => convolutionGrads(dy, needs, s, inputs.length === 3, s.g.Hout * s.g.Wout, (dx, dweight) => conv2dBackward(s.x, s.weight, dy, s.g, dx, dweight)),
    apply: (xs) => conv2d(xs[0], xs[1], xs[2] ?? null, options),
  });
}

// =============================================================================================
// Naive twin: the definition, seven nested loops, for tests.
// =============================================================================================

/** The naive twin of conv2d's forward (a loop per output element and tap), for tests. */
export function conv2dNaiveForward(x: Float32Array, weight: Float32Array, bias: Float32Array | null, g: ConvGeometry): Float32Array {
  const { N, Cin, H, W, Cout, kH, kW, stride, padding, dilation, groups, Hout, Wout } = g;
  const Cg = Cin / groups, Cog = Cout / groups;
  const y = alloc(N * Cout * Hout * Wout);
  for (let n = 0; n < N; n++)
    for (let co = 0; co < Cout; co++) {
      const gi = Math.floor(co / Cog);
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          let acc = bias ? bias[co] : 0;
          for (let ci = 0; ci < Cg; ci++)
            for (let ky = 0; ky < kH; ky++)
              for (let kx = 0; kx < kW; kx++) {
                const iy = oy * stride - padding + ky * dilation;
                const ix = ox * stride - padding + kx * dilation;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += weight[((co * Cg + ci) * kH + ky) * kW + kx] * x[((n * Cin + gi * Cg + ci) * H + iy) * W + ix];
              }
          y[((n * Cout + co) * Hout + oy) * Wout + ox] = acc;
        }
    }
  return y;
}

/** Naive backward: the same loops, each multiply-add sending dy to both factors. */
export function conv2dNaiveBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: ConvGeometry): { dx: Float32Array; dweight: Float32Array; dbias: Float32Array } {
  const { N, Cin, H, W, Cout, kH, kW, stride, padding, dilation, groups, Hout, Wout } = g;
  const Cg = Cin / groups, Cog = Cout / groups;
  const dx = alloc(x.length), dweight = alloc(weight.length), dbias = alloc(Cout);
  for (let n = 0; n < N; n++)
    for (let co = 0; co < Cout; co++) {
      const gi = Math.floor(co / Cog);
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          const gy = dy[((n * Cout + co) * Hout + oy) * Wout + ox];
          dbias[co] += gy;
          for (let ci = 0; ci < Cg; ci++)
            for (let ky = 0; ky < kH; ky++)
              for (let kx = 0; kx < kW; kx++) {
                const iy = oy * stride - padding + ky * dilation;
                const ix = ox * stride - padding + kx * dilation;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const wi = ((co * Cg + ci) * kH + ky) * kW + kx;
                const xi = ((n * Cin + gi * Cg + ci) * H + iy) * W + ix;
                dweight[wi] += gy * x[xi];
                dx[xi] += gy * weight[wi];
              }
        }
    }
  return { dx, dweight, dbias };
}
