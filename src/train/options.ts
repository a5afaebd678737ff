// The run options, declared once. Each entry of RUN_OPTIONS says what an option is (its type,
// default, range, help text), whether `--resume` may change it, and where its value lands: in
// every checkpoint's config (the settings a run is made of), in the run folder's config.json
// only (where the data came from), or nowhere (how this process runs). From the table come
// the `TrainConfig` type, `TRAIN_DEFAULTS`, the one validation (`checkConfig`), the resume
// rules and the CLI's flags (cli/options.ts), so a new hyperparameter is one entry here.
//
// Names follow torchvision's reference training script where it has the option; the flag is
// the name in kebab case (`lrWarmupEpochs` is `--lr-warmup-epochs`).

import { ARCHITECTURES, createModel, MOBILENET_V2_EXPANSION, type ImageClassifier } from '../nn/mobilenet.js';

/** Largest input resolution a run accepts (memory grows with its square). */
export const MAX_RESOLUTION = 1024;

/** The optimizers the trainer builds by name (torchvision reference script names). */
export const OPTIMIZERS = ['sgd', 'sgd_nesterov', 'rmsprop', 'adam', 'adamw'] as const;
/** The learning-rate schedules the trainer builds by name. */
export const SCHEDULERS = ['constant', 'steplr', 'multisteplr', 'cosineannealinglr', 'exponentiallr', 'onecycle', 'plateau'] as const;
/** What `freeze` may name: nothing, or every layer below the classifier. */
export const FREEZE_PARTS = ['none', 'features'] as const;
/** One of OPTIMIZERS. */
export type OptimizerName = (typeof OPTIMIZERS)[number];
/** One of SCHEDULERS. */
export type SchedulerName = (typeof SCHEDULERS)[number];
/** One of FREEZE_PARTS. */
export type FreezePart = (typeof FREEZE_PARTS)[number];

/**
 * Where an option's value is kept: 'checkpoint' (the run's config in every checkpoint, and
 * config.json), 'config.json' (the run folder's config.json only: the data's name and path,
 * the weights a run started from), 'nowhere' (how this process runs: output folder, log
 * interval).
 */
export type Landing = 'checkpoint' | 'config.json' | 'nowhere';

/** The kinds of values, with what a value of the kind must be. */
type Kind =
  | { kind: 'integer' | 'number'; min: number; max: number; minExclusive?: boolean; maxExclusive?: boolean }
  | { kind: 'choice'; values: readonly (string | number)[] }
  | { kind: 'boolean' | 'text' | 'integerList' | 'nameList' };

/**
 * One run option. `T` is its value's type (null: not set), `L` where it lands. `flag`: false
 * for a setting only the library sets (`inChannels`); `short` and `alias` are extra flag
 * spellings; `placeholder` names the flag's argument in --help.
 */
export type RunOption<T, L extends Landing> = Kind & {
  default: T;
  lands: L;
  /** Whether `--resume` may change it; every other setting is the checkpoint's. */
  resume: 'kept' | 'may change';
  help: string;
  flag?: false;
  short?: string;
  alias?: string;
  placeholder?: string;
  /** For a boolean that defaults to true: the help of its --no- flag. */
  negation?: string;
};

interface Common<L extends Landing> {
  lands: L;
  resume?: 'kept' | 'may change';
  help: string;
  flag?: false;
  short?: string;
  alias?: string;
  placeholder?: string;
}

type Nullable<D, T> = D extends null ? T | null : T;

function integer<D extends number | null, L extends Landing>(o: Common<L> & { default: D; min: number; max: number }): RunOption<Nullable<D, number>, L> {
  return { kind: 'integer', placeholder: '<n>', resume: 'kept', ...o } as RunOption<Nullable<D, number>, L>;
}

function number<D extends number | null, L extends Landing>(o: Common<L> & { default: D; min: number; max: number; minExclusive?: boolean; maxExclusive?: boolean }): RunOption<Nullable<D, number>, L> {
  return { kind: 'number', placeholder: '<x>', resume: 'kept', ...o } as RunOption<Nullable<D, number>, L>;
}

function choice<const V extends readonly (string | number)[], L extends Landing>(values: V, o: Common<L> & { default: V[number] }): RunOption<V[number], L> {
  return { kind: 'choice', values, placeholder: '<name>', resume: 'kept', ...o };
}

function boolean<L extends Landing>(o: Common<L> & { default: boolean; negation?: string }): RunOption<boolean, L> {
  return { kind: 'boolean', resume: 'kept', ...o };
}

function text<D extends string | null, L extends Landing>(o: Common<L> & { default: D }): RunOption<Nullable<D, string>, L> {
  return { kind: 'text', placeholder: '<path>', resume: 'kept', ...o } as RunOption<Nullable<D, string>, L>;
}

function integerList<L extends Landing>(o: Common<L> & { default: number[] }): RunOption<number[], L> {
  return { kind: 'integerList', placeholder: '<list>', resume: 'kept', ...o };
}

function nameList<L extends Landing>(o: Common<L> & { default: null }): RunOption<string[] | null, L> {
  return { kind: 'nameList', placeholder: '<list>', resume: 'kept', ...o };
}

/**
 * Every option of a training run. The defaults are the recipe of the README's main command,
 * chosen by measurement on the bundled Fashion-MNIST subset at its native 28x28
 * (docs/training.md): the paper's Shallow MobileNet at alpha 0.35 (on 28x28 images the five
 * blocks it drops see a 2x2 feature map, so the same mult-adds buy more width instead), SGD
 * with Nesterov momentum and a one-cycle schedule for 16 epochs, random horizontal flips and
 * label smoothing 0.1: 87.15% test top-1 at the last epoch (seed 0; 87.45% with seed 1), where
 * MobileNetV1 alpha 0.25 with the same recipe, at about the same cost per epoch, reached 86.00%
 * and 84.95% (docs/training.md).
 */
export const RUN_OPTIONS = {
  // The model.
  model: choice(ARCHITECTURES, { default: 'shallow', lands: 'checkpoint', help: "(baseline: the paper's full-convolution MobileNet; shallow: Table 5's Shallow MobileNet)" }),
  alpha: number({ default: 0.35, min: 0, max: 4, minExclusive: true, lands: 'checkpoint', placeholder: '<a>', help: 'width multiplier alpha' }),
  expansion: number({ default: MOBILENET_V2_EXPANSION, min: 0, max: 16, minExclusive: true, lands: 'checkpoint', placeholder: '<t>', help: 'MobileNetV2: expansion factor t of the inverted residual blocks (6 in the paper; below 1 a classic bottleneck)' }),
  stemStride: choice([1, 2] as const, { default: 2, lands: 'checkpoint', placeholder: '<s>', help: "stride of the first convolution: 2 as in the papers, 1 keeps small images' resolution (4x the mult-adds)" }),
  resolution: integer({ default: 28, min: 8, max: MAX_RESOLUTION, lands: 'checkpoint', placeholder: '<r>', help: "input resolution in pixels: every image is resized to r x r (28 is Fashion-MNIST's own size)" }),
  rho: number({ default: null, min: 0, max: 1, minExclusive: true, lands: 'checkpoint', placeholder: '<r>', help: "resolution multiplier: resolution = round(rho x the dataset's native size); excludes --resolution" }),
  inChannels: integer({ default: null, min: 1, max: 64, lands: 'checkpoint', flag: false, help: "the model's input channels; null: the dataset's (a pretrained colour model on gray images: 3)" }),
  dropout: number({ default: 0, min: 0, max: 1, maxExclusive: true, lands: 'checkpoint', placeholder: '<p>', help: 'dropout before the classifier' }),
  // The data.
  data: text({ default: 'fashion-mnist', lands: 'config.json', resume: 'may change', placeholder: '<name>', help: 'fashion-mnist | mnist | cifar10 | a folder of class subfolders' }),
  dataPath: text({ default: null, lands: 'config.json', resume: 'may change', placeholder: '<dir>', help: 'where the dataset files are (default for fashion-mnist: the subset bundled in this repo)' }),
  valSplit: number({ default: 0, min: 0, max: 1, maxExclusive: true, lands: 'checkpoint', placeholder: '<f>', help: 'hold out this fraction of the training images (seeded) to choose the best epoch, stop early and drive plateau schedules; the test split is then evaluated once at the end (0: the test split does all of it)' }),
  classes: nameList({ default: null, lands: 'checkpoint', help: 'train on these classes only, relabelled in this order: names or indices, comma-separated (e.g. 0,2,3 or "Sandal,Sneaker,Ankle boot")' }),
  perClass: integer({ default: 0, min: 0, max: 1e9, lands: 'checkpoint', help: 'at most n training images per class, chosen with the seed (0 = all): few-shot transfer learning' }),
  // The optimization.
  epochs: integer({ default: 16, min: 1, max: 100000, lands: 'checkpoint', resume: 'may change', help: 'epochs (with --resume: train the run to this many)' }),
  batchSize: integer({ default: 64, min: 1, max: 65536, lands: 'checkpoint', short: '-b', help: 'batch size' }),
  lr: number({ default: 0.1, min: 0, max: 100, minExclusive: true, lands: 'checkpoint', help: 'learning rate (the peak lr for onecycle)' }),
  momentum: number({ default: 0.9, min: 0, max: 1, lands: 'checkpoint', help: 'momentum (SGD, RMSprop)' }),
  weightDecay: number({ default: 5e-5, min: 0, max: 1, lands: 'checkpoint', alias: '--wd', help: 'weight decay (not applied to BatchNorm, biases and, unless --decay-depthwise, depthwise filters)' }),
  decayDepthwise: boolean({ default: false, lands: 'checkpoint', help: 'apply weight decay to depthwise filters too (the paper used little or none there)' }),
  opt: choice(OPTIMIZERS, { default: 'sgd_nesterov', lands: 'checkpoint', help: '' }),
  lrScheduler: choice(SCHEDULERS, { default: 'onecycle', lands: 'checkpoint', help: '' }),
  lrStepSize: integer({ default: 3, min: 1, max: 100000, lands: 'checkpoint', help: 'epochs between decays (steplr)' }),
  lrGamma: number({ default: 0.1, min: 0, max: 1, minExclusive: true, lands: 'checkpoint', help: 'decay factor (steplr, multisteplr, exponentiallr, plateau)' }),
  lrMilestones: integerList({ default: [], lands: 'checkpoint', help: 'epochs at which multisteplr decays, e.g. 10,20' }),
  lrMin: number({ default: 0, min: 0, max: 100, lands: 'checkpoint', help: 'the learning rate cosineannealinglr ends at (its eta_min)' }),
  lrWarmupEpochs: integer({ default: 0, min: 0, max: 100000, lands: 'checkpoint', help: 'linear warmup epochs before the schedule' }),
  clipGradNorm: number({ default: 0, min: 0, max: 1e6, lands: 'checkpoint', help: "clip the gradients' global L2 norm to this before each step (0 = off)" }),
  // Regularisation and augmentation.
  labelSmoothing: number({ default: 0.1, min: 0, max: 1, maxExclusive: true, lands: 'checkpoint', help: 'label smoothing' }),
  cropPadding: integer({ default: 0, min: 0, max: 64, lands: 'checkpoint', help: 'random crop with this much zero padding (0 = off)' }),
  hflip: boolean({ default: true, lands: 'checkpoint', help: 'random horizontal flips', negation: 'no flips (for images whose mirror image means something else: digits, text)' }),
  randomErasing: number({ default: 0, min: 0, max: 1, lands: 'checkpoint', placeholder: '<p>', help: 'probability of random erasing (0 = off)' }),
  autoAugment: choice(['none', 'ta_wide'] as const, { default: 'none', lands: 'checkpoint', placeholder: '<policy>', help: 'ta_wide: TrivialAugmentWide on each training image (gray or colour)' }),
  mixupAlpha: number({ default: 0, min: 0, max: 100, lands: 'checkpoint', placeholder: '<a>', help: 'MixUp with lambda ~ Beta(a, a) (0 = off)' }),
  cutmixAlpha: number({ default: 0, min: 0, max: 100, lands: 'checkpoint', placeholder: '<a>', help: 'CutMix with lambda ~ Beta(a, a) (0 = off; with --mixup-alpha, one of the two per batch)' }),
  modelEma: boolean({ default: false, lands: 'checkpoint', help: 'evaluate (and keep as best) an exponential moving average of the weights: every --model-ema-steps batches, ema = d ema + (1 - d) weights, with d adjusted as the reference script does' }),
  modelEmaSteps: integer({ default: 32, min: 1, max: 1e9, lands: 'checkpoint', help: 'batches between moving-average updates' }),
  modelEmaDecay: number({ default: 0.99998, min: 0, max: 1, minExclusive: true, maxExclusive: true, lands: 'checkpoint', placeholder: '<d>', help: "moving-average decay before the reference script's adjustment" }),
  // Transfer learning.
  init: text({ default: null, lands: 'config.json', placeholder: '<checkpoint>', help: "start from a checkpoint's weights (a .safetensors file, a run folder's best, or a PyTorch .pth) with a fresh optimizer and schedule: fine-tuning" }),
  freeze: choice(FREEZE_PARTS, { default: 'none', lands: 'checkpoint', placeholder: '<part>', help: 'transfer learning: freeze this part (features: everything below the classifier; its BatchNorms keep their statistics)' }),
  trainableBlocks: integer({ default: null, min: 0, max: 1000, lands: 'checkpoint', help: 'transfer learning: only the last n blocks of the features and the classifier train' }),
  cacheFrozenFeatures: boolean({ default: true, lands: 'checkpoint', flag: false, help: "with everything below the classifier frozen and no random augmentation, compute each training image's pooled features once and train the classifier on them (the same numbers); false: run the frozen features on every batch" }),
  // The run.
  seed: integer({ default: 0, min: 0, max: 2 ** 31, lands: 'checkpoint', help: 'random seed' }),
  patience: integer({ default: 0, min: 0, max: 100000, lands: 'checkpoint', help: 'stop after this many epochs without a better validation top-1 (0 = off)' }),
  checkpointEvery: integer({ default: 0, min: 0, max: 1e9, lands: 'checkpoint', help: 'also checkpoint every n batches (0 = at epoch ends only)' }),
  evalBatchSize: integer({ default: 250, min: 1, max: 65536, lands: 'checkpoint', help: 'batch size for evaluation' }),
  resume: text({ default: null, lands: 'nowhere', resume: 'may change', help: 'continue from a checkpoint or a run folder (uses its last.safetensors)' }),
  outputDir: text({ default: null, lands: 'nowhere', resume: 'may change', placeholder: '<dir>', help: 'where checkpoints, logs and plots go (default runs/<date>-<model>); a folder holds one run' }),
  overwrite: boolean({ default: false, lands: 'nowhere', resume: 'may change', help: 'start a new run in an --output-dir that holds one, deleting its checkpoints, logs and plots' }),
  ignoreMemoryEstimate: boolean({ default: false, lands: 'nowhere', resume: 'may change', help: 'start even when the estimated memory of a training step is more than the machine has available' }),
  logInterval: number({ default: 10, min: 0, max: 3600, lands: 'nowhere', resume: 'may change', placeholder: '<s>', help: 'seconds between progress lines when not on a terminal' }),
};

type Options = typeof RUN_OPTIONS;
/** The name of a run option. */
export type OptionName = keyof Options;
type ValueOf<O> = O extends RunOption<infer T, Landing> ? T : never;
type Landed<L extends Landing> = { [K in OptionName]: Options[K] extends { lands: L } ? K : never }[OptionName];

/** Everything that defines a run: the options that land in every checkpoint (RUN_OPTIONS's help says what each is). */
export type TrainConfig = { -readonly [K in Landed<'checkpoint'>]: ValueOf<Options[K]> };
/** The options kept in a run folder's config.json only (where the data came from, the weights a run started from). */
export type ConfigJsonOption = Landed<'config.json'>;

/** A run as a library user or the CLI asks for it: any run option, the rest take their defaults. */
export type RunSpec = { -readonly [K in OptionName]?: ValueOf<Options[K]> };

/** The option names in the table's order. */
export const OPTION_NAMES = Object.keys(RUN_OPTIONS) as OptionName[];

/** The options kept in checkpoints, in the table's order. */
export const CONFIG_NAMES = OPTION_NAMES.filter((k) => RUN_OPTIONS[k].lands === 'checkpoint') as (keyof TrainConfig)[];

/** The options `--resume` may change; every other one is the checkpoint's. */
export const RESUME_MAY_CHANGE = OPTION_NAMES.filter((k) => RUN_OPTIONS[k].resume === 'may change');

/** A copy of a default (lists are fresh arrays, so that editing one run's config leaves the defaults alone). */
function copyOf<T>(value: T): T {
  return Array.isArray(value) ? ([...value] as T) : value;
}

/** The default config: every checkpointed option's default. */
export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze(Object.fromEntries(CONFIG_NAMES.map((k) => [k, copyOf(RUN_OPTIONS[k].default)])) as TrainConfig);

/** A fresh config: the defaults, then `settings`. */
export function trainConfig(settings: Partial<TrainConfig> = {}): TrainConfig {
  const config = Object.fromEntries(CONFIG_NAMES.map((k) => [k, copyOf(RUN_OPTIONS[k].default)])) as TrainConfig;
  return Object.assign(config, settings);
}

/** `--flag-name` for an option: its name in kebab case. */
export function flagOf(option: string): string {
  return `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/**
 * A setting that does not fit the table, the model or the run. `options` names the settings at
 * fault and `value` the value given (when one is), so that the CLI can name its flags without
 * reading the message; `describe(name)` words the message with any naming of the options
 * (`flagOf` for the command line).
 */
export class ConfigError extends RangeError {
  override name = 'ConfigError';
  /**
   * The message as text and option slots: a sentence such as "`lr` must be ...", or by default
   * "`option` value: detail".
   */
  private readonly words: readonly (string | { option: string })[];

  /** `options`: the settings at fault; `detail`: what is wrong; `value`: the value given, when one setting is at fault. */
  constructor(readonly options: string[], readonly detail: string, readonly value?: unknown, words?: readonly (string | { option: string })[]) {
    const parts = words ?? [...options.flatMap((o, i) => (i === 0 ? [{ option: o }] : [', ', { option: o }])), `${value !== undefined ? ` ${String(value)}` : ''}: ${detail}`];
    super(parts.map((p) => (typeof p === 'string' ? p : p.option)).join(''));
    this.words = parts;
  }

  /**
   * A sentence about options, written as a template whose values are option names:
   * ``ConfigError.sentence`${'resume'} and ${'init'} exclude each other` `` names both.
   */
  static sentence(strings: TemplateStringsArray, ...options: OptionName[]): ConfigError {
    const words: (string | { option: string })[] = [];
    strings.forEach((s, i) => {
      if (s) words.push(s);
      if (i < options.length) words.push({ option: options[i] });
    });
    return ConfigError.fromWords(words);
  }

  /** A message as text and option slots (`{ option: 'lr' }`); the options at fault are the slots', `value` the value given. */
  static fromWords(words: readonly (string | { option: string })[], value?: unknown): ConfigError {
    const options = [...new Set(words.filter((w) => typeof w !== 'string').map((w) => w.option))];
    const text = words.map((w) => (typeof w === 'string' ? w : w.option)).join('');
    return new ConfigError(options, text, value, words);
  }

  /** The message with each option named by `name` (the CLI passes `flagOf`). */
  describe(name: (option: string) => string): string {
    return this.words.map((p) => (typeof p === 'string' ? p : name(p.option))).join('');
  }
}

/** What a value of this option must be, as the end of "`option` must be ...". */
export function requirementOf(option: OptionName): string {
  const o: Kind = RUN_OPTIONS[option];
  switch (o.kind) {
    case 'integer':
    case 'number': {
      const range = `${o.minExclusive ? '(' : '['}${o.min}, ${o.max}${o.maxExclusive ? ')' : ']'}`;
      return `must be ${o.kind === 'integer' ? 'an integer' : 'a number'} in ${range}`;
    }
    case 'choice':
      return `must be one of ${o.values.join(', ')}`;
    case 'boolean':
      return 'must be true or false';
    case 'text':
      return 'must be a non-empty string';
    case 'integerList':
      return 'must be a comma-separated list of integers >= 0';
    case 'nameList':
      return 'must be a comma-separated list of class names or indices';
  }
}

/** Whether `value` is a valid value of the option (null: not set, where the option may be unset). */
function fits(option: OptionName, value: unknown): boolean {
  const o = RUN_OPTIONS[option];
  if (value === null) return o.default === null;
  switch (o.kind) {
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || !Number.isFinite(value) || (o.kind === 'integer' && !Number.isInteger(value))) return false;
      return (o.minExclusive ? value > o.min : value >= o.min) && (o.maxExclusive ? value < o.max : value <= o.max);
    }
    case 'choice':
      return (o.values as readonly unknown[]).includes(value);
    case 'boolean':
      return typeof value === 'boolean';
    case 'text':
      return typeof value === 'string' && value !== '';
    case 'integerList':
      return Array.isArray(value) && value.every((v) => Number.isInteger(v) && v >= 0);
    case 'nameList':
      return Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string' && v.trim() !== '');
  }
}

/** A value as an error message shows it: as JSON, except the numbers JSON has no words for (NaN, Infinity). */
function shownValue(value: unknown): string {
  return typeof value === 'number' && !Number.isFinite(value) ? String(value) : (JSON.stringify(value) ?? String(value));
}

/** The error for a value that does not fit: "`option` must be ..., got `shown`" (`shown`: the value as given, by default as JSON). */
export function optionValueError(option: OptionName, value: unknown, shown = shownValue(value)): ConfigError {
  const requirement = requirementOf(option);
  return new ConfigError([option], requirement, value, [{ option }, ` ${requirement}, got ${shown}`]);
}

/**
 * A number written in decimal notation (`12`, `-0.5`, `.5`, `1e-3`), or NaN. JavaScript's
 * Number() also reads `0x10`, `0b1`, `Infinity` and surrounding spaces; a flag or a file read
 * that way would train with 16 where the user may have meant something else.
 */
export function decimalNumber(text: string): number {
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN;
}

/** An option's value from its text on a command line (`--lr 0.1`), checked against the table. */
export function parseOption<K extends OptionName>(option: K, text: string): ValueOf<Options[K]> {
  const o: Kind = RUN_OPTIONS[option];
  let value: unknown;
  switch (o.kind) {
    case 'integer':
    case 'number':
      value = decimalNumber(text);
      break;
    case 'choice':
      value = o.values.find((v) => String(v) === text) ?? text;
      break;
    case 'boolean':
      value = text === 'true' ? true : text === 'false' ? false : text;
      break;
    case 'text':
      value = text;
      break;
    case 'integerList':
      value = text.split(',').map((s) => decimalNumber(s.trim()));
      break;
    case 'nameList':
      value = text.split(',').map((s) => s.trim());
      break;
  }
  if (!fits(option, value)) throw optionValueError(option, value, `'${text}'`);
  return value as ValueOf<Options[K]>;
}

/** Check every option of a spec against the table: the first that does not fit is a ConfigError naming it. */
export function checkSpec(spec: RunSpec): void {
  for (const [key, value] of Object.entries(spec)) {
    if (!(key in RUN_OPTIONS)) throw new ConfigError([key], `no such run option (the options are ${OPTION_NAMES.join(', ')})`);
    if (value !== undefined && !fits(key as OptionName, value)) throw optionValueError(key as OptionName, value);
  }
}

/**
 * The smallest width multiplier that leaves every layer at least one channel: V1 and the
 * baseline have round(32 alpha) stem channels and int(64 alpha) in the first block; V2 rounds
 * every width up to a multiple of 8, so any alpha > 0 works.
 */
export function minimumAlpha(model: string): number {
  return model === 'v2' ? 0 : 1 / 64;
}

/** alpha must leave every layer of the model a channel (a ConfigError naming alpha). */
export function checkAlphaFor(model: string, alpha: number): void {
  if (!(alpha >= minimumAlpha(model))) throw new ConfigError(['alpha'], `MobileNet ${model} needs alpha >= ${minimumAlpha(model)} (below it a layer has no channels)`, alpha);
}

/**
 * Validate a config: every option against the table, then the rules between options. Errors
 * are ConfigErrors naming the options and the allowed values.
 */
export function checkConfig(c: TrainConfig): void {
  for (const key of CONFIG_NAMES) if (!(key in c)) throw new ConfigError([key], 'is missing from the config (trainConfig() fills in the defaults)');
  checkSpec(c);
  checkAlphaFor(c.model, c.alpha);
  if (c.freeze !== 'none' && c.trainableBlocks !== null) throw ConfigError.sentence`${'freeze'} and ${'trainableBlocks'} exclude each other (freezing the features is 0 trainable blocks)`;
}

/** `rho` and `resolution` both given. */
export function rhoWithResolutionError(): ConfigError {
  return ConfigError.sentence`${'rho'} and ${'resolution'} exclude each other: ${'rho'} scales the base size, ${'resolution'} sets the size`;
}

/**
 * The input resolution a run or a command uses: with `rho` (the paper's resolution multiplier),
 * round(rho x the base size), at least 8 pixels; else `resolution`. Both given is a ConfigError.
 */
export function resolutionOf(rho: number | null | undefined, resolution: number, base: number, resolutionGiven: boolean): number {
  if (rho === null || rho === undefined) return resolution;
  if (resolutionGiven) throw rhoWithResolutionError();
  const scaled = Math.round(rho * base);
  if (scaled < 8) throw new ConfigError(['rho'], `round(${rho} x ${base}) = ${scaled} pixels, below the smallest resolution 8`, rho);
  return scaled;
}

/** The settings that shape a model. */
export type ModelSpec = Pick<TrainConfig, 'model' | 'alpha' | 'expansion' | 'stemStride' | 'resolution' | 'dropout'> & { seed?: number };

/**
 * The MobileNet a run's settings describe, for `numClasses` classes of `inChannels`-channel
 * images: the one place a model is built from settings (the trainer, --init, --resume, eval,
 * predict, export, import, step and the learner's page).
 */
export function modelFromSpec(spec: ModelSpec, shape: { numClasses: number; inChannels: number }): ImageClassifier {
  return createModel(spec.model, { alpha: spec.alpha, expansion: spec.expansion, stemStride: spec.stemStride, resolution: spec.resolution, dropout: spec.dropout, seed: spec.seed ?? 0, ...shape });
}

