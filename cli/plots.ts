// Plots as SVG written by hand (no plotting dependency), rendered to PNG with sharp.

import sharp from 'sharp';
import { writeFileAtomic } from '../src/tensor/files.js';
import { maxOf, minOf } from '../src/tensor/arrays.js';

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

const FONT = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

/** Width of one character of an 11 px scatter label, a little over DejaVu Sans's average. */
export const SCATTER_LABEL_CHAR_WIDTH = 6;

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Round tick steps: 1, 2 or 5 times a power of ten. */
function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/** Width of a bold title character, as a fraction of the font size (DejaVu Sans Bold, a little over its average). */
export const TITLE_CHAR_EM = 0.66;

/**
 * A title on one line at its size if it fits in `width`, else on two (split at ": " when that
 * fits, else at the space nearest the middle), at 14 px or less: never cut off at the edges.
 */
export function titleLines(title: string, size: number, width: number): { text: string; y: number; size: number }[] {
  const fits = (text: string, px: number) => text.length * TITLE_CHAR_EM * px <= width;
  if (fits(title, size)) return [{ text: title, y: 26, size }];
  let cut = title.lastIndexOf(': ');
  const spaces = [...title.matchAll(/ /g)].map((m) => m.index!);
  if (cut < 0 || !fits(title.slice(0, cut + 1), 14) || !fits(title.slice(cut + 2), 14)) {
    cut = spaces.reduce((best, i) => (Math.abs(i - title.length / 2) < Math.abs(best - title.length / 2) ? i : best), spaces[0] ?? title.length);
  }
  const lines = [title.slice(0, cut + (title[cut] === ':' ? 1 : 0)).trim(), title.slice(cut + 1).replace(/^ /, '').trim()].filter((l) => l.length > 0);
  const longest = maxOf(lines.map((l) => l.length));
  const lineSize = Math.min(14, size, Math.floor(width / (longest * TITLE_CHAR_EM)));
  return lines.map((text, i) => ({ text, y: 18 + i * 18, size: lineSize }));
}

/** A title's SVG text elements, centred in a chart `W` wide (see titleLines). */
function titleSvg(title: string, size: number, W: number): string[] {
  return titleLines(title, size, W - 16).map((line) => `<text x="${W / 2}" y="${line.y}" font-size="${line.size}" font-weight="bold" text-anchor="middle">${escapeXml(line.text)}</text>`);
}

/** The start of a chart: the SVG element, a white background, the title, and the y grid with its labels. */
function chartFrame(W: number, H: number, m: { left: number; right: number }, title: string, titleSize: number, yTicks: number[], py: (y: number) => number): string[] {
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(...titleSvg(title, titleSize, W));
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${py(t)}" y2="${py(t)}" stroke="#e3e3e3"/>`);
    out.push(`<text x="${m.left - 8}" y="${py(t) + 4}" font-size="12" text-anchor="end">${t}</text>`);
  }
  return out;
}

/** A line chart with axes, ticks, grid, axis labels and a legend. */
export function lineChartSvg(options: { title: string; xLabel: string; yLabel: string; series: Series[]; yMin?: number; yMax?: number; width?: number; height?: number }): string {
  const W = options.width ?? 720, H = options.height ?? 420;
  const m = { left: 70, right: 20, top: 44, bottom: 56 };
  const all = options.series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]).filter(Number.isFinite);
  let xMin = Math.min(minOf(xs), 0), xMax = Math.max(maxOf(xs), 1);
  let yMin = options.yMin ?? minOf(ys), yMax = options.yMax ?? maxOf(ys);
  if (!(yMax > yMin)) [yMin, yMax] = [yMin - 1, yMax + 1];
  if (!(xMax > xMin)) xMax = xMin + 1;
  const pad = (yMax - yMin) * 0.05;
  if (options.yMin === undefined) yMin -= pad;
  if (options.yMax === undefined) yMax += pad;
  const px = (x: number) => m.left + ((x - xMin) / (xMax - xMin)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - yMin) / (yMax - yMin)) * (H - m.top - m.bottom);
  const out = chartFrame(W, H, m, options.title, 17, niceTicks(yMin, yMax), py);
  for (const t of niceTicks(xMin, xMax, 8)) {
    out.push(`<line x1="${px(t)}" x2="${px(t)}" y1="${H - m.bottom}" y2="${H - m.bottom + 5}" stroke="black"/>`);
    out.push(`<text x="${px(t)}" y="${H - m.bottom + 20}" font-size="12" text-anchor="middle">${t}</text>`);
  }
  out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" font-size="14" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" font-size="14" text-anchor="middle">${escapeXml(options.yLabel)}</text>`);
  // The legend goes in the right-hand corner (top or bottom) that fewer points fall into:
  // accuracy curves end in the top right, loss curves in the bottom right.
  const legendW = 160, legendH = 20 * options.series.length + 4;
  const plotted = all.filter((p) => Number.isFinite(p[1])).map((p) => [px(p[0]), py(p[1])]);
  const inBox = (top: number) => plotted.filter(([x, y]) => x >= W - m.right - legendW && y >= top - 6 && y <= top + legendH + 6).length;
  const bottomTop = H - m.bottom - legendH - 6;
  const legendTop = inBox(bottomTop) < inBox(m.top) ? bottomTop : m.top;
  // Points outside a given yMin / yMax are cut off at the axes rather than drawn over them.
  out.push(`<clipPath id="plot-area"><rect x="${m.left}" y="${m.top - 4}" width="${W - m.left - m.right + 4}" height="${H - m.top - m.bottom + 4}"/></clipPath>`);
  options.series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length > 0) {
      out.push(`<polyline clip-path="url(#plot-area)" fill="none" stroke="${s.color}" stroke-width="2.2" points="${pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')}"/>`);
      if (pts.length <= 60) for (const p of pts) out.push(`<circle clip-path="url(#plot-area)" cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
    }
    const ly = legendTop + 8 + i * 20;
    out.push(`<line x1="${W - m.right - 150}" x2="${W - m.right - 124}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3"/>`);
    out.push(`<text x="${W - m.right - 118}" y="${ly + 4}" font-size="13">${escapeXml(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Width of one character of a 12 px class name, a little over DejaVu Sans's average. */
export const CLASS_LABEL_CHAR_WIDTH = 7;

/** A confusion matrix heat map: rows are true classes, columns predictions, counts in the cells. */
export function confusionSvg(matrix: number[][], classNames: string[], title = 'Confusion matrix (validation)'): string {
  const C = classNames.length;
  const cell = Math.max(28, Math.min(56, Math.floor(560 / C)));
  // Room for the longest class name: beside the rows, and below the columns (rotated 60 degrees).
  const longestName = maxOf(classNames.map((n) => n.length)) * CLASS_LABEL_CHAR_WIDTH;
  const left = Math.max(150, Math.ceil(longestName) + 40), top = 70;
  const below = Math.max(120, Math.ceil(longestName * Math.sin(Math.PI / 3)) + 50);
  // At least 360 px wide, so that a matrix of two or three classes still has room for its title.
  const W = Math.max(360, left + C * cell + Math.max(30, Math.ceil(longestName * Math.cos(Math.PI / 3) - cell / 2) + 10)), H = top + C * cell + below;
  const rowTotals = matrix.map((r) => r.reduce((a, b) => a + b, 0));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(...titleSvg(title, 17, W));
  for (let i = 0; i < C; i++) {
    for (let j = 0; j < C; j++) {
      // Colour by the share of the true class's samples (row-normalised), white to dark blue.
      const share = rowTotals[i] > 0 ? matrix[i][j] / rowTotals[i] : 0;
      const shade = Math.round(255 - share * 205);
      const fill = `rgb(${shade},${Math.round(255 - share * 150)},255)`;
      const x = left + j * cell, y = top + i * cell;
      out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${fill}" stroke="#bbbbbb"/>`);
      if (matrix[i][j] > 0) out.push(`<text x="${x + cell / 2}" y="${y + cell / 2 + 4}" font-size="${cell > 40 ? 13 : 10}" text-anchor="middle" fill="${share > 0.55 ? 'white' : 'black'}">${matrix[i][j]}</text>`);
    }
    out.push(`<text x="${left - 8}" y="${top + i * cell + cell / 2 + 4}" font-size="12" text-anchor="end">${escapeXml(classNames[i])}</text>`);
    const cx = left + i * cell + cell / 2, cy = top + C * cell + 10;
    out.push(`<text transform="translate(${cx + 4} ${cy}) rotate(60)" font-size="12">${escapeXml(classNames[i])}</text>`);
  }
  out.push(`<text transform="translate(16 ${top + (C * cell) / 2}) rotate(-90)" font-size="14" text-anchor="middle">true class</text>`);
  out.push(`<text x="${left + (C * cell) / 2}" y="${H - 8}" font-size="14" text-anchor="middle">predicted class</text>`);
  out.push('</svg>');
  return out.join('\n');
}

/** Write a file the user asked for, creating its folder first (as `train --output-dir` does). */
export function writeOutputFile(path: string, bytes: string | Uint8Array): void {
  writeFileAtomic(path, bytes); // whole or not at all; a full disk is one error naming the file
}

export async function writePng(svg: string, path: string): Promise<void> {
  writeOutputFile(path, await sharp(Buffer.from(svg)).png().toBuffer());
}

interface Box {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
}

const distanceToBox = (x: number, y: number, b: Box) => Math.hypot(Math.max(b.x0 - x, 0, x - b.x1), Math.max(b.y0 - y, 0, y - b.y1));

const overlapArea = (a: Box, b: Box) => Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0)) * Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));

/**
 * Where each dot's label goes: beside the dot (right or left, above or below), or a little
 * further off with a thin leader line, at the first place that covers no label placed before
 * it, no dot and nothing outside the plot, and is not as near another dot as its own; failing
 * that, the place that does least of these. Greedy, in the dots' order: enough for the handful
 * of configurations an experiment has.
 */
function placeScatterLabels(dots: { cx: number; cy: number; label: string }[], plot: Box) {
  const dotBoxes: Box[] = dots.map((d) => ({ x0: d.cx - 5, x1: d.cx + 5, y0: d.cy - 5, y1: d.cy + 5 }));
  const placed: Box[] = [];
  // Offsets of the text's baseline from the dot: dy < 0 is above. Beyond the first four, a leader.
  const spots: [number, number, 'start' | 'end'][] = [[8, -6, 'start'], [8, 14, 'start'], [-8, -6, 'end'], [-8, 14, 'end']];
  for (const dy of [-20, 28, -34, 42]) spots.push([8, dy, 'start'], [-8, dy, 'end']);
  return dots.map((d) => {
    const width = d.label.length * SCATTER_LABEL_CHAR_WIDTH;
    let best: { score: number; box: Box; spot: (typeof spots)[number] } | null = null;
    for (const spot of spots) {
      const [dx, dy, anchor] = spot;
      const x0 = anchor === 'start' ? d.cx + dx : d.cx + dx - width;
      const box = { x0, x1: x0 + width, y0: d.cy + dy - 9, y1: d.cy + dy + 2 };
      const outside = width * 11 - overlapArea(box, plot);
      let score = 1000 * outside;
      for (const other of placed) score += overlapArea(box, other);
      for (const dot of dotBoxes) score += overlapArea(box, dot);
      // A label about as near another dot as its own would be read as that dot's.
      const own = distanceToBox(d.cx, d.cy, box);
      for (const other of dots) if (other !== d && distanceToBox(other.cx, other.cy, box) < own + 8) score += 300;
      if (best === null || score < best.score) best = { score, box, spot };
      if (score === 0) break;
    }
    const { box, spot } = best!;
    placed.push(box);
    const [dx, dy, anchor] = spot;
    const leader = Math.abs(dy) > 14;
    return { text: d.label, cx: d.cx, cy: d.cy, x: d.cx + dx, y: d.cy + dy, anchor, leader, leaderX: anchor === 'start' ? box.x0 - 1 : box.x1 + 1, leaderY: dy < 0 ? box.y1 : box.y0 };
  });
}

/**
 * Accuracy against cost as the MobileNet paper's Figures 4 and 5 draw it: x on a log scale, one
 * small grey point per run and one labelled dot per configuration (the mean over its runs).
 */
export function scatterSvg(options: { title: string; xLabel: string; yLabel: string; runs: { x: number; y: number }[]; means: { x: number; y: number; label: string }[] }): string {
  const W = 760, H = 460;
  const m = { left: 70, right: 30, top: 44, bottom: 56 };
  const all = [...options.runs, ...options.means].filter((p) => p.x > 0 && Number.isFinite(p.y));
  const lx = all.map((p) => Math.log10(p.x)), ys = all.map((p) => p.y);
  let xMin = all.length > 0 ? minOf(lx) : 0, xMax = all.length > 0 ? maxOf(lx) : 1;
  if (!(xMax > xMin)) [xMin, xMax] = [xMin - 0.5, xMax + 0.5];
  const xPad = (xMax - xMin) * 0.08;
  xMin -= xPad;
  xMax += xPad;
  let yMin = all.length > 0 ? minOf(ys) : 0, yMax = all.length > 0 ? maxOf(ys) : 100;
  if (!(yMax > yMin)) [yMin, yMax] = [yMin - 1, yMax + 1];
  const yPad = (yMax - yMin) * 0.1;
  yMin -= yPad;
  yMax += yPad;
  const px = (x: number) => m.left + ((Math.log10(x) - xMin) / (xMax - xMin)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - yMin) / (yMax - yMin)) * (H - m.top - m.bottom);
  const out = chartFrame(W, H, m, options.title, 16, niceTicks(yMin, yMax), py);
  // Decade ticks with 2 and 5 between them, labelled in engineering units; every integer
  // multiple of the decade when the points span too little for three of those.
  const unit = (v: number) => (v >= 1e6 ? `${Number((v / 1e6).toPrecision(3))}M` : v >= 1e3 ? `${Number((v / 1e3).toPrecision(3))}k` : String(v));
  const ticksWith = (factors: number[]) => {
    const ticks: number[] = [];
    for (let e = Math.floor(xMin); e <= Math.ceil(xMax); e++) for (const f of factors) if (Math.log10(f * 10 ** e) >= xMin && Math.log10(f * 10 ** e) <= xMax) ticks.push(f * 10 ** e);
    return ticks;
  };
  const coarse = ticksWith([1, 2, 5]);
  const xTicks = coarse.length >= 3 ? coarse : ticksWith([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const v of xTicks) {
    out.push(`<line x1="${px(v)}" x2="${px(v)}" y1="${H - m.bottom}" y2="${H - m.bottom + 5}" stroke="black"/>`);
    out.push(`<text x="${px(v)}" y="${H - m.bottom + 20}" font-size="12" text-anchor="middle">${unit(v)}</text>`);
  }
  out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" stroke="black"/>`);
  out.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 12}" font-size="14" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${(m.top + H - m.bottom) / 2}) rotate(-90)" font-size="14" text-anchor="middle">${escapeXml(options.yLabel)}</text>`);
  for (const p of options.runs) if (p.x > 0 && Number.isFinite(p.y)) out.push(`<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="2.5" fill="#9e9e9e"/>`);
  const dots = options.means.filter((p) => p.x > 0 && Number.isFinite(p.y)).map((p) => ({ ...p, cx: px(p.x), cy: py(p.y) }));
  for (const d of dots) out.push(`<circle cx="${d.cx.toFixed(1)}" cy="${d.cy.toFixed(1)}" r="5" fill="#d62728"/>`);
  for (const label of placeScatterLabels(dots, { x0: m.left, x1: W - 4, y0: m.top - 4, y1: H - m.bottom })) {
    if (label.leader) out.push(`<line x1="${label.cx.toFixed(1)}" y1="${label.cy.toFixed(1)}" x2="${label.leaderX.toFixed(1)}" y2="${label.leaderY.toFixed(1)}" stroke="#9e9e9e" stroke-width="0.8"/>`);
    out.push(`<text x="${label.x.toFixed(1)}" y="${label.y.toFixed(1)}" font-size="11" text-anchor="${label.anchor}">${escapeXml(label.text)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n');
}
