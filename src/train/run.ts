// A run from its specification: everything `mobilenet train` does before its first batch, as
// library operations, so that a Node user gets exactly what the command line gets. A spec names
// any of the run options (options.ts); `planRun` settles the config (the checkpoint's for
// `resume`, the weights' model for `init`) and `prepareRun` then loads the data (the dataset,
// `classes`, `valSplit`, `perClass`, the resolution `rho` gives) and builds the trainer.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Rng } from '../tensor/rng.js';
import { findResumableCheckpoint, type ResumableCheckpoint } from './checkpoint.js';
import { bundledFashionMnistPath, loadCifar10, loadIdxDataset, loadImageFolder, MNIST_CLASSES, pickImages, selectClasses, takePerClass, type ImageDataset } from './datasets.js';
import { checkInitFits, loadModel, type LoadedModel } from './models.js';
import { checkConfig, checkSpec, CONFIG_NAMES, ConfigError, resolutionOf, RESUME_MAY_CHANGE, rhoWithResolutionError, RUN_OPTIONS, trainConfig, TRAIN_DEFAULTS, type OptionName, type RunSpec, type TrainConfig } from './options.js';
import { Trainer, type TrainerParts } from './trainer.js';

/** Where a run's images come from, and how they are read. */
export interface DataChoice {
  /** fashion-mnist, mnist, cifar10, or a folder of class folders. */
  data: string;
  dataPath?: string | null;
  /** The size an image folder's images are resized to when read. */
  resolution: number;
  seed: number;
  onWarning?: (message: string) => void;
  /** Keep only these classes (names or indices), relabelled in this order; null or absent: all. */
  classes?: readonly string[] | null;
}

/**
 * The data of a run: `val` chooses the best epoch (and drives early stopping and plateau
 * schedules); `test`, when there is one apart from it, is evaluated once at the end. `valName`
 * says what `val` is: 'test' when the test split doubles as validation (no valSplit), else 'val'.
 */
export interface RunData {
  train: ImageDataset;
  val: ImageDataset;
  test: ImageDataset | null;
  valName: 'val' | 'test';
}

/** Split a dataset into train / validation by a seeded permutation (for folders without val/). */
function splitDataset(ds: ImageDataset, valFraction: number, seed: number): { train: ImageDataset; val: ImageDataset } {
  const order = new Rng(seed).permutation(ds.count);
  const nVal = Math.max(1, Math.round(ds.count * valFraction));
  return { val: pickImages(ds, order.subarray(0, nVal), `${ds.name}-val`), train: pickImages(ds, order.subarray(nVal)) };
}

/**
 * `loadData`, then with `valSplit` > 0 a seeded fraction of the training images held out for
 * validation, then with `perClass` > 0 at most that many training images per class (seeded).
 */
export async function loadRunData(choice: DataChoice, valSplit: number, perClass = 0): Promise<RunData> {
  const loaded = await loadData(choice);
  const fewer = (train: ImageDataset) => (perClass > 0 ? takePerClass(train, perClass, choice.seed) : train);
  // An image folder without val/ or test/ already holds out 10% for validation, and has no test split.
  if (valSplit <= 0) return { train: fewer(loaded.train), val: loaded.val, test: null, valName: loaded.heldOut ? 'val' : 'test' };
  const split = splitDataset(loaded.train, valSplit, choice.seed);
  return { train: fewer(split.train), val: split.val, test: loaded.heldOut ? null : loaded.val, valName: 'val' };
}

/**
 * `fashion-mnist` (default path: the subset bundled in the package), `mnist` and `cifar10` (need
 * `dataPath`), or a folder: with train/ and val/ (or test/) subfolders of class folders, or
 * class folders directly (then 10% is held out for validation, chosen with the seed). With
 * `classes`, only those classes, in that order.
 */
export async function loadData(choice: DataChoice): Promise<LoadedData> {
  const loaded = await loadAllClasses(choice);
  const classes = choice.classes;
  if (!classes || classes.length === 0) return loaded;
  return { train: selectClasses(loaded.train, classes), val: selectClasses(loaded.val, classes), heldOut: loaded.heldOut };
}

/** A dataset's training and validation images; `heldOut`: the validation images were held out of a folder's training images (it has no test split). */
export interface LoadedData {
  train: ImageDataset;
  val: ImageDataset;
  heldOut: boolean;
}

async function loadAllClasses(choice: DataChoice): Promise<LoadedData> {
  const { data } = choice;
  const dataPath = choice.dataPath ?? undefined;
  if (data === 'mnist') {
    // The bundled images are Fashion-MNIST: MNIST's digits must come from a folder of the user's.
    if (!dataPath) throw ConfigError.sentence`${'data'} mnist needs ${'dataPath'} DIR: a folder with the four MNIST files (train-images-idx3-ubyte[.gz], ...); the bundled data is Fashion-MNIST`;
    return { train: loadIdxDataset(dataPath, 'train', data, MNIST_CLASSES), val: loadIdxDataset(dataPath, 'test', data, MNIST_CLASSES), heldOut: false };
  }
  if (data === 'fashion-mnist') {
    const dir = dataPath ?? bundledFashionMnistPath();
    return { train: loadIdxDataset(dir, 'train', data), val: loadIdxDataset(dir, 'test', data), heldOut: false };
  }
  if (data === 'cifar10') {
    if (!dataPath) throw ConfigError.sentence`${'data'} cifar10 needs ${'dataPath'} DIR: a folder with data_batch_1.bin ... data_batch_5.bin and test_batch.bin (the "CIFAR-10 binary version")`;
    return { train: loadCifar10(dataPath, 'train'), val: loadCifar10(dataPath, 'test'), heldOut: false };
  }
  const root = resolve(dataPath ?? data);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new ConfigError(['data'], 'no such folder (use fashion-mnist, mnist, cifar10, or a folder of class subfolders of images)', data);
  }
  const folder = { size: choice.resolution, channels: 3 as const, onCorrupt: 'skip' as const, onWarning: choice.onWarning ?? (() => {}) };
  const sub = readdirSync(root);
  const valName = ['val', 'test'].find((n) => sub.includes(n));
  if (sub.includes('train') && valName) {
    return { train: await loadImageFolder(join(root, 'train'), folder), val: await loadImageFolder(join(root, valName), folder), heldOut: false };
  }
  return { ...splitDataset(await loadImageFolder(root, folder), 0.1, choice.seed), heldOut: true };
}

/** A run's settings, settled: what `prepareRun` builds from. */
export interface RunPlan {
  /** The run's config (a resumed run's: its checkpoint's, with `epochs` if the spec gives it). */
  config: TrainConfig;
  /** Where the data comes from (not part of the config: a resumed run may read it from elsewhere). */
  data: string;
  dataPath: string | null;
  /** The checkpoint a resumed run continues, or null for a new run. */
  resumed: ResumableCheckpoint | null;
  /** The weights a new run starts from (`init`), or null. */
  init: { path: string; model: LoadedModel } | null;
  /** Whether each option was given in the spec (rather than taking its default or the checkpoint's). */
  given: (option: OptionName) => boolean;
}

/** The settings of a new run's config that the spec gives, the rest the defaults. */
function configOfSpec(spec: RunSpec): TrainConfig {
  const settings: Record<string, unknown> = {};
  for (const key of CONFIG_NAMES) if (spec[key] !== undefined) settings[key] = spec[key];
  return trainConfig(settings as Partial<TrainConfig>);
}

/**
 * A resumed run continues with the settings stored in its checkpoint: an option that would
 * change them is refused rather than silently ignored (`epochs` extends or shortens the run).
 */
function refuseChangesOnResume(given: (option: OptionName) => boolean): void {
  const refused = (Object.keys(RUN_OPTIONS) as OptionName[]).filter((k) => given(k) && !RESUME_MAY_CHANGE.includes(k));
  if (refused.length === 0) return;
  const list = refused.flatMap((option, i) => (i === 0 ? [{ option }] : [', ', { option }]));
  throw ConfigError.fromWords([{ option: 'resume' }, ' continues a run with the settings stored in its checkpoint; ', ...list, ' cannot change them (', { option: 'epochs' }, ', ', { option: 'dataPath' }, ' and ', { option: 'outputDir' }, ' can). To train with other settings from its weights, use ', { option: 'init' }]);
}

/** A run folder's config.json as written (an object), 'missing', or 'invalid' (not a JSON object). */
export function readRunConfigJson(path: string): Record<string, unknown> | 'missing' | 'invalid' {
  if (!existsSync(path)) return 'missing';
  try {
    const written: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof written === 'object' && written !== null && !Array.isArray(written) ? (written as Record<string, unknown>) : 'invalid';
  } catch {
    return 'invalid';
  }
}

/** `data` and `dataPath` as a run folder's config.json records them, or null (no such file, or not ours). */
function storedDataChoice(runDir: string): { data: string; dataPath: string | null } | null {
  const stored = readRunConfigJson(join(runDir, 'config.json'));
  if (typeof stored === 'string' || typeof stored.data !== 'string' || !(stored.dataPath === null || typeof stored.dataPath === 'string')) return null;
  return { data: stored.data, dataPath: stored.dataPath };
}

/**
 * Check a spec and settle its config, without reading any data: with `resume`, the
 * checkpoint's config (read and verified; `epochs` may change it); with `init`, the weights'
 * model, alpha and resolution unless the spec gives them. `onWarning` hears about a damaged
 * `last` checkpoint passed over for `previous`.
 */
export function planRun(spec: RunSpec, onWarning: (message: string) => void = () => {}): RunPlan {
  checkSpec(spec);
  // null is an option's 'not set' (the default of the nullable ones), so it is not a change.
  const given = (option: OptionName) => spec[option] !== undefined && spec[option] !== null;
  const data = spec.data ?? RUN_OPTIONS.data.default, dataPath = spec.dataPath ?? null;
  if (spec.resume) {
    if (given('init')) throw ConfigError.sentence`${'resume'} and ${'init'} exclude each other: ${'resume'} continues a run where it stopped, ${'init'} starts a new run from its weights`;
    refuseChangesOnResume(given);
    if (!existsSync(spec.resume)) throw new ConfigError(['resume'], 'no such checkpoint or run folder', spec.resume);
    const resumed = findResumableCheckpoint(spec.resume, onWarning);
    const config = { ...resumed.checkpoint.meta.config, ...(given('epochs') ? { epochs: spec.epochs } : {}) };
    // The data the run trained on, from its folder's config.json, unless the spec names other
    // data (moved files): without this a run on --data-path DIR would resume on the default data.
    const stored = given('data') || given('dataPath') ? null : storedDataChoice(dirname(resumed.path));
    return { config, data: stored?.data ?? data, dataPath: stored?.dataPath ?? dataPath, resumed, init: null, given };
  }
  // rho and resolution exclude each other; the resolution rho gives is known once the images are
  // (a dataset's native size: 28 for Fashion-MNIST, 32 for CIFAR-10), in startRun.
  if (given('rho') && given('resolution')) throw rhoWithResolutionError();
  const config = configOfSpec(spec);
  let init: RunPlan['init'] = null;
  if (spec.init) {
    // The starting weights: their model, alpha and resolution are the run's unless given, as
    // loading a saved model is (an ImageNet model learned its features at 224, not at a
    // folder's default 28); given ones that differ are refused.
    const start = loadModel(spec.init);
    if (!given('model')) config.model = start.config.model;
    if (!given('alpha')) config.alpha = start.config.alpha;
    if (!given('resolution') && !given('rho')) config.resolution = start.config.resolution;
    checkInitFits(spec.init, start, config);
    init = { path: spec.init, model: start };
  }
  checkConfig(config);
  return { config, data, dataPath, resumed: null, init, given };
}

/** A run ready to train: `trainer.fit()` starts (or continues) it. */
export interface PreparedRun extends RunPlan {
  trainer: Trainer;
  /** The images: training, validation, and the test split kept apart when there is one. */
  images: RunData;
  /** What was done that a user should hear about (a classifier replaced for new classes). */
  notes: string[];
  /** A resumed run that has already trained all its epochs: `fit` has nothing to do. */
  complete: boolean;
}

/**
 * Everything before the first batch: the plan (`planRun`), the data it names (the dataset,
 * `classes`, `valSplit` and `perClass`, read as the first session read them when resuming), the
 * resolution (`rho` scales the images' native size) and the trainer (restored from the
 * checkpoint when resuming; from the `init` weights, with a new classifier for other classes).
 */
export async function prepareRun(spec: RunSpec, onWarning: (message: string) => void = () => {}): Promise<PreparedRun> {
  return startRun(planRun(spec, onWarning), onWarning);
}

/** `prepareRun` from a plan already made (the CLI claims the run folder between the two). */
export async function startRun(plan: RunPlan, onWarning: (message: string) => void = () => {}): Promise<PreparedRun> {
  const c = plan.config;
  // An image folder is read at the run's resolution (with rho, at the default size that rho then scales).
  const readSize = c.rho === null ? c.resolution : TRAIN_DEFAULTS.resolution;
  const images = await loadRunData({ data: plan.data, dataPath: plan.dataPath, resolution: readSize, seed: c.seed, onWarning, classes: c.classes }, c.valSplit, c.perClass);
  const parts: TrainerParts = images.test ? { test: images.test } : {};
  const notes: string[] = [];
  let trainer: Trainer;
  if (plan.resumed !== null) {
    trainer = Trainer.resume(plan.resumed, images.train, images.val, onWarning, plan.given('epochs') ? { epochs: c.epochs } : {}, parts).trainer;
    if (plan.given('epochs') && ['onecycle', 'cosineannealinglr'].includes(c.lrScheduler)) {
      onWarning(`epochs ${c.epochs}: the ${c.lrScheduler} schedule is stretched over ${c.epochs} epochs from where the run is (its learning rate jumps to that curve)`);
    }
  } else {
    c.resolution = resolutionOf(c.rho, c.resolution, images.train.height, false);
    trainer = newTrainer(plan, images, parts, notes);
  }
  return { ...plan, trainer, images, notes, complete: plan.resumed !== null && trainer.progress.epoch >= c.epochs };
}

/**
 * A new run's trainer. With `init` (fine-tuning and transfer learning) the weights, BatchNorm
 * statistics and input normalisation come from the checkpoint (the features were learned with
 * it); the optimizer state, schedule, epoch counter and RNG start fresh from this run's config.
 */
function newTrainer(plan: RunPlan, images: RunData, parts: TrainerParts, notes: string[]): Trainer {
  const c = plan.config;
  if (plan.init !== null) {
    const { path, model: start } = plan.init;
    const classes = images.train.classNames.length;
    if (start.classNames.length !== classes) {
      start.model.replaceClassifier(classes, new Rng(c.seed));
      notes.push(`replacing the classifier: ${path} has ${start.classNames.length} classes, ${images.train.name} has ${classes}; every other tensor is loaded, the new classifier starts from a fresh initialisation`);
    }
    c.inChannels = start.channels;
    c.expansion = start.model.info.expansion ?? c.expansion;
    c.stemStride = (start.model.info.stemStride ?? 2) === 1 ? 1 : 2;
    start.model.train();
    parts = { ...parts, model: start.model, normalization: start.normalization };
    notes.push(`starting from the weights of ${path}`);
  }
  return new Trainer(c, images.train, images.val, parts);
}
