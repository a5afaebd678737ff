// Module: the PyTorch-shaped building block. A module owns parameters (trainable tensors),
// buffers (state that is saved but not trained, e.g. BatchNorm running statistics) and child
// modules, each under a name; names compose into dotted paths (`features.3.dw.weight`) that are
// the keys of the state dict.

import type { Rng } from '../tensor/rng.js';
import { formatShape } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { isGradEnabled } from '../tensor/autograd.js';
import { release } from '../tensor/buffers.js';
import { firstFew } from '../tensor/text.js';

/** What a leaf layer contributes to the cost table (see cost.ts). */
export interface LayerDescription {
  outputShape: number[];
  multAdds: number;
  /** For the breakdown by layer type, e.g. 'Conv 1x1', 'Conv DW 3x3', 'Conv 3x3', 'FC'. */
  kind: string;
}

/** A state dict that does not fit the module; the message lists missing and unexpected keys and shape mismatches. */
export class StateDictError extends Error {
  override name = 'StateDictError';
}

/** How many names of each kind a StateDictError lists before it says "and N more". */
const STATE_DICT_ERRORS_LISTED = 4;

function countOf(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}


/** Parameters and buffers by dotted name, as PyTorch's `state_dict()`. */
export type StateDict = Map<string, Tensor>;

/** Options of `loadStateDict`: `strict` (default true) makes missing and unexpected keys errors. */
export interface LoadStateDictOptions {
  /** Require the keys to match exactly (default true, as in PyTorch). */
  strict?: boolean;
}

/** The base of every layer and model, as torch.nn.Module: named parameters, buffers, children and random generators, train/eval mode, state dicts. */
export abstract class Module {
  training = true;
  private readonly parameterSlots = new Map<string, Tensor>();
  private readonly bufferSlots = new Map<string, Tensor>();
  private readonly childSlots = new Map<string, Module>();
  private readonly rngSlots = new Map<string, Rng>();

  abstract forward(x: Tensor): Tensor;

  /** A short name for tables and messages (the class name by default). */
  get typeName(): string {
    return this.constructor.name;
  }

  protected registerParameter(name: string, tensor: Tensor): Tensor {
    tensor.requiresGrad = true;
    this.parameterSlots.set(name, tensor);
    return tensor;
  }

  protected registerBuffer(name: string, tensor: Tensor): Tensor {
    this.bufferSlots.set(name, tensor);
    return tensor;
  }

  protected registerModule<M extends Module>(name: string, module: M): M {
    this.childSlots.set(name, module);
    return module;
  }

  /** Random generators the module draws from while training (dropout); saved in checkpoints. */
  protected registerRng(name: string, rng: Rng): Rng {
    this.rngSlots.set(name, rng);
    return rng;
  }

  /** Leaf layers describe their output shape and cost; containers leave this undefined. */
  describeLayer?(inputShape: readonly number[]): LayerDescription;

  *namedChildren(): Generator<[string, Module]> {
    yield* this.childSlots.entries();
  }

  children(): Module[] {
    return [...this.childSlots.values()];
  }

  /** Every module below (and including) this one, depth first, with its dotted path. */
  *namedModules(prefix = ''): Generator<[string, Module]> {
    const stack: [string, Module][] = [[prefix, this]];
    while (stack.length > 0) {
      const [path, module] = stack.pop()!;
      yield [path, module];
      const kids = [...module.childSlots.entries()];
      for (let i = kids.length - 1; i >= 0; i--) stack.push([path === '' ? kids[i][0] : `${path}.${kids[i][0]}`, kids[i][1]]);
    }
  }

  *namedParameters(): Generator<[string, Tensor]> {
    for (const [path, module] of this.namedModules()) {
      for (const [name, t] of module.parameterSlots) yield [path === '' ? name : `${path}.${name}`, t];
    }
  }

  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }

  *namedBuffers(): Generator<[string, Tensor]> {
    for (const [path, module] of this.namedModules()) {
      for (const [name, t] of module.bufferSlots) yield [path === '' ? name : `${path}.${name}`, t];
    }
  }

  *namedRngs(): Generator<[string, Rng]> {
    for (const [path, module] of this.namedModules()) {
      for (const [name, r] of module.rngSlots) yield [path === '' ? name : `${path}.${name}`, r];
    }
  }

  /** Number of trainable values. */
  parameterCount(): number {
    let n = 0;
    for (const p of this.parameters()) n += p.numel;
    return n;
  }

  /** Give every parameter its dotted name (shown by the backward stepper). */
  nameParameters(): this {
    for (const [name, t] of this.namedParameters()) t.name = name;
    return this;
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Run each BatchNorm that a ReLU / ReLU6 follows inside a Sequential as one fused op, the
   * one place where fusion is chosen: faster (one pass over the activations less), the same
   * numbers to the bit. The trainer, `mobilenet step` and the benchmarks turn it on, so the
   * stepper walks the graph that training runs; `false` turns it off again.
   */
  fuseActivations(enabled = true): this {
    for (const [, m] of this.namedModules()) if (m instanceof Sequential) m.fuseChildren(enabled);
    return this;
  }

  /**
   * Take over the activation module `next` that follows this one, so that this module's output
   * is already activated; or, with null, stop doing so. Returns whether it did. Only modules
   * whose op has a fused form say yes (BatchNorm2d, for ReLU and ReLU6).
   */
  absorbActivation(_next: Module | null): boolean {
    return false;
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Parameters and buffers by dotted name, in registration order (the tensors themselves, not copies). */
  stateDict(): StateDict {
    const dict: StateDict = new Map();
    for (const [path, module] of this.namedModules()) {
      const prefix = path === '' ? '' : path + '.';
      for (const [name, t] of module.parameterSlots) dict.set(prefix + name, t);
      for (const [name, t] of module.bufferSlots) dict.set(prefix + name, t);
    }
    return dict;
  }

  /**
   * Copy values from `dict` into this module's parameters and buffers. With `strict` (default),
   * missing and unexpected keys are errors; a shape mismatch always is. The error lists them all
   * by name, and nothing is copied unless everything fits.
   */
  loadStateDict(dict: Map<string, Tensor> | Record<string, Tensor>, options: LoadStateDictOptions = {}): { missing: string[]; unexpected: string[] } {
    const strict = options.strict ?? true;
    const source = dict instanceof Map ? dict : new Map(Object.entries(dict));
    const own = this.stateDict();
    const missing = [...own.keys()].filter((k) => !source.has(k));
    const unexpected = [...source.keys()].filter((k) => !own.has(k));
    const mismatched: string[] = [];
    for (const [key, target] of own) {
      const value = source.get(key);
      if (value !== undefined && value.numel !== target.numel) {
        mismatched.push(`${key}: checkpoint has ${formatShape(value.shape)}, model has ${formatShape(target.shape)}`);
      }
    }
    const problems: string[] = [];
    if (mismatched.length > 0) problems.push(`${countOf(mismatched.length, 'shape mismatch', 'shape mismatches')}: ${firstFew(mismatched, STATE_DICT_ERRORS_LISTED, '; ')}`);
    if (strict && missing.length > 0) problems.push(`${countOf(missing.length, 'missing key')}: ${firstFew(missing, STATE_DICT_ERRORS_LISTED)}`);
    if (strict && unexpected.length > 0) problems.push(`${countOf(unexpected.length, 'unexpected key')}: ${firstFew(unexpected, STATE_DICT_ERRORS_LISTED)}`);
    // A wrong architecture mismatches nearly every key: the first few and the counts say it.
    if (mismatched.length + missing.length + unexpected.length > 3 * STATE_DICT_ERRORS_LISTED && own.size > 0) problems.push(`(the model has ${own.size} keys, the checkpoint ${source.size}: probably another architecture or width)`);
    if (problems.length > 0) throw new StateDictError(`loadStateDict (${this.typeName}): ${problems.join('. ')}`);
    for (const [key, target] of own) {
      const value = source.get(key);
      if (value !== undefined) target.data.set(value.data);
    }
    return { missing, unexpected };
  }
}

/** Children applied in order. */
export class Sequential extends Module {
  /** Children whose work the previous child does (a ReLU absorbed by the BatchNorm before it). */
  private readonly absorbed = new Set<number>();

  constructor(...modules: Module[]) {
    super();
    modules.forEach((m, i) => this.registerModule(String(i), m));
  }

  forward(x: Tensor): Tensor {
    let y = x;
    const kids = this.children();
    // Without a graph (noGrad), nothing but this loop refers to an intermediate output, so once
    // the next module has read it, its buffer can serve a later layer of the same scope (see
    // reuseBuffers): inference then holds two activations at a time, not all of them.
    const releaseIntermediates = !isGradEnabled();
    for (let i = 0; i < kids.length; i++) {
      if (this.absorbed.has(i)) continue; // the previous child applied it
      const input = y;
      y = kids[i].forward(y);
      // Not the Sequential's own input, and not when the output shares the input's memory (Flatten).
      if (releaseIntermediates && input !== x && input.data !== y.data) release(input.data);
    }
    return y;
  }

  /** Let each child absorb the activation after it (see Module.fuseActivations), or undo it. */
  fuseChildren(enabled: boolean): void {
    const kids = this.children();
    this.absorbed.clear();
    for (let i = 0; i < kids.length; i++) {
      if (enabled && i + 1 < kids.length && kids[i].absorbActivation(kids[i + 1])) this.absorbed.add(i + 1);
      else kids[i].absorbActivation(null);
    }
  }

  get length(): number {
    return this.children().length;
  }

  /** Put `module` in place of the child at `index` (same name, so the state-dict keys stay). */
  replace(index: number, module: Module): void {
    this.at(index);
    this.registerModule(String(index), module);
  }

  at(index: number): Module {
    const m = this.children()[index];
    if (m === undefined) throw new RangeError(`Sequential: no module at index ${index} (length ${this.length})`);
    return m;
  }
}
