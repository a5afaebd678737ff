// Depthwise convolution: one k x k filter per channel (groups = channels), direct loops.
//
//   x: (N, C, H, W)   weight: (C, 1, k, k)   bias: (C)   y: (N, C, Hout, Wout)
//   y[n, c, oy, ox] = bias[c] + sum_{ky, kx} weight[c, 0, ky, kx] * x[n, c, oy*s - p + ky, ox*s - p + kx]
//
// Each channel's plane is independent, and the work per output is only k*k multiply-adds, so
// im2col would cost more than the arithmetic. The loops run "row by tap": for each output row
// and each tap (ky, kx) the valid range of ox is computed once, and the inner loop is a plain
// strided multiply-add over that range with every offset hoisted out.

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { addBiasPerChannel, biasGradPerChannel, convGeometry, type ConvGeometry } from './conv2d.js';
import { declareKernel, PARALLEL_MIN_ELEMENTS, runKernel } from './parallel.js';

// =============================================================================================
// The hot path: 3 x 3 filters. The output plane is split into an interior rectangle, where all
// nine taps fall inside the input, and a border. The interior runs with the nine weights and
// three row offsets in local variables (registers) and no bounds checks; the border, a few
// pixels wide, goes through the bounds-checked per-pixel code.
// =============================================================================================

/** Output range [lo, hi) whose taps at offsets base+0..base+2 (times stride) all lie in [0, size). */
function interior3(stride: number, offset: number, size: number, outSize: number): [number, number] {
  const lo = Math.min(outSize, Math.max(0, Math.ceil(-offset / stride)));
  const hi = Math.max(lo, Math.min(outSize, Math.floor((size - 3 - offset) / stride) + 1));
  return [lo, hi];
}

/**
 * One plane of a 3x3 correlation: dst[oy, ox] = sum_{ky,kx} w[ky*3+kx] * src[oy*s + off + ky, ox*s + off + kx]
 * (zero outside src). The forward pass is this with off = -padding; the stride-1 input gradient
 * is this with the filter flipped and off = padding - 2.
 */
function correlate3x3Plane(src: Float32Array, srcBase: number, H: number, W: number, w: Float32Array, wBase: number, stride: number, off: number, dst: Float32Array, dstBase: number, Hout: number, Wout: number): void {
  const w0 = w[wBase], w1 = w[wBase + 1], w2 = w[wBase + 2];
  const w3 = w[wBase + 3], w4 = w[wBase + 4], w5 = w[wBase + 5];
  const w6 = w[wBase + 6], w7 = w[wBase + 7], w8 = w[wBase + 8];
  const [yLo, yHi] = interior3(stride, off, H, Hout);
  const [xLo, xHi] = interior3(stride, off, W, Wout);
  for (let oy = 0; oy < Hout; oy++) {
    const dRow = dstBase + oy * Wout;
    const iy0 = oy * stride + off;
    const rowInterior = oy >= yLo && oy < yHi;
    if (rowInterior) {
      const r0 = srcBase + iy0 * W + off, r1 = r0 + W, r2 = r1 + W;
      if (stride === 1 && xHi > xLo) {
        // Sliding window: columns (a0,b0,c0), (a1,b1,c1) are the previous pixel's last two,
        // so each output loads only its three new values.
        let a0 = src[r0 + xLo], b0 = src[r1 + xLo], c0 = src[r2 + xLo];
        let a1 = src[r0 + xLo + 1], b1 = src[r1 + xLo + 1], c1 = src[r2 + xLo + 1];
        for (let ox = xLo; ox < xHi; ox++) {
          const a2 = src[r0 + ox + 2], b2 = src[r1 + ox + 2], c2 = src[r2 + ox + 2];
          dst[dRow + ox] = w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2 + w6 * c0 + w7 * c1 + w8 * c2;
          a0 = a1; a1 = a2; b0 = b1; b1 = b2; c0 = c1; c1 = c2;
        }
      } else {
        for (let ox = xLo; ox < xHi; ox++) {
          const a = r0 + ox * stride, b = r1 + ox * stride, c = r2 + ox * stride;
          dst[dRow + ox] =
            w0 * src[a] + w1 * src[a + 1] + w2 * src[a + 2] +
            w3 * src[b] + w4 * src[b + 1] + w5 * src[b + 2] +
            w6 * src[c] + w7 * src[c + 1] + w8 * src[c + 2];
        }
      }
    }
    // Border pixels (all of a non-interior row), bounds-checked.
    for (let ox = 0; ox < Wout; ox++) {
      if (rowInterior && ox === xLo) ox = Math.max(xHi, xLo);
      if (ox >= Wout) break;
      let acc = 0;
      for (let ky = 0; ky < 3; ky++) {
        const iy = iy0 + ky;
        if (iy < 0 || iy >= H) continue;
        for (let kx = 0; kx < 3; kx++) {
          const ix = ox * stride + off + kx;
          if (ix >= 0 && ix < W) acc += w[wBase + ky * 3 + kx] * src[srcBase + iy * W + ix];
        }
      }
      dst[dRow + ox] = acc;
    }
  }
}

/** dW (9 sums) of one plane, 3x3: taps[ky*3+kx] += sum_{oy,ox} dy[oy,ox] * x[oy*s - p + ky, ox*s - p + kx]. */
function filterGrad3x3Plane(dy: Float32Array, yBase: number, x: Float32Array, xBase: number, g: ConvGeometry, taps: Float64Array): void {
  const { H, W, stride, padding, Hout, Wout } = g;
  const off = -padding;
  const [yLo, yHi] = interior3(stride, off, H, Hout);
  const [xLo, xHi] = interior3(stride, off, W, Wout);
  let t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0, t6 = 0, t7 = 0, t8 = 0;
  for (let oy = 0; oy < Hout; oy++) {
    const yRow = yBase + oy * Wout;
    const iy0 = oy * stride + off;
    const rowInterior = oy >= yLo && oy < yHi;
    if (rowInterior) {
      const r0 = xBase + iy0 * W + off, r1 = r0 + W, r2 = r1 + W;
      for (let ox = xLo; ox < xHi; ox++) {
        const gy = dy[yRow + ox];
        const a = r0 + ox * stride, b = r1 + ox * stride, c = r2 + ox * stride;
        t0 += gy * x[a]; t1 += gy * x[a + 1]; t2 += gy * x[a + 2];
        t3 += gy * x[b]; t4 += gy * x[b + 1]; t5 += gy * x[b + 2];
        t6 += gy * x[c]; t7 += gy * x[c + 1]; t8 += gy * x[c + 2];
      }
    }
    for (let ox = 0; ox < Wout; ox++) {
      if (rowInterior && ox === xLo) ox = Math.max(xHi, xLo);
      if (ox >= Wout) break;
      const gy = dy[yRow + ox];
      for (let ky = 0; ky < 3; ky++) {
        const iy = iy0 + ky;
        if (iy < 0 || iy >= H) continue;
        for (let kx = 0; kx < 3; kx++) {
          const ix = ox * stride + off + kx;
          if (ix >= 0 && ix < W) taps[ky * 3 + kx] += gy * x[xBase + iy * W + ix];
        }
      }
    }
  }
  taps[0] += t0; taps[1] += t1; taps[2] += t2;
  taps[3] += t3; taps[4] += t4; taps[5] += t5;
  taps[6] += t6; taps[7] += t7; taps[8] += t8;
}

/** Stride-2 (or any stride) 3x3 input gradient of one plane by scatter: dx[taps of (oy,ox)] += w * dy[oy,ox]. */
function inputGrad3x3ScatterPlane(dy: Float32Array, yBase: number, w: Float32Array, wBase: number, g: ConvGeometry, dx: Float32Array, xBase: number): void {
  const { H, W, stride, padding, Hout, Wout } = g;
  const off = -padding;
  const w0 = w[wBase], w1 = w[wBase + 1], w2 = w[wBase + 2];
  const w3 = w[wBase + 3], w4 = w[wBase + 4], w5 = w[wBase + 5];
  const w6 = w[wBase + 6], w7 = w[wBase + 7], w8 = w[wBase + 8];
  const [yLo, yHi] = interior3(stride, off, H, Hout);
  const [xLo, xHi] = interior3(stride, off, W, Wout);
  for (let oy = 0; oy < Hout; oy++) {
    const yRow = yBase + oy * Wout;
    const iy0 = oy * stride + off;
    const rowInterior = oy >= yLo && oy < yHi;
    if (rowInterior) {
      const r0 = xBase + iy0 * W + off, r1 = r0 + W, r2 = r1 + W;
      for (let ox = xLo; ox < xHi; ox++) {
        const gy = dy[yRow + ox];
        const a = r0 + ox * stride, b = r1 + ox * stride, c = r2 + ox * stride;
        dx[a] += w0 * gy; dx[a + 1] += w1 * gy; dx[a + 2] += w2 * gy;
        dx[b] += w3 * gy; dx[b + 1] += w4 * gy; dx[b + 2] += w5 * gy;
        dx[c] += w6 * gy; dx[c + 1] += w7 * gy; dx[c + 2] += w8 * gy;
      }
    }
    for (let ox = 0; ox < Wout; ox++) {
      if (rowInterior && ox === xLo) ox = Math.max(xHi, xLo);
      if (ox >= Wout) break;
      const gy = dy[yRow + ox];
      for (let ky = 0; ky < 3; ky++) {
        const iy = iy0 + ky;
        if (iy < 0 || iy >= H) continue;
        for (let kx = 0; kx < 3; kx++) {
          const ix = ox * stride + off + kx;
          if (ix >= 0 && ix < W) dx[xBase + iy * W + ix] += w[wBase + ky * 3 + kx] * gy;
        }
      }
    }
  }
}

/** Options of depthwiseConv2d: stride and padding. */
export interface DepthwiseOptions {
  stride?: number;
  padding?: number;
}

/** Check a depthwise convolution's shapes and return its geometry (errors name the expected and actual shapes). */
export function depthwiseGeometry(x: Tensor, weight: Tensor, bias: Tensor | null, options: DepthwiseOptions): ConvGeometry {
  if (x.rank === 4 && weight.rank === 4 && (weight.shape[0] !== x.shape[1] || weight.shape[1] !== 1)) {
    throw new ShapeError(`depthwiseConv2d: weight ${formatShape(weight.shape)} does not match input channels ${x.shape[1]} (expected [${x.shape[1]}, 1, k, k])`);
  }
  return convGeometry('depthwiseConv2d', x, weight, bias, { stride: options.stride ?? 1, padding: options.padding ?? 0, groups: x.rank === 4 ? x.shape[1] : 1 });
}

/**
 * For the generic (non-3x3) loops: for each tap column kx, the range [lo, hi) of output columns
 * whose input column ox*stride - padding + kx lies inside the row. It depends only on kx, so it is
 * computed once per call, not once per output row. ranges[2kx] = lo, ranges[2kx + 1] = hi.
 */
function tapColumnRanges(g: ConvGeometry): Int32Array {
  const ranges = new Int32Array(2 * g.kW);
  for (let kx = 0; kx < g.kW; kx++) {
    // As conv2d's validOutputRange (inlined: this runs in worker threads, which see no imports).
    const offset = kx - g.padding;
    const lo = Math.max(0, Math.ceil(-offset / g.stride));
    const hi = Math.min(g.Wout, Math.floor((g.W - 1 - offset) / g.stride) + 1);
    ranges[2 * kx] = lo;
    ranges[2 * kx + 1] = Math.max(lo, hi);
  }
  return ranges;
}

/** Forward over planes [plane0, plane1) of the N*C planes (a plane range lets threads split the work). */
export function depthwiseForward(x: Float32Array, weight: Float32Array, g: ConvGeometry, y: Float32Array, plane0 = 0, plane1 = g.N * g.Cin): void {
  const { Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const planeIn = H * W, planeOut = Hout * Wout;
  if (kH === 3 && kW === 3) {
    for (let plane = plane0; plane < plane1; plane++) {
      correlate3x3Plane(x, plane * planeIn, H, W, weight, (plane % C) * 9, stride, -padding, y, plane * planeOut, Hout, Wout);
    }
    return;
  }
  const ranges = tapColumnRanges(g);
  for (let plane = plane0; plane < plane1; plane++) {
    const c = plane % C;
    const xBase = plane * planeIn;
    const yBase = plane * planeOut;
    const wBase = c * kH * kW;
    y.fill(0, yBase, yBase + planeOut);
    for (let oy = 0; oy < Hout; oy++) {
      const yRow = yBase + oy * Wout;
      for (let ky = 0; ky < kH; ky++) {
        const iy = oy * stride - padding + ky;
        if (iy < 0 || iy >= H) continue;
        const xRow = xBase + iy * W;
        for (let kx = 0; kx < kW; kx++) {
          const w = weight[wBase + ky * kW + kx];
          const xOffset = kx - padding; // ix = ox*stride + xOffset
          const lo = ranges[2 * kx], hi = ranges[2 * kx + 1];
          const src = xRow + xOffset;
          if (stride === 1) for (let ox = lo; ox < hi; ox++) y[yRow + ox] += w * x[src + ox];
          else for (let ox = lo; ox < hi; ox++) y[yRow + ox] += w * x[src + ox * stride];
        }
      }
    }
  }
}

/**
 * Backward input: forward `y[oy,ox] += w * x[oy*s-p+ky, ox*s-p+kx]`, so each such term sends
 * `dx[oy*s-p+ky, ox*s-p+kx] += w * dy[oy, ox]`. Same loops as the forward, scatter instead of gather.
 */
export function depthwiseBackwardInput(dy: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array, plane0 = 0, plane1 = g.N * g.Cin): void {
  const { Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const planeIn = H * W, planeOut = Hout * Wout;
  if (kH === 3 && kW === 3 && stride === 1 && padding <= 2) {
    // Stride 1: the input gradient is a correlation of dy with the flipped filter.
    const flipped = new Float32Array(9);
    for (let plane = plane0; plane < plane1; plane++) {
      const wBase = (plane % C) * 9;
      for (let t = 0; t < 9; t++) flipped[t] = weight[wBase + 8 - t];
      correlate3x3Plane(dy, plane * planeOut, Hout, Wout, flipped, 0, 1, padding - 2, dx, plane * planeIn, H, W);
    }
    return;
  }
  if (kH === 3 && kW === 3) {
    for (let plane = plane0; plane < plane1; plane++) {
      dx.fill(0, plane * planeIn, (plane + 1) * planeIn);
      inputGrad3x3ScatterPlane(dy, plane * planeOut, weight, (plane % C) * 9, g, dx, plane * planeIn);
    }
    return;
  }
  const ranges = tapColumnRanges(g);
  for (let plane = plane0; plane < plane1; plane++) {
    const c = plane % C;
    const xBase = plane * planeIn;
    const yBase = plane * planeOut;
    const wBase = c * kH * kW;
    dx.fill(0, xBase, xBase + planeIn);
    for (let oy = 0; oy < Hout; oy++) {
      const yRow = yBase + oy * Wout;
      for (let ky = 0; ky < kH; ky++) {
        const iy = oy * stride - padding + ky;
        if (iy < 0 || iy >= H) continue;
        const xRow = xBase + iy * W;
        for (let kx = 0; kx < kW; kx++) {
          const w = weight[wBase + ky * kW + kx];
          const xOffset = kx - padding;
          const lo = ranges[2 * kx], hi = ranges[2 * kx + 1];
          const dst = xRow + xOffset;
          if (stride === 1) for (let ox = lo; ox < hi; ox++) dx[dst + ox] += w * dy[yRow + ox];
          else for (let ox = lo; ox < hi; ox++) dx[dst + ox * stride] += w * dy[yRow + ox];
        }
      }
    }
  }
}

/**
 * Backward filter: dW[c, ky, kx] = sum_{n, oy, ox} dy[n, c, oy, ox] * x[n, c, oy*s-p+ky, ox*s-p+kx].
 * For each output row and tap, the sum over ox is a dot product kept in a local accumulator;
 * the k*k sums of a channel stay in a small array, written once per channel. (Calling an
 * indexing method per multiply-add here is what makes some engines 40x slower.)
 * Planes are visited channel-major so that one channel's sums finish before the next begins.
 */
export function depthwiseBackwardFilter(dy: Float32Array, x: Float32Array, g: ConvGeometry, dweight: Float32Array, c0 = 0, c1 = g.Cin): void {
  const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const planeIn = H * W, planeOut = Hout * Wout;
  const taps = new Float64Array(kH * kW);
  const ranges = tapColumnRanges(g);
  for (let c = c0; c < c1; c++) {
    taps.fill(0);
    for (let n = 0; n < N; n++) {
      const plane = n * C + c;
      const xBase = plane * planeIn;
      const yBase = plane * planeOut;
      if (kH === 3 && kW === 3) {
        filterGrad3x3Plane(dy, yBase, x, xBase, g, taps);
        continue;
      }
      for (let oy = 0; oy < Hout; oy++) {
        const yRow = yBase + oy * Wout;
        for (let ky = 0; ky < kH; ky++) {
          const iy = oy * stride - padding + ky;
          if (iy < 0 || iy >= H) continue;
          const xRow = xBase + iy * W;
          for (let kx = 0; kx < kW; kx++) {
            const xOffset = kx - padding;
            const lo = ranges[2 * kx], hi = ranges[2 * kx + 1];
            const src = xRow + xOffset;
            let acc = 0;
            if (stride === 1) for (let ox = lo; ox < hi; ox++) acc += dy[yRow + ox] * x[src + ox];
            else for (let ox = lo; ox < hi; ox++) acc += dy[yRow + ox] * x[src + ox * stride];
            taps[ky * kW + kx] += acc;
          }
        }
      }
    }
    for (let t = 0; t < kH * kW; t++) dweight[c * kH * kW + t] = taps[t];
  }
}

// =============================================================================================
// Both cores: planes (forward, input gradient) or channels (filter gradient) split over threads.
// Each output element is computed exactly as on one thread, so results are bit-identical.
// =============================================================================================

// On every thread: the three directions as declared kernels (parallel.ts).
type DepthwiseParams = Record<'N' | 'C' | 'H' | 'W' | 'kH' | 'kW' | 'stride' | 'padding' | 'Hout' | 'Wout', number>;
const DEPTHWISE_INTS = ['N', 'C', 'H', 'W', 'kH', 'kW', 'stride', 'padding', 'Hout', 'Wout'] as const;
const DEPTHWISE_DEPS = [interior3, correlate3x3Plane, filterGrad3x3Plane, inputGrad3x3ScatterPlane, tapColumnRanges];

/** The geometry object the loops take, from a kernel's parameters. */
function depthwiseGeometryOf(p: DepthwiseParams): ConvGeometry {
  return { N: p.N, Cin: p.C, H: p.H, W: p.W, Cout: p.C, kH: p.kH, kW: p.kW, stride: p.stride, padding: p.padding, dilation: 1, groups: p.C, Hout: p.Hout, Wout: p.Wout };
}

/** Output planes [lo, hi) (plane = image x channel) of y = depthwise(x, weight). */
function depthwiseForwardSlice(p: DepthwiseParams, b: Record<'x' | 'weight' | 'y', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseForward(b.x as Float32Array, b.weight as Float32Array, depthwiseGeometryOf(p), b.y as Float32Array, lo, hi);
}

/** Input-gradient planes [lo, hi) of dx from dy and the weight. */
function depthwiseBackwardInputSlice(p: DepthwiseParams, b: Record<'dy' | 'weight' | 'dx', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseBackwardInput(b.dy as Float32Array, b.weight as Float32Array, depthwiseGeometryOf(p), b.dx as Float32Array, lo, hi);
}

/** Channels [lo, hi) of the filter gradient from dy and x (a sum over images and positions, kept within a channel). */
function depthwiseBackwardFilterSlice(p: DepthwiseParams, b: Record<'dy' | 'x' | 'dweight', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseBackwardFilter(b.dy as Float32Array, b.x as Float32Array, depthwiseGeometryOf(p), b.dweight as Float32Array, lo, hi);
}

const common = { ints: DEPTHWISE_INTS, floats: [], chunksPerThread: 4, minWork: PARALLEL_MIN_ELEMENTS } as const;
const DEPTHWISE_FORWARD = declareKernel({ ...common, name: 'depthwiseForward', reads: ['x', 'weight'], writes: ['y'], large: ['x', 'y'], splits: 'image planes', slice: depthwiseForwardSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseForward] });
const DEPTHWISE_BACKWARD_INPUT = declareKernel({ ...common, name: 'depthwiseBackwardInput', reads: ['dy', 'weight'], writes: ['dx'], large: ['dy', 'dx'], splits: 'image planes', slice: depthwiseBackwardInputSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseBackwardInput] });
const DEPTHWISE_BACKWARD_FILTER = declareKernel({ ...common, name: 'depthwiseBackwardFilter', reads: ['dy', 'x'], writes: ['dweight'], large: ['dy', 'x'], splits: 'channels', slice: depthwiseBackwardFilterSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseBackwardFilter] });

function depthwiseParams(g: ConvGeometry): DepthwiseParams {
  return { N: g.N, C: g.Cin, H: g.H, W: g.W, kH: g.kH, kW: g.kW, stride: g.stride, padding: g.padding, Hout: g.Hout, Wout: g.Wout };
}

/** y = depthwise(x, weight) on every thread when worth it (planes split), else here. */
export function runDepthwiseForward(x: Float32Array, weight: Float32Array, g: ConvGeometry, y: Float32Array): void {
  runKernel(DEPTHWISE_FORWARD, depthwiseParams(g), { x, weight, y }, g.N * g.Cin, x.length * g.kH * g.kW);
}

/** dx from dy and the weight, on every thread when worth it (planes split). */
export function runDepthwiseBackwardInput(dy: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array): void {
  runKernel(DEPTHWISE_BACKWARD_INPUT, depthwiseParams(g), { dy, weight, dx }, g.N * g.Cin, dy.length * g.kH * g.kW);
}

/** dweight from dy and x, on every thread when worth it (channels split). */
export function runDepthwiseBackwardFilter(dy: Float32Array, x: Float32Array, g: ConvGeometry, dweight: Float32Array): void {
  runKernel(DEPTHWISE_BACKWARD_FILTER, depthwiseParams(g), { dy, x, dweight }, g.Cin, dy.length * g.kH * g.kW);
}

/** Depthwise convolution as an autograd op. */
export function depthwiseConv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: DepthwiseOptions = {}): Tensor {
  const g = depthwiseGeometry(x, weight, bias, options);
  const y = alloc(g.N * g.Cout * g.Hout * g.Wout, false);
  runDepthwiseForward(x.data, weight.data, g, y);
  if (bias !== null) addBiasPerChannel(y, bias.data, g.N, g.Cout, g.Hout * g.Wout);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp(new Tensor(y, [g.N, g.Cout, g.Hout, g.Wout]), {
    op: 'depthwiseConv2d', inputs,
    formula: `y[c] = w[c] * x[c]  (k${g.kH} s${g.stride} p${g.padding}, per channel)  ->  dx[c] = scatter(w[c] dy[c]), dw[c] = sum dy[c] x[c] (shifted)`,
    saved: { x: x.data, weight: weight.data, g },
    backward: (dy, s, needs) => {
      let dx: Float32Array | null = null;
      let dweight: Float32Array | null = null;
      if (needs[0]) runDepthwiseBackwardInput(dy, s.weight, s.g, (dx = alloc(s.x.length, false)));
      if (needs[1]) runDepthwiseBackwardFilter(dy, s.x, s.g, (dweight = alloc(s.weight.length, false)));
      const grads: (Float32Array | null)[] = [dx, dweight];
      if (inputs.length === 3) grads.push(needs[2] ? biasGradPerChannel(dy, s.g.N, s.g.Cout, s.g.Hout * s.g.Wout) : null);
      return grads;
    },
    apply: (xs) => depthwiseConv2d(xs[0], xs[1], xs[2] ?? null, options),
  });
}

// =============================================================================================
// Naive twin: per output pixel, per tap, with bounds checks.
// =============================================================================================

/** The naive twin of the depthwise forward pass, for tests. */
export function depthwiseNaiveForward(x: Float32Array, weight: Float32Array, g: ConvGeometry): Float32Array {
  const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const y = alloc(N * C * Hout * Wout);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          let acc = 0;
          for (let ky = 0; ky < kH; ky++)
            for (let kx = 0; kx < kW; kx++) {
              const iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += weight[(c * kH + ky) * kW + kx] * x[((n * C + c) * H + iy) * W + ix];
            }
          y[((n * C + c) * Hout + oy) * Wout + ox] = acc;
        }
  return y;
}

/** The naive twin of the depthwise backward pass (input and filter gradients), for tests. */
export function depthwiseNaiveBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: ConvGeometry): { dx: Float32Array; dweight: Float32Array } {
  const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const dx = alloc(x.length), dweight = alloc(weight.length);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          const gy = dy[((n * C + c) * Hout + oy) * Wout + ox];
          for (let ky = 0; ky < kH; ky++)
            for (let kx = 0; kx < kW; kx++) {
              const iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              const xi = ((n * C + c) * H + iy) * W + ix, wi = (c * kH + ky) * kW + kx;
              dx[xi] += gy * weight[wi];
              dweight[wi] += gy * x[xi];
            }
        }
  return { dx, dweight };
}
