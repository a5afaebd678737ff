// Shared CLI pieces: user errors, flag parsers, dataset resolution, checkpoint loading.

import { modelFromWeights } from './interop.js';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { createModel, MOBILENET_V2_EXPANSION, type ImageClassifier } from '../src/nn/mobilenet.js';
import { Tensor } from '../src/tensor/tensor.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { bundledFashionMnistPath, loadCifar10, loadIdxDataset, loadImageFolder, MNIST_CLASSES, pickImages, selectClasses, takePerClass, type ImageDataset } from '../src/train/datasets.js';
import { Rng } from '../src/tensor/rng.js';
import type { Normalization } from '../src/train/loader.js';
import type { TrainConfig } from '../src/train/trainer.js';

/** A mistake the user can fix: printed without a stack trace (unless --verbose), exit code 2. */
/** The package's version (package.json's), for --version and the files we write. */
export const PACKAGE_VERSION = '0.1.0';

export class UsageError extends Error {
  override name = 'UsageError';
}

export const BUNDLED_FASHION_MNIST = bundledFashionMnistPath;

// ---------------------------------------------------------------------------------------------
// Wording
// ---------------------------------------------------------------------------------------------

/** "1 epoch", "3 epochs", "1 batch", "10 batches". */
export function plural(n: number, singular: string, pluralForm = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : pluralForm}`;
}

/** A fraction as "85.60%"; a figure that does not exist (NaN: top-5 of 5 classes, an empty class) as "n/a". */
export function percent(fraction: number): string {
  return Number.isNaN(fraction) ? 'n/a' : `${(100 * fraction).toFixed(2)}%`;
}

/**
 * The smallest width multiplier that leaves every layer at least one channel: V1 and the
 * baseline have round(32 alpha) stem channels and int(64 alpha) in the first block; V2 rounds
 * every width up to a multiple of 8, so any alpha > 0 works.
 */
export function minimumAlpha(model: string): number {
  return model === 'v2' ? 0 : 1 / 64;
}

export function checkAlpha(model: string, alpha: number): void {
  if (!(alpha >= minimumAlpha(model))) throw new UsageError(`--alpha ${alpha}: MobileNet ${model} needs alpha >= ${minimumAlpha(model)} (below it a layer has no channels)`);
}

// ---------------------------------------------------------------------------------------------
// Flag parsers: errors name the flag and the allowed values.
// ---------------------------------------------------------------------------------------------

/**
 * A number written in decimal notation (`12`, `-0.5`, `.5`, `1e-3`), or NaN. JavaScript's
 * Number() also reads `0x10`, `0b1`, `Infinity` and surrounding spaces; a flag or a file read
 * that way would train with 16 where the user may have meant something else.
 */
export function decimalNumber(text: string): number {
  return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text) ? Number(text) : NaN;
}

export function numberIn(flag: string, min: number, max: number, options: { integer?: boolean; minExclusive?: boolean; maxExclusive?: boolean } = {}) {
  return (value: string): number => {
    const v = decimalNumber(value);
    const okMin = options.minExclusive ? v > min : v >= min;
    const okMax = options.maxExclusive ? v < max : v <= max;
    if (value.trim() === '' || !Number.isFinite(v) || !okMin || !okMax || (options.integer && !Number.isInteger(v))) {
      const range = `${options.minExclusive ? '(' : '['}${min}, ${max === Infinity ? 'inf)' : `${max}${options.maxExclusive ? ')' : ']'}`}`;
      throw new InvalidArgumentError(`${flag} must be ${options.integer ? 'an integer' : 'a number'} in ${range}, got '${value}'.`);
    }
    return v;
  };
}

export function oneOf<T extends string>(flag: string, allowed: readonly T[]) {
  return (value: string): T => {
    if (!(allowed as readonly string[]).includes(value)) throw new InvalidArgumentError(`${flag} must be one of ${allowed.join(', ')}, got '${value}'.`);
    return value as T;
  };
}

export function integerList(flag: string) {
  return (value: string): number[] => {
    const list = value.split(',').map((s) => decimalNumber(s.trim()));
    if (list.some((v) => !Number.isInteger(v) || v < 0)) throw new InvalidArgumentError(`${flag} must be a comma-separated list of integers >= 0, got '${value}'.`);
    return list;
  };
}

/** A comma-separated list of names (spaces inside a name kept), none of them empty. */
export function nameList(flag: string) {
  return (value: string): string[] => {
    const list = value.split(',').map((s) => s.trim());
    if (list.some((s) => s === '')) throw new InvalidArgumentError(`${flag} must be a comma-separated list of class names or indices, got '${value}'.`);
    return list;
  };
}

/** `--model` and `--alpha`, the same for every command that builds a model. */
export function addModelOptions<M extends string>(command: Command, models: readonly M[], defaults: { model: M; alpha: number }, what = ''): Command {
  return command
    .option('--model <name>', `${models.join(' | ')}${what}`, oneOf('--model', models), defaults.model)
    .option('--alpha <a>', 'width multiplier alpha, in (0, 4]', numberIn('--alpha', 0, 4, { minExclusive: true }), defaults.alpha)
    .option('--stem-stride <s>', 'stride of the first convolution: 2 as in the papers, 1 keeps small images\' resolution (4x the mult-adds)', (v: string) => oneOf('--stem-stride', ['1', '2'] as const)(v) === '1' ? 1 : 2, 2)
    .option('--expansion <t>', 'MobileNetV2: expansion factor t of the inverted residual blocks (6 in the paper; below 1 a classic bottleneck), in (0, 16]', numberIn('--expansion', 0, 16, { minExclusive: true }), MOBILENET_V2_EXPANSION);
}

/** `--rho`: the paper's resolution multiplier, resolution = round(rho x the base size). */
export const rhoOption = (base: string) => ['--rho <r>', `resolution multiplier, in (0, 1]: resolution = round(rho x ${base}); excludes --resolution`, numberIn('--rho', 0, 1, { minExclusive: true })] as const;

/** The resolution a run uses: round(rho x base) with --rho, else --resolution; both is a usage error. */
export function resolutionFrom(flags: { rho?: number; resolution: number }, given: (flag: string) => boolean, base: number): number {
  if (flags.rho === undefined) return flags.resolution;
  if (given('resolution')) throw new UsageError('--rho and --resolution exclude each other: --rho scales the base size, --resolution sets the size');
  const resolution = Math.round(flags.rho * base);
  if (resolution < 8) throw new UsageError(`--rho ${flags.rho}: round(${flags.rho} x ${base}) = ${resolution} pixels, below the smallest resolution 8`);
  return resolution;
}

// ---------------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------------

export interface DataChoice {
  data: string;
  dataPath?: string;
  resolution: number;
  seed: number;
  onWarning: (message: string) => void;
  /** Keep only these classes (names or indices), relabelled in this order; null or absent: all. */
  classes?: readonly string[] | null;
}

/** Split a dataset into train / validation by a seeded permutation (for folders without val/). */
function splitDataset(ds: ImageDataset, valFraction: number, seed: number): { train: ImageDataset; val: ImageDataset } {
  const order = new Rng(seed).permutation(ds.count);
  const nVal = Math.max(1, Math.round(ds.count * valFraction));
  return { val: pickImages(ds, order.subarray(0, nVal), `${ds.name}-val`), train: pickImages(ds, order.subarray(nVal)) };
}

/**
 * The data of a run: `val` chooses the best epoch (and drives early stopping and plateau
 * schedules); `test`, when there is one apart from it, is evaluated once at the end. `valName`
 * says what `val` is: 'test' when the test split doubles as validation (no --val-split), else
 * 'val'.
 */
export interface RunData {
  train: ImageDataset;
  val: ImageDataset;
  test: ImageDataset | null;
  valName: 'val' | 'test';
}

/**
 * `loadData`, then with `valSplit` > 0 a seeded fraction of the training images held out for
 * validation, then with `perClass` > 0 at most that many training images per class (seeded).
 */
export async function loadRunData(choice: DataChoice, valSplit: number, perClass = 0): Promise<RunData> {
  const loaded = await loadData(choice);
  const fewer = (train: ImageDataset) => (perClass > 0 ? takePerClass(train, perClass, choice.seed) : train);
  // An image folder without val/ or test/ already holds out 10% for validation, and has no test split.
  const heldOut = loaded.val.name.endsWith('-val');
  if (valSplit <= 0) return { train: fewer(loaded.train), val: loaded.val, test: null, valName: heldOut ? 'val' : 'test' };
  const split = splitDataset(loaded.train, valSplit, choice.seed);
  return { train: fewer(split.train), val: split.val, test: heldOut ? null : loaded.val, valName: 'val' };
}

/**
 * `fashion-mnist` (default path: the subset bundled in the repo), `mnist` and `cifar10` (need
 * --data-path), or a folder: with train/ and val/ (or test/) subfolders of class folders, or
 * class folders directly (then 10% is held out for validation, chosen with the seed). With
 * `classes`, only those classes, in that order.
 */
export async function loadData(choice: DataChoice): Promise<{ train: ImageDataset; val: ImageDataset }> {
  const loaded = await loadAllClasses(choice);
  const classes = choice.classes;
  if (!classes || classes.length === 0) return loaded;
  return { train: selectClasses(loaded.train, classes, '--classes'), val: selectClasses(loaded.val, classes, '--classes') };
}

async function loadAllClasses(choice: DataChoice): Promise<{ train: ImageDataset; val: ImageDataset }> {
  const { data } = choice;
  if (data === 'mnist') {
    // The bundled images are Fashion-MNIST: MNIST's digits must come from a folder of the user's.
    if (!choice.dataPath) throw new UsageError('--data mnist needs --data-path DIR: a folder with the four MNIST files (train-images-idx3-ubyte[.gz], ...); the bundled data is Fashion-MNIST');
    return { train: loadIdxDataset(choice.dataPath, 'train', data, MNIST_CLASSES), val: loadIdxDataset(choice.dataPath, 'test', data, MNIST_CLASSES) };
  }
  if (data === 'fashion-mnist') {
    const dir = choice.dataPath ?? BUNDLED_FASHION_MNIST();
    return { train: loadIdxDataset(dir, 'train', data), val: loadIdxDataset(dir, 'test', data) };
  }
  if (data === 'cifar10') {
    if (!choice.dataPath) throw new UsageError('--data cifar10 needs --data-path DIR: a folder with data_batch_1.bin ... data_batch_5.bin and test_batch.bin (the "CIFAR-10 binary version")');
    return { train: loadCifar10(choice.dataPath, 'train'), val: loadCifar10(choice.dataPath, 'test') };
  }
  const root = resolve(choice.dataPath ?? data);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new UsageError(`--data ${data}: no such folder (use fashion-mnist, mnist, cifar10, or a folder of class subfolders of images)`);
  }
  const folder = { size: choice.resolution, channels: 3 as const, onCorrupt: 'skip' as const, onWarning: choice.onWarning };
  const sub = readdirSync(root);
  const valName = ['val', 'test'].find((n) => sub.includes(n));
  if (sub.includes('train') && valName) {
    return { train: await loadImageFolder(join(root, 'train'), folder), val: await loadImageFolder(join(root, valName), folder) };
  }
  return splitDataset(await loadImageFolder(root, folder), 0.1, choice.seed);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints as a model to run
// ---------------------------------------------------------------------------------------------

export interface LoadedModel {
  model: ImageClassifier;
  config: TrainConfig;
  classNames: string[];
  channels: number;
  normalization: Normalization;
  datasetName: string;
}

/** A model in eval mode from a checkpoint (`last.safetensors`, `best.safetensors`, or a run folder). */
export function loadModelFromCheckpoint(path: string): LoadedModel {
  let file = path;
  if (existsSync(path) && statSync(path).isDirectory()) {
    file = ['best.safetensors', 'last.safetensors'].map((f) => join(path, f)).find((f) => existsSync(f)) ?? join(path, 'best.safetensors');
  }
  if (!existsSync(file)) throw new UsageError(`checkpoint ${file} not found (give a .safetensors checkpoint or a run folder holding best.safetensors)`);
  // A PyTorch file (torch.save's .pth / .pt) is weights only: read it as `import` does.
  if (/\.(pth|pt)$/i.test(file)) return modelFromWeights(file);
  const ckpt = readCheckpoint(file);
  const config = ckpt.meta.config as TrainConfig;
  const dataset = ckpt.meta.dataset as { name: string; classNames: string[]; channels: number };
  const model = createModel(config.model, { alpha: config.alpha, resolution: config.resolution, numClasses: dataset.classNames.length, inChannels: dataset.channels, dropout: config.dropout, expansion: config.expansion ?? MOBILENET_V2_EXPANSION, stemStride: config.stemStride ?? 2 });
  const dict = new Map<string, Tensor>();
  for (const [k, v] of ckpt.model) dict.set(k, new Tensor(v.data, v.shape));
  model.loadStateDict(dict);
  model.eval();
  return { model, config, classNames: dataset.classNames, channels: dataset.channels, normalization: ckpt.meta.normalization as Normalization, datasetName: dataset.name };
}
