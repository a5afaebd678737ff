// The memory estimate against what a training step really takes: for each configuration, a
// child process runs a few training steps (bench/profile.ts) and reports its peak RSS, beside
// estimateTrainingMemory's figure for the same model and batch (no dataset: profile.ts trains
// on one random batch).
//   node --import tsx/esm bench/memory.ts
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createModel, type Architecture } from '../src/nn/mobilenet.js';
import { estimateTrainingMemory, formatBytes } from '../src/train/memory.js';

const CONFIGS: [Architecture, number, number, number, number][] = [
  // architecture, alpha, resolution, channels, batch
  ['shallow', 0.35, 28, 1, 64],
  ['v1', 0.25, 28, 1, 512],
  ['v1', 1, 224, 1, 8],
  ['v1', 1, 224, 1, 32],
  ['v1', 1, 128, 3, 64],
  ['v2', 1, 96, 3, 16],
  ['v2', 1, 96, 3, 64],
  ['baseline', 0.5, 64, 1, 32],
];

process.stdout.write(`${'model'.padEnd(28)}${'batch'.padStart(6)}${'estimate'.padStart(11)}${'peak RSS'.padStart(11)}${'ratio'.padStart(8)}\n`);
for (const [arch, alpha, res, ch, batch] of CONFIGS) {
  const model = createModel(arch, { alpha, resolution: res, numClasses: 10, inChannels: ch });
  const estimate = estimateTrainingMemory(model, { batchSize: batch, resolution: res, images: 0, optimizer: 'sgd', ema: false });
  const child = spawnSync(process.execPath, [...process.execArgv, join(import.meta.dirname, 'profile.ts'), arch, String(alpha), String(batch), String(res), '10', '1', '3', '1', String(ch)], { encoding: 'utf8' });
  const rss = Number(/rss MB (\d+)/.exec(child.stdout)?.[1] ?? NaN) * 2 ** 20;
  process.stdout.write(`${`${arch} ${alpha} ${ch}x${res}x${res}`.padEnd(28)}${String(batch).padStart(6)}${formatBytes(estimate.peakBytes).padStart(11)}${formatBytes(rss).padStart(11)}${(estimate.peakBytes / rss).toFixed(2).padStart(8)}\n`);
}
