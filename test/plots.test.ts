// The line chart's legend goes where the curves are not.
import { describe, expect, it } from 'vitest';
import { CLASS_LABEL_CHAR_WIDTH, confusionSvg, lineChartSvg, SCATTER_LABEL_CHAR_WIDTH, scatterSvg, TITLE_CHAR_EM } from '../cli/plots.js';

/** The y coordinate of the legend's first label in a chart's SVG. */
function legendY(svg: string, name: string): number {
  const m = new RegExp(`<text x="[\\d.]+" y="([\\d.]+)" font-size="13">${name}</text>`).exec(svg);
  if (m === null) throw new Error(`no legend entry '${name}'`);
  return Number(m[1]);
}

describe('line chart legend', () => {
  const epochs = Array.from({ length: 20 }, (_, i) => i + 1);
  it('sits at the bottom right when the curves end high (accuracy), at the top right when they end low (loss)', () => {
    const rising = lineChartSvg({ title: 'Accuracy', xLabel: 'epoch', yLabel: '%', height: 420, series: [
      { name: 'train', color: 'blue', points: epochs.map((e) => [e, 100 - 30 / e]) },
      { name: 'test', color: 'red', points: epochs.map((e) => [e, 95 - 30 / e]) },
    ] });
    expect(legendY(rising, 'train')).toBeGreaterThan(420 / 2);
    const falling = lineChartSvg({ title: 'Loss', xLabel: 'epoch', yLabel: 'loss', height: 420, series: [
      { name: 'train', color: 'blue', points: epochs.map((e) => [e, 2 / e]) },
      { name: 'test', color: 'red', points: epochs.map((e) => [e, 2.2 / e]) },
    ] });
    expect(legendY(falling, 'train')).toBeLessThan(420 / 2);
  });

  it('cuts a curve off at the axes where it goes below a given yMin (the first epochs of an accuracy curve)', () => {
    const svg = lineChartSvg({ title: 'Accuracy', xLabel: 'minutes', yLabel: '%', yMin: 80, series: [{ name: 'ours', color: 'blue', points: [[0, 10], [1, 85], [2, 90]] }] });
    const clip = /<clipPath id="plot-area"><rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"\/><\/clipPath>/.exec(svg);
    expect(clip).not.toBeNull();
    // The clip box ends at the x axis (drawn at H - 56 = 364), where the 10% point would be far below.
    expect(Number(clip![2]) + Number(clip![4])).toBe(364);
    expect(svg).toContain('<polyline clip-path="url(#plot-area)"');
    expect(svg.match(/<circle clip-path="url\(#plot-area\)"/g)?.length).toBe(3);
  });
});

/** The boxes of a scatter plot's mean labels, estimated as the plot estimates them (11 px text). */
function labelBoxes(svg: string): { x0: number; x1: number; y0: number; y1: number; text: string }[] {
  const boxes = [];
  for (const m of svg.matchAll(/<text x="([\d.]+)" y="([\d.]+)" font-size="11" text-anchor="(start|end|middle)">([^<]*)<\/text>/g)) {
    const [x, y, anchor, text] = [Number(m[1]), Number(m[2]), m[3], m[4]];
    const width = text.length * SCATTER_LABEL_CHAR_WIDTH;
    const x0 = anchor === 'start' ? x : anchor === 'end' ? x - width : x - width / 2;
    boxes.push({ x0, x1: x0 + width, y0: y - 9, y1: y + 2, text });
  }
  return boxes;
}

describe('scatter plot labels', () => {
  it('do not overlap when configurations lie close together (the tradeoff grid: 24 and 28 pixels, or 20 pixels at alpha 0.75 and 1)', () => {
    const means = [
      { x: 0.66e6, y: 82.53, label: 'V1 alpha 0.25 rho 0.857' },
      { x: 0.75e6, y: 82.63, label: 'V1 alpha 0.25 rho 1' },
      { x: 0.63e6, y: 81.65, label: 'V1 alpha 0.25 rho 0.714' },
      { x: 0.28e6, y: 75.45, label: 'V1 alpha 0.25 rho 0.571' },
      { x: 2.82e6, y: 84.35, label: 'V1 alpha 0.5 rho 1' },
      { x: 6.2e6, y: 83.42, label: 'V1 alpha 0.75 rho 1' },
      { x: 5.52e6, y: 83.1, label: 'V1 alpha 0.75 rho 0.857' },
      { x: 5.28e6, y: 81.75, label: 'V1 alpha 0.75 rho 0.714' },
      { x: 9.3e6, y: 81.77, label: 'V1 alpha 1 rho 0.714' },
      { x: 10.9e6, y: 84.58, label: 'V1 alpha 1 rho 1' },
      { x: 9.71e6, y: 78.8, label: 'V1 alpha 1 rho 0.857' },
    ];
    const svg = scatterSvg({ title: 't', xLabel: 'x', yLabel: 'y', runs: [], means });
    const boxes = labelBoxes(svg);
    expect(boxes.map((b) => b.text).sort()).toEqual(means.map((m) => m.label).sort());
    for (let i = 0; i < boxes.length; i++) {
      const a = boxes[i];
      expect(a.x0, a.text).toBeGreaterThanOrEqual(0);
      expect(a.x1, a.text).toBeLessThanOrEqual(760);
      for (let j = i + 1; j < boxes.length; j++) {
        const b = boxes[j];
        const overlap = a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
        expect(overlap, `${a.text} / ${b.text}`).toBe(false);
      }
    }
  });
});

describe('scatter plot x axis', () => {
  it('labels at least three ticks when the points span less than a factor of two (V1 against V2 at about equal cost)', () => {
    const svg = scatterSvg({ title: 't', xLabel: 'x', yLabel: 'y', runs: [], means: [{ x: 0.75e6, y: 84.2, label: 'a' }, { x: 1.08e6, y: 84, label: 'b' }] });
    const ticks = [...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" font-size="12" text-anchor="middle">([^<]+)<\/text>/g)].map((m) => m[1]);
    expect(ticks.length).toBeGreaterThanOrEqual(3);
  });
});

describe('chart titles', () => {
  it('fit the chart: a long title goes on two lines, each within the width (the expansion grid\'s title ran off both edges)', () => {
    const title = 'MobileNetV2 expansion factor t (t < 1: the classic bottleneck that reduces channels): top-1 against mult-adds';
    const svg = scatterSvg({ title, xLabel: 'x', yLabel: 'y', runs: [], means: [{ x: 1e6, y: 80, label: 'a' }] });
    const lines = [...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" font-size="(\d+)" font-weight="bold" text-anchor="middle">([^<]+)<\/text>/g)].map((m) => ({ size: Number(m[1]), text: m[2] }));
    expect(lines.length).toBe(2);
    expect(lines.map((l) => l.text).join(' ')).toBe(title.replace(/</g, '&lt;'));
    for (const l of lines) expect(l.text.length * TITLE_CHAR_EM * l.size).toBeLessThanOrEqual(760);
    const short = scatterSvg({ title: 'Short title', xLabel: 'x', yLabel: 'y', runs: [], means: [] });
    expect(short).toContain('font-size="16" font-weight="bold" text-anchor="middle">Short title</text>');
  });
});

describe('confusion matrix title', () => {
  it('fits a two-class matrix (a user\'s cats and dogs): the title goes on two lines within the width', () => {
    const svg = confusionSvg([[40, 10], [5, 45]], ['cats', 'dogs'], 'Confusion matrix (my-photos validation, top-1 85.00%)');
    const width = Number(/<svg [^>]*width="(\d+)"/.exec(svg)![1]);
    const lines = [...svg.matchAll(/<text x="[\d.]+" y="[\d.]+" font-size="(\d+)" font-weight="bold" text-anchor="middle">([^<]+)<\/text>/g)].map((m) => ({ size: Number(m[1]), text: m[2] }));
    expect(lines.map((l) => l.text).join(' ')).toBe('Confusion matrix (my-photos validation, top-1 85.00%)');
    for (const l of lines) expect(l.text.length * TITLE_CHAR_EM * l.size, l.text).toBeLessThanOrEqual(width);
  });
});

describe('confusion matrix class names', () => {
  it('long names stay inside the image: the left margin and the bottom grow with the longest name', () => {
    const names = ['golden_retriever_puppies_2023', 'cats'];
    const svg = confusionSvg([[3, 1], [0, 4]], names);
    const [W, H] = [/<svg [^>]*width="(\d+)"/, /<svg [^>]*height="(\d+)"/].map((r) => Number(r.exec(svg)![1]));
    // Row labels end at x (text-anchor end): their start is x minus the text's width.
    for (const m of svg.matchAll(/<text x="([\d.]+)" y="[\d.]+" font-size="12" text-anchor="end">([^<]+)<\/text>/g)) expect(Number(m[1]) - m[2].length * CLASS_LABEL_CHAR_WIDTH, m[2]).toBeGreaterThanOrEqual(0);
    // Column labels start at (x, y), rotated 60 degrees: they reach down by length x sin 60.
    for (const m of svg.matchAll(/<text transform="translate\(([\d.]+) ([\d.]+)\) rotate\(60\)" font-size="12">([^<]+)<\/text>/g)) {
      expect(Number(m[2]) + m[3].length * CLASS_LABEL_CHAR_WIDTH * Math.sin(Math.PI / 3), m[3]).toBeLessThanOrEqual(H - 24);
      expect(Number(m[1]) + m[3].length * CLASS_LABEL_CHAR_WIDTH * Math.cos(Math.PI / 3), m[3]).toBeLessThanOrEqual(W);
    }
  });
});
