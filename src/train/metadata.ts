// What a checkpoint's metadata holds, as one type, and the one reader that checks it. A
// checkpoint's `__metadata__` has one JSON section per field of CheckpointMetadata; the reader
// checks every section it needs before anything is built from it, and names the file and the
// field when one is missing or wrong. Nothing here touches the file system (the learner's page
// reads dropped checkpoints with it).

import type { ModelInfo } from '../nn/mobilenet.js';
import type { Normalization } from './loader.js';
import type { MetricsSums } from './metrics.js';
import { checkSpec, CONFIG_NAMES, requirementOf, RUN_OPTIONS, trainConfig, type TrainConfig } from './options.js';
import type { SchedulerState } from './schedule.js';

/** A checkpoint that cannot be read or used; the message names the file. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** Where the run is: the next batch to train is `batch` of epoch `epoch`. */
export interface Progress {
  epoch: number;
  batch: number;
  step: number;
  bestTop1: number;
  bestEpoch: number;
  epochsWithoutImprovement: number;
  /** The training metrics of the epoch so far (batches 0..batch-1), so a resumed epoch reports them all. */
  epochTrainSums?: MetricsSums;
  /** Seconds spent in `fit` so far, over every session of the run (absent in checkpoints older than it). */
  seconds?: number;
}

/** The data a checkpoint's model was trained on (an imported model's: 'imported'). */
export interface DatasetInfo {
  name: string;
  /** `datasetFingerprint` of the training images ('none' for imported weights). */
  fingerprint: string;
  classNames: string[];
  /** The model's input channels (a colour model fine-tuned on gray images takes 3). */
  channels: number;
}

/** The state a checkpoint needs to continue training; weights-only checkpoints (import) have none. */
export interface TrainingState {
  progress: Progress;
  /** The optimizer's JSON-able state (its buffers are the `optim.*` tensors). */
  optimizer: Record<string, unknown>;
  scheduler: SchedulerState;
  /** Each random stream's state, by module name. */
  rngs: Record<string, number[]>;
  /** The weights' moving average (`ema.*` tensors) with --model-ema, else null. */
  ema: { updates: number; decay: number } | null;
}

/** A checkpoint's metadata. */
export interface CheckpointMetadata extends Partial<TrainingState> {
  config: TrainConfig;
  normalization: Normalization;
  dataset: DatasetInfo;
  /** The model's settings, or 'custom' for a model a library user built. */
  model: ModelInfo | { architecture: 'custom'; typeName: string };
  /** Where imported weights came from. */
  source?: string;
}

type Raw = Record<string, unknown>;

const isObject = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInteger = (v: unknown, min: number) => Number.isInteger(v) && (v as number) >= min;
const isFiniteNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** Reads one checkpoint's sections, naming the file and the field in every error. */
class MetadataReader {
  constructor(private readonly file: string, private readonly meta: Raw) {}

  fail(field: string, value: unknown, expected: string): never {
    const shown = value === undefined ? 'missing' : `${JSON.stringify(value)?.slice(0, 60) ?? String(value)}`;
    throw new CheckpointError(`${this.file}: metadata ${field} is ${shown}, expected ${expected}`);
  }

  object(field: string, value: unknown = this.meta[field]): Raw {
    if (!isObject(value)) this.fail(field, value, 'an object');
    return value;
  }

  check<T>(field: string, value: unknown, ok: (v: unknown) => boolean, expected: string): T {
    if (!ok(value)) this.fail(field, value, expected);
    return value as T;
  }

  /**
   * The run's config: every option of the table, checked against it. An option missing from
   * an older checkpoint takes its default, since the option did not exist when it was written
   * (its behaviour then was the default's); the augmentation settings that older checkpoints
   * grouped under `augment` are read from there.
   */
  config(): TrainConfig {
    const stored = { ...this.object('config') };
    if (isObject(stored.augment)) {
      const a = stored.augment;
      Object.assign(stored, { cropPadding: a.cropPadding, hflip: a.horizontalFlip, randomErasing: a.randomErasing, autoAugment: a.autoAugment });
      delete stored.augment;
    }
    const config = trainConfig();
    for (const [key, value] of Object.entries(stored)) {
      if (!(CONFIG_NAMES as string[]).includes(key)) this.fail(`config.${key}`, value, 'no such field: an option this version does not have (written by a newer version?)');
      if (value === undefined) continue;
      try {
        // The table's own check, on this one option.
        checkSpec({ [key]: value });
      } catch {
        this.fail(`config.${key}`, value, `a value that ${requirementOf(key as keyof TrainConfig).replace(/^must be/, 'is')}${RUN_OPTIONS[key as keyof TrainConfig].default === null ? ' or null' : ''}`);
      }
      (config as Raw)[key] = value;
    }
    return config;
  }

  dataset(): DatasetInfo {
    const d = this.object('dataset');
    return {
      name: this.check('dataset.name', d.name, (v) => typeof v === 'string', 'a string'),
      fingerprint: this.check('dataset.fingerprint', d.fingerprint ?? 'none', (v) => typeof v === 'string', 'a string'),
      classNames: this.check('dataset.classNames', d.classNames, (v) => Array.isArray(v) && v.length > 0 && v.every((n) => typeof n === 'string'), 'a non-empty list of class names'),
      channels: this.check('dataset.channels', d.channels, (v) => isInteger(v, 1), 'an integer >= 1'),
    };
  }

  normalization(channels: number): Normalization {
    const n = this.object('normalization');
    const list = (field: 'mean' | 'std', positive: boolean) =>
      this.check<number[]>(`normalization.${field}`, n[field], (v) => Array.isArray(v) && v.length === channels && v.every((x) => isFiniteNumber(x) && (!positive || x > 0)), `${channels} ${positive ? 'positive ' : ''}number${channels === 1 ? '' : 's'} (one per input channel)`);
    return { mean: list('mean', false), std: list('std', true) };
  }

  model(): CheckpointMetadata['model'] {
    const m = this.object('model');
    this.check('model.architecture', m.architecture, (v) => typeof v === 'string', 'a string');
    return m as CheckpointMetadata['model'];
  }

  /** The training state, or nothing for a weights-only checkpoint (no progress and no optimizer). */
  training(): Partial<TrainingState> {
    if (this.meta.progress === undefined && this.meta.optimizer === undefined) return {};
    const p = this.object('progress');
    const int = (k: string, min: number) => this.check<number>(`progress.${k}`, p[k], (v) => isInteger(v, min), `an integer >= ${min}`);
    const progress: Progress = {
      epoch: int('epoch', 0),
      batch: int('batch', 0),
      step: int('step', 0),
      bestTop1: this.check('progress.bestTop1', p.bestTop1, isFiniteNumber, 'a number'),
      bestEpoch: int('bestEpoch', -1),
      epochsWithoutImprovement: int('epochsWithoutImprovement', 0),
    };
    if (p.seconds !== undefined) progress.seconds = this.check('progress.seconds', p.seconds, (v) => isFiniteNumber(v) && (v as number) >= 0, 'a number >= 0');
    if (p.epochTrainSums !== undefined && p.epochTrainSums !== null) {
      const s = this.object('progress.epochTrainSums', p.epochTrainSums);
      for (const k of ['lossSum', 'samples', 'top1Hits', 'top5Hits']) this.check(`progress.epochTrainSums.${k}`, s[k], (v) => typeof v === 'number', 'a number');
      progress.epochTrainSums = s as unknown as MetricsSums;
    }
    const scheduler = this.object('scheduler');
    this.check('scheduler.t', scheduler.t, (v) => isInteger(v, 0), 'an integer >= 0');
    const rngs = this.object('rngs');
    for (const [k, v] of Object.entries(rngs)) this.check(`rngs.${k}`, v, (s) => Array.isArray(s) && s.every((x) => Number.isInteger(x)), 'a list of integers');
    const ema = this.meta.ema ?? null;
    if (ema !== null) {
      const e = this.object('ema', ema);
      this.check('ema.updates', e.updates, (v) => isInteger(v, 0), 'an integer >= 0');
      this.check('ema.decay', e.decay, isFiniteNumber, 'a number');
    }
    return { progress, optimizer: this.object('optimizer'), scheduler: scheduler as unknown as SchedulerState, rngs: rngs as Record<string, number[]>, ema: ema as TrainingState['ema'] };
  }
}

/**
 * A checkpoint's metadata, checked: the config against the run options' table, the dataset,
 * the normalisation (one mean and std per input channel), the model and, when there is one,
 * the training state. `file` is named in every error.
 */
export function readCheckpointMetadata(meta: Record<string, unknown>, file: string): CheckpointMetadata {
  const r = new MetadataReader(file, meta);
  const dataset = r.dataset();
  const result: CheckpointMetadata = { config: r.config(), normalization: r.normalization(dataset.channels), dataset, model: r.model(), ...r.training() };
  if (meta.source !== undefined) result.source = String(meta.source);
  return result;
}
