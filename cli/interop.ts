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
import { PACKAGE_VERSION, numberIn, oneOf, UsageError } from './common.js';
import { exportOnnx, ONNX_OPSETS } from '../src/nn/onnx.js';
import { saveWeights } from '../src/nn/interop.js';
import { MOBILENET_V2_EXPANSION, type Architecture } from '../src/nn/mobilenet.js';
import { serializeCheckpoint } from '../src/train/checkpoint.js';
import { loadModel, modelFromWeights } from '../src/train/models.js';
import { addRunOptions } from './options.js';
import { writeFileAtomic } from '../src/tensor/safetensors.js';

/** `import`'s flags: what the file's metadata and tensors do not say. */
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
  const command = program
    .command('import')
    .description('turn PyTorch weights (a .pth written by torch.save, e.g. torchvision\'s, or safetensors from `export`) into a checkpoint for eval, predict, step and train --init')
    .argument('<weights>', 'a .pth / .pt file (zip or legacy torch.save; its pickle is read, never run) or a .safetensors file')
    .argument('<output>', 'the checkpoint to write');
  // train's flags; what is not given comes from the file.
  addRunOptions(command, ['model', 'alpha', 'resolution'], {
    model: { default: undefined, help: "(default: the file's metadata, else v2)" },
    alpha: { default: undefined, help: "width multiplier (default: the file's metadata, else 1)" },
    resolution: { default: undefined, help: "input resolution (default: the file's metadata, else 224)" },
  });
  command
    .option('--num-classes <n>', 'classes (default: read off the classifier\'s weight)', numberIn('--num-classes', 1, 100000, { integer: true }))
    .option('--in-channels <n>', 'input channels (default: read off the stem\'s weight)', numberIn('--in-channels', 1, 64, { integer: true }));
  addRunOptions(command, ['stemStride'], { stemStride: { default: undefined, help: "stride of the first convolution (default: the file's metadata, else 2)" } });
  command
    .option('--class-names <list>', 'comma-separated class names (default: the file\'s metadata, else class0, class1, ...)')
    .action((weights: string, output: string, flags: ImportFlags) => run(async () => importWeights(weights, output, flags)));
}

function exportModel(checkpoint: string, output: string, flags: { opset: number; normalization: 'graph' | 'metadata' }): void {
  const format = /\.onnx$/i.test(output) ? 'onnx' : /\.safetensors$/i.test(output) ? 'safetensors' : null;
  if (format === null) throw new UsageError(`${output}: the format is chosen by the extension, .onnx or .safetensors`);
  const m = loadModel(checkpoint);
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
  const { model, config, classNames, channels, normalization, normalizationName } = modelFromWeights(weights, { ...flags, classNames: flags.classNames?.split(',') });
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
