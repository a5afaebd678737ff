// `mobilenet eval`: a checkpoint on a dataset -> loss, top-1, top-5, per-class accuracy,
// confusion matrix (printed as a table and saved as PNG).

import { join } from 'node:path';
import { type Command } from 'commander';
import { numberIn, percent, UsageError } from './common.js';
import { loadModel } from '../src/train/models.js';
import { loadData } from '../src/train/run.js';
import { confusionSvg, writePng } from './plots.js';
import { maxOf } from '../src/tensor/arrays.js';
import { evaluateModel } from '../src/train/evaluate.js';
import { DataLoader } from '../src/train/loader.js';
import { alignClasses } from '../src/train/datasets.js';

interface EvalFlags {
  data?: string;
  dataPath?: string;
  batchSize: number;
  confusion?: string;
  ttaFlip: boolean;
}

export function registerEval(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('eval')
    .description('evaluate a checkpoint on a dataset\'s validation split')
    .argument('<checkpoint>', 'a .safetensors checkpoint or a run folder (uses best.safetensors)')
    .option('--data <name>', 'dataset (default: the one the checkpoint was trained on)')
    .option('--data-path <dir>', 'where the dataset files are')
    .option('-b, --batch-size <n>', 'batch size', numberIn('--batch-size', 1, 65536, { integer: true }), 250)
    .option('--tta-flip', 'test-time augmentation: average the class probabilities of each image and its mirror image (twice the compute)', false)
    .option('--confusion <png>', 'where to write the confusion matrix PNG (default: confusion-eval.png beside the checkpoint)')
    .action((checkpoint: string, flags: EvalFlags) => run(() => evaluate(checkpoint, flags)));
}

async function evaluate(checkpoint: string, flags: EvalFlags): Promise<void> {
  const m = loadModel(checkpoint);
  const known = ['fashion-mnist', 'mnist', 'cifar10'];
  if (flags.data === undefined && !known.includes(m.datasetName)) {
    const builtIn = `--data ${known.join('|')} with --data-path <dir>`;
    // `import` writes 'imported': the weights came without a dataset.
    if (m.datasetName === 'imported') throw new UsageError(`this checkpoint was imported and names no dataset: give --data <folder>, or ${builtIn}`);
    throw new UsageError(`this checkpoint was trained on '${m.datasetName}', an image folder: give --data <folder> to evaluate it (or ${builtIn})`);
  }
  const name = flags.data ?? m.datasetName;
  const warn = (w: string) => process.stderr.write(`warning: ${w}\n`);
  const loaded = await loadData({ data: name, dataPath: flags.dataPath, resolution: m.config.resolution, seed: m.config.seed, onWarning: warn });
  // The data's classes are matched to the model's by name (a folder's are its sorted folder
  // names, in whatever order); a model trained on some of the classes (--classes) is evaluated
  // on those classes.
  // Weights imported without class names carry placeholders (class0, class1, ...; see
  // `import`): those name nothing to match, so their classes are the data's by index.
  const unnamed = m.classNames.every((n, i) => n === `class${i}`);
  const val = unnamed && loaded.val.classNames.length === m.classNames.length ? loaded.val : alignClasses(loaded.val, m.classNames, {
    dropUnknown: (m.config.classes ?? null) !== null,
    onDropped: (names, images) => warn(`leaving out ${images} images of ${names.length} classes the model was not trained on (${names.join(', ')})`),
  });
  if (val !== loaded.val && val.classNames.length !== loaded.val.classNames.length && (m.config.classes ?? null) === null) warn(`${loaded.val.name} has ${loaded.val.classNames.length} of the model's ${m.classNames.length} classes; the others' rows are empty`);
  const loader = new DataLoader(val, { batchSize: flags.batchSize, resolution: m.config.resolution, channels: m.channels, ...m.normalization });
  const started = performance.now();
  const metrics = evaluateModel(m.model, loader, m.classNames.length, { ttaFlip: flags.ttaFlip });
  const seconds = (performance.now() - started) / 1000;
  const out = process.stdout;
  const pct = percent;
  const views = flags.ttaFlip ? ', each averaged with its mirror image' : '';
  out.write(`${val.name}: ${metrics.count} images${views} in ${seconds.toFixed(1)}s (${(metrics.count / seconds).toFixed(0)} img/s)\n`);
  out.write(`loss ${metrics.loss.toFixed(4)}   top-1 ${pct(metrics.top1)}   top-5 ${pct(metrics.top5)}\n\n`);
  const C = m.classNames.length;
  const width = Math.max(12, maxOf(m.classNames.map((n) => n.length)));
  out.write(`${'class'.padEnd(width)}  accuracy   confusion row (predicted: ${m.classNames.map((_, i) => i).join(' ')})\n`);
  const perClass = metrics.perClassAccuracy();
  const cellWidth = Math.max(3, String(maxOf(metrics.confusion)).length);
  for (let k = 0; k < C; k++) {
    const row = Array.from(metrics.confusion.subarray(k * C, (k + 1) * C), (v) => String(v).padStart(cellWidth)).join(' ');
    out.write(`${`${k} ${m.classNames[k]}`.padEnd(width + 2)}${pct(perClass[k]).padStart(8)}   ${row}\n`);
  }
  const matrix = Array.from({ length: C }, (_, k) => Array.from(metrics.confusion.subarray(k * C, (k + 1) * C)));
  const png = flags.confusion ?? join(checkpoint.endsWith('.safetensors') ? join(checkpoint, '..') : checkpoint, 'confusion-eval.png');
  await writePng(confusionSvg(matrix, m.classNames, `Confusion matrix (${val.name}, top-1 ${pct(metrics.top1)})`), png);
  out.write(`\nconfusion matrix: ${png}\n`);
}
