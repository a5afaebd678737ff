// Optimizers with PyTorch's update rules, parameter groups and state dicts.
// Arithmetic is done in float64 per element and stored in float32 (the parameters' dtype).

import type { Tensor } from '../tensor/tensor.js';

/** Per-group optimizer settings (lr, weight decay) that override the optimizer's. */
export interface GroupOptions {
  lr?: number;
  weightDecay?: number;
  momentum?: number;
  /** Adam's betas; beta1 plays momentum's role for one-cycle momentum cycling. */
  betas?: [number, number];
}

/** A parameter group as given to an optimizer: its parameters and optional settings. */
export interface ParamGroupInput extends GroupOptions {
  params: Tensor[];
  /** A label for logs and checkpoints (e.g. 'decay', 'no_decay'). */
  name?: string;
}

/** A parameter group as the optimizer keeps it, with every setting resolved. */
export interface ParamGroup {
  params: Tensor[];
  name: string;
  lr: number;
  /** The lr the schedule scales (set once, like PyTorch's initial_lr). */
  initialLr: number;
  weightDecay: number;
  momentum: number;
  betas: [number, number];
}

/** Optimizer state in a checkpoint: per-parameter buffers plus JSON-able scalars. */
export interface OptimizerState {
  buffers: Map<string, Float32Array>;
  scalars: Record<string, unknown>;
}

/** The base of the optimizers, as torch.optim.Optimizer: parameter groups, `step()`, `zeroGrad()`, and a state dict for checkpoints. */
export abstract class Optimizer {
  readonly groups: ParamGroup[];
  /** Per parameter (index in the flat list over groups): named state buffers. */
  protected readonly state = new Map<number, Map<string, Float32Array>>();

  constructor(params: Tensor[] | ParamGroupInput[], defaults: Required<Omit<GroupOptions, 'betas'>> & { betas?: [number, number] }) {
    const inputs: ParamGroupInput[] = params.length > 0 && 'params' in params[0] ? (params as ParamGroupInput[]) : [{ params: params as Tensor[] }];
    this.groups = inputs.map((g, i) => {
      const lr = g.lr ?? defaults.lr;
      if (!(lr >= 0)) throw new RangeError(`${this.constructor.name}: lr must be >= 0, got ${lr}`);
      const weightDecay = g.weightDecay ?? defaults.weightDecay;
      if (!(weightDecay >= 0)) throw new RangeError(`${this.constructor.name}: weightDecay must be >= 0, got ${weightDecay}`);
      return { params: g.params, name: g.name ?? String(i), lr, initialLr: lr, weightDecay, momentum: g.momentum ?? defaults.momentum, betas: g.betas ?? defaults.betas ?? [0.9, 0.999] };
    });
  }

  /** One update from the parameters' current gradients; parameters without a gradient are skipped. */
  step(): void {
    let index = 0;
    for (const group of this.groups) {
      for (const p of group.params) {
        if (p.grad !== null) this.update(p, p.grad.data, group, this.slot(index));
        index++;
      }
    }
  }

  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) p.grad = null;
  }

  protected abstract update(param: Tensor, grad: Float32Array, group: ParamGroup, state: Map<string, Float32Array>): void;

  private slot(index: number): Map<string, Float32Array> {
    let s = this.state.get(index);
    if (s === undefined) {
      s = new Map();
      this.state.set(index, s);
    }
    return s;
  }

  protected buffer(state: Map<string, Float32Array>, name: string, size: number): { data: Float32Array; fresh: boolean } {
    let data = state.get(name);
    const fresh = data === undefined;
    if (data === undefined) {
      data = new Float32Array(size);
      state.set(name, data);
    }
    return { data, fresh };
  }

  stateDict(): OptimizerState {
    const buffers = new Map<string, Float32Array>();
    for (const [index, s] of this.state) for (const [name, data] of s) buffers.set(`${index}.${name}`, data);
    return { buffers, scalars: { type: this.constructor.name, groups: this.groups.map((g) => ({ name: g.name, lr: g.lr, initialLr: g.initialLr, weightDecay: g.weightDecay, momentum: g.momentum, betas: g.betas })) } };
  }

  loadStateDict(state: OptimizerState): void {
    const scalars = state.scalars as { type: string; groups: Omit<ParamGroup, 'params'>[] };
    if (scalars.type !== this.constructor.name) throw new Error(`optimizer: checkpoint holds ${scalars.type} state, this run uses ${this.constructor.name}`);
    if (scalars.groups.length !== this.groups.length) throw new Error(`optimizer: checkpoint has ${scalars.groups.length} parameter groups, this run has ${this.groups.length}`);
    scalars.groups.forEach((g, i) => Object.assign(this.groups[i], { lr: g.lr, initialLr: g.initialLr, weightDecay: g.weightDecay, momentum: g.momentum, betas: g.betas }));
    const sizes: number[] = [];
    for (const g of this.groups) for (const p of g.params) sizes.push(p.numel);
    this.state.clear();
    for (const [key, data] of state.buffers) {
      const dot = key.indexOf('.');
      const index = Number(key.slice(0, dot));
      const name = key.slice(dot + 1);
      const expected = name === 'step' ? 1 : sizes[index];
      if (!(index >= 0 && index < sizes.length) || data.length !== expected) {
        throw new Error(`optimizer: state '${key}' (${data.length} values) does not fit parameter ${index} (${sizes[index]} values)`);
      }
      this.slot(index).set(name, data.slice());
    }
  }
}

// =============================================================================================

/** SGD's options, as PyTorch's: lr, momentum, dampening, Nesterov, weight decay. */
export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

/**
 * SGD as torch.optim.SGD:
 *   g = grad + weightDecay * p
 *   buf = g (first step), else momentum * buf + (1 - dampening) * g
 *   step = nesterov ? g + momentum * buf : buf
 *   p -= lr * step
 */
export class SGD extends Optimizer {
  readonly dampening: number;
  readonly nesterov: boolean;
  constructor(params: Tensor[] | ParamGroupInput[], options: SgdOptions) {
    super(params, { lr: options.lr, weightDecay: options.weightDecay ?? 0, momentum: options.momentum ?? 0 });
    this.dampening = options.dampening ?? 0;
    this.nesterov = options.nesterov ?? false;
    if (this.nesterov && ((options.momentum ?? 0) <= 0 || this.dampening !== 0)) throw new RangeError('SGD: Nesterov momentum requires a momentum > 0 and zero dampening');
  }

  protected update(p: Tensor, grad: Float32Array, group: ParamGroup, state: Map<string, Float32Array>): void {
    const { lr, weightDecay: wd, momentum } = group;
    const w = p.data;
    if (momentum === 0) {
      for (let i = 0; i < w.length; i++) w[i] -= lr * (grad[i] + wd * w[i]);
      return;
    }
    const { data: buf, fresh } = this.buffer(state, 'momentum_buffer', w.length);
    const damp = 1 - this.dampening;
    // One loop per case, with the options in locals: V8 does not hoist a property read or a
    // test out of a loop, and the loops run over every weight each step (3.4 -> 2.4 ns a weight).
    const n = w.length, nesterov = this.nesterov;
    if (fresh) {
      for (let i = 0; i < n; i++) {
        const g = grad[i] + wd * w[i];
        buf[i] = g;
        w[i] -= lr * (nesterov ? g + momentum * g : g);
      }
    } else if (nesterov) {
      for (let i = 0; i < n; i++) {
        const g = grad[i] + wd * w[i];
        const b = momentum * buf[i] + damp * g;
        buf[i] = b;
        w[i] -= lr * (g + momentum * b);
      }
    } else {
      for (let i = 0; i < n; i++) {
        const b = momentum * buf[i] + damp * (grad[i] + wd * w[i]);
        buf[i] = b;
        w[i] -= lr * b;
      }
    }
  }
}

/** RMSprop's options, as PyTorch's (eps outside the square root), or TensorFlow's with `epsInsideSqrt`. */
export interface RmspropOptions {
  lr: number;
  alpha?: number;
  eps?: number;
  momentum?: number;
  centered?: boolean;
  weightDecay?: number;
  /**
   * TensorFlow's variant (the paper trained with it): eps inside the root, sqrt(v + eps),
   * instead of PyTorch's sqrt(v) + eps. With eps = 1 (the paper-era TF default for Inception),
   * the two differ a lot early in training, when v is small.
   */
  epsInsideSqrt?: boolean;
}

/**
 * RMSprop as torch.optim.RMSprop:
 *   g = grad + weightDecay * p;  v = alpha v + (1 - alpha) g^2
 *   centered: m = alpha m + (1 - alpha) g;  denom = sqrt(v - m^2) + eps   (else sqrt(v) + eps)
 *   momentum > 0: buf = momentum buf + g / denom; p -= lr buf      (else p -= lr g / denom)
 */
export class RMSprop extends Optimizer {
  readonly alpha: number;
  readonly eps: number;
  readonly centered: boolean;
  readonly epsInsideSqrt: boolean;
  constructor(params: Tensor[] | ParamGroupInput[], options: RmspropOptions) {
    super(params, { lr: options.lr, weightDecay: options.weightDecay ?? 0, momentum: options.momentum ?? 0 });
    this.alpha = options.alpha ?? 0.99;
    this.eps = options.eps ?? 1e-8;
    this.centered = options.centered ?? false;
    this.epsInsideSqrt = options.epsInsideSqrt ?? false;
  }

  protected update(p: Tensor, grad: Float32Array, group: ParamGroup, state: Map<string, Float32Array>): void {
    const { lr, weightDecay: wd, momentum } = group;
    const { alpha, eps, epsInsideSqrt } = this; // in locals: V8 reads a property again at every step of a loop
    const w = p.data;
    const v = this.buffer(state, 'square_avg', w.length).data;
    const m = this.centered ? this.buffer(state, 'grad_avg', w.length).data : null;
    const buf = momentum > 0 ? this.buffer(state, 'momentum_buffer', w.length).data : null;
    for (let i = 0; i < w.length; i++) {
      const g = grad[i] + wd * w[i];
      const vi = alpha * v[i] + (1 - alpha) * g * g;
      v[i] = vi;
      let centeredV = vi;
      if (m !== null) {
        const mi = alpha * m[i] + (1 - alpha) * g;
        m[i] = mi;
        centeredV = vi - mi * mi;
      }
      const denom = epsInsideSqrt ? Math.sqrt(centeredV + eps) : Math.sqrt(centeredV) + eps;
      if (buf !== null) {
        const b = momentum * buf[i] + g / denom;
        buf[i] = b;
        w[i] -= lr * b;
      } else w[i] -= (lr * g) / denom;
    }
  }
}

/** Adam's and AdamW's options, as PyTorch's. */
export interface AdamOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/**
 * Adam as torch.optim.Adam (L2 weight decay added to the gradient); AdamW below decouples it.
 *   t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 */
export class Adam extends Optimizer {
  readonly eps: number;
  protected readonly decoupled: boolean = false;
  constructor(params: Tensor[] | ParamGroupInput[], options: AdamOptions) {
    const betas = options.betas ?? [0.9, 0.999];
    super(params, { lr: options.lr, weightDecay: options.weightDecay ?? 0, momentum: betas[0], betas });
    this.eps = options.eps ?? 1e-8;
  }

  protected update(p: Tensor, grad: Float32Array, group: ParamGroup, state: Map<string, Float32Array>): void {
    const { lr, weightDecay: wd } = group;
    const [b1, b2] = group.betas;
    const w = p.data;
    const stepBuf = this.buffer(state, 'step', 1).data;
    const t = ++stepBuf[0];
    const m = this.buffer(state, 'exp_avg', w.length).data;
    const v = this.buffer(state, 'exp_avg_sq', w.length).data;
    const stepSize = lr / (1 - Math.pow(b1, t));
    const sqrtBias2 = Math.sqrt(1 - Math.pow(b2, t));
    const decay = this.decoupled ? 1 - lr * wd : 1;
    const l2 = this.decoupled ? 0 : wd;
    const eps = this.eps; // in a local: V8 reads a property again at every step of a loop
    for (let i = 0; i < w.length; i++) {
      const wi = w[i] * decay;
      const g = grad[i] + l2 * w[i];
      const mi = b1 * m[i] + (1 - b1) * g;
      const vi = b2 * v[i] + (1 - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      w[i] = wi - (stepSize * mi) / (Math.sqrt(vi) / sqrtBias2 + eps);
    }
  }
}

/** AdamW (Loshchilov & Hutter): p *= 1 - lr * weightDecay, then the Adam step without L2. */
export class AdamW extends Adam {
  protected override readonly decoupled: boolean = true;
  constructor(params: Tensor[] | ParamGroupInput[], options: AdamOptions) {
    super(params, { ...options, weightDecay: options.weightDecay ?? 0.01 });
  }
}

/**
 * Split parameters into two groups: with weight decay (conv and linear weights) and without it
 * (BatchNorm parameters, biases and, following the paper, depthwise filters). A parameter is
 * 'no decay' when it is 1-D or its name is in `noDecayNames`.
 */
export function weightDecayGroups(named: Iterable<[string, Tensor]>, weightDecay: number, options: { decayDepthwise?: boolean; depthwiseNames?: Set<string> } = {}): ParamGroupInput[] {
  const decay: Tensor[] = [];
  const noDecay: Tensor[] = [];
  for (const [name, p] of named) {
    const isDepthwise = options.depthwiseNames?.has(name) ?? false;
    if (p.rank <= 1 || (isDepthwise && !options.decayDepthwise)) noDecay.push(p);
    else decay.push(p);
  }
  return [
    { name: 'decay', params: decay, weightDecay },
    { name: 'no_decay', params: noDecay, weightDecay: 0 },
  ];
}

/**
 * Clip gradients by their global L2 norm, as torch.nn.utils.clip_grad_norm_: with
 * total = sqrt(sum over every gradient entry of g^2) (in float64), every gradient is scaled by
 * min(1, maxNorm / (total + 1e-6)). Returns the norm before clipping.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new RangeError(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  const grads: Float32Array[] = [];
  let sumSquares = 0;
  for (const p of params) {
    if (p.grad === null) continue;
    const g = p.grad.data;
    grads.push(g);
    for (let i = 0; i < g.length; i++) sumSquares += g[i] * g[i];
  }
  const total = Math.sqrt(sumSquares);
  const scale = maxNorm / (total + 1e-6);
  if (scale < 1) for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= scale;
  return total;
}
