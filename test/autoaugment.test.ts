// TrivialAugmentWide's operations against their definitions, and training with it resumable.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/tensor/rng.js';
import { applyOp, TRIVIAL_AUGMENT_OPS, trivialAugmentWide } from '../src/train/autoaugment.js';
import { bundledFashionMnistPath, loadIdxDataset, type ImageDataset } from '../src/train/datasets.js';
import { DataLoader } from '../src/train/loader.js';
import { TRAIN_DEFAULTS } from '../src/train/options.js';
import { Trainer } from '../src/train/trainer.js';

/** A 4x4 gray ramp 0, 16, ..., 240. */
const ramp = () => Uint8Array.from({ length: 16 }, (_, i) => 16 * i);

describe('TrivialAugmentWide operations', () => {
  it('has torchvision\'s fourteen operations', () => {
    expect(TRIVIAL_AUGMENT_OPS).toEqual(['Identity', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate', 'Brightness', 'Color', 'Contrast', 'Sharpness', 'Posterize', 'Solarize', 'AutoContrast', 'Equalize']);
  });
  it('pixel operations: posterize keeps the top bits, solarize inverts above the threshold, brightness scales, autocontrast stretches', () => {
    const apply = (name: string, m: number, img = ramp()) => (applyOp(img, 1, 4, 4, name, m), Array.from(img));
    expect(apply('Identity', 0)).toEqual(Array.from(ramp()));
    expect(apply('Posterize', 2)).toEqual(Array.from(ramp(), (v) => v & 0xc0));
    expect(apply('Solarize', 128)).toEqual(Array.from(ramp(), (v) => (v >= 128 ? 255 - v : v)));
    expect(apply('Brightness', -0.5)).toEqual(Array.from(ramp(), (v) => Math.round(v * 0.5)));
    expect(apply('AutoContrast', 0)).toEqual(Array.from(ramp(), (v) => Math.round((v * 255) / 240)));
    expect(apply('Color', 0.7)).toEqual(Array.from(ramp())); // saturation of a gray image: unchanged
    // Equalize (PIL): two equally frequent values go to 0 and 255 (given enough pixels: under 256
    // of the other values PIL's step is 0 and the image stays as it is).
    const two = Uint8Array.from({ length: 512 }, (_, i) => (i < 256 ? 10 : 20));
    applyOp(two, 1, 16, 32, 'Equalize', 0);
    expect(Array.from(two)).toEqual([...Array(256).fill(0), ...Array(256).fill(255)]);
    expect(apply('Equalize', 0, Uint8Array.from({ length: 16 }, (_, i) => (i < 8 ? 10 : 20)))).toEqual([...Array(8).fill(10), ...Array(8).fill(20)]);
  });
  it('geometric operations move pixels (nearest) and fill 0: translate by 1, rotate by 180 degrees', () => {
    const t = ramp();
    applyOp(t, 1, 4, 4, 'TranslateX', 1);
    expect(Array.from(t)).toEqual([0, 0, 16, 32, 0, 64, 80, 96, 0, 128, 144, 160, 0, 192, 208, 224]);
    const r = ramp();
    applyOp(r, 1, 4, 4, 'Rotate', 180);
    expect(Array.from(r)).toEqual(Array.from(ramp()).reverse());
  });
  it('colour images: each channel moves together; one draw per image, reproducible from the generator', () => {
    const img = Uint8Array.from({ length: 3 * 16 }, (_, i) => (i * 5) % 256);
    const a = img.slice(), b = img.slice();
    const first = trivialAugmentWide(a, 3, 4, 4, new Rng(11));
    const second = trivialAugmentWide(b, 3, 4, 4, new Rng(11));
    expect(second).toEqual(first);
    expect(Array.from(b)).toEqual(Array.from(a));
    const seen = new Set(Array.from({ length: 300 }, (_, s) => trivialAugmentWide(img.slice(), 3, 4, 4, new Rng(s)).op));
    expect(seen.size).toBe(14);
  });
});

describe('training with --auto-augment ta_wide', () => {
  const head = (ds: ImageDataset, n: number): ImageDataset => ({ ...ds, count: n, images: ds.images.subarray(0, n * 784), labels: ds.labels.subarray(0, n) });
  const trainSet = head(loadIdxDataset(bundledFashionMnistPath(), 'train'), 160);
  const valSet = head(loadIdxDataset(bundledFashionMnistPath(), 'test'), 48);
  const config = (autoAugment: 'none' | 'ta_wide') => ({ ...TRAIN_DEFAULTS, batchSize: 32, epochs: 2, lr: 0.05, evalBatchSize: 48, autoAugment });
  const weights = (t: Trainer) => [...t.model.stateDict().values()].map((p) => Array.from(p.data));
  it('augments each batch reproducibly, changes training, and a run stopped mid-epoch and resumed ends bit-identical', async () => {
    const loader = (aa: 'none' | 'ta_wide') => new DataLoader(trainSet, { batchSize: 32, shuffle: true, seed: 3, augment: { autoAugment: aa } });
    const batchOf = (aa: 'none' | 'ta_wide', epoch: number) => Array.from(loader(aa).epoch(epoch).next().value!.x.data);
    expect(batchOf('ta_wide', 0)).toEqual(batchOf('ta_wide', 0));
    expect(batchOf('ta_wide', 0)).not.toEqual(batchOf('none', 0));
    expect(batchOf('ta_wide', 1)).not.toEqual(batchOf('ta_wide', 0));
    const plain = new Trainer(config('none'), trainSet, valSet);
    await plain.fit();
    const straight = new Trainer(config('ta_wide'), trainSet, valSet);
    await straight.fit();
    expect(weights(straight)).not.toEqual(weights(plain));
    const dir = mkdtempSync(join(tmpdir(), 'ta-'));
    const controller = new AbortController();
    const first = new Trainer(config('ta_wide'), trainSet, valSet);
    first.on('batchEnd', (e) => { if (e.step === 3) controller.abort(); });
    await first.fit({ outputDir: dir, signal: controller.signal });
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {});
    await resumed.fit({ outputDir: dir });
    expect(weights(resumed)).toEqual(weights(straight));
  });
});
