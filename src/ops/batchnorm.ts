// BatchNorm over (N, H, W) for each channel, as PyTorch's BatchNorm2d.
//
//   x: (N, C, H, W)   gamma, beta, runningMean, runningVar: (C)   y: (N, C, H, W)
//   training:  mean_c, var_c = batch statistics over the M = N*H*W values of channel c (var biased)
//              runningMean <- (1 - momentum) runningMean + momentum mean
//              runningVar  <- (1 - momentum) runningVar  + momentum var * M / (M - 1)   (unbiased)
//   eval:      mean_c, var_c = runningMean, runningVar
//   xhat = (x - mean) * invStd,  invStd = 1 / sqrt(var + eps);   y = gamma xhat + beta
// Saved for backward: the input x, mean and invStd per channel (xhat is recomputed: M floats saved).

import { alloc } from '../tensor/buffers.js';
import { needsGraph, withReplay, recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

export const BATCHNORM_EPS = 1e-5;
export const BATCHNORM_MOMENTUM = 0.1;

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
  if (options.training && M < 2) throw new ShapeError(`batchNorm2d: training needs more than one value per channel, got input ${formatShape(x.shape)}`);
  const xd = x.data;
  const mean = new Float64Array(C);
  const invStd = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    if (options.training) {
      // Two passes in float64: the mean, then the centred sum of squares (stable).
      let s = 0;
      for (let n = 0; n < N; n++) {
        const start = (n * C + c) * HW;
        for (let i = start; i < start + HW; i++) s += xd[i];
      }
      const m = s / M;
      let ss = 0;
      for (let n = 0; n < N; n++) {
        const start = (n * C + c) * HW;
        for (let i = start; i < start + HW; i++) {
          const d = xd[i] - m;
          ss += d * d;
        }
      }
      const variance = ss / M;
      mean[c] = m;
      invStd[c] = 1 / Math.sqrt(variance + eps);
      runningMean.data[c] = (1 - momentum) * runningMean.data[c] + momentum * m;
      runningVar.data[c] = (1 - momentum) * runningVar.data[c] + momentum * variance * (M / (M - 1));
    } else {
      mean[c] = runningMean.data[c];
      invStd[c] = 1 / Math.sqrt(runningVar.data[c] + eps);
    }
  }
  const y = alloc(xd.length);
  const activation = options.activation;
  // With a fused activation: clamp to [0, high], and keep mask[i] = 1 where 0 < y < high.
  const high = activation === 'relu6' ? 6 : Infinity;
  const mask = activation !== undefined && needsGraph(x, gamma, beta) ? new Uint8Array(xd.length) : null;
  for (let c = 0; c < C; c++) {
    // y = gamma (x - mean) invStd + beta = scale x + shift
    const scale = gamma.data[c] * invStd[c];
    const shift = beta.data[c] - mean[c] * scale;
    for (let n = 0; n < N; n++) {
      const start = (n * C + c) * HW;
      if (activation === undefined) {
        for (let i = start; i < start + HW; i++) y[i] = xd[i] * scale + shift;
        continue;
      }
      for (let i = start; i < start + HW; i++) {
        const v = Math.fround(xd[i] * scale + shift); // the float32 value the separate BN would store
        if (v > 0) {
          if (v < high) {
            y[i] = v;
            if (mask !== null) mask[i] = 1;
          } else y[i] = high;
        } else y[i] = v === v ? 0 : v; // NaN passes through
      }
    }
  }
  const training = options.training;
  const op = activation === undefined ? 'batchNorm2d' : `batchNorm2d+${activation}`;
  return withReplay(recordOp(new Tensor(y, x.shape), op, [x, gamma, beta], { x: xd, gamma: gamma.data, mean, invStd, mask }, (dyIn, s, needs) => {
    // Fused activation first: dy = dyIn * mask (the ReLU's backward), then BatchNorm's.
    let dy = dyIn;
    if (s.mask !== null) {
      dy = alloc(dyIn.length);
      for (let i = 0; i < dy.length; i++) if (s.mask[i] === 1) dy[i] = dyIn[i];
    }
    // Per channel: sumDy = sum dy = dbeta, sumDyXhat = sum dy * xhat = dgamma.
    // Training (mean and var depend on x):
    //   dx = gamma invStd / M * (M dy - sumDy - xhat sumDyXhat)
    // Eval (statistics are constants): dx = gamma invStd dy.
    const dx = needs[0] ? alloc(s.x.length) : null;
    const dgamma = alloc(C), dbeta = alloc(C);
    for (let c = 0; c < C; c++) {
      const m = s.mean[c], is = s.invStd[c];
      let sumDy = 0, sumDyXhat = 0;
      for (let n = 0; n < N; n++) {
        const start = (n * C + c) * HW;
        for (let i = start; i < start + HW; i++) {
          sumDy += dy[i];
          sumDyXhat += dy[i] * (s.x[i] - m) * is;
        }
      }
      dgamma[c] = sumDyXhat;
      dbeta[c] = sumDy;
      if (dx === null) continue;
      const g = s.gamma[c] * is;
      for (let n = 0; n < N; n++) {
        const start = (n * C + c) * HW;
        if (training) {
          const meanDy = sumDy / M, meanDyXhat = sumDyXhat / M;
          for (let i = start; i < start + HW; i++) dx[i] = g * (dy[i] - meanDy - (s.x[i] - m) * is * meanDyXhat);
        } else {
          for (let i = start; i < start + HW; i++) dx[i] = g * dy[i];
        }
      }
    }
    return [dx, needs[1] ? dgamma : null, needs[2] ? dbeta : null];
  }, (activation ? `${activation} after ` : '') + (training
    ? 'y = gamma (x - mean) / sqrt(var + eps) + beta  ->  dx = gamma invStd (dy - mean(dy) - xhat mean(dy xhat)), dgamma = sum dy xhat, dbeta = sum dy'
    : 'y = gamma (x - runningMean) / sqrt(runningVar + eps) + beta  ->  dx = gamma invStd dy')), (xs) => batchNorm2d(xs[0], xs[1], xs[2], runningMean.clone(), runningVar.clone(), options));
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
