// Cost accounting: per layer output shape, parameters and mult-adds, as in the MobileNet
// paper's tables. Mult-adds count the multiply-accumulates of convolutions and fully connected
// layers only (conv: Hout Wout Cout (Cin/groups) k k; FC: in * out); BatchNorm, activations,
// pooling and the residual additions are not counted, as in the paper.
// Shapes are propagated analytically, so a 4.8-billion-mult-add baseline costs nothing to table.

import { maxOf } from '../tensor/arrays.js';
import type { Module } from './module.js';

/** One layer of a cost report: its output shape, parameters and multiply-adds. */
export interface LayerCost {
  /** Dotted path of the layer, e.g. `features.3.dw`. */
  name: string;
  type: string;
  /** For the breakdown: 'Conv 1x1', 'Conv DW 3x3', 'Conv 3x3', 'FC', 'BatchNorm', ... */
  kind: string;
  outputShape: number[];
  params: number;
  multAdds: number;
}

/** The cost of a model at one input size: a row per layer and the totals. */
export interface CostReport {
  layers: LayerCost[];
  totalParams: number;
  totalMultAdds: number;
  /** Per kind of conv/FC layer: mult-adds and parameters, and their shares (the paper's Table 2). */
  breakdown: { kind: string; multAdds: number; params: number; multAddsShare: number; paramsShare: number }[];
}

/** Walk the module tree in execution order (children in registration order), leaves only. */
export function layerCosts(model: Module, inputShape: readonly number[]): CostReport {
  const layers: LayerCost[] = [];
  let shape = [...inputShape];
  const visit = (module: Module, path: string) => {
    if (module.describeLayer) {
      const d = module.describeLayer(shape);
      let params = 0;
      for (const p of module.parameters()) params += p.numel;
      layers.push({ name: path, type: module.typeName, kind: d.kind, outputShape: d.outputShape, params, multAdds: d.multAdds });
      shape = d.outputShape;
      return;
    }
    for (const [name, child] of module.namedChildren()) visit(child, path === '' ? name : `${path}.${name}`);
  };
  visit(model, '');
  const totalParams = layers.reduce((s, l) => s + l.params, 0);
  const totalMultAdds = layers.reduce((s, l) => s + l.multAdds, 0);
  // The breakdown covers the layers that do the multiply-adds (convolutions and FC), as the
  // paper's Table 2 does; BatchNorm's few parameters are left out of its percentages.
  const byKind = new Map<string, { multAdds: number; params: number }>();
  let weightLayerParams = 0;
  for (const l of layers) {
    if (l.multAdds === 0) continue;
    weightLayerParams += l.params;
    const entry = byKind.get(l.kind) ?? { multAdds: 0, params: 0 };
    entry.multAdds += l.multAdds;
    entry.params += l.params;
    byKind.set(l.kind, entry);
  }
  const breakdown = [...byKind.entries()]
    .map(([kind, v]) => ({ kind, ...v, multAddsShare: v.multAdds / totalMultAdds, paramsShare: v.params / weightLayerParams }))
    .sort((a, b) => b.multAdds - a.multAdds || b.params - a.params);
  return { layers, totalParams, totalMultAdds, breakdown };
}

function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** The per-layer table and totals as text (the CLI's `summary`). */
export function formatCostTable(report: CostReport): string {
  const rows = report.layers.map((l) => [l.name, l.type, `[${l.outputShape.join(', ')}]`, formatCount(l.params), formatCount(l.multAdds)]);
  const header = ['layer', 'type', 'output shape', 'params', 'mult-adds'];
  const widths = header.map((h, i) => Math.max(h.length, maxOf(rows.map((r) => r[i].length))));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 3 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  out.push('', `total params: ${formatCount(report.totalParams)}   total mult-adds: ${formatCount(report.totalMultAdds)} (${(report.totalMultAdds / 1e6).toFixed(1)}M)`, '');
  out.push('by layer type:      mult-adds        params');
  for (const b of report.breakdown) {
    out.push(`  ${b.kind.padEnd(14)} ${(100 * b.multAddsShare).toFixed(2).padStart(8)}%  ${(100 * b.paramsShare).toFixed(2).padStart(10)}%`);
  }
  return out.join('\n');
}
