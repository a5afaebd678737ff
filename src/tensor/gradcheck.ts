// Gradient check: compare backward's analytic gradient with a central finite difference.
//
// The scalar checked is L = sum_i w_i * y_i with fixed random weights w (a random projection:
// every output element matters, and no two gradients cancel by symmetry). For an input element
// x_j, the numeric derivative is (L(x_j + h) - L(x_j - h)) / 2h. The projection and the
// differences are computed in float64; the forward itself runs in the engine's float32, which is
// why h is 1e-2 by default (float32 rounding noise in L is ~1e-7 |L|, divided by 2h).
//
// Kinks: at ReLU's 0, ReLU6's 6 or a max tie the function has no derivative and the numeric
// value is meaningless. Such points are skipped, not tolerated with a looser bound: the caller
// can name them (`isKink`), and independently, a point whose one-sided differences disagree
// (left slope != right slope) is treated as a kink.

import { noGrad } from './autograd.js';
import { Rng } from './rng.js';
import { Tensor } from './tensor.js';

/** Options of gradcheck: step size, tolerances, samples per input, kinks to skip. */
export interface GradcheckOptions {
  /** Step for the central difference. */
  h?: number;
  rtol?: number;
  atol?: number;
  /** Check at most this many elements of each input (sampled with a seeded RNG). */
  maxSamplesPerInput?: number;
  /** Skip element `index` of input `inputIndex` (value `value`) as a known kink. */
  isKink?: (inputIndex: number, index: number, value: number) => boolean;
  /** Also skip points whose left and right slopes disagree by more than this fraction. */
  kinkSlopeRatio?: number;
  seed?: number;
}

/** The defaults of gradcheck: step size, tolerances, samples per input. */
export const GRADCHECK_DEFAULTS: Required<Omit<GradcheckOptions, 'isKink'>> = {
  h: 1e-2,
  rtol: 1e-2,
  atol: 1e-3,
  maxSamplesPerInput: 48,
  kinkSlopeRatio: 0.5,
  seed: 1234,
};

/** One gradient entry that disagreed with its central difference. */
export interface GradcheckFailure {
  inputIndex: number;
  index: number;
  analytic: number;
  numeric: number;
  relativeError: number;
}

/** What gradcheck compared and the entries that disagreed. */
export interface GradcheckResult {
  ok: boolean;
  checked: number;
  skippedKinks: number;
  maxRelativeError: number;
  failures: GradcheckFailure[];
}

function project(y: Tensor, weights: Float64Array): number {
  let acc = 0;
  for (let i = 0; i < y.data.length; i++) acc += y.data[i] * weights[i];
  return acc;
}

/**
 * Check the gradients `fn` produces for each input that has `requiresGrad`. `fn` must be
 * deterministic (seed any randomness inside it).
 */
export function gradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], options: GradcheckOptions = {}): GradcheckResult {
  const o = { ...GRADCHECK_DEFAULTS, ...options };
  const rng = new Rng(o.seed);
  // Analytic gradient: backward from y with dL/dy = w.
  for (const x of inputs) x.grad = null;
  const y = fn(...inputs);
  const weights = new Float64Array(y.numel);
  for (let i = 0; i < weights.length; i++) weights[i] = rng.uniform(-1, 1);
  y.backward(new Tensor(Float32Array.from(weights), y.shape));

  const result: GradcheckResult = { ok: true, checked: 0, skippedKinks: 0, maxRelativeError: 0, failures: [] };
  const evalAt = () => noGrad(() => project(fn(...inputs), weights));
  inputs.forEach((x, inputIndex) => {
    if (!x.requiresGrad) return;
    const analyticGrad = x.grad?.data ?? new Float32Array(x.numel);
    const indices = x.numel <= o.maxSamplesPerInput ? [...Array(x.numel).keys()] : Array.from(rng.permutation(x.numel).subarray(0, o.maxSamplesPerInput));
    for (const index of indices) {
      const original = x.data[index];
      if (o.isKink?.(inputIndex, index, original)) {
        result.skippedKinks++;
        continue;
      }
      x.data[index] = original + o.h;
      const plus = evalAt();
      x.data[index] = original - o.h;
      const minus = evalAt();
      x.data[index] = original;
      const center = evalAt();
      // Math in float64 from here on.
      const step = Math.fround(original + o.h) - Math.fround(original - o.h);
      const numeric = (plus - minus) / step;
      const rightSlope = (plus - center) / (Math.fround(original + o.h) - original);
      const leftSlope = (center - minus) / (original - Math.fround(original - o.h));
      if (Math.abs(rightSlope - leftSlope) > o.kinkSlopeRatio * Math.max(Math.abs(rightSlope), Math.abs(leftSlope)) + 10 * o.atol) {
        result.skippedKinks++;
        continue;
      }
      const analytic = analyticGrad[index];
      const diff = Math.abs(analytic - numeric);
      const relativeError = diff / Math.max(Math.abs(analytic), Math.abs(numeric), o.atol);
      result.checked++;
      result.maxRelativeError = Math.max(result.maxRelativeError, relativeError);
      if (diff > o.atol + o.rtol * Math.max(Math.abs(analytic), Math.abs(numeric))) {
        result.ok = false;
        result.failures.push({ inputIndex, index, analytic, numeric, relativeError });
      }
    }
  });
  if (result.checked === 0) result.ok = false; // a check that checked nothing proves nothing
  return result;
}

/** Throw with a readable report unless every checked gradient matches. */
export function assertGradcheck(name: string, fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], options: GradcheckOptions = {}): GradcheckResult {
  const r = gradcheck(fn, inputs, options);
  if (!r.ok) {
    const lines = r.failures.slice(0, 8).map((f) => `  input ${f.inputIndex}[${f.index}]: analytic ${f.analytic.toPrecision(6)} vs numeric ${f.numeric.toPrecision(6)} (rel err ${f.relativeError.toExponential(2)})`);
    throw new Error(`gradcheck ${name}: ${r.checked === 0 ? 'no element was checked (all skipped as kinks)' : `${r.failures.length} of ${r.checked} elements differ`}\n${lines.join('\n')}`);
  }
  return r;
}
