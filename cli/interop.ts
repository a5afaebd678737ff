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
import { checkAlpha, decimalNumber, loadModelFromCheckpoint, numberIn, oneOf, UsageError } from './common.js';
import { loadWeights, saveWeights } from '../src/nn/interop.js';
import { ARCHITECTURES, createModel, MOBILENET_V2_EXPANSION, type Architecture } from '../src/nn/mobilenet.js';
import { loadSafetensors } from '../src/tensor/safetensors.js';
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
}

export function registerInterop(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('export')
    .description('write a checkpoint\'s weights as PyTorch-named safetensors (torchvision keys for v2), with the model\'s settings in the metadata')
    .argument('<checkpoint>', 'a .safetensors checkpoint or a run folder')
    .argument('<output>', 'the .safetensors file to write (its folder is created)')
    .action((checkpoint: string, output: string) =>
      run(async () => {
        const m = loadModelFromCheckpoint(checkpoint);
        const info = m.model.info;
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
        process.stdout.write(`wrote ${output}: ${m.model.stateDict().size} tensors (MobileNet ${info.architecture}, alpha ${info.alpha}, ${m.channels}x${m.config.resolution}x${m.config.resolution} input, ${m.classNames.length} classes)\n`);
      }),
    );
  program
    .command('import')
    .description('turn PyTorch-named safetensors weights (from `export`, or torchvision\'s converted by scripts/export-torchvision.py) into a checkpoint for eval, predict, step and train --init')
    .argument('<weights>', 'safetensors weights')
    .argument('<output>', 'the checkpoint to write')
    .option('--model <name>', `${ARCHITECTURES.join(' | ')} (default: the file's metadata, else v2)`, oneOf('--model', ARCHITECTURES))
    .option('--alpha <a>', 'width multiplier (default: the file\'s metadata, else 1)', numberIn('--alpha', 0, 4, { minExclusive: true }))
    .option('--resolution <r>', 'input resolution (default: the file\'s metadata, else 224)', numberIn('--resolution', 8, 1024, { integer: true }))
    .option('--num-classes <n>', 'classes (default: read off the classifier\'s weight)', numberIn('--num-classes', 1, 100000, { integer: true }))
    .option('--in-channels <n>', 'input channels (default: read off the stem\'s weight)', numberIn('--in-channels', 1, 64, { integer: true }))
    .option('--class-names <list>', 'comma-separated class names (default: the file\'s metadata, else class0, class1, ...)')
    .action((weights: string, output: string, flags: ImportFlags) => run(async () => importWeights(weights, output, flags)));
}

function importWeights(weights: string, output: string, flags: ImportFlags): void {
  const file = loadSafetensors(weights);
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
  const number = (key: string, fallback: number): number => {
    if (meta[key] === undefined) return fallback;
    const v = decimalNumber(meta[key]);
    if (!Number.isFinite(v)) throw new UsageError(`${weights}: metadata '${key}' is ${JSON.stringify(meta[key])}, expected a decimal number`);
    return v;
  };
  const shapeOf = (key: string) => file.tensors.get(key)?.shape;
  const architecture: Architecture = flags.model ?? ((ARCHITECTURES as readonly string[]).includes(meta.model) ? (meta.model as Architecture) : 'v2');
  const alpha = flags.alpha ?? number('alpha', 1);
  checkAlpha(architecture, alpha);
  const resolution = flags.resolution ?? number('resolution', 224);
  const inChannels = flags.inChannels ?? shapeOf('features.0.0.weight')?.[1] ?? 3;
  const storedNames = json<string[]>('class_names');
  const classNames = flags.classNames ? flags.classNames.split(',') : storedNames ?? Array.from({ length: flags.numClasses ?? shapeOf('classifier.1.weight')?.[0] ?? 1000 }, (_, i) => `class${i}`);
  if (flags.numClasses !== undefined && flags.numClasses !== classNames.length) throw new UsageError(`--num-classes ${flags.numClasses} but ${classNames.length} class names were given`);
  // The normalisation the weights were trained with travels in the metadata; torchvision's
  // weights were trained with ImageNet's (averaged over the colours for a one-channel stem).
  const average = (v: number[]) => [v.reduce((a, b) => a + b, 0) / v.length];
  const normalization = json<Normalization>('normalization') ?? (inChannels === 3 ? IMAGENET : { mean: average(IMAGENET.mean), std: average(IMAGENET.std) });
  if (normalization.mean.length !== inChannels) throw new UsageError(`${weights}: the normalisation has ${normalization.mean.length} channels but the model takes ${inChannels}`);
  const dropout = number('dropout', 0);
  const expansion = number('expansion', MOBILENET_V2_EXPANSION);
  const stemStride = meta.stem_stride === '1' ? 1 : 2;
  const model = createModel(architecture, { alpha, expansion, stemStride, resolution, numClasses: classNames.length, inChannels, dropout });
  loadWeights(model, file);
  // A weights-only checkpoint: the model, the config eval/predict need and the normalisation.
  // It has no optimizer state: it cannot be resumed, but `train --init` starts from it.
  const tensors = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const [k, t] of model.stateDict()) tensors.set(k, { shape: t.shape, data: t.data });
  const config = { ...TRAIN_DEFAULTS, model: architecture, alpha, expansion, stemStride, resolution, dropout };
  const checkpointMeta = {
    config,
    normalization,
    dataset: { name: 'imported', fingerprint: 'none', classNames, channels: inChannels },
    model: model.info,
    source: weights,
  };
  writeFileAtomic(output, serializeCheckpoint({ model: tensors, optimizer: new Map(), meta: checkpointMeta }));
  const normalizationName = json('normalization') ? 'its own normalisation' : 'ImageNet normalisation';
  process.stdout.write(`wrote checkpoint ${output} (MobileNet ${architecture}, alpha ${alpha}, ${inChannels}x${resolution}x${resolution} input, ${classNames.length} classes, ${normalizationName})\n`);
}
