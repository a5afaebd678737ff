// MixUp and CutMix on a batch, and a run with them stopped and resumed bit-exactly.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { bundledFashionMnistPath, loadIdxDataset, type ImageDataset } from '../src/train/datasets.js';
import { mixBatch, sampleBeta } from '../src/train/mixup.js';
import { TRAIN_DEFAULTS, type TrainConfig } from '../src/train/options.js';
import { Trainer } from '../src/train/trainer.js';

const batch = () => new Tensor(Float32Array.from({ length: 3 * 2 * 4 * 4 }, (_, i) => i), [3, 2, 4, 4]);

describe('MixUp and CutMix', () => {
  it('Beta(a, a) samples have the Beta distribution\'s mean and variance (a = 0.2 and 2)', () => {
    for (const a of [0.2, 2]) {
      const rng = new Rng(5);
      const xs = Array.from({ length: 20000 }, () => sampleBeta(rng, a, a));
      const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
      const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / xs.length;
      expect(mean).toBeCloseTo(0.5, 1);
      expect(variance).toBeCloseTo(1 / (4 * (2 * a + 1)), 2);
      expect(xs.every((x) => x >= 0 && x <= 1)).toBe(true);
    }
  });
  it('MixUp: each image becomes lambda x + (1 - lambda) x_previous, the labels rolled the same way', () => {
    const x = batch(), before = x.data.slice();
    const mixed = mixBatch(x, Int32Array.of(7, 8, 9), { mixupAlpha: 0.4, cutmixAlpha: 0 }, new Rng(1))!;
    expect(mixed.kind).toBe('mixup');
    expect(mixed.lambda).toBeGreaterThan(0);
    expect(mixed.lambda).toBeLessThan(1);
    expect(Array.from(mixed.partnerLabels)).toEqual([9, 7, 8]);
    const image = 32, l = mixed.lambda;
    for (const [n, p] of [[0, 2], [1, 0], [2, 1]]) for (const i of [0, 13, 31]) expect(x.data[n * image + i]).toBe(Math.fround(l * before[n * image + i] + (1 - l) * before[p * image + i]));
  });
  it('CutMix: a box of the previous image is pasted and lambda is the area kept', () => {
    const x = batch(), before = x.data.slice();
    const mixed = mixBatch(x, Int32Array.of(1, 2, 3), { mixupAlpha: 0, cutmixAlpha: 1 }, new Rng(3))!;
    expect(mixed.kind).toBe('cutmix');
    let pasted = 0;
    for (let n = 0; n < 3; n++) {
      for (let i = 0; i < 32; i++) {
        const p = (n + 2) % 3;
        if (x.data[n * 32 + i] === before[p * 32 + i] && before[p * 32 + i] !== before[n * 32 + i]) pasted++;
        else expect(x.data[n * 32 + i]).toBe(before[n * 32 + i]);
      }
    }
    expect(1 - pasted / (3 * 32)).toBeCloseTo(mixed.lambda, 10);
  });
  it('both on: one of the two per batch; both off or a single image: nothing happens', () => {
    const kinds = new Set(Array.from({ length: 40 }, (_, s) => mixBatch(batch(), Int32Array.of(0, 1, 2), { mixupAlpha: 1, cutmixAlpha: 1 }, new Rng(s))!.kind));
    expect([...kinds].sort()).toEqual(['cutmix', 'mixup']);
    expect(mixBatch(batch(), Int32Array.of(0, 1, 2), { mixupAlpha: 0, cutmixAlpha: 0 }, new Rng(0))).toBeNull();
    expect(mixBatch(new Tensor(new Float32Array(8), [1, 2, 2, 2]), Int32Array.of(0), { mixupAlpha: 1, cutmixAlpha: 0 }, new Rng(0))).toBeNull();
  });
});

describe('training with MixUp / CutMix', () => {
  const head = (ds: ImageDataset, n: number): ImageDataset => ({ ...ds, count: n, images: ds.images.subarray(0, n * 784), labels: ds.labels.subarray(0, n) });
  const trainSet = head(loadIdxDataset(bundledFashionMnistPath(), 'train'), 160);
  const valSet = head(loadIdxDataset(bundledFashionMnistPath(), 'test'), 48);
  const config = (over: Partial<TrainConfig>): TrainConfig => ({ ...TRAIN_DEFAULTS, batchSize: 32, epochs: 2, lr: 0.05, evalBatchSize: 48, ...over });
  const weights = (t: Trainer) => [...t.model.stateDict().values()].map((p) => Array.from(p.data));
  it.each([
    ['mixup', { mixupAlpha: 0.2 }],
    ['cutmix', { cutmixAlpha: 1 }],
  ] as const)('%s changes training, and a run stopped mid-epoch and resumed ends bit-identical', async (_name, mix) => {
    const plain = new Trainer(config({}), trainSet, valSet);
    await plain.fit();
    const straight = new Trainer(config(mix), trainSet, valSet);
    await straight.fit();
    expect(weights(straight)).not.toEqual(weights(plain));
    const dir = mkdtempSync(join(tmpdir(), 'mix-'));
    const controller = new AbortController();
    const first = new Trainer(config(mix), trainSet, valSet);
    first.on('batchEnd', (e) => { if (e.step === 3) controller.abort(); });
    await first.fit({ outputDir: dir, signal: controller.signal });
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {});
    await resumed.fit({ outputDir: dir });
    expect(weights(resumed)).toEqual(weights(straight));
  });
});
