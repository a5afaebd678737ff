// The autograd tape.
//
// Every op that sees an input needing a gradient (and grad mode on) records a node on its
// output: `{op, inputs, saved, backward}`. The graph is the set of nodes reachable from the
// loss. Backward visits the nodes in reverse topological order: when a node runs, every node
// that consumed its output has already added its contribution, so the gradient it reads is
// complete (chain rule: dL/dx = sum over consumers of dL/dy * dy/dx).
//
// `backwardSteps()` is a generator yielding one step per node. `backward()` just runs it to the
// end, so the learner's stepper and real training take the same path. Topological sorting is
// iterative (no recursion), so a 100,000-node chain cannot overflow the stack.

import { alloc as allocBuffer, release as releaseBuffer } from './buffers.js';
import { formatShape, ShapeError } from './shape.js';
import { Tensor } from './tensor.js';

/** Backward of one op: gradient of the loss w.r.t. each input, or null where not needed. */
export type BackwardFn<S> = (gradOutput: Float32Array, saved: S, needsInputGrad: readonly boolean[]) => (Float32Array | null)[];

/** Recompute a node's output from (possibly different) inputs, without recording a graph. */
export type ReplayFn = (inputs: Tensor[]) => Tensor;

/** A recorded op. Read-only view for users; ops create them through `recordOp`. */
export interface GraphNode {
  readonly op: string;
  /**
   * Re-run the op's forward on other inputs (numeric checks of the backward stepper). It reads
   * only the inputs and the op's options, never the saved tensors, so it works after backward.
   */
  replay?: ReplayFn;
  readonly inputs: readonly Tensor[];
  /** `forward  ->  derivative`, short, for learners. */
  readonly formula: string;
  /** True once backward has run through this node and its saved tensors were released. */
  readonly freed: boolean;
  runBackward(gradOutput: Float32Array, release: boolean): (Float32Array | null)[];
}

class OpNode<S> implements GraphNode {
  freed = false;
  replay?: ReplayFn;
  constructor(
    readonly op: string,
    readonly inputs: readonly Tensor[],
    private saved: S | null,
    private readonly backwardFn: BackwardFn<S>,
    readonly formula: string,
  ) {}

  runBackward(gradOutput: Float32Array, release: boolean): (Float32Array | null)[] {
    if (this.freed || this.saved === null) {
      throw new Error(
        `backward: the graph through '${this.op}' was already freed by an earlier backward() ` +
          `(its saved tensors are released after use); pass { retainGraph: true } to the first backward() to run backward twice`,
      );
    }
    const needs = this.inputs.map((t) => t.requiresGrad);
    const grads = this.backwardFn(gradOutput, this.saved, needs);
    if (release) {
      this.saved = null;
      this.freed = true;
    }
    return grads;
  }
}

// ---------------------------------------------------------------------------------------------
// Grad mode: the first of the library's three global switches (with the thread count,
// setThreads in src/ops/parallel.ts, and the kernels, MOBILENET_KERNELS in src/ops/gemm.ts).
// ---------------------------------------------------------------------------------------------

let gradEnabled = true;

/** Whether ops record the graph now (false inside `noGrad`). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run `fn` without recording the graph (inference, optimizer updates). Restores the mode even on throw. */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Whether an op over these inputs must record a node. Ops check this before saving anything. */
export function needsGraph(...inputs: readonly Tensor[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t.requiresGrad) return true;
  return false;
}

/**
 * An op as it records itself, the one form every op uses (in the spirit of micrograd's node
 * and tinygrad's Function): its name, its formula, its inputs, what its backward keeps, its
 * backward, and itself (`apply`: the op's public function on other inputs, with the same
 * options), from which the stepper's replay is derived.
 */
export interface OpRecord<S> {
  /** The op's name, as the stepper and the graph picture show it. */
  op: string;
  /** `forward  ->  derivative`, short, for learners. */
  formula: string;
  inputs: readonly Tensor[];
  /** What the backward reads (masks, statistics, the inputs' data); released after it runs. */
  saved: S;
  backward: BackwardFn<S>;
  /** The op itself on other inputs; replayed without a graph for numeric checks. */
  apply: ReplayFn;
}

/** Attach the op's node to `output` when grad mode is on and an input needs a gradient; returns `output`. */
export function recordOp<S>(output: Tensor, record: OpRecord<S>): Tensor {
  if (!needsGraph(...record.inputs)) return output;
  output.requiresGrad = true;
  const node = new OpNode<S>(record.op, record.inputs, record.saved, record.backward, record.formula);
  node.replay = (inputs) => noGrad(() => record.apply(inputs));
  output.node = node;
  return output;
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/** Options of `backward()`: `retainGraph` keeps saved tensors for a second pass. */
export interface BackwardOptions {
  /** Keep saved tensors so backward can run through this graph again. Default false. */
  retainGraph?: boolean;
}

/** What the engine did at one node of the backward pass. */
export interface BackwardStep {
  /** 0-based position in the backward order, and the number of nodes. */
  index: number;
  total: number;
  op: string;
  formula: string;
  /** The tensor this node produced in the forward pass. */
  output: Tensor;
  inputs: readonly Tensor[];
  /** dLoss/dOutput as it arrived (complete: every consumer has contributed). */
  gradOutput: Float32Array;
  /** What this node sent to each input (null where the input needs no gradient). */
  inputGrads: readonly (Float32Array | null)[];
}

/** Nodes reachable from root that need gradients, outputs before inputs (reverse topological). */
export function topologicalOrder(root: Tensor): Tensor[] {
  const postOrder: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Explicit stack of (tensor, childrenDone). A tensor is emitted after all its inputs.
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [t, childrenDone] = stack.pop()!;
    if (childrenDone) {
      postOrder.push(t);
      continue;
    }
    if (visited.has(t)) continue;
    visited.add(t);
    stack.push([t, true]);
    const node = t.node!;
    for (let i = node.inputs.length - 1; i >= 0; i--) {
      const input = node.inputs[i];
      if (input.node !== null && input.requiresGrad && !visited.has(input)) stack.push([input, false]);
    }
  }
  return postOrder.reverse();
}

function seedGradient(root: Tensor, gradient: Tensor | undefined): Float32Array {
  if (gradient === undefined) {
    if (root.numel !== 1) {
      throw new ShapeError(`backward: grad can be implicitly created only for a one-element output, got shape ${formatShape(root.shape)}; pass a gradient tensor`);
    }
    return Float32Array.of(1);
  }
  if (gradient.numel !== root.numel) {
    throw new ShapeError(`backward: gradient shape ${formatShape(gradient.shape)} does not match output shape ${formatShape(root.shape)}`);
  }
  return gradient.data.slice();
}

function accumulateLeafGrad(leaf: Tensor, grad: Float32Array): void {
  if (leaf.grad === null) {
    leaf.grad = new Tensor(grad, leaf.shape);
  } else {
    const g = leaf.grad.data;
    for (let i = 0; i < g.length; i++) g[i] += grad[i];
  }
}

/**
 * Gradients waiting for non-leaf tensors, with a count of the tensors each buffer waits for, so
 * that "is this buffer still waiting?" is one lookup (it was a scan of every pending gradient,
 * for every gradient summed into another).
 */
class PendingGradients {
  private readonly byTensor = new Map<Tensor, Float32Array>();
  private readonly uses = new Map<Float32Array, number>();

  get(t: Tensor): Float32Array | undefined {
    return this.byTensor.get(t);
  }

  set(t: Tensor, g: Float32Array): void {
    this.byTensor.set(t, g);
    this.uses.set(g, (this.uses.get(g) ?? 0) + 1);
  }

  /** Remove and return t's gradient. */
  take(t: Tensor): Float32Array | undefined {
    const g = this.byTensor.get(t);
    if (g === undefined) return undefined;
    this.byTensor.delete(t);
    const n = this.uses.get(g)! - 1;
    if (n === 0) this.uses.delete(g);
    else this.uses.set(g, n);
    return g;
  }

  holds(buffer: Float32Array): boolean {
    return this.uses.has(buffer);
  }
}

/** The backward pass from `root` as a generator, one step per graph node in reverse topological order (what `mobilenet step` walks). */
export function* backwardSteps(root: Tensor, gradient?: Tensor, options: BackwardOptions = {}): Generator<BackwardStep, void, undefined> {
  if (!root.requiresGrad) {
    throw new Error('backward: this tensor does not require grad (no input had requiresGrad, or it was made under noGrad)');
  }
  const seed = seedGradient(root, gradient);
  if (root.node === null) {
    accumulateLeafGrad(root, seed);
    return;
  }
  const order = topologicalOrder(root);
  // Gradients waiting for non-leaf tensors; an entry is dropped once its node has run.
  const pending = new PendingGradients();
  pending.set(root, seed);
  const release = !(options.retainGraph ?? false);
  for (let index = 0; index < order.length; index++) {
    const output = order[index];
    const node = output.node!;
    const gradOutput = pending.take(output);
    if (gradOutput === undefined) continue; // not on a path from the root (cannot happen for a connected graph)
    const inputGrads = node.runBackward(gradOutput, release);
    if (inputGrads.length !== node.inputs.length) {
      throw new Error(`${node.op} backward: returned ${inputGrads.length} gradients for ${node.inputs.length} inputs`);
    }
    const handedOut = new Set<Float32Array>();
    const summedIn: Float32Array[] = [];
    for (let i = 0; i < node.inputs.length; i++) {
      const input = node.inputs[i];
      let g = inputGrads[i];
      if (g === null || !input.requiresGrad) continue;
      if (g.length !== input.numel) {
        throw new ShapeError(`${node.op} backward: gradient for input ${i} has ${g.length} elements but the input has shape ${formatShape(input.shape)}`);
      }
      // The same buffer may be returned for two inputs (add(x, x)); each owner needs its own.
      if (handedOut.has(g)) {
        const copy = allocBuffer(g.length, false);
        copy.set(g);
        g = copy;
      }
      handedOut.add(g);
      if (input.node === null) {
        accumulateLeafGrad(input, g);
      } else {
        const existing = pending.get(input);
        if (existing === undefined) pending.set(input, g);
        else {
          for (let j = 0; j < existing.length; j++) existing[j] += g[j];
          summedIn.push(g);
        }
      }
    }
    yield { index, total: order.length, op: node.op, formula: node.formula, output, inputs: node.inputs, gradOutput, inputGrads };
    // This node's output gradient is consumed; unless an op passed it through as an input's
    // gradient (a reshape does), its buffer can serve a later op of the same step.
    // Likewise a gradient summed into another one's pending buffer.
    if (release) {
      if (!handedOut.has(gradOutput)) releaseBuffer(gradOutput);
      for (const g of summedIn) if (g !== gradOutput && !pending.holds(g)) releaseBuffer(g);
    }
  }
}

/** Run the whole backward pass from a scalar root: every leaf that requires grad gets its `.grad`. */
export function runBackward(root: Tensor, gradient?: Tensor, options: BackwardOptions = {}): void {
  const steps = backwardSteps(root, gradient, options);
  while (!steps.next().done) {
    /* every step does its work inside the generator */
  }
}
