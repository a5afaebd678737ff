// `mobilenet summary`: the per-layer cost table, and the paper's comparison with the
// full-convolution baseline (Tables 2 and 4).

import { type Command } from 'commander';
import { numberIn, UsageError } from './common.js';
import { addRunOptions } from './options.js';
import { checkAlphaFor, resolutionOf } from '../src/train/options.js';
import { formatCostTable, layerCosts, type CostReport } from '../src/nn/cost.js';
import { maxOf } from '../src/tensor/arrays.js';
import { ARCHITECTURES, createModel, MOBILENET_V2_EXPANSION, type Architecture } from '../src/nn/mobilenet.js';

interface SummaryFlags {
  model: Architecture;
  alpha: number;
  resolution: number;
  rho?: number;
  expansion: number;
  stemStride: 1 | 2;
  numClasses: number;
  inChannels: number;
  compareBaseline: boolean;
  explain: boolean;
}

export function registerSummary(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program.command('summary').description('per-layer output shapes, parameters and mult-adds, as in the paper\'s tables');
  addRunOptions(command, ['model', 'alpha', 'stemStride', 'expansion', 'resolution', 'rho'], { model: { default: 'v1', help: '' }, alpha: { default: 1 }, resolution: { default: 224, help: 'input resolution' }, rho: { help: 'resolution multiplier: resolution = round(rho x 224); excludes --resolution' } })
    .option('--num-classes <n>', 'classes', numberIn('--num-classes', 1, 100000, { integer: true }), 1000)
    .option('--in-channels <n>', 'input channels', numberIn('--in-channels', 1, 64, { integer: true }), 3)
    .option('--explain', 'for each depthwise separable block (V1, shallow): the cost of the standard convolution it replaces and the ratio 1/N + 1/Dk^2 (paper section 3.1)', false)
    .option('--compare-baseline', 'compare depthwise separable (V1) with the full-convolution baseline (Table 4)', false)
    .action((flags: SummaryFlags, cmd: Command) => run(async () => summary({ ...flags, resolution: resolutionOf(flags.rho, flags.resolution, 224, cmd.getOptionValueSource('resolution') === 'cli') })));
}

function summary(f: SummaryFlags): void {
  checkAlphaFor(f.model, f.alpha);
  const out = process.stdout;
  const opts = { alpha: f.alpha, expansion: f.expansion, stemStride: f.stemStride, numClasses: f.numClasses, inChannels: f.inChannels, resolution: f.resolution };
  const shape = [1, f.inChannels, f.resolution, f.resolution];
  if (f.explain) {
    explainSeparable(layerCosts(createModel(f.model, opts), shape), out);
    return;
  }
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

/**
 * The paper's section 3.1, layer by layer: a depthwise separable block (depthwise Dk x Dk on M
 * channels, then pointwise M -> N, on a Df x Df output) costs Dk^2 M Df^2 + M N Df^2
 * multiply-adds; the standard Dk x Dk convolution it replaces costs Dk^2 M N Df^2; the ratio is
 * 1/N + 1/Dk^2. Read off the model's own layers (the `dw` / `pw` pairs), so the figures are
 * the cost model's.
 */
function explainSeparable(report: CostReport, out: NodeJS.WritableStream): void {
  const blocks = report.layers.filter((l) => l.name.endsWith('.dw')).map((dw) => ({ dw, pw: report.layers.find((l) => l.name === dw.name.replace(/\.dw$/, '.pw'))! }));
  if (blocks.length === 0) throw new UsageError('--explain: this model has no depthwise separable blocks (use --model v1 or shallow)');
  const header = ['block', 'Dk', 'M', 'N', 'Df', 'standard Dk^2 M N Df^2', 'separable Dk^2 M Df^2 + M N Df^2', 'ratio', '1/N + 1/Dk^2'];
  const rows: string[][] = [];
  let standardTotal = 0, separableTotal = 0;
  for (const { dw, pw } of blocks) {
    const [, M, Df] = dw.outputShape, N = pw.outputShape[1];
    const Dk = Math.round(Math.sqrt(dw.params / M));
    const standard = Dk * Dk * M * N * Df * Df;
    const separable = dw.multAdds + pw.multAdds;
    standardTotal += standard;
    separableTotal += separable;
    rows.push([dw.name.replace(/\.dw$/, ''), String(Dk), String(M), String(N), String(Df), standard.toLocaleString('en-US'), `${dw.multAdds.toLocaleString('en-US')} + ${pw.multAdds.toLocaleString('en-US')}`, (separable / standard).toFixed(4), (1 / N + 1 / (Dk * Dk)).toFixed(4)]);
  }
  rows.push(['total', '', '', '', '', standardTotal.toLocaleString('en-US'), separableTotal.toLocaleString('en-US'), (separableTotal / standardTotal).toFixed(4), `${(standardTotal / separableTotal).toFixed(1)}x fewer`]);
  const widths = header.map((h, i) => Math.max(h.length, maxOf(rows.map((r) => r[i].length))));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  out.write('Depthwise separable blocks against the standard convolutions they replace (paper section 3.1):\n\n');
  out.write([line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n');
}
