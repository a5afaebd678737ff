// The training loop. It emits events and prints nothing; the CLI renders them, a library user
// subscribes to the same events.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ImageClassifier, type Architecture, type ModelInfo } from '../nn/mobilenet.js';
import { freeze } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { add, mul } from '../ops/elementwise.js';
import { softmaxCrossEntropy } from '../ops/loss.js';
import { reuseBuffers } from '../tensor/buffers.js';
import { firstFew } from '../tensor/text.js';
import { deriveSeed, Rng } from '../tensor/rng.js';
import { scalar, Tensor } from '../tensor/tensor.js';
import { checkConfig, ConfigError, flagOf, modelFromSpec, type TrainConfig } from './options.js';
import type { CheckpointMetadata, Progress, TrainingState } from './metadata.js';
import { atomicWriter, BEST_CHECKPOINT, CheckpointError, findResumableCheckpoint, LAST_CHECKPOINT, RunFolderError, RunLock, saveBestCheckpoint, saveLastCheckpoint, serializeCheckpoint, type CheckpointWriter, type LoadedCheckpoint, type ResumableCheckpoint } from './checkpoint.js';
import { datasetFingerprint, type ImageDataset } from './datasets.js';
import { DataLoader, normalizationOf, type AugmentOptions, type Batch, type Normalization } from './loader.js';
import { evaluateModel, inEvalMode } from './evaluate.js';
import { mixBatch } from './mixup.js';
import { ClassificationMetrics, type MetricsSums } from './metrics.js';
import { Adam, AdamW, clipGradNorm, RMSprop, SGD, weightDecayGroups, type Optimizer } from './optim.js';
import { ConstantLR, CosineAnnealingLR, ExponentialLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau, StepLR, WarmupLR } from './schedule.js';

/**
 * What the trainer emits. Epochs and batches are counted from 0, as in a PyTorch loop's
 * `for epoch in range(epochs)` and Keras's `on_epoch_end(epoch)`; the CLI prints them from 1.
 */
export interface TrainerEvents {
  epochStart: { epoch: number; epochs: number; batches: number; lr: number };
  batchEnd: { epoch: number; batch: number; batches: number; step: number; loss: number; runningLoss: number; runningAccuracy: number; imagesPerSecond: number; lr: number; dataMs: number; computeMs: number };
  evalEnd: { epoch: number; loss: number; top1: number; top5: number; perClassAccuracy: number[]; confusion: number[][] };
  epochEnd: { epoch: number; train: { loss: number; top1: number; top5: number }; val: { loss: number; top1: number; top5: number }; seconds: number; lr: number; bestTop1: number; bestEpoch: number };
  checkpointSaved: { path: string; kind: 'last' | 'best'; epoch: number; batch: number };
  nanLoss: { epoch: number; batch: number; step: number; loss: number };
  earlyStop: { epoch: number; patience: number; bestEpoch: number; bestTop1: number };
  stopped: { epoch: number; batch: number; checkpoint: string | null };
  warning: { message: string };
  /** The test data (TrainerParts.test), evaluated once with the last epoch's weights. */
  testEnd: { loss: number; top1: number; top5: number; count: number };
  /** `seconds`: the whole run's time in `fit`, every session of it; `sessionSeconds`: this call's. */
  done: { epochs: number; bestTop1: number; bestEpoch: number; seconds: number; sessionSeconds: number };
}

/** A function that receives one kind of trainer event. */
export type Listener<K extends keyof TrainerEvents> = (event: TrainerEvents[K]) => void;

/**
 * Training stopped on purpose (NaN loss). `what`: why, and what was kept; `advice`: what to try,
 * and the setting it is about (so that the CLI can name its flag without reading the text).
 */
export class TrainingStoppedError extends Error {
  override name = 'TrainingStoppedError';
  constructor(readonly what: string, readonly advice: { text: string; option: keyof TrainConfig } | null = null) {
    super(advice ? `${what}. ${advice.text}.` : what);
  }
}

const LOWER_LR = { text: 'Try a lower learning rate', option: 'lr' } as const;

/** Options of `fit`: where checkpoints go, a signal that stops training after the current batch, and the checkpoint writer. */
export interface TrainerOptions {
  /**
   * Directory for checkpoints; none are written without it. It belongs to one run: a new run
   * (not one restored from a checkpoint) is refused where a checkpoint already is, unless
   * `overwrite`; and while `fit` writes it, it holds a lock (`RunLock`) that refuses a second
   * process.
   */
  outputDir?: string;
  /** Let a new run replace the checkpoints already in `outputDir`. */
  overwrite?: boolean;
  signal?: AbortSignal;
  writer?: CheckpointWriter;
}

/** Per-channel mean and std of a loader's images (pixel / 255), in float64. */
export function channelStats(loader: DataLoader): Normalization {
  const C = loader.channels, plane = loader.resolution ** 2, images = loader.images;
  // Each value as the loader gives it without normalisation: pixel / 255 rounded to float32.
  const { scale } = normalizationOf(0, 1);
  const sum = new Float64Array(C), sumSq = new Float64Array(C);
  for (let n = 0; n < loader.count; n++)
    for (let c = 0; c < C; c++)
      for (let i = (n * C + c) * plane; i < (n * C + c + 1) * plane; i++) {
        const v = Math.fround(images[i] * scale);
        sum[c] += v;
        sumSq[c] += v * v;
      }
  const count = loader.count * plane;
  const mean = Array.from(sum, (s) => s / count);
  const std = Array.from(sumSq, (s, c) => Math.sqrt(Math.max(1e-12, s / count - mean[c] ** 2)));
  return { mean, std };
}

/** Every training image's pooled, flattened features (N, C), and batches gathered from them. */
class FeatureCache {
  private constructor(private readonly features: Float32Array, private readonly width: number) {}

  static compute(model: ImageClassifier, loader: DataLoader): FeatureCache {
    const plain = loader.with({ ...loader.normalization, batchSize: 256 });
    let features: Float32Array | null = null;
    let width = 0;
    inEvalMode(model, () => {
      for (const batch of plain.epoch(0)) {
        reuseBuffers(() => {
          const pooled = model.flattenPool(model.features.forward(batch.x));
          width = pooled.shape[1];
          features ??= new Float32Array(plain.count * width);
          for (let i = 0; i < batch.indices.length; i++) features.set(pooled.data.subarray(i * width, (i + 1) * width), batch.indices[i] * width);
        });
      }
    });
    return new FeatureCache(features!, width);
  }

  /** The features of these images, (B, C), as the classifier's input. */
  gather(indices: Int32Array): Tensor {
    const out = new Float32Array(indices.length * this.width);
    for (let i = 0; i < indices.length; i++) out.set(this.features.subarray(indices[i] * this.width, (indices[i] + 1) * this.width), i * this.width);
    return new Tensor(out, [indices.length, this.width]);
  }
}

/**
 * An exponential moving average of a model's state (parameters and BatchNorm statistics), as
 * torch.optim.swa_utils.AveragedModel with use_buffers: the first update copies, then
 * avg = decay avg + (1 - decay) value, in float64 arithmetic stored as float32. Counters
 * (num_batches_tracked) are copied.
 */
export class WeightAverage {
  readonly tensors = new Map<string, Float32Array>();
  /** Updates since the average (re)started; 0 makes the next update a copy. */
  updates = 0;

  constructor(private readonly model: Module, readonly decay: number) {
    for (const [key, t] of model.stateDict()) this.tensors.set(key, new Float32Array(t.data));
  }

  update(): void {
    const d = this.decay;
    for (const [key, t] of this.model.stateDict()) {
      const avg = this.tensors.get(key)!;
      if (this.updates === 0 || key.endsWith('num_batches_tracked')) avg.set(t.data);
      else for (let i = 0; i < avg.length; i++) avg[i] = d * avg[i] + (1 - d) * t.data[i];
    }
    this.updates++;
  }

  /** Run `fn` with the averaged state in the model, then put the trained state back. */
  withAveragedWeights<T>(fn: () => T): T {
    const state = this.model.stateDict();
    const saved = new Map<string, Float32Array>();
    for (const [key, t] of state) {
      saved.set(key, t.data.slice());
      t.data.set(this.tensors.get(key)!);
    }
    try {
      return fn();
    } finally {
      for (const [key, t] of state) t.data.set(saved.get(key)!);
    }
  }

  /** From a checkpoint's `ema` section. */
  restore(tensors: Map<string, Float32Array>, updates: number): void {
    for (const [key, avg] of this.tensors) {
      const stored = tensors.get(key);
      if (stored === undefined || stored.length !== avg.length) throw new CheckpointError(`the checkpoint has no moving average for ${key} (it was not trained with the model EMA)`);
      avg.set(stored);
    }
    this.updates = updates;
  }
}

/**
 * Transfer learning's freezing, from the config (so that a resumed run freezes the same parts):
 * everything below the classifier, or all but the last N blocks of the features.
 */
function applyFreezing(model: Module, c: TrainConfig): void {
  if (c.freeze === 'none' && c.trainableBlocks === null) return;
  if (!(model instanceof ImageClassifier)) throw new RangeError('freezing needs a MobileNet (a model with features and a classifier)');
  const blocks = model.features.children();
  const keep = c.freeze === 'features' ? 0 : c.trainableBlocks!;
  if (keep > blocks.length) throw new ConfigError(['trainableBlocks'], `this model has ${blocks.length} blocks in its features`, keep);
  for (const block of blocks.slice(0, blocks.length - keep)) freeze(block);
}

/** A checkpoint of imported weights has no optimizer state or progress: it can start a run, not continue one. */
function trainingStateOf(ckpt: LoadedCheckpoint, source: string): TrainingState {
  const { progress, optimizer, scheduler, rngs, ema } = ckpt.meta;
  if (progress === undefined || optimizer === undefined || scheduler === undefined || rngs === undefined) {
    throw new CheckpointError(`${source}: a weights-only checkpoint (imported weights) has no training state to resume; start a new run from its weights instead`);
  }
  return { progress, optimizer, scheduler, rngs, ema: ema ?? null };
}

/** The augmentation settings of a config, as the data loader takes them. */
export function augmentationOf(c: TrainConfig): Required<AugmentOptions> {
  return { cropPadding: c.cropPadding, horizontalFlip: c.hflip, randomErasing: c.randomErasing, autoAugment: c.autoAugment };
}

/** The generator stream of MixUp / CutMix draws, apart from the loader's augmentation stream of the same batch. */
const MIX_STREAM = 0x6d6978;

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * What a caller may hand the trainer instead of letting it build them from the config, as a
 * PyTorch loop or Keras `fit` takes the model it trains.
 */
export interface TrainerParts {
  /**
   * The model to train: any Module mapping (N, channels, resolution, resolution) images to
   * (N, classes) logits. Default: `createModel(config.model, ...)` from the config.
   */
  model?: Module;
  /** The optimizer over the model's parameters. Default: `config.opt`, no weight decay on BatchNorm, biases and depthwise filters. */
  optimizer?: Optimizer;
  /** Input normalisation. Default: measured on the training images. */
  normalization?: Normalization;
  /** Test data kept apart from the validation data: evaluated once, after the last epoch (`testEnd`). */
  test?: ImageDataset;
}


/**
 * Schedules that need more than one step: OneCycleLR anneals between its phases over
 * totalSteps - 1 steps, so one step (one epoch of one batch: a small folder at a large batch
 * size) leaves it nothing to anneal over.
 */
function checkSchedule(c: TrainConfig, batchesPerEpoch: number, images: number): void {
  const steps = c.epochs * batchesPerEpoch;
  if (c.lrScheduler === 'onecycle' && steps < 2) {
    throw new ConfigError(['epochs', 'batchSize', 'lrScheduler'], `the onecycle learning-rate schedule needs at least 2 training steps, and ${c.epochs} epoch${c.epochs === 1 ? '' : 's'} of ${images} training images in batches of ${c.batchSize} ${steps === 1 ? 'is 1' : `are ${steps}`}: train more epochs, use a smaller batch size, or another schedule (constant, cosineannealinglr, ...)`);
  }
}

/** What a checkpoint records about the model: its settings, or 'custom' for a model the caller built. */
function describeModel(model: Module): ModelInfo | { architecture: 'custom'; typeName: string } {
  return model instanceof ImageClassifier ? model.info : { architecture: 'custom', typeName: model.typeName };
}

/** Trains a model on a dataset, as Keras `fit` or a PyTorch loop: it emits events (epochStart, batchEnd, evalEnd, epochEnd, ...), prints nothing, checkpoints atomically and resumes bit-for-bit. */
export class Trainer {
  readonly model: Module;
  readonly trainLoader: DataLoader;
  readonly valLoader: DataLoader;
  /** The test data apart from validation, or null. */
  readonly testLoader: DataLoader | null;
  /** Pooled features of the training images (frozen features, no random augmentation); undefined until first asked. */
  private featureCache: FeatureCache | null | undefined = undefined;
  /** The weights' moving average (config.modelEma), or null. */
  readonly ema: WeightAverage | null;
  readonly optimizer: Optimizer;
  readonly scheduler: LRScheduler;
  readonly normalization: Normalization;
  progress: Progress = { epoch: 0, batch: 0, step: 0, bestTop1: -1, bestEpoch: -1, epochsWithoutImprovement: 0 };
  private readonly listeners = new Map<keyof TrainerEvents, Listener<keyof TrainerEvents>[]>();
  private readonly fingerprint: string;
  /** The checkpoint this trainer was restored from, or null for a new run. */
  private restoredFrom: string | null = null;

  constructor(readonly config: TrainConfig, readonly train: ImageDataset, readonly val: ImageDataset, parts: TrainerParts = {}) {
    checkConfig(config);
    // Labels are class indices: both sets must mean the same class by the same index.
    if (train.classNames.join('\n') !== val.classNames.join('\n')) throw new RangeError(`the training data's classes (${firstFew(train.classNames, 6)}) differ from the validation data's (${firstFew(val.classNames, 6)})`);
    if (parts.test && parts.test.classNames.join('\n') !== train.classNames.join('\n')) throw new RangeError(`the training data's classes (${firstFew(train.classNames, 6)}) differ from the test data's (${firstFew(parts.test.classNames, 6)})`);
    const inChannels = parts.model instanceof ImageClassifier ? parts.model.info.inChannels : (config.inChannels ?? train.channels);
    // BatchNorm + ReLU run as one op when the model allows it (the same numbers, one pass less).
    this.model = (parts.model ?? modelFromSpec(config, { numClasses: train.classNames.length, inChannels })).fuseActivations();
    applyFreezing(this.model, config);
    // The training images are resized and converted once; the statistics and the training
    // loader share that copy.
    const converted = new DataLoader(train, { batchSize: config.batchSize, resolution: config.resolution, channels: inChannels });
    this.normalization = parts.normalization ?? channelStats(converted);
    this.trainLoader = converted.with({ ...this.normalization, batchSize: config.batchSize, shuffle: true, dropLast: false, seed: config.seed, augment: augmentationOf(config) });
    checkSchedule(config, this.trainLoader.batchesPerEpoch, train.count);
    this.valLoader = new DataLoader(val, { resolution: config.resolution, channels: inChannels, ...this.normalization, batchSize: config.evalBatchSize });
    this.testLoader = parts.test ? new DataLoader(parts.test, { resolution: config.resolution, channels: inChannels, ...this.normalization, batchSize: config.evalBatchSize }) : null;
    this.fingerprint = datasetFingerprint(train);
    const depthwiseNames = new Set([...this.model.namedModules()].filter(([, m]) => m.typeName === 'DepthwiseConv2d').map(([n]) => `${n}.weight`));
    // Frozen parameters get no gradient, no optimizer state and no weight decay.
    const trainable = [...this.model.namedParameters()].filter(([, p]) => p.requiresGrad);
    const groups = weightDecayGroups(trainable, config.weightDecay, { decayDepthwise: config.decayDepthwise, depthwiseNames });
    this.optimizer = parts.optimizer ?? this.makeOptimizer(groups);
    const emaAlpha = Math.min(1, ((1 - config.modelEmaDecay) * config.batchSize * config.modelEmaSteps) / config.epochs);
    this.ema = config.modelEma ? new WeightAverage(this.model, 1 - emaAlpha) : null;
    this.scheduler = this.makeScheduler();
  }

  private makeOptimizer(groups: ReturnType<typeof weightDecayGroups>): Optimizer {
    const c = this.config;
    switch (c.opt) {
      case 'sgd':
        return new SGD(groups, { lr: c.lr, momentum: c.momentum });
      case 'sgd_nesterov':
        return new SGD(groups, { lr: c.lr, momentum: c.momentum, nesterov: true });
      case 'rmsprop':
        return new RMSprop(groups, { lr: c.lr, momentum: c.momentum, alpha: 0.9, eps: 0.0316, epsInsideSqrt: false });
      case 'adam':
        return new Adam(groups, { lr: c.lr });
      case 'adamw':
        return new AdamW(groups, { lr: c.lr });
    }
  }

  private makeScheduler(): LRScheduler {
    const c = this.config;
    const steps = this.trainLoader.batchesPerEpoch;
    const warmupEpochs = c.lrWarmupEpochs;
    const mainEpochs = Math.max(1, c.epochs - warmupEpochs);
    let s: LRScheduler;
    switch (c.lrScheduler) {
      case 'onecycle':
        return new OneCycleLR(this.optimizer, { maxLr: c.lr, totalSteps: c.epochs * steps });
      case 'steplr':
        s = new StepLR(this.optimizer, c.lrStepSize, c.lrGamma);
        break;
      case 'multisteplr':
        s = new MultiStepLR(this.optimizer, c.lrMilestones, c.lrGamma);
        break;
      case 'exponentiallr':
        s = new ExponentialLR(this.optimizer, c.lrGamma);
        break;
      case 'cosineannealinglr':
        s = new CosineAnnealingLR(this.optimizer, mainEpochs * steps, c.lrMin, true);
        break;
      case 'plateau':
        s = new ReduceLROnPlateau(this.optimizer, { patience: 2, factor: c.lrGamma });
        break;
      case 'constant':
        s = new ConstantLR(this.optimizer, false);
        break;
    }
    if (warmupEpochs > 0) {
      // Warmup counts in the inner schedule's units (steps or epochs).
      const w = new WarmupLR(s, s.perStep ? warmupEpochs * steps : warmupEpochs, 0.01);
      w.apply();
      return w;
    }
    s.apply();
    return s;
  }

  on<K extends keyof TrainerEvents>(event: K, listener: Listener<K>): this {
    const list = this.listeners.get(event) ?? [];
    list.push(listener as Listener<keyof TrainerEvents>);
    this.listeners.set(event, list);
    return this;
  }

  private emit<K extends keyof TrainerEvents>(event: K, payload: TrainerEvents[K]): void {
    for (const l of this.listeners.get(event) ?? []) (l as Listener<K>)(payload);
  }

  // -------------------------------------------------------------------------------------------
  // Checkpoints
  // -------------------------------------------------------------------------------------------

  checkpointBytes(): Uint8Array {
    const rngs: Record<string, number[]> = {};
    for (const [name, rng] of this.model.namedRngs()) rngs[name] = rng.getState();
    const model = new Map<string, { shape: readonly number[]; data: Float32Array }>();
    for (const [k, t] of this.model.stateDict()) model.set(k, { shape: t.shape, data: t.data });
    const opt = this.optimizer.stateDict();
    return serializeCheckpoint({
      model,
      optimizer: opt.buffers,
      ema: this.ema?.tensors,
      meta: {
        config: this.config,
        progress: this.progress,
        optimizer: opt.scalars,
        scheduler: this.scheduler.stateDict(),
        rngs,
        normalization: this.normalization,
        // The model's input channels (a colour model fine-tuned on gray images takes 3).
        dataset: { name: this.train.name, fingerprint: this.fingerprint, classNames: this.train.classNames, channels: this.trainLoader.channels },
        ema: this.ema === null ? null : { updates: this.ema.updates, decay: this.ema.decay },
        model: describeModel(this.model),
      },
    });
  }

  /** Restore everything from a checkpoint written by this trainer's configuration. */
  restore(ckpt: LoadedCheckpoint, source: string, warn: (message: string) => void = (message) => this.emit('warning', { message })): void {
    const state = trainingStateOf(ckpt, source);
    const dataset = ckpt.meta.dataset;
    if (dataset.fingerprint !== this.fingerprint) {
      warn(`${source} was made on dataset '${dataset.name}' (fingerprint ${dataset.fingerprint}); this run's data has fingerprint ${this.fingerprint}`);
    }
    const dict = new Map<string, Tensor>();
    for (const [k, v] of ckpt.model) dict.set(k, new Tensor(v.data, v.shape));
    this.model.loadStateDict(dict);
    this.optimizer.loadStateDict({ buffers: ckpt.optimizer, scalars: state.optimizer });
    this.scheduler.loadStateDict(state.scheduler);
    if (this.ema !== null) this.ema.restore(ckpt.ema, state.ema?.updates ?? 0);
    for (const [name, rng] of this.model.namedRngs()) if (state.rngs[name]) rng.setState(state.rngs[name]);
    this.progress = { ...state.progress };
    this.restoredFrom = source;
  }

  /** Build a trainer from a checkpoint (its stored config), for `--resume`. */
  static resume(source: string | ResumableCheckpoint, train: ImageDataset, val: ImageDataset, warn: (m: string) => void, overrides: Partial<TrainConfig> = {}, parts: Omit<TrainerParts, 'normalization'> = {}): { trainer: Trainer; path: string } {
    // A path, or a checkpoint the caller already found and read (the CLI reads its config first).
    const found = typeof source === 'string' ? findResumableCheckpoint(source, warn) : source;
    const done = trainingStateOf(found.checkpoint, found.path).progress.epoch;
    if (overrides.epochs !== undefined && overrides.epochs < done) throw new ConfigError(['epochs'], `the run at ${found.path} has already trained ${done} epochs`, overrides.epochs);
    // The stored config (the reader gave settings added since the checkpoint their defaults).
    const config = { ...found.checkpoint.meta.config, ...overrides };
    const trainer = new Trainer(config, train, val, { ...parts, normalization: found.checkpoint.meta.normalization });
    trainer.restore(found.checkpoint, found.path, warn);
    return { trainer, path: found.path };
  }

  /** Whether `fit` has written a checkpoint of this run yet. */
  private savedThisRun = false;

  private saveLast(options: TrainerOptions): string | null {
    if (!options.outputDir) return null;
    const path = saveLastCheckpoint(options.outputDir, this.checkpointBytes(), options.writer ?? atomicWriter);
    this.savedThisRun = true;
    this.emit('checkpointSaved', { path, kind: 'last', epoch: this.progress.epoch, batch: this.progress.batch });
    return path;
  }

  // -------------------------------------------------------------------------------------------
  // Evaluation and training
  // -------------------------------------------------------------------------------------------

  /** Loss, top-1, top-5 and the confusion matrix on a loader, in eval mode without a graph. */
  evaluate(loader: DataLoader = this.valLoader): ClassificationMetrics {
    return evaluateModel(this.model, loader, this.train.classNames.length);
  }

  /**
   * Train until `config.epochs` (continuing from `progress` after a resume). The work is
   * synchronous, but the loop yields to the event loop after every batch, so signal handlers
   * (Ctrl-C) and timers run while it trains. Read top to bottom: an epoch of steps, evaluation,
   * the epoch's bookkeeping and checkpoints, early stopping.
   */
  async fit(options: TrainerOptions = {}): Promise<Progress> {
    const lock = options.outputDir ? this.claimOutputDir(options.outputDir, options.overwrite ?? false) : null;
    try {
      return await this.fitLocked(options);
    } finally {
      lock?.release();
    }
  }

  /**
   * The output folder for this run: made on demand (like the CLI's --output-dir), locked, and
   * refused to a new run when it already holds one (its checkpoints would be replaced).
   */
  private claimOutputDir(dir: string, overwrite: boolean): RunLock {
    mkdirSync(dir, { recursive: true });
    const lock = RunLock.acquire(dir);
    const existing = [LAST_CHECKPOINT, BEST_CHECKPOINT].filter((f) => existsSync(join(dir, f)));
    if (this.restoredFrom === null && this.progress.step === 0 && existing.length > 0 && !overwrite) {
      lock.release();
      throw new RunFolderError(dir, `${dir} already holds a run (${existing.join(', ')}); a new run would replace it`);
    }
    return lock;
  }

  /**
   * A warning when the moving average cannot forget its start within the run. The reference
   * script's decay adjustment is made for runs of hundreds of epochs; on a short one, after its
   * U updates the first averaged weights still weigh d^(U - 1) of the average, and an average
   * that is mostly its first weights (and their BatchNorm statistics) scores near chance.
   */
  private emaHorizonWarning(): string | null {
    if (this.ema === null) return null;
    const updates = Math.floor((this.config.epochs * this.trainLoader.batchesPerEpoch) / this.config.modelEmaSteps);
    const firstWeight = this.ema.decay ** Math.max(0, updates - 1);
    if (!(firstWeight > 0.5)) return null;
    return `${flagOf('modelEma')}: the average is updated every ${this.config.modelEmaSteps} batches with decay ${this.ema.decay.toPrecision(5)} (${this.config.modelEmaDecay} adjusted for batch ${this.config.batchSize} and ${this.config.epochs} epochs, as the reference script does); after this run's ${updates} updates its first update still weighs ${(100 * firstWeight).toFixed(0)}% of it, so it will score near the weights it started from. A lower ${flagOf('modelEmaDecay')} (e.g. 0.999) suits a run this short`;
  }

  private async fitLocked(options: TrainerOptions): Promise<Progress> {
    if (this.progress.step === 0) {
      const warning = this.emaHorizonWarning();
      if (warning !== null) this.emit('warning', { message: warning });
    }
    const started = performance.now();
    const before = this.progress.seconds ?? 0;
    // The run's time so far is kept in the progress, so checkpoints carry it across sessions.
    const clock = () => {
      this.progress.seconds = before + (performance.now() - started) / 1000;
    };
    while (this.progress.epoch < this.config.epochs) {
      const epoch = this.progress.epoch;
      const epochStart = performance.now();
      const train = await this.trainEpoch(epoch, options, clock);
      if (train === 'stopped') return this.progress;
      const val = this.validate(epoch);
      if (!Number.isFinite(val.loss)) this.stopOnBadValidationLoss(val.loss, epoch, options);
      clock();
      this.endEpoch(epoch, val, options);
      this.emit('epochEnd', { epoch, train: train.summary(), val: val.summary(), seconds: (performance.now() - epochStart) / 1000, lr: this.scheduler.lr, bestTop1: this.progress.bestTop1, bestEpoch: this.progress.bestEpoch });
      if (this.shouldStopEarly(epoch)) break;
      if (options.signal?.aborted) {
        this.emit('stopped', { epoch: this.progress.epoch, batch: 0, checkpoint: options.outputDir ? join(options.outputDir, LAST_CHECKPOINT) : null });
        return this.progress;
      }
    }
    if (this.testLoader !== null) this.emit('testEnd', this.evaluate(this.testLoader).summary());
    clock();
    this.emit('done', { epochs: this.progress.epoch, bestTop1: this.progress.bestTop1, bestEpoch: this.progress.bestEpoch, seconds: this.progress.seconds ?? 0, sessionSeconds: (performance.now() - started) / 1000 });
    return this.progress;
  }

  /**
   * One training step on a batch: forward, softmax cross-entropy, backward, optimizer step. Runs
   * in a buffer-reuse scope: after the first step, the activations and gradients of this step
   * reuse the previous step's memory (src/tensor/buffers.ts); the gradients are cleared before
   * the scope ends, since their memory goes back to the cache. Returns the batch's loss.
   */
  trainStep(batch: Batch, metrics: ClassificationMetrics, options: TrainerOptions = {}): number {
    const c = this.config;
    const cached = this.frozenFeatures();
    // MixUp / CutMix draw from their own stream of this batch's generator: resumable exactly.
    const mixed = mixBatch(batch.x, batch.labels, c, new Rng(deriveSeed(c.seed, this.progress.epoch, batch.index, MIX_STREAM)));
    return reuseBuffers(() => {
      const logits = cached === null ? this.model.forward(batch.x) : (this.model as ImageClassifier).classifier.forward(cached.gather(batch.indices));
      const smoothing = { labelSmoothing: c.labelSmoothing };
      // Mixed: lambda CE(z, y) + (1 - lambda) CE(z, y_partner), the cross-entropy of the mixed target.
      const loss = mixed === null
        ? softmaxCrossEntropy(logits, batch.labels, smoothing)
        : add(mul(softmaxCrossEntropy(logits, batch.labels, smoothing), scalar(mixed.lambda)), mul(softmaxCrossEntropy(logits, mixed.partnerLabels, smoothing), scalar(1 - mixed.lambda)));
      const value = loss.item();
      if (!Number.isFinite(value)) this.stopOnBadLoss(value, batch, options);
      this.optimizer.zeroGrad();
      loss.backward();
      if (this.config.clipGradNorm > 0) clipGradNorm(this.model.parameters(), this.config.clipGradNorm);
      this.optimizer.step();
      this.optimizer.zeroGrad();
      metrics.update(logits.data, batch.labels, value);
      return value;
    });
  }

  /**
   * The pooled features of every training image when nothing below the classifier trains and no
   * augmentation is random (see `cacheFrozenFeatures`), computed once in eval mode without a
   * graph; null otherwise. Frozen BatchNorms use their running statistics, so an image's
   * features do not depend on its batch: the classifier sees the same numbers as when the
   * features run on every batch.
   */
  private frozenFeatures(): FeatureCache | null {
    if (this.featureCache !== undefined) return this.featureCache;
    const c = this.config;
    const random = c.cropPadding > 0 || c.hflip || c.randomErasing > 0 || c.autoAugment !== 'none' || c.mixupAlpha > 0 || c.cutmixAlpha > 0;
    const model = this.model;
    const frozen = model instanceof ImageClassifier && [...model.features.parameters()].every((p) => !p.requiresGrad);
    this.featureCache = c.cacheFrozenFeatures && frozen && !random ? FeatureCache.compute(model as ImageClassifier, this.trainLoader) : null;
    return this.featureCache;
  }

  /** A NaN or infinite loss ends training with an error that says where and what was kept. */
  private stopOnBadLoss(value: number, batch: Batch, options: TrainerOptions): never {
    const epoch = this.progress.epoch;
    this.emit('nanLoss', { epoch, batch: batch.index, step: this.progress.step, loss: value });
    throw new TrainingStoppedError(`training stopped: the loss is ${value} at epoch ${epoch + 1}, batch ${batch.index + 1} (step ${this.progress.step + 1}); ${this.whatIsKept(options)}`, LOWER_LR);
  }

  /**
   * A NaN or infinite validation loss (the weights or BatchNorm's running statistics overflowed
   * while the training loss was still finite) ends training the same way, before this epoch's
   * model can be saved or counted as the best.
   */
  private stopOnBadValidationLoss(value: number, epoch: number, options: TrainerOptions): never {
    this.emit('nanLoss', { epoch, batch: this.trainLoader.batchesPerEpoch - 1, step: this.progress.step, loss: value });
    throw new TrainingStoppedError(`training stopped: the validation loss is ${value} after epoch ${epoch + 1} (step ${this.progress.step}); ${this.whatIsKept(options)}`, LOWER_LR);
  }

  private whatIsKept(options: TrainerOptions): string {
    if (!options.outputDir) return 'no checkpoint directory was given';
    return this.savedThisRun || this.restoredFrom !== null ? `the last good checkpoint is kept in ${join(options.outputDir, LAST_CHECKPOINT)}` : 'no checkpoint was written yet';
  }

  /**
   * The batches of one epoch from where the run is (mid-epoch after a resume), with the per-step
   * schedule, progress, events and mid-epoch checkpoints. Returns the epoch's training metrics,
   * or 'stopped' when the signal asked to stop (a checkpoint is saved first).
   */
  private async trainEpoch(epoch: number, options: TrainerOptions, clock: () => void): Promise<ClassificationMetrics | 'stopped'> {
    const batches = this.trainLoader.batchesPerEpoch;
    this.emit('epochStart', { epoch, epochs: this.config.epochs, batches, lr: this.scheduler.lr });
    this.model.train();
    const metrics = new ClassificationMetrics(this.train.classNames.length);
    if (this.progress.batch > 0 && this.progress.epochTrainSums) metrics.restoreSums(this.progress.epochTrainSums);
    let dataStart = performance.now();
    for (const batch of this.trainLoader.epoch(epoch, this.progress.batch)) {
      const computeStart = performance.now();
      const loss = this.trainStep(batch, metrics, options);
      if (this.ema !== null && batch.index % this.config.modelEmaSteps === 0) {
        this.ema.update();
        if (epoch < this.config.lrWarmupEpochs) this.ema.updates = 0; // as the reference script: start over after warmup
      }
      if (this.scheduler.perStep) this.scheduler.step();
      this.progress.step++;
      this.progress.batch = batch.index + 1;
      this.progress.epochTrainSums = metrics.sums();
      clock();
      const now = performance.now();
      this.emit('batchEnd', {
        epoch,
        batch: batch.index,
        batches,
        step: this.progress.step,
        loss,
        runningLoss: metrics.loss,
        runningAccuracy: metrics.top1,
        imagesPerSecond: (batch.labels.length * 1000) / (now - dataStart),
        lr: this.scheduler.lr,
        dataMs: computeStart - dataStart,
        computeMs: now - computeStart,
      });
      if (options.signal?.aborted) {
        const checkpoint = this.saveLast(options);
        this.emit('stopped', { epoch, batch: this.progress.batch, checkpoint });
        return 'stopped';
      }
      if (this.config.checkpointEvery > 0 && this.progress.step % this.config.checkpointEvery === 0 && this.progress.batch < batches) this.saveLast(options);
      await yieldToEventLoop();
      dataStart = performance.now();
    }
    return metrics;
  }

  /** Evaluate on the validation data and report it (`evalEnd`, with the confusion matrix). */
  private validate(epoch: number): ClassificationMetrics {
    const val = this.ema === null ? this.evaluate() : this.ema.withAveragedWeights(() => this.evaluate());
    const C = this.train.classNames.length;
    const confusion: number[][] = [];
    for (let k = 0; k < C; k++) confusion.push(Array.from(val.confusion.subarray(k * C, (k + 1) * C)));
    this.emit('evalEnd', { epoch, loss: val.loss, top1: val.top1, top5: val.top5, perClassAccuracy: val.perClassAccuracy(), confusion });
    return val;
  }

  /** The epoch's bookkeeping: per-epoch schedule, progress, best epoch, checkpoints. Returns whether it improved. */
  private endEpoch(epoch: number, val: ClassificationMetrics, options: TrainerOptions): boolean {
    if (!this.scheduler.perStep) this.scheduler.step(val.loss);
    this.progress.epoch = epoch + 1;
    this.progress.batch = 0;
    this.progress.epochTrainSums = undefined;
    const improved = val.top1 > this.progress.bestTop1;
    if (improved) {
      this.progress.bestTop1 = val.top1;
      this.progress.bestEpoch = epoch;
      this.progress.epochsWithoutImprovement = 0;
    } else this.progress.epochsWithoutImprovement++;
    // `best` before `last`: if writing `best` fails (a full disk), `last` still holds the epoch
    // before, whose progress does not yet count this epoch as the best, so resuming repeats the
    // epoch and writes `best` again. The other order would leave a `last` that names a best
    // epoch that no file holds.
    if (improved && options.outputDir) {
      // `best` holds the weights that were evaluated: the moving average with --model-ema.
      const bytes = this.ema === null ? this.checkpointBytes() : this.ema.withAveragedWeights(() => this.checkpointBytes());
      const path = saveBestCheckpoint(options.outputDir, bytes, options.writer ?? atomicWriter);
      this.emit('checkpointSaved', { path, kind: 'best', epoch: this.progress.epoch, batch: 0 });
    }
    this.saveLast(options);
    return improved;
  }

  /** Early stopping: `patience` epochs without a better validation top-1. */
  private shouldStopEarly(epoch: number): boolean {
    const patience = this.config.patience;
    if (patience === 0 || this.progress.epochsWithoutImprovement < patience) return false;
    this.emit('earlyStop', { epoch, patience, bestEpoch: this.progress.bestEpoch, bestTop1: this.progress.bestTop1 });
    return true;
  }
}
