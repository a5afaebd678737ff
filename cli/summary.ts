// `mobilenet summary`: the per-layer cost table, and the paper's comparison with the
// full-convolution baseline (Tables 2 and 4).

import { type Command } from 'commander';
import { MAX_RESOLUTION } from './limits.js';
import { addModelOptions, checkAlpha, numberIn, resolutionFrom, rhoOption } from './common.js';
import { formatCostTable, layerCosts } from '../src/nn/cost.js';
import { ARCHITECTURES, createModel, MOBILENET_V2_EXPANSION, type Architecture } from '../src/nn/mobilenet.js';

interface SummaryFlags {
  model: Architecture;
  alpha: number;
  resolution: number;
  rho?: number;
  expansion: number;
  numClasses: number;
  inChannels: number;
  compareBaseline: boolean;
}

export function registerSummary(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program.command('summary').description('per-layer output shapes, parameters and mult-adds, as in the paper\'s tables');
  addModelOptions(command, ARCHITECTURES, { model: 'v1', alpha: 1 })
    .option('--resolution <r>', 'input resolution', numberIn('--resolution', 8, MAX_RESOLUTION, { integer: true }), 224)
    .option(...rhoOption('224'))
    .option('--num-classes <n>', 'classes', numberIn('--num-classes', 1, 100000, { integer: true }), 1000)
    .option('--in-channels <n>', 'input channels', numberIn('--in-channels', 1, 64, { integer: true }), 3)
    .option('--compare-baseline', 'compare depthwise separable (V1) with the full-convolution baseline (Table 4)', false)
    .action((flags: SummaryFlags, cmd: Command) => run(async () => summary({ ...flags, resolution: resolutionFrom(flags, (name) => cmd.getOptionValueSource(name) === 'cli', 224) })));
}

function summary(f: SummaryFlags): void {
  checkAlpha(f.model, f.alpha);
  const out = process.stdout;
  const opts = { alpha: f.alpha, expansion: f.expansion, numClasses: f.numClasses, inChannels: f.inChannels, resolution: f.resolution };
  const shape = [1, f.inChannels, f.resolution, f.resolution];
  if (!f.compareBaseline) {
    const expansion = f.model === 'v2' && f.expansion !== MOBILENET_V2_EXPANSION ? `, expansion ${f.expansion}` : '';
    out.write(`MobileNet ${f.model}, alpha ${f.alpha}${expansion}, ${f.resolution}x${f.resolution}, ${f.numClasses} classes\n\n`);
    out.write(formatCostTable(layerCosts(createModel(f.model, opts), shape)) + '\n');
    return;
  }
  const mobile = layerCosts(createModel('v1', opts), shape);
  const full = layerCosts(createModel('baseline', opts), shape);
  const M = (n: number) => `${(n / 1e6).toFixed(1)}M`;
  out.write(`Depthwise separable vs full convolutions (paper Table 4), alpha ${f.alpha}, ${f.resolution}x${f.resolution}:\n\n`);
  out.write(`${'model'.padEnd(28)}${'mult-adds'.padStart(12)}${'parameters'.padStart(14)}\n`);
  out.write(`${'Conv MobileNet (baseline)'.padEnd(28)}${M(full.totalMultAdds).padStart(12)}${M(full.totalParams).padStart(14)}\n`);
  out.write(`${'MobileNet (V1)'.padEnd(28)}${M(mobile.totalMultAdds).padStart(12)}${M(mobile.totalParams).padStart(14)}\n`);
  out.write(`${'ratio'.padEnd(28)}${`${(full.totalMultAdds / mobile.totalMultAdds).toFixed(1)}x`.padStart(12)}${`${(full.totalParams / mobile.totalParams).toFixed(1)}x`.padStart(14)}\n\n`);
  out.write('MobileNet V1 by layer type (paper Table 2):\n');
  for (const b of mobile.breakdown) out.write(`  ${b.kind.padEnd(14)} ${(100 * b.multAddsShare).toFixed(2).padStart(7)}% of mult-adds  ${(100 * b.paramsShare).toFixed(2).padStart(7)}% of parameters\n`);
}
