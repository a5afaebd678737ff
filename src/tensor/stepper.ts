// Backprop one node at a time, explained and checked: what `mobilenet step` shows.
//
// `describeStep` turns a step of the engine's own backward generator (`loss.backwardSteps()`)
// into a report: op, formula, shapes, statistics of the incoming gradient and of what is sent
// to each input, and which inputs are named parameters.
//
// `checkStep` verifies one node numerically, two ways, with central differences:
//  - local: for a few sampled entries j of input i, perturb x_j, recompute this node alone (its
//    replay function) and project the change of its output on the incoming gradient dL/dy in
//    float64: (<dL/dy, f(x + h e_j)> - <dL/dy, f(x - h e_j)>) / 2h must equal the gradient the
//    node sent for x_j. This isolates the node's backward, so a wrong one cannot hide.
//  - whole loss: perturb the input as this node sees it along a random +-1 direction v (other
//    consumers of the same tensor keep the original), recompute this node and everything
//    downstream, and compare (L(x + h v) - L(x - h v)) / 2h with <sent gradient, v>. A single
//    entry's effect on a float32 loss is often below its rounding (a 1e-6 gradient times a
//    1e-2 step), while a direction over all entries moves the loss measurably.

import { topologicalOrder, type BackwardStep } from './autograd.js';
import { maxAbsOf } from './arrays.js';
import { Rng } from './rng.js';
import { Tensor } from './tensor.js';

/** Mean, std, min, max, L2 norm, fraction of zeros and count of NaN/Inf of a tensor's values. */
export interface TensorStats {
  mean: number;
  std: number;
  min: number;
  max: number;
  l2: number;
  zeroFraction: number;
  /** Count of NaN and +-Infinity values. */
  nonFinite: number;
}

/** Statistics of a tensor's values (non-finite values counted, not summed). */
export function tensorStats(data: ArrayLike<number>): TensorStats {
  let sum = 0, sumSq = 0, min = Infinity, max = -Infinity, zeros = 0, nonFinite = 0, n = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!Number.isFinite(v)) {
      nonFinite++;
      continue;
    }
    n++;
    sum += v;
    sumSq += v * v;
    if (v < min) min = v;
    if (v > max) max = v;
    if (v === 0) zeros++;
  }
  const mean = n > 0 ? sum / n : NaN;
  return { mean, std: n > 0 ? Math.sqrt(Math.max(0, sumSq / n - mean * mean)) : NaN, min, max, l2: Math.sqrt(sumSq), zeroFraction: data.length > 0 ? zeros / data.length : 0, nonFinite };
}

/** What one backward step sent to one input: its shape, whether it is a (named) parameter, the gradient's statistics. */
export interface StepInputReport {
  shape: number[];
  /** A leaf that requires grad: a parameter (named when its module named it) or an input. */
  isParameter: boolean;
  name: string | null;
  /** The op that produced this input, or null for a leaf. */
  producer: string | null;
  gradStats: TensorStats | null;
}

/** One backward step as `mobilenet step` shows it: op, formula, shapes, gradient statistics per input. */
export interface StepReport {
  index: number;
  total: number;
  op: string;
  formula: string;
  outputShape: number[];
  gradOutputStats: TensorStats;
  inputs: StepInputReport[];
}

/** A backward step as a report: op, formula, output shape, statistics of the incoming gradient and of what each input receives. */
export function describeStep(step: BackwardStep): StepReport {
  return {
    index: step.index,
    total: step.total,
    op: step.op,
    formula: step.formula,
    outputShape: [...step.output.shape],
    gradOutputStats: tensorStats(step.gradOutput),
    inputs: step.inputs.map((t, i) => {
      const g = step.inputGrads[i];
      return {
        shape: [...t.shape],
        isParameter: t.node === null && t.requiresGrad,
        name: t.name ?? null,
        producer: t.node?.op ?? null,
        gradStats: g === null || !t.requiresGrad ? null : tensorStats(g),
      };
    }),
  };
}

/** Options of checkStep. */
export interface CheckOptions {
  /** Entries sampled per input for the local check. */
  samples?: number;
  /** Relative error bound. */
  tolerance?: number;
  seed?: number;
}

/** float32's machine epsilon (2^-23). */
const EPS32 = 2 ** -23;
/** How many rounding units of slack the numerical estimate gets (it sums many rounded outputs). */
const ROUNDING_SAFETY = 4;

/** The defaults of checkStep: entries sampled per input, the relative error bound, the seed. */
export const CHECK_DEFAULTS: Required<CheckOptions> = { samples: 4, tolerance: 0.05, seed: 7 };

/** The numerical check of the gradient one node sent to one input. */
export interface InputCheck {
  inputIndex: number;
  name: string | null;
  /** Local check (decides `ok`): sampled entries compared, skipped at kinks, worst relative error. */
  checked: number;
  skippedKinks: number;
  localError: number;
  /** Whole-loss directional check: relative error, or null when the loss did not move measurably. */
  wholeLossError: number | null;
  ok: boolean;
  worst: { index: number; analytic: number; numeric: number } | null;
}

/** The loss after replacing `output` by `replacement` and recomputing everything downstream. */
function lossWith(root: Tensor, forwardOrder: Tensor[], output: Tensor, replacement: Tensor): number {
  const replaced = new Map<Tensor, Tensor>([[output, replacement]]);
  const start = forwardOrder.indexOf(output);
  for (let k = start + 1; k < forwardOrder.length; k++) {
    const t = forwardOrder[k];
    const node = t.node!;
    if (!node.inputs.some((x) => replaced.has(x))) continue;
    if (node.replay === undefined) throw new Error(`checkStep: op '${node.op}' cannot be replayed`);
    replaced.set(t, node.replay(node.inputs.map((x) => replaced.get(x) ?? x)));
  }
  return (replaced.get(root) ?? root).data[0];
}

/** sqrt(sum_k (dy_k max(|a_k|, |b_k|))^2) over the entries where a and b differ, in float64. */
function changedMass(dy: ArrayLike<number>, a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) s += (dy[k] * Math.max(Math.abs(a[k]), Math.abs(b[k]))) ** 2;
  return Math.sqrt(s);
}

function dot64(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Numerically check the gradients one backward step sent to its inputs (see the file comment). */
export function checkStep(root: Tensor, step: BackwardStep, options: CheckOptions = {}, forwardOrder: Tensor[] = topologicalOrder(root).reverse()): InputCheck[] {
  const o = { ...CHECK_DEFAULTS, ...options };
  if (root.numel !== 1) throw new RangeError('checkStep: the root must be a scalar loss');
  const node = step.output.node!;
  const replay = node.replay;
  if (replay === undefined) throw new Error(`checkStep: op '${node.op}' cannot be replayed`);
  const rng = new Rng(o.seed + step.index);
  const results: InputCheck[] = [];
  step.inputs.forEach((input, i) => {
    const sent = step.inputGrads[i];
    if (sent === null || !input.requiresGrad) return;
    const scale = maxAbsOf(sent);
    const rms = Math.sqrt(dot64(input.data, input.data) / Math.max(1, input.numel));
    const withInput = (x: Tensor) => replay(step.inputs.map((t, k) => (k === i ? x : t)) as Tensor[]);
    const result: InputCheck = { inputIndex: i, name: input.name ?? null, checked: 0, skippedKinks: 0, localError: 0, wholeLossError: null, ok: true, worst: null };

    // Local: f(x + h e_j), the node's output with one input entry moved.
    const outputAt = (j: number, value: number) => {
      const perturbed = new Tensor(input.data.slice(), input.shape);
      perturbed.data[j] = value;
      return withInput(perturbed).data;
    };
    const indices = input.numel <= o.samples ? [...Array(input.numel).keys()] : Array.from(rng.permutation(input.numel).subarray(0, o.samples));
    // Three step sizes: a large step errs by curvature (BatchNorm over a few values is very
    // curved), a small one by float32 rounding of the output; the best of the three counts.
    const steps = [1e-1, 1e-2, 1e-3].map((f) => f * Math.max(rms, 1e-2));
    for (const j of indices) {
      const x = input.data[j];
      const analytic = sent[j];
      const centerOutput = outputAt(j, x);
      const center = dot64(step.gradOutput, centerOutput);
      let best: { error: number; numeric: number } | null = null;
      for (const h of steps) {
        const up = Math.fround(x + h), down = Math.fround(x - h);
        const plusOutput = outputAt(j, up), minusOutput = outputAt(j, down);
        const plus = dot64(step.gradOutput, plusOutput), minus = dot64(step.gradOutput, minusOutput);
        // The estimate's own error, an absolute floor scaled to this node's gradients: every
        // output the move changed is float32, rounded by up to EPS32 of itself, so each dot
        // product is uncertain by about EPS32 * sqrt(sum_k (dy_k y_k)^2) over the changed
        // outputs k (rounding errors add up like a random walk; ROUNDING_SAFETY covers the
        // rest: measured on V1 and V2, the worst zero-gradient case used a sixth of it). It
        // matters where the true gradient is zero: a bias or BatchNorm shift followed (through
        // linear ops) by a train-mode BatchNorm receives sum_i dy_i = 0, and both the engine
        // and the estimate give rounding noise around 0, whose error relative to themselves is
        // ~1 for no fault. Judged against the floor instead, a difference within the rounding
        // error stays under the bound.
        const rounding = ROUNDING_SAFETY * EPS32 * Math.max(changedMass(step.gradOutput, centerOutput, plusOutput), changedMass(step.gradOutput, centerOutput, minusOutput));
        const floor = rounding / (up - down) / o.tolerance;
        const right = (plus - center) / (up - x), left = (center - minus) / (x - down);
        const kink = Math.abs(right - left) > 0.25 * Math.max(Math.abs(right), Math.abs(left)) + 1e-3 * scale + (2 * rounding) / (x - down);
        if (kink) continue; // a ReLU boundary or a max tie inside [x - h, x + h]
        const numeric = (plus - minus) / (up - down);
        const error = Math.abs(analytic - numeric) / Math.max(Math.abs(analytic), Math.abs(numeric), 1e-3 * scale, floor, 1e-30);
        if (best === null || error < best.error) best = { error, numeric };
      }
      if (best === null) {
        result.skippedKinks++;
        continue;
      }
      result.checked++;
      if (best.error >= result.localError) {
        result.localError = best.error;
        result.worst = { index: j, analytic, numeric: best.numeric };
      }
    }

    // Whole loss along a random direction v.
    const v = Float32Array.from({ length: input.numel }, () => (rng.uniform() < 0.5 ? -1 : 1));
    const hv = 1e-3 * Math.max(rms, 1e-3);
    const along = (sign: number) => {
      const moved = new Tensor(Float32Array.from(input.data, (x, k) => x + sign * hv * v[k]), input.shape);
      return lossWith(root, forwardOrder, step.output, withInput(moved));
    };
    const lossPlus = along(1), lossMinus = along(-1);
    const expected = dot64(sent, v);
    const numeric = (lossPlus - lossMinus) / (2 * hv);
    // The loss is float32: changes below ~100 of its rounding steps are not measurable.
    const resolution = 100 * Math.abs(root.data[0]) * 1.2e-7;
    if (Math.abs(lossPlus - lossMinus) > resolution || Math.abs(expected * 2 * hv) > resolution) {
      result.wholeLossError = Math.abs(numeric - expected) / Math.max(Math.abs(numeric), Math.abs(expected), 1e-30);
    }
    // Pass/fail is the local check: it isolates this node's backward. The whole-loss figure is
    // reported for insight; in train mode, batch statistics make the loss too curved along a
    // direction that moves a whole activation tensor for it to be a sharp test.
    result.ok = result.checked > 0 ? result.localError <= o.tolerance : true;
    results.push(result);
  });
  return results;
}

/** Whether a node's op is `wanted`: `batchNorm2d` also matches a fused `batchNorm2d+relu`. */
export function matchesOp(op: string, wanted: string): boolean {
  return op === wanted || op.startsWith(`${wanted}+`);
}

/** The class each row of (N, K) logits ranks first. */
export function topPredictions(logits: Tensor): number[] {
  const [N, K] = logits.shape;
  return Array.from({ length: N }, (_, n) => {
    let best = 0;
    for (let k = 1; k < K; k++) if (logits.data[n * K + k] > logits.data[n * K + best]) best = k;
    return best;
  });
}

/**
 * For the lesson on numerical checks: make the backward of the first node of op `op` (in
 * `forwardOrder`) wrong, scaling every gradient it sends by 1.5, so that its check fails.
 * Returns false when the graph has no such node.
 */
export function sabotageBackward(forwardOrder: readonly Tensor[], op: string): boolean {
  const victim = forwardOrder.find((t) => t.node !== null && matchesOp(t.node.op, op));
  if (!victim) return false;
  const node = victim.node!;
  const original = node.runBackward.bind(node);
  Object.assign(node, { runBackward: (g: Float32Array, release: boolean) => original(g, release).map((d) => (d === null ? null : d.map((v) => v * 1.5))) });
  return true;
}
