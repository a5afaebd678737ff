// Tensor: contiguous row-major float32 data (NCHW for images) plus what autograd needs.
//
// A tensor made by an op that needs gradients carries `node`: the op's name, its inputs, what
// the op saved for its backward, and the backward function itself (see autograd.ts). Leaves
// (parameters, inputs) have no node; their `grad` is filled by `backward()`.

import { runBackward, backwardSteps, type BackwardOptions, type BackwardStep, type GraphNode } from './autograd.js';
import { Rng } from './rng.js';
import { checkShape, formatShape, numelOf, ShapeError, stridesOf } from './shape.js';

/** A float32 tensor: contiguous row-major data, a shape, and (when it came from an op) the graph node that made it. */
export class Tensor {
  /** The values, row-major. Length = product of shape. */
  data: Float32Array;
  readonly shape: readonly number[];
  requiresGrad: boolean;
  /** Gradient of the last backward() with respect to this tensor (leaves only, like PyTorch). */
  grad: Tensor | null = null;
  /** The op that produced this tensor, or null for a leaf. */
  node: GraphNode | null = null;
  /** Optional name (parameters get theirs from their module path, e.g. `features.3.dw.weight`). */
  name: string | undefined;

  constructor(data: Float32Array, shape: readonly number[], requiresGrad = false) {
    checkShape(shape, 'Tensor');
    const expected = numelOf(shape);
    if (data.length !== expected) {
      throw new ShapeError(`Tensor: data has ${data.length} elements but shape ${formatShape(shape)} needs ${expected}`);
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
    this.requiresGrad = requiresGrad;
  }

  get numel(): number {
    return this.data.length;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** True for tensors not produced by a recorded op. */
  get isLeaf(): boolean {
    return this.node === null;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) {
      throw new ShapeError(`item: only a one-element tensor can be converted to a number, got shape ${formatShape(this.shape)}`);
    }
    return this.data[0];
  }

  /** Nested JavaScript arrays (a plain number for a rank-0 tensor). */
  toArray(): NestedArray {
    if (this.shape.length === 0) return this.data[0];
    const build = (dim: number, offset: number, strides: number[]): NestedArray[] | number[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < this.shape[dim]; i++) {
        const o = offset + i * strides[dim];
        out.push(dim === this.shape.length - 1 ? this.data[o] : (build(dim + 1, o, strides) as NestedArray));
      }
      return out;
    };
    return build(0, 0, stridesOf(this.shape)) as NestedArray;
  }

  /** A tensor that does not record gradients and shares this one's data. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, false);
  }

  /** A deep copy of the data (no graph). */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape, false);
  }

  /** Reset the gradient (set it to null, as PyTorch's `set_to_none=True`). */
  zeroGrad(): void {
    this.grad = null;
  }

  /** Back-propagate from this tensor. A non-scalar root needs an explicit `gradient`. */
  backward(gradient?: Tensor, options: BackwardOptions = {}): void {
    runBackward(this, gradient, options);
  }

  /** The same backward pass, one node per `next()`: for learners and for the `step` command. */
  backwardSteps(gradient?: Tensor, options: BackwardOptions = {}): Generator<BackwardStep, void, undefined> {
    return backwardSteps(this, gradient, options);
  }

  toString(): string {
    return formatTensor(this);
  }
}

/** Numbers nested as arrays (a scalar, a vector, a matrix, ...), as `fromArray` takes them. */
export type NestedArray = number | NestedArray[];

// ---------------------------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------------------------

/** Options of the tensor constructors: whether the tensor requires a gradient. */
export interface CreateOptions {
  requiresGrad?: boolean;
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[], options: CreateOptions = {}): Tensor {
  checkShape(shape, 'zeros');
  return new Tensor(new Float32Array(numelOf(shape)), shape, options.requiresGrad ?? false);
}

/** A tensor of ones. */
export function ones(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return full(shape, 1, options);
}

/** A tensor of the given shape filled with one value. */
export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  checkShape(shape, 'full');
  return new Tensor(new Float32Array(numelOf(shape)).fill(value), shape, options.requiresGrad ?? false);
}

/** A scalar (rank-0) tensor. */
export function scalar(value: number, options: CreateOptions = {}): Tensor {
  return new Tensor(Float32Array.of(value), [], options.requiresGrad ?? false);
}

/**
 * From nested arrays (shape inferred) or from flat data with an explicit shape.
 * `fromArray([[1, 2], [3, 4]])`, `fromArray([1, 2, 3, 4], [2, 2])`.
 */
export function fromArray(values: NestedArray | ArrayLike<number>, shape?: readonly number[], options: CreateOptions = {}): Tensor {
  if (shape !== undefined) {
    const flat = typeof values === 'number' ? [values] : flattenNested(values as NestedArray[] | ArrayLike<number>);
    checkShape(shape, 'fromArray');
    if (flat.length !== numelOf(shape)) {
      throw new ShapeError(`fromArray: ${flat.length} values do not fill shape ${formatShape(shape)} (${numelOf(shape)} elements)`);
    }
    return new Tensor(Float32Array.from(flat), shape, options.requiresGrad ?? false);
  }
  if (typeof values === 'number') return scalar(values, options);
  const inferred: number[] = [];
  let level: unknown = values;
  while (Array.isArray(level) || ArrayBuffer.isView(level)) {
    const arr = level as ArrayLike<unknown>;
    inferred.push(arr.length);
    level = arr.length > 0 ? arr[0] : undefined;
  }
  const flat = flattenNested(values as NestedArray[]);
  if (flat.length !== numelOf(inferred)) {
    throw new ShapeError(`fromArray: nested arrays are ragged (first row suggests ${formatShape(inferred)}, got ${flat.length} values)`);
  }
  return new Tensor(Float32Array.from(flat), inferred, options.requiresGrad ?? false);
}

function flattenNested(values: NestedArray[] | ArrayLike<number>): number[] {
  const out: number[] = [];
  const stack: unknown[] = [values];
  // Iterative depth-first flatten, left to right.
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number') out.push(v);
    else if (Array.isArray(v) || ArrayBuffer.isView(v)) {
      const arr = v as ArrayLike<unknown>;
      for (let i = arr.length - 1; i >= 0; i--) stack.push(arr[i]);
    } else throw new TypeError(`fromArray: expected numbers or arrays, got ${typeof v}`);
  }
  return out;
}

/** Uniform in [low, high) from a seeded generator. */
export function rand(shape: readonly number[], rng: Rng, low = 0, high = 1, options: CreateOptions = {}): Tensor {
  const t = zeros(shape, options);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.uniform(low, high);
  return t;
}

/** Normal(mean, std) from a seeded generator. */
export function randn(shape: readonly number[], rng: Rng, mean = 0, std = 1, options: CreateOptions = {}): Tensor {
  const t = zeros(shape, options);
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal(mean, std);
  return t;
}

/** 0, 1, ..., n-1 as a float tensor. */
export function arange(n: number): Tensor {
  const t = zeros([n]);
  for (let i = 0; i < n; i++) t.data[i] = i;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Printing, abbreviated like PyTorch: beyond 1000 elements each dimension shows 3 + ... + 3.
// ---------------------------------------------------------------------------------------------

const PRINT_THRESHOLD = 1000;
const PRINT_EDGE_ITEMS = 3;

function formatNumber(v: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-4)) return v.toExponential(4);
  return v.toFixed(4);
}

/** A tensor as PyTorch prints it (abbreviated when large). */
export function formatTensor(t: Tensor): string {
  const suffix = t.requiresGrad ? (t.node ? `, grad_fn=<${t.node.op}>` : ', requires_grad=True') : '';
  if (t.shape.length === 0) return `tensor(${formatNumber(t.data[0])}${suffix})`;
  const abbreviate = t.numel > PRINT_THRESHOLD;
  const strides = stridesOf(t.shape);
  // Width of the widest number shown, so that columns line up.
  let width = 0;
  for (let i = 0; i < t.data.length; i++) width = Math.max(width, formatNumber(t.data[i]).length);
  const indent = 'tensor('.length;
  const render = (dim: number, offset: number): string => {
    const size = t.shape[dim];
    const indices: (number | null)[] = [];
    if (abbreviate && size > 2 * PRINT_EDGE_ITEMS) {
      for (let i = 0; i < PRINT_EDGE_ITEMS; i++) indices.push(i);
      indices.push(null);
      for (let i = size - PRINT_EDGE_ITEMS; i < size; i++) indices.push(i);
    } else {
      for (let i = 0; i < size; i++) indices.push(i);
    }
    if (dim === t.shape.length - 1) {
      return `[${indices.map((i) => (i === null ? '...' : formatNumber(t.data[offset + i]).padStart(width))).join(', ')}]`;
    }
    const pad = ' '.repeat(indent + dim + 1);
    const sep = ',' + '\n'.repeat(t.shape.length - dim - 1) + pad;
    return `[${indices.map((i) => (i === null ? '...' : render(dim + 1, offset + i * strides[dim]))).join(sep)}]`;
  };
  const shapeNote = abbreviate ? `, shape=${formatShape(t.shape)}` : '';
  return `tensor(${render(0, 0)}${shapeNote}${suffix})`;
}
