// `mobilenet export` / `mobilenet import`: PyTorch-named safetensors out and in.
//
// An exported file holds the weights under PyTorch's state-dict keys (torchvision's for V2) and,
// in the safetensors `__metadata__`, everything needed to rebuild and feed the model: its
// architecture, alpha, input channels and resolution, class names and input normalisation.
// `import` reads those back, so export -> import gives a checkpoint that evaluates exactly like
// the original. Files without that metadata (torchvision weights converted by
// scripts/export-torchvision.py) get torchvision's conventions: V2, 3 channels, 224x224, ImageNet
// normalisation; the input channels and class count are read off the tensor shapes.

import { type Command } from 'commander';
import { PACKAGE_VERSION, checkAlpha, decimalNumber, loadModelFromCheckpoint, minimumAlpha, numberIn, oneOf, UsageError, type LoadedModel } from './common.js';
import { StateDictError } from '../src/nn/module.js';
import { exportOnnx, ONNX_OPSETS } from '../src/nn/onnx.js';
import { loadWeights, readWeightsFile, saveWeights } from '../src/nn/interop.js';
import { ARCHITECTURES, createModel, makeDivisible, MOBILENET_V1_STEM_CHANNELS, MOBILENET_V2_EXPANSION, SHALLOW_MOBILENET_BLOCKS, type Architecture, type ImageClassifier } from '../src/nn/mobilenet.js';
import type { Normalization } from '../src/train/loader.js';
import { TRAIN_DEFAULTS } from '../src/train/trainer.js';
import { serializeCheckpoint } from '../src/train/checkpoint.js';
import { writeFileAtomic } from '../src/tensor/safetensors.js';

/** torchvision's ImageNet normalisation (its pretrained weights expect it). */
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

interface ImportFlags {
  model?: Architecture;
  alpha?: number;
  resolution?: number;
  numClasses?: number;
  inChannels?: number;
  classNames?: string;
  stemStride?: 1 | 2;
}

export function registerInterop(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('export')
    .description('write a checkpoint for another runtime: .onnx for ONNX Runtime (phones, browsers, servers; BatchNorm folded, normalisation and class names inside), or .safetensors with PyTorch\'s state-dict names (torchvision\'s for v2) and the model\'s settings in the metadata')
    .argument('<checkpoint>', 'a .safetensors checkpoint, a run folder, or a .pth')
    .argument('<output>', 'the file to write, .onnx or .safetensors (its folder is created)')
    .option('--opset <n>', `ONNX opset version, ${ONNX_OPSETS.min} to ${ONNX_OPSETS.max}`, numberIn('--opset', ONNX_OPSETS.min, ONNX_OPSETS.max, { integer: true }), ONNX_OPSETS.default)
    .option('--normalization <where>', 'ONNX only: graph = the model takes pixels in [0, 1] and normalises them itself; metadata = the caller normalises, with the mean and std from the metadata', oneOf('--normalization', ['graph', 'metadata'] as const), 'graph')
    .action((checkpoint: string, output: string, flags: { opset: number; normalization: 'graph' | 'metadata' }) => run(async () => exportModel(checkpoint, output, flags)));
  program
    .command('import')
    .description('turn PyTorch weights (a .pth written by torch.save, e.g. torchvision\'s, or safetensors from `export`) into a checkpoint for eval, predict, step and train --init')
    .argument('<weights>', 'a .pth / .pt file (zip or legacy torch.save; its pickle is read, never run) or a .safetensors file')
    .argument('<output>', 'the checkpoint to write')
    .option('--model <name>', `${ARCHITECTURES.join(' | ')} (default: the file's metadata, else v2)`, oneOf('--model', ARCHITECTURES))
    .option('--alpha <a>', 'width multiplier (default: the file\'s metadata, else 1)', numberIn('--alpha', 0, 4, { minExclusive: true }))
    .option('--resolution <r>', 'input resolution (default: the file\'s metadata, else 224)', numberIn('--resolution', 8, 1024, { integer: true }))
    .option('--num-classes <n>', 'classes (default: read off the classifier\'s weight)', numberIn('--num-classes', 1, 100000, { integer: true }))
    .option('--in-channels <n>', 'input channels (default: read off the stem\'s weight)', numberIn('--in-channels', 1, 64, { integer: true }))
    .option('--stem-stride <s>', 'stride of the first convolution (default: the file\'s metadata, else 2)', (v: string) => (oneOf('--stem-stride', ['1', '2'] as const)(v) === '1' ? 1 : 2))
    .option('--class-names <list>', 'comma-separated class names (default: the file\'s metadata, else class0, class1, ...)')
    .action((weights: string, output: string, flags: ImportFlags) => run(async () => importWeights(weights, output, flags)));
}

/** Standard width multipliers, tried in turn when neither a flag nor the file's metadata gives alpha. */
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

/** The model `import` builds from a weights file, and where its settings came from. */
export interface ImportedModel extends LoadedModel {
  /** Said in the report line: the file's own normalisation or ImageNet's. */
  normalizationName: string;
}

/**
 * A model in eval mode from a weights file: safetensors (ours, or torchvision's converted) or a
 * `.pth` written by `torch.save`. Its settings come from the flags, else the file's metadata,
 * else what the tensors' keys and shapes say (architecture, alpha, expansion, input channels,
 * classes), else torchvision's conventions (224x224, stem stride 2, ImageNet normalisation).
 */
export function modelFromWeights(weights: string, flags: ImportFlags = {}): ImportedModel {
  const file = readWeightsFile(weights);
  const meta = file.metadata;
  const json = <T>(key: string): T | undefined => {
    if (meta[key] === undefined) return undefined;
    try {
      return JSON.parse(meta[key]) as T;
    } catch {
      throw new UsageError(`${weights}: metadata '${key}' is not valid JSON`);
    }
  };
  // Numbers in the metadata are strings; read them as decimals only, naming the key when not.
  const number = (key: string): number | undefined => {
    if (meta[key] === undefined) return undefined;
    const v = decimalNumber(meta[key]);
    if (!Number.isFinite(v)) throw new UsageError(`${weights}: metadata '${key}' is ${JSON.stringify(meta[key])}, expected a decimal number`);
    return v;
  };
  const shapeOf = (key: string) => file.tensors.get(key)?.shape;
  const fromKeys = architectureOfKeys(file.tensors.keys());
  const stored = (ARCHITECTURES as readonly string[]).includes(meta.model) ? (meta.model as Architecture) : undefined;
  const architecture: Architecture = flags.model ?? stored ?? fromKeys ?? 'v2';
  const resolution = flags.resolution ?? number('resolution') ?? 224;
  const inChannels = flags.inChannels ?? shapeOf('features.0.0.weight')?.[1] ?? 3;
  const storedNames = json<string[]>('class_names');
  const classNames = flags.classNames ? flags.classNames.split(',') : storedNames ?? Array.from({ length: flags.numClasses ?? shapeOf('classifier.1.weight')?.[0] ?? 1000 }, (_, i) => `class${i}`);
  if (flags.numClasses !== undefined && flags.numClasses !== classNames.length) throw new UsageError(`--num-classes ${flags.numClasses} but ${classNames.length} class names were given`);
  // The normalisation the weights were trained with travels in the metadata; torchvision's
  // weights were trained with ImageNet's (averaged over the colours for a one-channel stem).
  const average = (v: number[]) => [v.reduce((a, b) => a + b, 0) / v.length];
  const normalization = json<Normalization>('normalization') ?? (inChannels === 3 ? IMAGENET : { mean: average(IMAGENET.mean), std: average(IMAGENET.std) });
  if (normalization.mean.length !== inChannels) throw new UsageError(`${weights}: the normalisation has ${normalization.mean.length} channels but the model takes ${inChannels}`);
  const dropout = number('dropout') ?? 0;
  const stemStride: 1 | 2 = (flags.stemStride ?? (meta.stem_stride === '1' ? 1 : 2)) === 1 ? 1 : 2;
  // V2's expansion t: the first t = 6 block (features.2) expands its input to t x channels.
  const expandShape = shapeOf('features.2.conv.0.0.weight');
  const expansion = number('expansion') ?? (architecture === 'v2' && expandShape && expandShape[2] === 1 ? expandShape[0] / expandShape[1] : MOBILENET_V2_EXPANSION);
  const build = (alpha: number) => createModel(architecture, { alpha, expansion, stemStride, resolution, numClasses: classNames.length, inChannels, dropout });
  // alpha: the flag, the metadata, else the first standard width whose every shape matches.
  let alpha = flags.alpha ?? number('alpha');
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
  checkAlpha(architecture, alpha);
  model ??= build(alpha);
  try {
    loadWeights(model, file);
  } catch (e) {
    if (e instanceof StateDictError) throw new StateDictError(`${weights}: ${e.message}`);
    throw e;
  }
  model.eval();
  const config = { ...TRAIN_DEFAULTS, model: architecture, alpha, expansion, stemStride, resolution, dropout };
  return {
    model,
    config,
    classNames,
    channels: inChannels,
    normalization,
    datasetName: 'imported',
    normalizationName: json('normalization') ? 'its own normalisation' : 'ImageNet normalisation',
  };
}

function exportModel(checkpoint: string, output: string, flags: { opset: number; normalization: 'graph' | 'metadata' }): void {
  const format = /\.onnx$/i.test(output) ? 'onnx' : /\.safetensors$/i.test(output) ? 'safetensors' : null;
  if (format === null) throw new UsageError(`${output}: the format is chosen by the extension, .onnx or .safetensors`);
  const m = loadModelFromCheckpoint(checkpoint);
  const info = m.model.info;
  const shape = `MobileNet ${info.architecture}, alpha ${info.alpha}, ${m.channels}x${m.config.resolution}x${m.config.resolution} input, ${m.classNames.length} classes`;
  if (format === 'onnx') {
    const bytes = exportOnnx(m.model, { opset: flags.opset, normalization: m.normalization, normalizationInGraph: flags.normalization === 'graph', classNames: m.classNames, producerVersion: PACKAGE_VERSION });
    writeFileAtomic(output, bytes);
    const input = flags.normalization === 'graph' ? 'takes pixels in [0, 1]' : 'takes normalised pixels (mean and std in its metadata)';
    process.stdout.write(`wrote ${output}: ONNX opset ${flags.opset}, ${(bytes.length / 1e6).toFixed(1)} MB (${shape}; ${input}, input "input", output "logits")\n`);
    return;
  }
  saveWeights(m.model, output, {
    model: info.architecture,
    alpha: String(info.alpha),
    num_classes: String(m.classNames.length),
    in_channels: String(m.channels),
    resolution: String(m.config.resolution),
    dropout: String(info.dropout),
    expansion: String(info.expansion ?? MOBILENET_V2_EXPANSION),
    stem_stride: String(info.stemStride ?? 2),
    class_names: JSON.stringify(m.classNames),
    normalization: JSON.stringify(m.normalization),
  });
  process.stdout.write(`wrote ${output}: ${m.model.stateDict().size} tensors (${shape})\n`);
}

function importWeights(weights: string, output: string, flags: ImportFlags): void {
  const { model, config, classNames, channels, normalization, normalizationName } = modelFromWeights(weights, flags);
  // A weights-only checkpoint: the model, the config eval/predict need and the normalisation.
  // It has no optimizer state: it cannot be resumed, but `train --init` starts from it.
  const tensors = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const [k, t] of model.stateDict()) tensors.set(k, { shape: t.shape, data: t.data });
  const checkpointMeta = {
    config,
    normalization,
    dataset: { name: 'imported', fingerprint: 'none', classNames, channels },
    model: model.info,
    source: weights,
  };
  writeFileAtomic(output, serializeCheckpoint({ model: tensors, optimizer: new Map(), meta: checkpointMeta }));
  process.stdout.write(`wrote checkpoint ${output} (MobileNet ${config.model}, alpha ${config.alpha}, ${channels}x${config.resolution}x${config.resolution} input, ${classNames.length} classes, ${normalizationName})\n`);
}
