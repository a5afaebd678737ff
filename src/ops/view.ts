// Shape ops: reshape and flatten are free (same data, new shape); permute and transpose copy,
// because every tensor here is contiguous row-major.

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, normalizeAxis, numelOf, ShapeError, stridesOf } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

/** Resolve one -1 in a requested shape. */
function resolveShape(op: string, from: readonly number[], to: readonly number[]): number[] {
  const total = numelOf(from);
  const unknown = to.filter((d) => d === -1).length;
  if (unknown > 1) throw new ShapeError(`${op}: only one dimension can be -1, got ${formatShape(to)}`);
  const known = to.reduce((p, d) => (d === -1 ? p : p * d), 1);
  const out = to.map((d) => (d === -1 ? (known === 0 ? 0 : total / known) : d));
  if (out.some((d) => !Number.isInteger(d) || d < 0) || numelOf(out) !== total) {
    throw new ShapeError(`${op}: cannot reshape ${formatShape(from)} (${total} elements) to ${formatShape(to)}`);
  }
  return out;
}

/** Same data, new shape. Backward: dx = dy read with x's shape. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const outShape = resolveShape('reshape', x.shape, shape);
  const y = new Tensor(x.data, outShape);
  return recordOp(y, {
    op: 'reshape', inputs: [x], saved: {},
    formula: `y = reshape(x, ${formatShape(outShape)})  ->  dx = reshape(dy, ${formatShape(x.shape)})`,
    backward: (dy) => [dy], apply: (xs) => reshape(xs[0], shape),
  });
}

/** Merge dimensions startDim..endDim into one (like torch.flatten). */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normalizeAxis('flatten', startDim, x.rank);
  const e = normalizeAxis('flatten', endDim, x.rank);
  if (s > e) throw new ShapeError(`flatten: startDim ${startDim} comes after endDim ${endDim}`);
  const merged = x.shape.slice(s, e + 1).reduce((p, d) => p * d, 1);
  return reshape(x, [...x.shape.slice(0, s), merged, ...x.shape.slice(e + 1)]);
}

/** Copy `data` of `shape` into the axis order `perm`: out[i_perm[0], i_perm[1], ...] = x[i_0, i_1, ...]. */
function permuteData(data: Float32Array, shape: readonly number[], perm: readonly number[]): Float32Array {
  const rank = shape.length;
  const inStrides = stridesOf(shape);
  const outShape = perm.map((p) => shape[p]);
  // Stride in the input for a step along each output axis.
  const stepStrides = perm.map((p) => inStrides[p]);
  const out = alloc(data.length);
  const counter = new Array<number>(rank).fill(0);
  let src = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = data[src];
    for (let axis = rank - 1; axis >= 0; axis--) {
      counter[axis]++;
      src += stepStrides[axis];
      if (counter[axis] < outShape[axis]) break;
      src -= stepStrides[axis] * counter[axis];
      counter[axis] = 0;
    }
  }
  return out;
}

/** Reorder axes (copy). Backward: permute dy by the inverse permutation. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const rank = x.rank;
  const normalized = perm.map((p) => normalizeAxis('permute', p, rank));
  if (normalized.length !== rank || new Set(normalized).size !== rank) {
    throw new ShapeError(`permute: [${perm.join(', ')}] is not a permutation of the ${rank} axes of ${formatShape(x.shape)}`);
  }
  const outShape = normalized.map((p) => x.shape[p]);
  const y = new Tensor(permuteData(x.data, x.shape, normalized), outShape);
  const inverse = new Array<number>(rank);
  normalized.forEach((p, i) => (inverse[p] = i));
  return recordOp(y, {
    op: 'permute', inputs: [x], saved: { outShape, inverse },
    formula: `y = permute(x, [${normalized.join(', ')}])  ->  dx = permute(dy, [${inverse.join(', ')}])`,
    backward: (dy, s) => [permuteData(dy, s.outShape, s.inverse)], apply: (xs) => permute(xs[0], perm),
  });
}

/** Swap two axes (copy). */
export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normalizeAxis('transpose', dim0, x.rank);
  const b = normalizeAxis('transpose', dim1, x.rank);
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}
