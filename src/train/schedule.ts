// Learning-rate schedules, as closed forms of a step counter t (PyTorch's formulas).
// `step()` advances t and writes the new lr into every parameter group (lr = initialLr * factor,
// or the absolute values of one-cycle). Per-step or per-epoch is the caller's choice: the trainer
// steps a schedule after every batch when `perStep` is true, after every epoch otherwise.

import type { Optimizer } from './optim.js';

/** A scheduler's saved state (its step count and what it needs to continue). */
export interface SchedulerState {
  t: number;
  extra?: Record<string, number>;
}

/** The base of the learning-rate schedules, as torch.optim.lr_scheduler: per-step or per-epoch, with a state dict. */
export abstract class LRScheduler {
  /** Steps taken so far. */
  t = 0;
  constructor(readonly optimizer: Optimizer, readonly perStep: boolean) {}

  /** Multiplier of each group's initial lr at counter t. */
  protected abstract factor(t: number): number;

  /** Advance one step (`metric` is used by reduce-on-plateau only). */
  step(_metric?: number): void {
    this.t++;
    this.apply();
  }

  /** Write the lr for the current t into the optimizer. */
  apply(): void {
    const f = this.factor(this.t);
    for (const g of this.optimizer.groups) g.lr = g.initialLr * f;
  }

  get lr(): number {
    return this.optimizer.groups[0].lr;
  }

  stateDict(): SchedulerState {
    return { t: this.t };
  }

  loadStateDict(state: SchedulerState): void {
    this.t = state.t;
    this.apply();
  }
}

/** lr = initial * gamma^floor(t / stepSize) */
export class StepLR extends LRScheduler {
  constructor(optimizer: Optimizer, readonly stepSize: number, readonly gamma = 0.1, perStep = false) {
    super(optimizer, perStep);
    if (!(stepSize >= 1)) throw new RangeError(`StepLR: stepSize must be >= 1, got ${stepSize}`);
  }
  protected factor(t: number): number {
    return Math.pow(this.gamma, Math.floor(t / this.stepSize));
  }
}

/** lr = initial * gamma^(number of milestones <= t) */
export class MultiStepLR extends LRScheduler {
  constructor(optimizer: Optimizer, readonly milestones: number[], readonly gamma = 0.1, perStep = false) {
    super(optimizer, perStep);
  }
  protected factor(t: number): number {
    return Math.pow(this.gamma, this.milestones.filter((m) => m <= t).length);
  }
}

/** lr = initial * gamma^t */
export class ExponentialLR extends LRScheduler {
  constructor(optimizer: Optimizer, readonly gamma: number, perStep = false) {
    super(optimizer, perStep);
  }
  protected factor(t: number): number {
    return Math.pow(this.gamma, t);
  }
}

/** lr = etaMin + (initial - etaMin) (1 + cos(pi t / tMax)) / 2; beyond tMax it rises again, as PyTorch's does. */
export class CosineAnnealingLR extends LRScheduler {
  constructor(optimizer: Optimizer, readonly tMax: number, readonly etaMin = 0, perStep = false) {
    super(optimizer, perStep);
    if (!(tMax >= 1)) throw new RangeError(`CosineAnnealingLR: tMax must be >= 1, got ${tMax}`);
  }
  protected factor(t: number): number {
    return 1; // unused: apply() is overridden because etaMin is absolute
  }
  override apply(): void {
    for (const g of this.optimizer.groups) g.lr = this.etaMin + ((g.initialLr - this.etaMin) * (1 + Math.cos((Math.PI * this.t) / this.tMax))) / 2;
  }
}

/** A constant lr (no schedule). */
export class ConstantLR extends LRScheduler {
  protected factor(): number {
    return 1;
  }
}

/**
 * Linear warmup in front of another schedule (torchvision's LinearLR + SequentialLR): for
 * t < warmup the lr factor rises linearly from startFactor to 1; then the inner schedule runs
 * with its own counter starting at 0.
 */
export class WarmupLR extends LRScheduler {
  constructor(readonly inner: LRScheduler, readonly warmupSteps: number, readonly startFactor = 0.01) {
    super(inner.optimizer, inner.perStep);
    if (!(warmupSteps >= 0)) throw new RangeError(`WarmupLR: warmupSteps must be >= 0, got ${warmupSteps}`);
  }
  protected factor(): number {
    return 1;
  }
  override step(metric?: number): void {
    this.t++;
    if (this.t > this.warmupSteps) this.inner.step(metric);
    else this.apply();
  }
  override apply(): void {
    if (this.t >= this.warmupSteps) {
      this.inner.t = this.t - this.warmupSteps;
      this.inner.apply();
      return;
    }
    const f = this.startFactor + ((1 - this.startFactor) * this.t) / this.warmupSteps;
    for (const g of this.optimizer.groups) g.lr = g.initialLr * f;
  }
  override stateDict(): SchedulerState {
    return { t: this.t, extra: { innerT: this.inner.t, ...this.inner.stateDict().extra } };
  }
  override loadStateDict(state: SchedulerState): void {
    this.t = state.t;
    this.inner.loadStateDict({ t: state.extra?.innerT ?? 0, extra: state.extra });
    this.apply();
  }
}

/** OneCycleLR's options, as PyTorch's. */
export interface OneCycleOptions {
  maxLr: number;
  totalSteps: number;
  pctStart?: number;
  divFactor?: number;
  finalDivFactor?: number;
  /** Cycle momentum (SGD) or beta1 (Adam) inversely to the lr, between these (default 0.85 / 0.95). */
  cycleMomentum?: boolean;
  baseMomentum?: number;
  maxMomentum?: number;
}

/**
 * One-cycle (Smith & Topin), as torch.optim.lr_scheduler.OneCycleLR with cosine annealing:
 * lr rises from maxLr/divFactor to maxLr over the first pctStart of the steps, then falls to
 * maxLr/(divFactor*finalDivFactor); momentum moves the opposite way. Always per step.
 */
export class OneCycleLR extends LRScheduler {
  readonly o: Required<OneCycleOptions>;
  constructor(optimizer: Optimizer, options: OneCycleOptions) {
    super(optimizer, true);
    this.o = { pctStart: 0.3, divFactor: 25, finalDivFactor: 1e4, cycleMomentum: true, baseMomentum: 0.85, maxMomentum: 0.95, ...options };
    if (!(this.o.totalSteps >= 2)) throw new RangeError(`OneCycleLR: totalSteps must be >= 2, got ${this.o.totalSteps}`);
    this.apply();
  }
  protected factor(): number {
    return 1;
  }
  private static anneal(start: number, end: number, pct: number): number {
    return end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
  }
  override apply(): void {
    const { maxLr, totalSteps, pctStart, divFactor, finalDivFactor, cycleMomentum, baseMomentum, maxMomentum } = this.o;
    const initialLr = maxLr / divFactor;
    const minLr = initialLr / finalDivFactor;
    const warmEnd = pctStart * totalSteps - 1;
    const t = Math.min(this.t, totalSteps - 1);
    let lr: number, momentum: number;
    if (t <= warmEnd) {
      const pct = t / warmEnd;
      lr = OneCycleLR.anneal(initialLr, maxLr, pct);
      momentum = OneCycleLR.anneal(maxMomentum, baseMomentum, pct);
    } else {
      const pct = (t - warmEnd) / (totalSteps - 1 - warmEnd);
      lr = OneCycleLR.anneal(maxLr, minLr, pct);
      momentum = OneCycleLR.anneal(baseMomentum, maxMomentum, pct);
    }
    for (const g of this.optimizer.groups) {
      g.lr = lr;
      if (cycleMomentum) {
        g.momentum = momentum;
        g.betas = [momentum, g.betas[1]];
      }
    }
  }
}

/** ReduceLROnPlateau's options, as PyTorch's. */
export interface PlateauOptions {
  factor?: number;
  patience?: number;
  /** Relative improvement needed to count as better (mode min, threshold_mode rel). */
  threshold?: number;
  cooldown?: number;
  minLr?: number;
}

/** Reduce the lr by `factor` when the metric (lower is better) has not improved for `patience` epochs. */
export class ReduceLROnPlateau extends LRScheduler {
  readonly o: Required<PlateauOptions>;
  private best = Infinity;
  private badEpochs = 0;
  private cooldownLeft = 0;
  private scale = 1;
  constructor(optimizer: Optimizer, options: PlateauOptions = {}) {
    super(optimizer, false);
    this.o = { factor: 0.1, patience: 10, threshold: 1e-4, cooldown: 0, minLr: 0, ...options };
  }
  protected factor(): number {
    return this.scale;
  }
  override step(metric?: number): void {
    if (metric === undefined) throw new Error('ReduceLROnPlateau: step(metric) needs the validation metric');
    this.t++;
    if (metric < this.best * (1 - this.o.threshold)) {
      this.best = metric;
      this.badEpochs = 0;
    } else this.badEpochs++;
    if (this.cooldownLeft > 0) {
      this.cooldownLeft--;
      this.badEpochs = 0;
    }
    if (this.badEpochs > this.o.patience) {
      this.scale *= this.o.factor;
      this.cooldownLeft = this.o.cooldown;
      this.badEpochs = 0;
    }
    this.apply();
  }
  override apply(): void {
    for (const g of this.optimizer.groups) g.lr = Math.max(this.o.minLr, g.initialLr * this.scale);
  }
  override stateDict(): SchedulerState {
    // JSON has no Infinity: before the first metric, best is stored as the largest double.
    return { t: this.t, extra: { best: Math.min(this.best, Number.MAX_VALUE), badEpochs: this.badEpochs, cooldownLeft: this.cooldownLeft, scale: this.scale } };
  }
  override loadStateDict(state: SchedulerState): void {
    this.t = state.t;
    const e = state.extra ?? {};
    this.best = e.best ?? Infinity;
    this.badEpochs = e.badEpochs ?? 0;
    this.cooldownLeft = e.cooldownLeft ?? 0;
    this.scale = e.scale ?? 1;
    this.apply();
  }
}
