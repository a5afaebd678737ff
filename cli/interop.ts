// `mobilenet export` / `mobilenet import`: torchvision-named safetensors out and in.

import { type Command } from 'commander';
import { loadModelFromCheckpoint, numberIn, oneOf } from './common.js';
import { loadWeights, saveWeights } from '../src/nn/interop.js';
import { createModel } from '../src/nn/mobilenet.js';
import { TRAIN_DEFAULTS } from '../src/train/trainer.js';
import { serializeCheckpoint } from '../src/train/checkpoint.js';
import { writeFileAtomic } from '../src/tensor/safetensors.js';

export function registerInterop(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('export')
    .description('write a checkpoint\'s weights as PyTorch-named safetensors (torchvision keys for v2)')
    .argument('<checkpoint>', 'a .safetensors checkpoint or a run folder')
    .argument('<output>', 'the .safetensors file to write')
    .action((checkpoint: string, output: string) =>
      run(async () => {
        const m = loadModelFromCheckpoint(checkpoint);
        saveWeights(m.model, output, { model: m.config.model, alpha: String(m.config.alpha), num_classes: String(m.classNames.length) });
        process.stdout.write(`wrote ${output}: ${m.model.stateDict().size} tensors (MobileNet ${m.config.model}, alpha ${m.config.alpha}, ${m.classNames.length} classes)\n`);
      }),
    );
  program
    .command('import')
    .description('turn PyTorch-named safetensors weights (e.g. torchvision mobilenet_v2, converted by scripts/export-torchvision.py) into a checkpoint for eval and predict')
    .argument('<weights>', 'safetensors weights')
    .argument('<output>', 'the checkpoint to write')
    .option('--model <name>', 'v1 | v2 | baseline', oneOf('--model', ['v1', 'v2', 'baseline'] as const), 'v2')
    .option('--alpha <a>', 'width multiplier', numberIn('--alpha', 0, 4, { minExclusive: true }), 1)
    .option('--resolution <r>', 'input resolution', numberIn('--resolution', 8, 1024, { integer: true }), 224)
    .option('--num-classes <n>', 'classes', numberIn('--num-classes', 1, 100000, { integer: true }), 1000)
    .option('--class-names <list>', 'comma-separated class names (default: class0, class1, ...)')
    .action((weights: string, output: string, f: { model: 'v1' | 'v2' | 'baseline'; alpha: number; resolution: number; numClasses: number; classNames?: string }) =>
      run(async () => {
        const classNames = f.classNames ? f.classNames.split(',') : Array.from({ length: f.numClasses }, (_, i) => `class${i}`);
        const model = createModel(f.model, { alpha: f.alpha, numClasses: classNames.length });
        loadWeights(model, weights);
        // A weights-only checkpoint: the model, the config eval/predict need, and ImageNet's
        // normalisation (torchvision's). It has no optimizer state, so it cannot be resumed.
        const model2 = new Map<string, { shape: readonly number[]; data: Float32Array }>();
        for (const [k, t] of model.stateDict()) model2.set(k, { shape: t.shape, data: t.data });
        const config = { ...TRAIN_DEFAULTS, model: f.model, alpha: f.alpha, resolution: f.resolution, dropout: model.info.dropout };
        const meta = {
          config,
          normalization: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
          dataset: { name: 'imported', fingerprint: 'none', classNames, channels: 3 },
          model: model.info,
          source: weights,
        };
        writeFileAtomic(output, serializeCheckpoint({ model: model2, optimizer: new Map(), meta }));
        process.stdout.write(`wrote checkpoint ${output} (MobileNet ${f.model}, alpha ${f.alpha}, ${classNames.length} classes, ImageNet normalisation)\n`);
      }),
    );
}
