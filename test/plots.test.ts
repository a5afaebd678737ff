// The line chart's legend goes where the curves are not.
import { describe, expect, it } from 'vitest';
import { lineChartSvg } from '../cli/plots.js';

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
});
