// Reductions: sum and mean over axes, max over one axis.

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { normalizeAxis } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { broadcastSourceIndex } from './elementwise.js';

/** Options of the reductions: the axes to reduce and whether to keep them as size 1. */
export interface ReduceOptions {
  /** Keep reduced axes as size 1 (like PyTorch's keepdim). Default false. */
  keepdim?: boolean;
}

/** Shapes after reducing `axes` (all axes when undefined): with size-1 axes kept, and as asked. */
function reducedShapes(op: string, shape: readonly number[], axes: number | readonly number[] | undefined, keepdim: boolean) {
  const list = axes === undefined ? shape.map((_, i) => i) : typeof axes === 'number' ? [axes] : axes;
  const reduced = new Set(list.map((a) => normalizeAxis(op, a, shape.length)));
  const kept = shape.map((d, i) => (reduced.has(i) ? 1 : d));
  const out = keepdim ? kept : shape.filter((_, i) => !reduced.has(i));
  return { kept, out };
}

/**
 * y = sum of x over `axes`. Each x element adds into exactly one y element, so
 * backward: dx[i] = dy[the y element x[i] went into] (dy broadcast back over the reduced axes).
 */
export function sum(x: Tensor, axes?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const { kept, out } = reducedShapes('sum', x.shape, axes, options.keepdim ?? false);
  const target = broadcastSourceIndex(x.shape, kept);
  // Accumulate in float64 so a long sum does not lose the small addends.
  const result = new Float64Array(kept.reduce((p, d) => p * d, 1));
  for (let i = 0; i < x.data.length; i++) result[target[i]] += x.data[i];
  const yData = Float32Array.from(result);
  return recordOp(new Tensor(yData, out), {
    op: 'sum', inputs: [x],
    formula: 'y = sum(x)  ->  dx = dy (broadcast back)',
    saved: { target },
    backward: (dy, s) => {
      const dx = alloc(s.target.length);
      for (let i = 0; i < dx.length; i++) dx[i] = dy[s.target[i]];
      return [dx];
    },
    apply: (xs) => sum(xs[0], axes, options),
  });
}

/** y = mean of x over `axes`. Backward: dx = dy / (number of elements averaged). */
export function mean(x: Tensor, axes?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const { kept, out } = reducedShapes('mean', x.shape, axes, options.keepdim ?? false);
  const target = broadcastSourceIndex(x.shape, kept);
  const result = new Float64Array(kept.reduce((p, d) => p * d, 1));
  for (let i = 0; i < x.data.length; i++) result[target[i]] += x.data[i];
  const count = result.length === 0 ? 0 : x.numel / result.length;
  const yData = alloc(result.length);
  for (let i = 0; i < result.length; i++) yData[i] = result[i] / count;
  return recordOp(new Tensor(yData, out), {
    op: 'mean', inputs: [x],
    formula: 'y = mean(x)  ->  dx = dy / n',
    saved: { target, count },
    backward: (dy, s) => {
      const dx = alloc(s.target.length);
      const scale = 1 / s.count;
      for (let i = 0; i < dx.length; i++) dx[i] = dy[s.target[i]] * scale;
      return [dx];
    },
    apply: (xs) => mean(xs[0], axes, options),
  });
}

/**
 * y = max of x along one axis. Only the (first) maximal element influences y, so
 * backward: dx = dy at the argmax, 0 elsewhere. At ties the derivative does not exist (a kink):
 * like PyTorch's max(dim), the gradient goes to the first maximal index.
 */
export function max(x: Tensor, axis: number, options: ReduceOptions = {}): Tensor {
  const a = normalizeAxis('max', axis, x.rank);
  const { out } = reducedShapes('max', x.shape, a, options.keepdim ?? false);
  const size = x.shape[a];
  if (size === 0) throw new RangeError(`max: cannot reduce over axis ${axis} of size 0`);
  const inner = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const outer = x.shape.slice(0, a).reduce((p, d) => p * d, 1);
  const yData = alloc(outer * inner);
  const argmax = new Int32Array(outer * inner); // flat index into x of each maximum
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity;
      let bestIndex = o * size * inner + i;
      for (let k = 0; k < size; k++) {
        const idx = (o * size + k) * inner + i;
        const v = x.data[idx];
        if (v > best || Number.isNaN(v)) {
          best = v;
          bestIndex = idx;
          if (Number.isNaN(v)) break;
        }
      }
      yData[o * inner + i] = best;
      argmax[o * inner + i] = bestIndex;
    }
  }
  return recordOp(new Tensor(yData, out), {
    op: 'max', inputs: [x],
    formula: 'y = max_k x_k  ->  dx_k = dy if k = argmax else 0',
    saved: { argmax, n: x.numel },
    backward: (dy, s) => {
      const dx = alloc(s.n);
      for (let i = 0; i < s.argmax.length; i++) dx[s.argmax[i]] += dy[i];
      return [dx];
    },
    apply: (xs) => max(xs[0], axis, options),
  });
}
