// The tape as a picture: boxes for ops (op name and output shape), small boxes for parameters,
// arrows for data flow, the current node highlighted. SVG written here, PNG via sharp, or DOT.

import { maxOf } from '../src/tensor/arrays.js';
import { topologicalOrder } from '../src/tensor/autograd.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { UsageError } from './common.js';
import { writeOutputFile, writePng } from './plots.js';

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Box {
  id: number;
  label: string;
  detail: string;
  x: number;
  y: number;
  w: number;
  h: number;
  kind: 'op' | 'param' | 'input';
}

export function graphDot(root: Tensor, current: Tensor | null = null): string {
  const order = topologicalOrder(root).reverse();
  const ids = new Map<Tensor, string>();
  const lines = ['digraph tape {', '  rankdir=TB; node [shape=box, fontname="DejaVu Sans"];'];
  order.forEach((t, i) => {
    ids.set(t, `n${i}`);
    const style = t === current ? ', style=filled, fillcolor="#ffd54f"' : '';
    lines.push(`  n${i} [label="${t.node!.op}\\n[${t.shape.join(', ')}]"${style}];`);
  });
  let leaves = 0;
  for (const t of order) {
    for (const input of t.node!.inputs) {
      let id = ids.get(input);
      if (id === undefined) {
        id = `p${leaves++}`;
        ids.set(input, id);
        const param = input.requiresGrad;
        lines.push(`  ${id} [label="${input.name ?? (param ? 'parameter' : 'input')}\\n[${input.shape.join(', ')}]", shape=${param ? 'note' : 'ellipse'}, fontsize=10];`);
      }
      lines.push(`  ${id} -> ${ids.get(t)};`);
    }
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

export function graphSvg(root: Tensor, current: Tensor | null = null): string {
  const order = topologicalOrder(root).reverse();
  const boxes = new Map<Tensor, Box>();
  const rowH = 54, opW = 230, opH = 38, left = 120;
  order.forEach((t, i) => boxes.set(t, { id: i, label: t.node!.op, detail: `[${t.shape.join(', ')}]`, x: left, y: 20 + i * rowH, w: opW, h: opH, kind: 'op' }));
  // Leaves: parameters to the right of their first consumer, data inputs at the top left.
  const paramCount = new Map<Tensor, number>();
  for (const t of order) {
    for (const input of t.node!.inputs) {
      if (boxes.has(input)) continue;
      const consumer = boxes.get(t)!;
      const k = paramCount.get(t) ?? 0;
      paramCount.set(t, k + 1);
      const isParam = input.requiresGrad;
      boxes.set(input, { id: -1, label: input.name ?? (isParam ? 'parameter' : 'input'), detail: `[${input.shape.join(', ')}]`, x: isParam ? left + opW + 40 + k * 190 : 8, y: consumer.y + (isParam ? 0 : -4), w: isParam ? 180 : 104, h: isParam ? 34 : 42, kind: isParam ? 'param' : 'input' });
    }
  }
  const width = maxOf(Array.from(boxes.values(), (b) => b.x + b.w)) + 20;
  const height = 20 + order.length * rowH + 10;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">`);
  out.push('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>');
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  for (const t of order) {
    const to = boxes.get(t)!;
    for (const input of t.node!.inputs) {
      const from = boxes.get(input)!;
      if (from.kind === 'op') {
        if (to.id - from.id === 1) {
          out.push(`<line x1="${from.x + from.w / 2}" y1="${from.y + from.h}" x2="${to.x + to.w / 2}" y2="${to.y}" stroke="#555" stroke-width="1.4" marker-end="url(#arrow)"/>`);
        } else {
          // A skip connection (residual): around the left side.
          const bend = from.x - 16 - 6 * ((to.id - from.id) % 5);
          out.push(`<path d="M${from.x},${from.y + from.h / 2} C${bend},${from.y + from.h / 2} ${bend},${to.y + to.h / 2} ${to.x},${to.y + to.h / 2}" fill="none" stroke="#1f77b4" stroke-width="1.4" marker-end="url(#arrow)"/>`);
        }
      } else if (from.kind === 'param') {
        out.push(`<line x1="${from.x}" y1="${from.y + from.h / 2}" x2="${to.x + to.w}" y2="${to.y + to.h / 2}" stroke="#999" stroke-width="1" marker-end="url(#arrow)"/>`);
      } else {
        out.push(`<line x1="${from.x + from.w}" y1="${from.y + from.h / 2}" x2="${to.x}" y2="${to.y + to.h / 2}" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>`);
      }
    }
  }
  for (const [t, b] of boxes) {
    const highlight = t === current;
    const fill = highlight ? '#ffd54f' : b.kind === 'op' ? '#e8f0fe' : b.kind === 'param' ? '#f1f8e9' : '#fff3e0';
    const rx = b.kind === 'input' ? 20 : 4;
    out.push(`<rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" rx="${rx}" fill="${fill}" stroke="${highlight ? '#e65100' : '#777'}" stroke-width="${highlight ? 2.5 : 1}"/>`);
    const size = b.kind === 'op' ? 13 : 10;
    out.push(`<text x="${b.x + b.w / 2}" y="${b.y + b.h / 2 - 2}" font-size="${size}" text-anchor="middle">${escapeXml(b.kind === 'op' ? `${b.id}. ${b.label}` : b.label)}</text>`);
    out.push(`<text x="${b.x + b.w / 2}" y="${b.y + b.h / 2 + 11}" font-size="${size - 2}" text-anchor="middle" fill="#444">${escapeXml(b.detail)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n');
}

export const GRAPH_EXTENSIONS = ['.png', '.svg', '.dot'] as const;

/** Write the graph as .svg, .png or .dot (by the file's extension). */
export async function writeGraph(path: string, root: Tensor, current: Tensor | null): Promise<void> {
  if (path.endsWith('.dot')) writeOutputFile(path, graphDot(root, current));
  else if (path.endsWith('.svg')) writeOutputFile(path, graphSvg(root, current));
  else if (path.endsWith('.png')) await writePng(graphSvg(root, current), path);
  else throw new UsageError(`--graph ${path}: use a .png, .svg or .dot file name`);
}
