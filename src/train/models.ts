// Models from files: checkpoints, run folders and weights files (ours, torchvision's, a .pth),
// each built with `modelFromSpec` (options.ts) from the settings the file gives.

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { StateDictError } from '../nn/module.js';
import { loadWeights, readWeightsFile } from '../nn/interop.js';
import { ARCHITECTURES, makeDivisible, MOBILENET_V1_STEM_CHANNELS, MOBILENET_V2_EXPANSION, SHALLOW_MOBILENET_BLOCKS, type Architecture, type ImageClassifier } from '../nn/mobilenet.js';
import { Tensor } from '../tensor/tensor.js';
import { BEST_CHECKPOINT, LAST_CHECKPOINT, readCheckpoint } from './checkpoint.js';
import { CheckpointError } from './metadata.js';
import type { Normalization } from './loader.js';
import { checkAlphaFor, ConfigError, decimalNumber, minimumAlpha, modelFromSpec, trainConfig, type TrainConfig } from './options.js';

/** A model read from a file, in eval mode, with what it needs to be fed. */
export interface LoadedModel {
  model: ImageClassifier;
  /** The run's settings (for imported weights: the defaults with the model's own). */
  config: TrainConfig;
  classNames: string[];
  channels: number;
  normalization: Normalization;
  datasetName: string;
  /** Where the normalisation came from, for a report line ("its own normalisation", "ImageNet normalisation"). */
  normalizationName: string;
}

/**
 * A model in eval mode from a checkpoint (`best.safetensors`, `last.safetensors`, or a run
 * folder holding one), or from a PyTorch `.pth` (read as `modelFromWeights` reads it).
 */
export function loadModel(path: string): LoadedModel {
  let file = path;
  if (existsSync(path) && statSync(path).isDirectory()) {
    file = [BEST_CHECKPOINT, LAST_CHECKPOINT].map((f) => join(path, f)).find((f) => existsSync(f)) ?? join(path, BEST_CHECKPOINT);
  }
  if (!existsSync(file)) throw new CheckpointError(`checkpoint ${file} not found (give a .safetensors checkpoint or a run folder holding best.safetensors)`);
  // A PyTorch file (torch.save's .pth / .pt) is weights only: read it as `import` does.
  if (/\.(pth|pt)$/i.test(file)) return modelFromWeights(file);
  const { meta, model: tensors } = readCheckpoint(file);
  if (meta.model.architecture === 'custom') throw new CheckpointError(`${file}: holds a model built in code (${meta.model.typeName}), not a MobileNet: rebuild it and load the weights with loadStateDict`);
  // Seed 0: the weights are the checkpoint's; the seed only starts the model's dropout stream.
  const model = modelFromSpec({ ...meta.config, seed: 0 }, { numClasses: meta.dataset.classNames.length, inChannels: meta.dataset.channels });
  const dict = new Map<string, Tensor>();
  for (const [k, v] of tensors) dict.set(k, new Tensor(v.data, v.shape));
  model.loadStateDict(dict);
  model.eval();
  return { model, config: meta.config, classNames: meta.dataset.classNames, channels: meta.dataset.channels, normalization: meta.normalization, datasetName: meta.dataset.name, normalizationName: 'its own normalisation' };
}

/** torchvision's ImageNet normalisation (its pretrained weights expect it). */
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/** Settings of a weights file that neither its metadata nor its tensors give (`mobilenet import`'s flags). */
export interface WeightsOptions {
  model?: Architecture;
  alpha?: number;
  resolution?: number;
  numClasses?: number;
  inChannels?: number;
  classNames?: string[];
  stemStride?: 1 | 2;
}

/** Standard width multipliers, tried in turn when neither an option nor the file's metadata gives alpha. */
const KNOWN_ALPHAS = [1, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4, 1.5, 2];

/**
 * The architecture a state dict's keys belong to: V2's blocks are `features.N.conv.*`
 * (torchvision's), V1's and the shallow net's `features.N.dw.*` (13 and 8 blocks), the
 * baseline's plain `features.N.0.*` convolutions.
 */
function architectureOfKeys(keys: Iterable<string>): Architecture | undefined {
  const list = [...keys];
  if (list.some((k) => /^features\.\d+\.conv\./.test(k))) return 'v2';
  const separable = new Set(list.filter((k) => /^features\.\d+\.dw\.weight$/.test(k)));
  if (separable.size > 0) return separable.size === SHALLOW_MOBILENET_BLOCKS.length ? 'shallow' : 'v1';
  if (list.some((k) => /^features\.1\.0\.weight$/.test(k))) return 'baseline';
  return undefined;
}

/**
 * A model in eval mode from a weights file: safetensors (ours from `export`, or torchvision's
 * converted) or a `.pth` written by `torch.save`. Its settings come from `options`, else the
 * file's metadata, else what the tensors' keys and shapes say (architecture, alpha, expansion,
 * input channels, classes), else torchvision's conventions (224x224, stem stride 2, ImageNet
 * normalisation).
 */
export function modelFromWeights(weights: string, options: WeightsOptions = {}): LoadedModel {
  const file = readWeightsFile(weights);
  const meta = file.metadata;
  const json = <T>(key: string): T | undefined => {
    if (meta[key] === undefined) return undefined;
    try {
      return JSON.parse(meta[key]) as T;
    } catch {
      throw new CheckpointError(`${weights}: metadata '${key}' is not valid JSON`);
    }
  };
  // Numbers in the metadata are strings; read them as decimals only, naming the key when not.
  const number = (key: string): number | undefined => {
    if (meta[key] === undefined) return undefined;
    const v = decimalNumber(meta[key]);
    if (!Number.isFinite(v)) throw new CheckpointError(`${weights}: metadata '${key}' is ${JSON.stringify(meta[key])}, expected a decimal number`);
    return v;
  };
  const shapeOf = (key: string) => file.tensors.get(key)?.shape;
  const stored = (ARCHITECTURES as readonly string[]).includes(meta.model) ? (meta.model as Architecture) : undefined;
  const architecture: Architecture = options.model ?? stored ?? architectureOfKeys(file.tensors.keys()) ?? 'v2';
  const resolution = options.resolution ?? number('resolution') ?? 224;
  const inChannels = options.inChannels ?? shapeOf('features.0.0.weight')?.[1] ?? 3;
  const classNames = options.classNames ?? json<string[]>('class_names') ?? Array.from({ length: options.numClasses ?? shapeOf('classifier.1.weight')?.[0] ?? 1000 }, (_, i) => `class${i}`);
  if (options.numClasses !== undefined && options.numClasses !== classNames.length) throw new RangeError(`numClasses is ${options.numClasses} but ${classNames.length} class names were given`);
  // The normalisation the weights were trained with travels in the metadata; torchvision's
  // weights were trained with ImageNet's (averaged over the colours for a one-channel stem).
  const average = (v: number[]) => [v.reduce((a, b) => a + b, 0) / v.length];
  const normalization = json<Normalization>('normalization') ?? (inChannels === 3 ? IMAGENET : { mean: average(IMAGENET.mean), std: average(IMAGENET.std) });
  if (normalization.mean.length !== inChannels) throw new CheckpointError(`${weights}: the normalisation has ${normalization.mean.length} channels but the model takes ${inChannels}`);
  const dropout = number('dropout') ?? 0;
  const stemStride: 1 | 2 = (options.stemStride ?? (meta.stem_stride === '1' ? 1 : 2)) === 1 ? 1 : 2;
  // V2's expansion t: the first t = 6 block (features.2) expands its input to t x channels.
  const expandShape = shapeOf('features.2.conv.0.0.weight');
  const expansion = number('expansion') ?? (architecture === 'v2' && expandShape && expandShape[2] === 1 ? expandShape[0] / expandShape[1] : MOBILENET_V2_EXPANSION);
  const specOf = (alpha: number) => trainConfig({ model: architecture, alpha, expansion, stemStride, resolution, dropout });
  const build = (alpha: number) => modelFromSpec(specOf(alpha), { numClasses: classNames.length, inChannels });
  // alpha: the option, the metadata, else the first standard width whose every shape matches.
  let alpha = options.alpha ?? number('alpha');
  let model: ImageClassifier | undefined;
  if (alpha === undefined) {
    const stem = shapeOf('features.0.0.weight')?.[0];
    // The stem's width rules out most guesses before a model is built: makeDivisible(32 alpha)
    // channels in V2, round(32 alpha) in the others.
    const stemOf = (a: number) => (architecture === 'v2' ? makeDivisible(32 * a) : Math.round(MOBILENET_V1_STEM_CHANNELS * a));
    const guesses = [...new Set([...KNOWN_ALPHAS, ...(stem ? [stem / MOBILENET_V1_STEM_CHANNELS] : [])])].filter((a) => a >= minimumAlpha(architecture) && (stem === undefined || stemOf(a) === stem));
    const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
    for (const guess of guesses) {
      const candidate = build(guess);
      if ([...candidate.stateDict()].every(([k, t]) => { const s = shapeOf(k); return s !== undefined && numel(s) === t.numel; })) {
        alpha = guess;
        model = candidate;
        break;
      }
    }
    alpha ??= 1;
  }
  checkAlphaFor(architecture, alpha);
  model ??= build(alpha);
  try {
    loadWeights(model, file);
  } catch (e) {
    if (e instanceof StateDictError) throw new StateDictError(`${weights}: ${e.message}`);
    throw e;
  }
  model.eval();
  return { model, config: specOf(alpha), classNames, channels: inChannels, normalization, datasetName: 'imported', normalizationName: json('normalization') ? 'its own normalisation' : 'ImageNet normalisation' };
}

/** `init`'s settings against the ones a run gives: the model and alpha must be the weights'. */
export function checkInitFits(init: string, start: LoadedModel, config: TrainConfig): void {
  if (start.config.model !== config.model || start.config.alpha !== config.alpha) {
    throw ConfigError.fromWords([{ option: 'init' }, ` ${init}: the checkpoint holds MobileNet ${start.config.model} alpha ${start.config.alpha}, this run builds ${config.model} alpha ${config.alpha} (leave out `, { option: 'model' }, ' and ', { option: 'alpha' }, " to use the checkpoint's)"], init);
  }
}
