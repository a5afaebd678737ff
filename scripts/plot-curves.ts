// Test top-1 against wall time, for runs of `mobilenet train` (their metrics.csv) and of
// scripts/train-torch.py (its --csv file), on one plot:
//
//   node --import tsx/esm scripts/plot-curves.ts OUT.png LABEL=FILE [LABEL=FILE ...]
//
// FILE is a run folder or metrics.csv (seconds per epoch, summed here; top-1 as a fraction; the
// test column, else the validation one) or a train-torch.py CSV (seconds from the start; top-1 in
// percent). It prints each curve's last point and the time each first reached the best top-1
// that every curve reaches.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { lineChartSvg, writePng, type Series } from '../cli/plots.js';

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd'];

function fail(message: string): never {
  process.stderr.write(`plot-curves: error: ${message}\n`);
  process.exit(2);
}

/** [minutes from the start, test top-1 in percent] after each epoch. */
function readCurve(file: string): [number, number][] {
  const path = existsSync(file) && statSync(file).isDirectory() ? join(file, 'metrics.csv') : file;
  if (!existsSync(path)) fail(`${path}: no such file (expected a run folder, its metrics.csv or a train-torch.py --csv file)`);
  const [header, ...lines] = readFileSync(path, 'utf8').trim().split(/\r?\n/);
  const columns = header.split(',');
  // A metrics.csv has an lr column (and test_top1, or val_top1 with --val-split); train-torch.py's has neither lr nor val_top1.
  const torch = !columns.includes('lr');
  const top1 = columns.indexOf(columns.includes('test_top1') ? 'test_top1' : 'val_top1'), seconds = columns.indexOf('seconds');
  if (top1 < 0 || seconds < 0) fail(`${path}: expected the columns of a metrics.csv or of a train-torch.py --csv file (seconds, test_top1 or val_top1), got ${header}`);
  let elapsed = 0;
  return lines.map((line, i) => {
    const cells = line.split(',').map(Number);
    if (!Number.isFinite(cells[seconds]) || !Number.isFinite(cells[top1])) fail(`${path}: line ${i + 2} is not numbers: ${line}`);
    elapsed = torch ? cells[seconds] : elapsed + cells[seconds];
    return [elapsed / 60, torch ? cells[top1] : 100 * cells[top1]];
  });
}

const [out, ...specs] = process.argv.slice(2);
if (out === undefined || !out.endsWith('.png') || specs.length === 0) fail('usage: plot-curves.ts OUT.png LABEL=FILE [LABEL=FILE ...]');
const series: Series[] = specs.map((spec, i) => {
  const at = spec.indexOf('=');
  if (at <= 0) fail(`'${spec}': expected LABEL=FILE`);
  return { name: spec.slice(0, at), color: COLORS[i % COLORS.length], points: readCurve(spec.slice(at + 1)) };
});
const reachedByAll = Math.min(...series.map((s) => Math.max(...s.points.map((p) => p[1]))));
for (const s of series) {
  const [minutes, top1] = s.points[s.points.length - 1];
  const first = s.points.find((p) => p[1] >= reachedByAll)!;
  console.log(`${s.name}: ${s.points.length} epochs, ${top1.toFixed(2)}% after ${minutes.toFixed(1)} min; ${reachedByAll.toFixed(2)}% first after ${first[0].toFixed(1)} min`);
}
const low = Math.min(...series.map((s) => s.points[Math.min(2, s.points.length - 1)][1]));
await writePng(lineChartSvg({ title: 'Test top-1 against wall time', xLabel: 'minutes from the first batch', yLabel: 'test top-1 (%)', series, yMin: Math.floor(low) }), out);
console.log(`wrote ${out}`);
