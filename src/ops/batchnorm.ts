// BatchNorm over (N, H, W) for each channel, as PyTorch's BatchNorm2d.
//
//   x: (N, C, H, W)   gamma, beta, runningMean, runningVar: (C)   y: (N, C, H, W)
//   training:  mean_c, var_c = batch statistics over the M = N*H*W values of channel c (var biased)
//              runningMean <- (1 - momentum) runningMean + momentum mean
//              runningVar  <- (1 - momentum) runningVar  + momentum var * M / (M - 1)   (unbiased)
//   eval:      mean_c, var_c = runningMean, runningVar
//   xhat = (x - mean) * invStd,  invStd = 1 / sqrt(var + eps);   y = gamma xhat + beta
// Saved for backward: the input x, mean and invStd per channel (xhat is recomputed: M floats saved).

import { alloc, ARENA_MAX_PAGES, arenaMemory, arenaOffset } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { declareKernel, PARALLEL_MIN_ELEMENTS, runKernel, type ThreadContext } from './parallel.js';
import { emitModule, F64, i, I32, V128, type WasmFunction } from '../wasm/emit.js';
import { KERNELS } from './gemm.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

/** BatchNorm's epsilon, PyTorch's default 1e-5. */
export const BATCHNORM_EPS = 1e-5;
/** BatchNorm's running-statistics momentum, PyTorch's default 0.1. */
export const BATCHNORM_MOMENTUM = 0.1;

/** Options of the batchNorm2d op: training mode, momentum, eps, and an activation to apply in the same pass. */
export interface BatchNormOptions {
  training: boolean;
  momentum?: number;
  eps?: number;
  /**
   * Fuse the activation that follows (MobileNet's BN -> ReLU / ReLU6) into this op: one pass
   * and one buffer fewer each way. Results are bit-identical to the two separate ops.
   */
  activation?: 'relu' | 'relu6';
}

// =============================================================================================
// Kernels over a range of channels [c0, c1). Channels are independent, so threads split them and
// every number is computed exactly as on one thread. These run in worker threads as source text
// (see parallel.ts): they call nothing but each other.
// =============================================================================================

/**
 * stats[2c] = mean, stats[2c + 1] = biased variance of channel c, in one pass:
 *   mean = sum x / M,  var = sum x^2 / M - mean^2   (M = N * HW values per channel).
 * The sums are float64 over float32 values: the subtraction cancels digits only in proportion to
 * (mean / standard deviation)^2, so it stays within float32's precision unless the mean is
 * hundreds of standard deviations from zero, which the inputs of a BatchNorm are not (they are
 * convolution outputs, within a few deviations of zero). Each sum is kept in two partial
 * sums (even and odd positions): a single running sum makes every addition wait for the one
 * before it, and two halve that wait.
 */
export function batchNormStats(x: Float32Array, N: number, C: number, HW: number, stats: Float64Array, c0: number, c1: number, wasm: BatchNormWasm | null = null): void {
  const M = N * HW;
  for (let c = c0; c < c1; c++) {
    let sumEven = 0, sumOdd = 0, squaresEven = 0, squaresOdd = 0;
    if (wasm !== null) [sumEven, sumOdd, squaresEven, squaresOdd] = wasm.stats(x.byteOffset, N, C, HW, c);
    else for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW, end = start + HW, pairsEnd = start + (HW & ~1);
      let i = start;
      for (; i < pairsEnd; i += 2) {
        const a = x[i], b = x[i + 1];
        sumEven += a;
        squaresEven += a * a;
        sumOdd += b;
        squaresOdd += b * b;
      }
      if (i < end) {
        const a = x[i];
        sumEven += a;
        squaresEven += a * a;
      }
    }
    const mean = (sumEven + sumOdd) / M;
    stats[2 * c] = mean;
    // Rounding can leave a constant channel's variance a hair below zero.
    stats[2 * c + 1] = Math.max(0, (squaresEven + squaresOdd) / M - mean * mean);
  }
}

/**
 * y = scale_c x + shift_c (coef[2c] = scale, coef[2c + 1] = shift), then the fused activation:
 * high = 0 none, Infinity ReLU, 6 ReLU6 (clamp to [0, high]; NaN passes through).
 */
export function batchNormApply(x: Float32Array, y: Float32Array, N: number, C: number, HW: number, coef: Float64Array, high: number, c0: number, c1: number, wasm: BatchNormWasm | null = null): void {
  // The clamp's upper bound as a float64. V8 keeps a small integer such as 6 as an integer and
  // would multiply it by the 0-or-1 below in integers, with a branch on a zero product (for the
  // sign of zero) that mispredicts wherever values at or above 6 are common: the ReLU6 loop ran
  // 1.45x slower with a quarter of them there (a training step, where they are rare, does not
  // change). Adding and subtracting 0.5 leaves the value as it is (6 and Infinity exactly) but
  // makes it a double.
  const top = high + 0.5 - 0.5;
  for (let c = c0; c < c1; c++) {
    const scale = coef[2 * c], shift = coef[2 * c + 1];
    if (wasm !== null) {
      wasm.apply[high === 0 ? 0 : high === Infinity ? 1 : 2](x.byteOffset, y.byteOffset, N, C, HW, c, scale, shift, top);
      continue;
    }
    for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW, end = start + HW;
      if (high === 0) {
        for (let i = start; i < end; i++) y[i] = x[i] * scale + shift;
        continue;
      }
      // Clamp without branches: a data-dependent branch mispredicts on half the values, and
      // Math.max / Math.min are slower still (their NaN and -0 rules). A comparison turned into
      // 0 or 1 multiplies instead (5x faster). For finite v this is bit for bit a separate BN then
      // ReLU: rounding to float32 happens at the store, 0 and 6 are exact floats, and "+ 0" turns
      // a masked -0 into +0. NaN passes through; an infinite v (which finite weights and inputs do not produce)
      // gives NaN instead of 0 or 6, which the trainer's NaN check then stops on.
      if (high === Infinity) for (let i = start; i < end; i++) {
        const v = x[i] * scale + shift;
        y[i] = v * +(v > 0) + 0;
      }
      else for (let i = start; i < end; i++) {
        const v = x[i] * scale + shift;
        y[i] = v * (+(v > 0) & +(v < top)) + top * +(v >= top);
      }
    }
  }
}

/**
 * Backward for channels [c0, c1). coef[3c..3c+2] = mean, invStd, gamma. With a fused activation
 * (high > 0) the incoming gradient first passes the activation's mask, read off the output y:
 * g = dy where 0 < y < high, else 0 (g = dy without an activation). Then per channel
 *   sums[2c] = dbeta = sum g,  sums[2c + 1] = dgamma = sum g xhat,
 *   training: dx = gamma invStd (g - mean(g) - xhat mean(g xhat));  eval: dx = gamma invStd g.
 * dx may be null (no input gradient wanted).
 *
 * Since xhat = (x - mean) invStd, sum g xhat = invStd (sum g x - mean sum g): the first pass
 * forms sum g and sum g x (each in two partial sums, as in batchNormStats), and the training dx
 * is one multiply-add per term, a g + b x + k, with the per-channel constants
 *   a = gamma invStd,  b = -a invStd mean(g xhat),  k = -a mean(g) - b mean.
 * With an activation the first pass also keeps g in dx, so the second reads it back instead of
 * computing the mask again (20% faster at V2's shapes). g is dy times 0 or 1, a float32 value, so
 * keeping it in float32 loses nothing.
 */
export function batchNormBackward(dyIn: Float32Array, x: Float32Array, y: Float32Array, dx: Float32Array | null, N: number, C: number, HW: number, coef: Float64Array, sums: Float64Array, high: number, training: boolean, c0: number, c1: number, wasm: BatchNormWasm | null = null): void {
  const M = N * HW;
  for (let c = c0; c < c1; c++) {
    const m = coef[3 * c], is = coef[3 * c + 1];
    let sumGEven = 0, sumGOdd = 0, sumGXEven = 0, sumGXOdd = 0;
    if (wasm !== null) {
      [sumGEven, sumGOdd, sumGXEven, sumGXOdd] =
        high === 0 ? wasm.gradientSums(dyIn.byteOffset, x.byteOffset, N, C, HW, c, high)
        : dx === null ? wasm.gradientSumsMasked(dyIn.byteOffset, x.byteOffset, y.byteOffset, N, C, HW, c, high)
        : wasm.gradientSumsMaskedKept(dyIn.byteOffset, x.byteOffset, y.byteOffset, dx.byteOffset, N, C, HW, c, high);
    } else for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW, end = start + HW, pairsEnd = start + (HW & ~1);
      let i = start;
      if (high === 0) {
        for (; i < pairsEnd; i += 2) {
          const ga = dyIn[i], gb = dyIn[i + 1];
          sumGEven += ga;
          sumGXEven += ga * x[i];
          sumGOdd += gb;
          sumGXOdd += gb * x[i + 1];
        }
        if (i < end) {
          sumGEven += dyIn[i];
          sumGXEven += dyIn[i] * x[i];
        }
        continue;
      }
      // The mask as arithmetic, not a branch (it would mispredict on half the values):
      // (v > 0) & (v < high) is 1 or 0, and "+ 0" turns the -0 of a masked negative into +0,
      // so g is bit for bit what a separate ReLU's backward would pass on.
      if (dx === null) {
        for (; i < pairsEnd; i += 2) {
          const va = y[i], vb = y[i + 1];
          const ga = dyIn[i] * (+(va > 0) & +(va < high)) + 0, gb = dyIn[i + 1] * (+(vb > 0) & +(vb < high)) + 0;
          sumGEven += ga;
          sumGXEven += ga * x[i];
          sumGOdd += gb;
          sumGXOdd += gb * x[i + 1];
        }
      } else {
        for (; i < pairsEnd; i += 2) {
          const va = y[i], vb = y[i + 1];
          const ga = dyIn[i] * (+(va > 0) & +(va < high)) + 0, gb = dyIn[i + 1] * (+(vb > 0) & +(vb < high)) + 0;
          dx[i] = ga;
          dx[i + 1] = gb;
          sumGEven += ga;
          sumGXEven += ga * x[i];
          sumGOdd += gb;
          sumGXOdd += gb * x[i + 1];
        }
      }
      if (i < end) {
        const v = y[i];
        const g = dyIn[i] * (+(v > 0) & +(v < high)) + 0;
        if (dx !== null) dx[i] = g;
        sumGEven += g;
        sumGXEven += g * x[i];
      }
    }
    const sumG = sumGEven + sumGOdd;
    const sumGXhat = is * (sumGXEven + sumGXOdd - m * sumG);
    sums[2 * c] = sumG;
    sums[2 * c + 1] = sumGXhat;
    if (dx === null) continue;
    const a = coef[3 * c + 2] * is;
    const b = -a * is * (sumGXhat / M), k = -a * (sumG / M) - b * m;
    if (wasm !== null) {
      // g is dy, or (with an activation) the masked gradient the first pass kept in dx.
      const g = high !== 0 ? dx.byteOffset : dyIn.byteOffset;
      if (training) wasm.inputGradient(g, x.byteOffset, dx.byteOffset, N, C, HW, c, a, b, k);
      else wasm.inputGradientEval(g, dx.byteOffset, N, C, HW, c, a, b, k);
      continue;
    }
    // g is dy, or (with an activation) the masked gradient the first pass kept in dx: read from
    // dx itself, which the loop also writes, rather than through a variable that may be either
    // array (V8 then checks and loads one array per step instead of two: 9% faster).
    for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW, end = start + HW;
      if (training && high !== 0) for (let i = start; i < end; i++) dx[i] = a * dx[i] + b * x[i] + k;
      else if (training) for (let i = start; i < end; i++) dx[i] = a * dyIn[i] + b * x[i] + k;
      else if (high !== 0) for (let i = start; i < end; i++) dx[i] = a * dx[i];
      else for (let i = start; i < end; i++) dx[i] = a * dyIn[i];
    }
  }
}

/**
 * The training forward of channels [c0, c1) in one go: each channel's statistics, its
 * coefficients scale = gamma invStd and shift = beta - mean scale (into coef), then y. One job
 * instead of two (statistics, then apply) saves a dispatch to the threads per layer, and a
 * channel's values are still in cache when they are read the second time.
 */
export function batchNormTrainForward(x: Float32Array, y: Float32Array, N: number, C: number, HW: number, gamma: Float32Array, beta: Float32Array, eps: number, high: number, stats: Float64Array, coef: Float64Array, c0: number, c1: number, wasm: BatchNormWasm | null = null): void {
  for (let c = c0; c < c1; c++) {
    batchNormStats(x, N, C, HW, stats, c, c + 1, wasm);
    const scale = gamma[c] * (1 / Math.sqrt(stats[2 * c + 1] + eps));
    coef[2 * c] = scale;
    coef[2 * c + 1] = beta[c] - stats[2 * c] * scale;
    batchNormApply(x, y, N, C, HW, coef, high, c, c + 1, wasm);
  }
}

// ---------------------------------------------------------------------------------------------
// The same passes in WebAssembly SIMD, on tensors in the buffer cache's arena (read and written
// where they are, by address: src/tensor/buffers.ts). The two float64 lanes of a vector are the
// kernels' two partial sums (a plane's even and odd positions), and every product, sum and
// mask is the same float64 operation on the same values in the same order, so both give the
// same bits. A call does one channel; the per-channel arithmetic stays in TypeScript.
// ---------------------------------------------------------------------------------------------

/**
 * What a BatchNorm WebAssembly function does with one f64x2 of each input (two neighbouring
 * values of a plane, as float64): it leaves the outputs' f64x2 in `outs` and may add into the
 * accumulators `acc`. `scalars` are the splatted float parameters, `zero` and `one` constants,
 * `tmp` two spare locals.
 */
type LaneBody = (ins: number[], outs: number[], l: { acc: number[]; scalars: number[]; zero: number; one: number; tmp: number[] }) => number[];

/**
 * A function over one channel's planes, for n < N the plane of HW floats at (n C + c) HW of
 * every pointer: four values at a time (two f64x2, values 0-1 then 2-3), then a pair, then a last
 * one in lane 0 (lane 1 zero, which adds +0 to a sum: a sum from +0 is never -0, so that changes
 * nothing). Parameters: the inputs' and outputs' addresses (bytes), N, C, HW, c, then the float64
 * scalars; results: each accumulator's two lanes.
 */
function channelPassWasm(name: string, inputs: number, outputs: number, scalars: number, accumulators: number, body: LaneBody): WasmFunction {
  // Parameter indices: the pointers, then N, C, HW and c, then the scalars.
  const [N, C, HW, c] = [0, 1, 2, 3].map((k) => inputs + outputs + k);
  const firstScalar = c + 1;
  let next = firstScalar + scalars;
  const local = () => next++;
  const [n, p, end4, end] = [local(), local(), local(), local()];
  const i32Locals = 4;
  const v = local(), zero = local(), one = local();
  const ins = Array.from({ length: inputs }, local), insHigh = Array.from({ length: inputs }, local);
  const outs = Array.from({ length: outputs }, local), outsHigh = Array.from({ length: outputs }, local);
  const acc = Array.from({ length: accumulators }, local), splats = Array.from({ length: scalars }, local), tmp = [local(), local()];
  const l = { acc, scalars: splats, zero, one, tmp };
  const address = (pointer: number) => [...i.localGet(pointer), ...i.localGet(p), ...i.i32Add];
  const code: number[] = [];
  code.push(...i.v128Zero, ...i.localSet(zero), ...i.f64Const(1), ...i.f64x2Splat, ...i.localSet(one));
  for (const a of acc) code.push(...i.v128Zero, ...i.localSet(a));
  for (let k = 0; k < scalars; k++) code.push(...i.localGet(firstScalar + k), ...i.f64x2Splat, ...i.localSet(splats[k]));
  code.push(...i.i32Const(0), ...i.localSet(n), ...i.block, ...i.loop, ...i.localGet(n), ...i.localGet(N), ...i.i32GeS, ...i.brIf(1));
  // p = ((n C + c) HW) * 4; end4 = p + (HW - HW % 4) * 4; end = p + HW * 4
  code.push(...i.localGet(n), ...i.localGet(C), ...i.i32Mul, ...i.localGet(c), ...i.i32Add, ...i.localGet(HW), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.localSet(p));
  code.push(...i.localGet(p), ...i.localGet(HW), ...i.i32Const(-4), ...i.i32And, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(end4));
  code.push(...i.localGet(p), ...i.localGet(HW), ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(end));
  // Four at a time.
  code.push(...i.block, ...i.loop, ...i.localGet(p), ...i.localGet(end4), ...i.i32GeS, ...i.brIf(1));
  for (let k = 0; k < inputs; k++) {
    code.push(...address(k), ...i.v128Load(0), ...i.localTee(v), ...i.f64x2PromoteLowF32x4, ...i.localSet(ins[k]));
    code.push(...i.localGet(v), ...i.localGet(v), ...i.i8x16Shuffle(floatLanes([2, 3, 2, 3])), ...i.f64x2PromoteLowF32x4, ...i.localSet(insHigh[k]));
  }
  code.push(...body(ins, outs, l), ...body(insHigh, outsHigh, l));
  for (let k = 0; k < outputs; k++) {
    code.push(...address(inputs + k), ...i.localGet(outs[k]), ...i.f32x4DemoteF64x2Zero, ...i.localGet(outsHigh[k]), ...i.f32x4DemoteF64x2Zero, ...i.i8x16Shuffle(floatLanes([0, 1, 4, 5])), ...i.v128Store(0));
  }
  code.push(...i.localGet(p), ...i.i32Const(16), ...i.i32Add, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  // A pair (end - p >= 8), then a last value (end - p >= 4).
  for (const [bytes, load, store] of [[8, i.v128Load64Zero, i.v128Store64Lane0], [4, i.v128Load32Zero, i.v128Store32Lane0]] as const) {
    code.push(...i.localGet(end), ...i.localGet(p), ...i.i32Sub, ...i.i32Const(bytes), ...i.i32GeS, ...i.if);
    for (let k = 0; k < inputs; k++) code.push(...address(k), ...load(0), ...i.f64x2PromoteLowF32x4, ...i.localSet(ins[k]));
    code.push(...body(ins, outs, l));
    for (let k = 0; k < outputs; k++) code.push(...address(inputs + k), ...i.localGet(outs[k]), ...i.f32x4DemoteF64x2Zero, ...store(0));
    code.push(...i.localGet(p), ...i.i32Const(bytes), ...i.i32Add, ...i.localSet(p), ...i.end);
  }
  code.push(...i.localGet(n), ...i.i32Const(1), ...i.i32Add, ...i.localSet(n), ...i.br(0), ...i.end, ...i.end);
  for (const a of acc) code.push(...i.localGet(a), ...i.f64x2ExtractLane(0), ...i.localGet(a), ...i.f64x2ExtractLane(1));
  const params = [...new Array(firstScalar).fill(I32), ...new Array(scalars).fill(F64)];
  return { name, params, results: new Array(2 * accumulators).fill(F64), locals: [...new Array(i32Locals).fill(I32), ...new Array(next - firstScalar - scalars - i32Locals).fill(V128)], body: code };
}

/** Floats j of two v128 (a, b) as the byte lanes of an i8x16.shuffle. */
function floatLanes(js: number[]): number[] {
  return js.flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
}

/** acc += value (an f64x2 local). */
const accumulate = (acc: number, value: number[]) => [...i.localGet(acc), ...value, ...i.f64x2Add, ...i.localSet(acc)];
/** 1 where a comparison's lane is true, else 0, as float64: the mask (all ones or zeros) and 1.0. */
const asOneOrZero = (comparison: number[], one: number) => [...comparison, ...i.localGet(one), ...i.v128And];

/** batchNormStats' loop: sum x and sum x^2 in two lanes. (x) -> acc (sum, squares). */
const statsLanes: LaneBody = ([x], _outs, { acc: [sum, squares] }) => [
  ...accumulate(sum, i.localGet(x)),
  ...accumulate(squares, [...i.localGet(x), ...i.localGet(x), ...i.f64x2Mul]),
];

/** batchNormApply's loop: v = x scale + shift, then no activation, ReLU or ReLU6 (scalars: scale, shift, top). */
function applyLanes(activation: 'none' | 'relu' | 'relu6'): LaneBody {
  return ([x], [y], { scalars: [scale, shift, top], zero, one }) => {
    const v = [...i.localGet(x), ...i.localGet(scale), ...i.f64x2Mul, ...i.localGet(shift), ...i.f64x2Add];
    if (activation === 'none') return [...v, ...i.localSet(y)];
    // y = v * +(v > 0) + 0   or   v * (+(v > 0) & +(v < top)) + top * +(v >= top), as in batchNormApply
    const code = [...v, ...i.localSet(y)];
    const positive = asOneOrZero([...i.localGet(y), ...i.localGet(zero), ...i.f64x2Gt], one);
    if (activation === 'relu') return [...code, ...i.localGet(y), ...positive, ...i.f64x2Mul, ...i.localGet(zero), ...i.f64x2Add, ...i.localSet(y)];
    const belowTop = [...i.localGet(y), ...i.localGet(zero), ...i.f64x2Gt, ...i.localGet(y), ...i.localGet(top), ...i.f64x2Lt, ...i.v128And, ...i.localGet(one), ...i.v128And];
    const atTop = asOneOrZero([...i.localGet(y), ...i.localGet(top), ...i.f64x2Ge], one);
    return [...code, ...i.localGet(y), ...belowTop, ...i.f64x2Mul, ...i.localGet(top), ...atTop, ...i.f64x2Mul, ...i.f64x2Add, ...i.localSet(y)];
  };
}

/**
 * batchNormBackward's first pass: g = dy, or with an activation g = dy * +(0 < y < high) + 0
 * (kept in dx when `keep`); acc (sum g, sum g x). Inputs (dy, x) or (dy, x, y); scalar high.
 */
function gradientSumLanes(masked: boolean, keep: boolean): LaneBody {
  return ([dy, x, y], outs, { acc: [sumG, sumGX], scalars: [high], zero, one, tmp: [g] }) => {
    const code: number[] = [];
    if (!masked) code.push(...i.localGet(dy), ...i.localSet(g));
    else {
      const mask = [...i.localGet(y), ...i.localGet(zero), ...i.f64x2Gt, ...i.localGet(y), ...i.localGet(high), ...i.f64x2Lt, ...i.v128And, ...i.localGet(one), ...i.v128And];
      code.push(...i.localGet(dy), ...mask, ...i.f64x2Mul, ...i.localGet(zero), ...i.f64x2Add, ...i.localSet(g));
      if (keep) code.push(...i.localGet(g), ...i.localSet(outs[0]));
    }
    return [...code, ...accumulate(sumG, i.localGet(g)), ...accumulate(sumGX, [...i.localGet(g), ...i.localGet(x), ...i.f64x2Mul])];
  };
}

/** batchNormBackward's second pass: dx = a g + b x + k (training) or dx = a g (eval). Inputs (g, x) or (g); scalars a, b, k. */
function inputGradientLanes(training: boolean): LaneBody {
  return ([g, x], [dx], { scalars: [a, b, k] }) => {
    if (!training) return [...i.localGet(a), ...i.localGet(g), ...i.f64x2Mul, ...i.localSet(dx)];
    return [...i.localGet(a), ...i.localGet(g), ...i.f64x2Mul, ...i.localGet(b), ...i.localGet(x), ...i.f64x2Mul, ...i.f64x2Add, ...i.localGet(k), ...i.f64x2Add, ...i.localSet(dx)];
  };
}

/** The BatchNorm module's bytes, emitted once at start-up (null with the TypeScript kernels or without an arena). */
const BATCHNORM_WASM = KERNELS === 'wasm' && arenaMemory() !== null ? emitModule({
  memoryPages: 0,
  maxPages: ARENA_MAX_PAGES,
  importsSharedMemory: true,
  functions: [
    channelPassWasm('stats', 1, 0, 0, 2, statsLanes),
    channelPassWasm('applyNone', 1, 1, 3, 0, applyLanes('none')),
    channelPassWasm('applyRelu', 1, 1, 3, 0, applyLanes('relu')),
    channelPassWasm('applyRelu6', 1, 1, 3, 0, applyLanes('relu6')),
    channelPassWasm('gradientSums', 2, 0, 1, 2, gradientSumLanes(false, false)),
    channelPassWasm('gradientSumsMasked', 3, 0, 1, 2, gradientSumLanes(true, false)),
    channelPassWasm('gradientSumsMaskedKept', 3, 1, 1, 2, gradientSumLanes(true, true)),
    channelPassWasm('inputGradient', 2, 1, 3, 0, inputGradientLanes(true)),
    channelPassWasm('inputGradientEval', 1, 1, 3, 0, inputGradientLanes(false)),
  ],
}) : null;

type ChannelSums = (...args: number[]) => number[];
type ChannelPass = (...args: number[]) => void;
/** A thread's instance of the BatchNorm module, on its arena. */
export interface BatchNormWasm {
  stats: ChannelSums;
  apply: ChannelPass[]; // by activation: none, ReLU, ReLU6
  gradientSums: ChannelSums;
  gradientSumsMasked: ChannelSums;
  gradientSumsMaskedKept: ChannelSums;
  inputGradient: ChannelPass;
  inputGradientEval: ChannelPass;
}

/** This thread's instance of the module (made on first use, kept in the thread's cache), or null to run the TypeScript loops. */
function batchNormWasmOf(thread: ThreadContext, bytes: Uint8Array<ArrayBuffer> | null): BatchNormWasm | null {
  if (bytes === null || thread.arena === null) return null;
  if (thread.cache.batchNorm === undefined) {
    const e = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory: thread.arena } }).exports as Record<string, (...args: number[]) => never>;
    thread.cache.batchNorm = { stats: e.stats, apply: [e.applyNone, e.applyRelu, e.applyRelu6], gradientSums: e.gradientSums, gradientSumsMasked: e.gradientSumsMasked, gradientSumsMaskedKept: e.gradientSumsMaskedKept, inputGradient: e.inputGradient, inputGradientEval: e.inputGradientEval };
  }
  return thread.cache.batchNorm as BatchNormWasm;
}

// On every thread: the passes as declared kernels, each split by channels (parallel.ts).
// The workers get the module's bytes, and make their instance on their arena at first use.
const BATCHNORM_PRELUDE = `const BATCHNORM_WASM = ${BATCHNORM_WASM === null ? 'null' : `new Uint8Array([${BATCHNORM_WASM.join(',')}])`};`;
/** Whether the calling thread asks for the WebAssembly passes (tests switch with useBatchNormKernel). */
let batchNormInWasm = BATCHNORM_WASM !== null;

/** Run BatchNorm's passes with the given kind (see useGemmKernel): 'wasm' where its module is loaded, 'js' always. */
export function useBatchNormKernel(kind: 'wasm' | 'js'): void {
  if (kind === 'wasm' && BATCHNORM_WASM === null) throw new RangeError('useBatchNormKernel: the WebAssembly kernels are not loaded (MOBILENET_KERNELS=js, no WebAssembly SIMD, or no shared memory)');
  batchNormInWasm = kind === 'wasm';
}

/** The calling thread's instance of the BatchNorm module, or null: for tests, which call the passes with it and without. */
export function batchNormWasmForTests(): BatchNormWasm | null {
  return batchNormWasmOf(testThread, BATCHNORM_WASM);
}
const testThread: ThreadContext = { arena: arenaMemory(), cache: {} };

/** 1 when the WebAssembly passes can run on these buffers (every float32 one in the arena), else 0. */
function inArena(...buffers: Float32Array[]): number {
  return batchNormInWasm && buffers.every((b) => arenaOffset(b) >= 0) ? 1 : 0;
}

type BatchNormSizes = Record<'N' | 'C' | 'HW' | 'inArena', number>;

function batchNormTrainForwardSlice(p: BatchNormSizes & Record<'eps' | 'high', number>, b: Record<'x' | 'gamma' | 'beta' | 'stats' | 'coef' | 'y', Float32Array | Float64Array>, lo: number, hi: number, thread: ThreadContext): void {
  batchNormTrainForward(b.x as Float32Array, b.y as Float32Array, p.N, p.C, p.HW, b.gamma as Float32Array, b.beta as Float32Array, p.eps, p.high, b.stats as Float64Array, b.coef as Float64Array, lo, hi, p.inArena === 1 ? batchNormWasmOf(thread, BATCHNORM_WASM) : null);
}

const BATCHNORM_TRAIN_FORWARD = declareKernel({
  name: 'batchNormTrainForward',
  ints: ['N', 'C', 'HW', 'inArena'],
  floats: ['eps', 'high'],
  reads: ['x', 'gamma', 'beta'],
  writes: ['stats', 'coef', 'y'],
  large: ['x', 'y'],
  splits: 'channels',
  chunksPerThread: 4,
  minWork: PARALLEL_MIN_ELEMENTS,
  slice: batchNormTrainForwardSlice,
  deps: [batchNormTrainForward, batchNormStats, batchNormApply, batchNormWasmOf],
  prelude: BATCHNORM_PRELUDE,
});

function batchNormApplySlice(p: BatchNormSizes & Record<'high', number>, b: Record<'x' | 'coef' | 'y', Float32Array | Float64Array>, lo: number, hi: number, thread: ThreadContext): void {
  batchNormApply(b.x as Float32Array, b.y as Float32Array, p.N, p.C, p.HW, b.coef as Float64Array, p.high, lo, hi, p.inArena === 1 ? batchNormWasmOf(thread, BATCHNORM_WASM) : null);
}

const BATCHNORM_APPLY = declareKernel({
  name: 'batchNormApply',
  ints: ['N', 'C', 'HW', 'inArena'],
  floats: ['high'],
  reads: ['x', 'coef'],
  writes: ['y'],
  large: ['x', 'y'],
  splits: 'channels',
  chunksPerThread: 4,
  minWork: PARALLEL_MIN_ELEMENTS,
  slice: batchNormApplySlice,
  deps: [batchNormApply, batchNormWasmOf],
  prelude: BATCHNORM_PRELUDE,
});

function batchNormBackwardSlice(p: BatchNormSizes & Record<'training' | 'hasDx' | 'high', number>, b: Record<'dy' | 'x' | 'y' | 'coef' | 'dx' | 'sums', Float32Array | Float64Array>, lo: number, hi: number, thread: ThreadContext): void {
  batchNormBackward(b.dy as Float32Array, b.x as Float32Array, b.y as Float32Array, p.hasDx === 1 ? (b.dx as Float32Array) : null, p.N, p.C, p.HW, b.coef as Float64Array, b.sums as Float64Array, p.high, p.training === 1, lo, hi, p.inArena === 1 ? batchNormWasmOf(thread, BATCHNORM_WASM) : null);
}

const BATCHNORM_BACKWARD = declareKernel({
  name: 'batchNormBackward',
  ints: ['N', 'C', 'HW', 'inArena', 'training', 'hasDx'],
  floats: ['high'],
  reads: ['dy', 'x', 'y', 'coef'],
  writes: ['dx', 'sums'],
  large: ['dy', 'x', 'y'],
  splits: 'channels',
  chunksPerThread: 4,
  minWork: PARALLEL_MIN_ELEMENTS,
  slice: batchNormBackwardSlice,
  deps: [batchNormBackward, batchNormWasmOf],
  prelude: BATCHNORM_PRELUDE,
});

/** Stands in for dx when no input gradient is wanted (the kernel is told by hasDx = 0). */
const NO_INPUT_GRADIENT = new Float32Array(0);

// ---------------------------------------------------------------------------------------------
// Naive twin: the textbook formulas, per element, two passes, in float64. The kernels above are
// tested against it (test/layers.test.ts), as the convolutions are against theirs.
// ---------------------------------------------------------------------------------------------

/**
 * y = act(gamma (x - mean) / sqrt(var + eps) + beta) per channel over (N, HW), with the batch's
 * mean and biased variance (training) or the given running ones; act clamps to [0, high]
 * (high = 0: no activation). Returns y and the statistics used.
 */
export function batchNormNaiveForward(x: Float32Array, N: number, C: number, HW: number, gamma: Float32Array, beta: Float32Array, training: boolean, runningMean: Float32Array, runningVar: Float32Array, eps: number, high: number): { y: Float32Array; mean: Float64Array; variance: Float64Array } {
  const y = new Float32Array(x.length);
  const mean = new Float64Array(C), variance = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    if (training) {
      let s = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) s += x[(n * C + c) * HW + i];
      mean[c] = s / (N * HW);
      let v = 0;
      for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) v += (x[(n * C + c) * HW + i] - mean[c]) ** 2;
      variance[c] = v / (N * HW);
    } else {
      mean[c] = runningMean[c];
      variance[c] = runningVar[c];
    }
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < HW; i++) {
        const k = (n * C + c) * HW + i;
        const v = (gamma[c] * (x[k] - mean[c])) / Math.sqrt(variance[c] + eps) + beta[c];
        y[k] = high > 0 ? Math.min(high, Math.max(0, v)) : v;
      }
    }
  }
  return { y, mean, variance };
}

/**
 * The backward of batchNormNaiveForward: g = dy masked where the activation clamped (y at 0 or
 * high), xhat = (x - mean) / sqrt(var + eps); dgamma = sum g xhat, dbeta = sum g; in training
 * dx = gamma / sqrt(var + eps) (g - mean(g) - xhat mean(g xhat)), in eval dx = gamma g / sqrt(var + eps).
 */
export function batchNormNaiveBackward(dy: Float32Array, x: Float32Array, y: Float32Array, N: number, C: number, HW: number, gamma: Float32Array, mean: Float64Array, variance: Float64Array, training: boolean, eps: number, high: number): { dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array } {
  const dx = new Float32Array(x.length), dgamma = new Float32Array(C), dbeta = new Float32Array(C);
  const M = N * HW;
  for (let c = 0; c < C; c++) {
    const invStd = 1 / Math.sqrt(variance[c] + eps);
    const g = (k: number) => (high > 0 && (y[k] <= 0 || y[k] >= high) ? 0 : dy[k]);
    let sumG = 0, sumGX = 0;
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < HW; i++) {
        const k = (n * C + c) * HW + i;
        sumG += g(k);
        sumGX += g(k) * (x[k] - mean[c]) * invStd;
      }
    }
    dgamma[c] = sumGX;
    dbeta[c] = sumG;
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < HW; i++) {
        const k = (n * C + c) * HW + i;
        const xhat = (x[k] - mean[c]) * invStd;
        dx[k] = training ? gamma[c] * invStd * (g(k) - sumG / M - (xhat * sumGX) / M) : gamma[c] * invStd * g(k);
      }
    }
  }
  return { dx, dgamma, dbeta };
}

interface BatchNormCall {
  N: number;
  C: number;
  HW: number;
  high: number;
  training: boolean;
  x: Float32Array;
  y: Float32Array;
}

/**
 * The formula the stepper shows. Fused with an activation, the node is both: the activation's
 * mask first turns dy into g, then BatchNorm's backward runs on g.
 */
function batchNormFormula(training: boolean, activation: 'relu' | 'relu6' | undefined): string {
  const inner = training ? 'gamma (x - mean) / sqrt(var + eps) + beta' : 'gamma (x - runningMean) / sqrt(runningVar + eps) + beta';
  const backward = (g: string) => (training ? `dx = gamma invStd (${g} - mean(${g}) - xhat mean(${g} xhat)), dgamma = sum ${g} xhat, dbeta = sum ${g}` : `dx = gamma invStd ${g}, dgamma = sum ${g} xhat, dbeta = sum ${g}`);
  if (activation === undefined) return `y = ${inner}  ->  ${backward('dy')}`;
  const [outer, mask] = activation === 'relu' ? [`max(0, ${inner})`, '[y > 0]'] : [`min(6, max(0, ${inner}))`, '[0 < y < 6]'];
  return `y = ${outer}  ->  g = dy * ${mask}; ${backward('g')}`;
}

/**
 * Batch normalisation as an autograd op. In training mode the running statistics tensors are
 * updated in place (they are buffers, not parameters: no gradient flows into them).
 */
export function batchNorm2d(x: Tensor, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor, options: BatchNormOptions): Tensor {
  const momentum = options.momentum ?? BATCHNORM_MOMENTUM;
  const eps = options.eps ?? BATCHNORM_EPS;
  if (x.rank !== 4) throw new ShapeError(`batchNorm2d: input must be (N, C, H, W), got ${formatShape(x.shape)}`);
  const [N, C, H, W] = x.shape;
  for (const [name, t] of [['gamma', gamma], ['beta', beta], ['runningMean', runningMean], ['runningVar', runningVar]] as const) {
    if (t.rank !== 1 || t.shape[0] !== C) throw new ShapeError(`batchNorm2d: ${name} must have shape [${C}] for an input with ${C} channels, got ${formatShape(t.shape)}`);
  }
  const HW = H * W, M = N * HW;
  const training = options.training;
  if (training && M < 2) throw new ShapeError(`batchNorm2d: training needs more than one value per channel, got input ${formatShape(x.shape)}`);
  const activation = options.activation;
  // The fused activation clamps to [0, high]; high = 0 means no activation.
  const high = activation === 'relu6' ? 6 : activation === 'relu' ? Infinity : 0;
  const call: BatchNormCall = { N, C, HW, high, training, x: x.data, y: alloc(x.numel, false) };
  const mean = new Float64Array(C);
  const invStd = new Float64Array(C);
  // y = gamma (x - mean) invStd + beta = scale x + shift, with coef[2c] = scale, coef[2c + 1] = shift
  const coef = new Float64Array(2 * C);
  if (training) {
    // The batch's statistics, coefficients and y in one job; the running statistics here.
    const stats = new Float64Array(2 * C);
    runKernel(BATCHNORM_TRAIN_FORWARD, { N, C, HW, inArena: inArena(call.x, call.y), eps, high }, { x: call.x, gamma: gamma.data, beta: beta.data, stats, coef, y: call.y }, C, x.numel);
    for (let c = 0; c < C; c++) {
      const m = stats[2 * c], variance = stats[2 * c + 1];
      mean[c] = m;
      invStd[c] = 1 / Math.sqrt(variance + eps);
      runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * m;
      runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * variance * (M / (M - 1));
    }
  } else {
    for (let c = 0; c < C; c++) {
      mean[c] = runningMean.data[c];
      invStd[c] = 1 / Math.sqrt(runningVar.data[c] + eps);
      const scale = gamma.data[c] * invStd[c];
      coef[2 * c] = scale;
      coef[2 * c + 1] = beta.data[c] - mean[c] * scale;
    }
    runKernel(BATCHNORM_APPLY, { N, C, HW, inArena: inArena(call.x, call.y), high }, { x: call.x, coef, y: call.y }, C, x.numel);
  }
  const y = call.y;
  const op = activation === undefined ? 'batchNorm2d' : `batchNorm2d+${activation}`;
  return recordOp(new Tensor(y, x.shape), {
    op, inputs: [x, gamma, beta],
    formula: batchNormFormula(training, activation),
    saved: { call, gamma: gamma.data, mean, invStd },
    backward: (dyIn, s, needs) => {
      const backCoef = new Float64Array(3 * C);
      for (let c = 0; c < C; c++) {
        backCoef[3 * c] = s.mean[c];
        backCoef[3 * c + 1] = s.invStd[c];
        backCoef[3 * c + 2] = s.gamma[c];
      }
      const sums = new Float64Array(2 * C);
      const dx = needs[0] ? alloc(s.call.x.length, false) : null;
      const call = s.call;
      const wasmOn = dx === null ? inArena(dyIn, call.x, call.y) : inArena(dyIn, call.x, call.y, dx);
      runKernel(BATCHNORM_BACKWARD, { N: call.N, C: call.C, HW: call.HW, inArena: wasmOn, high: call.high, training: call.training ? 1 : 0, hasDx: dx === null ? 0 : 1 }, { dy: dyIn, x: call.x, y: call.y, coef: backCoef, dx: dx ?? NO_INPUT_GRADIENT, sums }, call.C, call.x.length);
      const dgamma = alloc(C), dbeta = alloc(C);
      for (let c = 0; c < C; c++) {
        dbeta[c] = sums[2 * c];
        dgamma[c] = sums[2 * c + 1];
      }
      return [dx, needs[1] ? dgamma : null, needs[2] ? dbeta : null];
    },
    apply: (xs) => batchNorm2d(xs[0], xs[1], xs[2], runningMean.clone(), runningVar.clone(), options),
  });
}

/**
 * Fold an eval-mode BatchNorm into the convolution before it, for inference:
 *   BN(conv(x)) = gamma (W x + b - mean) / sqrt(var + eps) + beta = W' x + b'
 *   W'[co] = W[co] * gamma[co] / sqrt(var[co] + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta
 * `weight` is (Cout, ...) for any conv flavour; returns new tensors.
 */
export function foldBatchNorm(weight: Tensor, bias: Tensor | null, gamma: Tensor, beta: Tensor, runningMean: Tensor, runningVar: Tensor, eps = BATCHNORM_EPS): { weight: Tensor; bias: Tensor } {
  const Cout = weight.shape[0];
  if (gamma.numel !== Cout) throw new ShapeError(`foldBatchNorm: BatchNorm has ${gamma.numel} channels but the conv weight ${formatShape(weight.shape)} has ${Cout} outputs`);
  const perOut = weight.numel / Cout;
  const w = new Float32Array(weight.numel);
  const b = new Float32Array(Cout);
  for (let c = 0; c < Cout; c++) {
    const scale = gamma.data[c] / Math.sqrt(runningVar.data[c] + eps);
    for (let i = c * perOut; i < (c + 1) * perOut; i++) w[i] = weight.data[i] * scale;
    b[c] = ((bias ? bias.data[c] : 0) - runningMean.data[c]) * scale + beta.data[c];
  }
  return { weight: new Tensor(w, weight.shape), bias: new Tensor(b, [Cout]) };
}
