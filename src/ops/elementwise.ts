// Elementwise ops with NumPy broadcasting, and their backward.
//
// Broadcasting: an input of shape [C, 1] used against [C, W] is read as if repeated W times.
// In the backward the repeated reads become a sum: every output element the input element
// contributed to sends its gradient back, so the gradient is summed over the broadcast axes
// (`reduceToShape`) and has the input's own shape again.

import { alloc } from '../tensor/buffers.js';
import { recordOp, needsGraph } from '../tensor/autograd.js';
import { broadcastShapes, numelOf, sameShape } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

// =============================================================================================
// Broadcasting helpers
// =============================================================================================

/**
 * For every element of `outShape` (row-major), the flat index of the element of `inShape` it
 * reads under broadcasting. `inShape` must broadcast to `outShape`.
 */
export function broadcastSourceIndex(outShape: readonly number[], inShape: readonly number[]): Int32Array {
  const rank = outShape.length;
  const total = numelOf(outShape);
  const index = new Int32Array(total);
  // Input strides aligned to the output's rank, 0 on broadcast (size-1 or missing) axes.
  const inStrides = new Array<number>(rank).fill(0);
  let s = 1;
  for (let i = inShape.length - 1; i >= 0; i--) {
    const axis = rank - inShape.length + i;
    inStrides[axis] = inShape[i] === 1 ? 0 : s;
    s *= inShape[i];
  }
  const counter = new Array<number>(rank).fill(0);
  let src = 0;
  for (let o = 0; o < total; o++) {
    index[o] = src;
    // Increment the multi-index like an odometer, updating the source offset incrementally.
    for (let axis = rank - 1; axis >= 0; axis--) {
      counter[axis]++;
      src += inStrides[axis];
      if (counter[axis] < outShape[axis]) break;
      src -= inStrides[axis] * counter[axis];
      counter[axis] = 0;
    }
  }
  return index;
}

/** Sum a gradient of shape `outShape` back to the (broadcast) shape `inShape`. */
export function reduceToShape(grad: Float32Array, outShape: readonly number[], inShape: readonly number[]): Float32Array {
  if (sameShape(outShape, inShape) || numelOf(outShape) === numelOf(inShape)) return grad;
  const result = alloc(numelOf(inShape));
  if (result.length === 1) {
    let acc = 0;
    for (let i = 0; i < grad.length; i++) acc += grad[i];
    result[0] = acc;
    return result;
  }
  const source = broadcastSourceIndex(outShape, inShape);
  for (let i = 0; i < grad.length; i++) result[source[i]] += grad[i];
  return result;
}

/** Apply f elementwise over two broadcast inputs. */
function broadcastBinary(op: string, a: Tensor, b: Tensor, f: (x: number, y: number) => number): Tensor {
  const outShape = broadcastShapes(op, a.shape, b.shape);
  const out = alloc(numelOf(outShape));
  const ad = a.data, bd = b.data;
  if (sameShape(a.shape, b.shape)) {
    for (let i = 0; i < out.length; i++) out[i] = f(ad[i], bd[i]);
  } else if (b.numel === 1 && a.numel === out.length) {
    const y = bd[0];
    for (let i = 0; i < out.length; i++) out[i] = f(ad[i], y);
  } else if (a.numel === 1 && b.numel === out.length) {
    const x = ad[0];
    for (let i = 0; i < out.length; i++) out[i] = f(x, bd[i]);
  } else {
    const ia = broadcastSourceIndex(outShape, a.shape);
    const ib = broadcastSourceIndex(outShape, b.shape);
    for (let i = 0; i < out.length; i++) out[i] = f(ad[ia[i]], bd[ib[i]]);
  }
  return new Tensor(out, outShape);
}

/** Read x broadcast to outShape as a flat array (for backward formulas that need it). */
function expandTo(x: Tensor, outShape: readonly number[]): Float32Array {
  if (sameShape(x.shape, outShape)) return x.data;
  const idx = broadcastSourceIndex(outShape, x.shape);
  const out = alloc(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = x.data[idx[i]];
  return out;
}

// =============================================================================================
// add, sub, mul, div
// =============================================================================================

/** z = a + b (broadcast). Backward: da = sum_broadcast(dz), db = sum_broadcast(dz). */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = broadcastBinary('add', a, b, (x, y) => x + y);
  return recordOp(out, {
    op: 'add', inputs: [a, b],
    formula: 'z = a + b  ->  da = dz, db = dz (summed over broadcast axes)',
    saved: { aShape: a.shape, bShape: b.shape, outShape: out.shape },
    backward: (dz, s, needs) => [
    needs[0] ? reduceToShape(dz, s.outShape, s.aShape) : null,
    needs[1] ? reduceToShape(dz, s.outShape, s.bShape) : null,
  ],
    apply: (xs) => add(xs[0], xs[1]),
  });
}

/** z = a - b. Backward: da = dz, db = -dz. */
export function sub(a: Tensor, b: Tensor): Tensor {
  const out = broadcastBinary('sub', a, b, (x, y) => x - y);
  return recordOp(out, {
    op: 'sub', inputs: [a, b],
    formula: 'z = a - b  ->  da = dz, db = -dz',
    saved: { aShape: a.shape, bShape: b.shape, outShape: out.shape },
    backward: (dz, s, needs) => {
      let db: Float32Array | null = null;
      if (needs[1]) {
        const neg = alloc(dz.length);
        for (let i = 0; i < dz.length; i++) neg[i] = -dz[i];
        db = reduceToShape(neg, s.outShape, s.bShape);
      }
      return [needs[0] ? reduceToShape(dz, s.outShape, s.aShape) : null, db];
    },
    apply: (xs) => sub(xs[0], xs[1]),
  });
}

/** z = a * b. Backward: da = dz * b, db = dz * a. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = broadcastBinary('mul', a, b, (x, y) => x * y);
  return recordOp(out, {
    op: 'mul', inputs: [a, b],
    formula: 'z = a * b  ->  da = dz * b, db = dz * a',
    saved: { a, b, outShape: out.shape },
    backward: (dz, s, needs) => {
      const grads: (Float32Array | null)[] = [null, null];
      if (needs[0]) {
        const bx = expandTo(s.b, s.outShape);
        const g = alloc(dz.length);
        for (let i = 0; i < dz.length; i++) g[i] = dz[i] * bx[i];
        grads[0] = reduceToShape(g, s.outShape, s.a.shape);
      }
      if (needs[1]) {
        const ax = expandTo(s.a, s.outShape);
        const g = alloc(dz.length);
        for (let i = 0; i < dz.length; i++) g[i] = dz[i] * ax[i];
        grads[1] = reduceToShape(g, s.outShape, s.b.shape);
      }
      return grads;
    },
    apply: (xs) => mul(xs[0], xs[1]),
  });
}

/** z = a / b. Backward: da = dz / b, db = -dz * a / b^2. */
export function div(a: Tensor, b: Tensor): Tensor {
  const out = broadcastBinary('div', a, b, (x, y) => x / y);
  return recordOp(out, {
    op: 'div', inputs: [a, b],
    formula: 'z = a / b  ->  da = dz / b, db = -dz * a / b^2',
    saved: { a, b, outShape: out.shape },
    backward: (dz, s, needs) => {
      const grads: (Float32Array | null)[] = [null, null];
      const bx = expandTo(s.b, s.outShape);
      if (needs[0]) {
        const g = alloc(dz.length);
        for (let i = 0; i < dz.length; i++) g[i] = dz[i] / bx[i];
        grads[0] = reduceToShape(g, s.outShape, s.a.shape);
      }
      if (needs[1]) {
        const ax = expandTo(s.a, s.outShape);
        const g = alloc(dz.length);
        for (let i = 0; i < dz.length; i++) g[i] = (-dz[i] * ax[i]) / (bx[i] * bx[i]);
        grads[1] = reduceToShape(g, s.outShape, s.b.shape);
      }
      return grads;
    },
    apply: (xs) => div(xs[0], xs[1]),
  });
}

// =============================================================================================
// Unary ops
// =============================================================================================

/** Map x -> f(x), recording a backward that multiplies dy by the local derivative. */
function unary(op: string, x: Tensor, f: (v: number) => number, formula: string, derivative: (xv: number, yv: number) => number): Tensor {
  const out = alloc(x.numel);
  const xd = x.data;
  for (let i = 0; i < out.length; i++) out[i] = f(xd[i]);
  const y = new Tensor(out, x.shape);
  if (!needsGraph(x)) return y;
  return recordOp(y, {
    op, inputs: [x],
    formula: formula,
    saved: { x: xd, y: out },
    backward: (dy, s) => {
      const dx = alloc(dy.length);
      for (let i = 0; i < dy.length; i++) dx[i] = dy[i] * derivative(s.x[i], s.y[i]);
      return [dx];
    },
    apply: (xs) => unary(op, xs[0], f, formula, derivative),
  });
}

/** y = -x; dx = -dy. */
export function neg(x: Tensor): Tensor {
  return unary('neg', x, (v) => -v, 'y = -x  ->  dx = -dy', () => -1);
}

/** y = exp(x) element-wise; dx = dy y. */
export function exp(x: Tensor): Tensor {
  return unary('exp', x, Math.exp, 'y = exp(x)  ->  dx = dy * y', (_x, y) => y);
}

/** y = log(x) element-wise; dx = dy / x. */
export function log(x: Tensor): Tensor {
  return unary('log', x, Math.log, 'y = log(x)  ->  dx = dy / x', (xv) => 1 / xv);
}

/** y = sqrt(x) element-wise; dx = dy / (2 y). */
export function sqrt(x: Tensor): Tensor {
  return unary('sqrt', x, Math.sqrt, 'y = sqrt(x)  ->  dx = dy / (2 y)', (_x, y) => 0.5 / y);
}

/** y = x^p for a constant p. Backward: dx = dy * p * x^(p-1). */
export function pow(x: Tensor, p: number): Tensor {
  return unary('pow', x, (v) => Math.pow(v, p), `y = x^${p}  ->  dx = dy * ${p} * x^${p - 1}`, (xv) => p * Math.pow(xv, p - 1));
}

/** y = x * c for a constant c. */
export function mulScalar(x: Tensor, c: number): Tensor {
  return unary('mulScalar', x, (v) => v * c, `y = ${c} x  ->  dx = ${c} dy`, () => c);
}

/** y = x + c for a constant c. */
export function addScalar(x: Tensor, c: number): Tensor {
  return unary('addScalar', x, (v) => v + c, `y = x + ${c}  ->  dx = dy`, () => 1);
}
