import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, readdirSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/tensor/rng.js';
import { Tensor } from '../src/tensor/tensor.js';
import { CheckpointError, readCheckpoint, type CheckpointWriter } from '../src/train/checkpoint.js';
import { encodeIdx, loadCifar10, loadIdxDataset, loadImageFolder, parseIdx, type ImageDataset } from '../src/train/datasets.js';
import { DataLoader, normalizePixels } from '../src/train/loader.js';
import { ClassificationMetrics } from '../src/train/metrics.js';
import { ConfigError, TRAIN_DEFAULTS, type TrainConfig } from '../src/train/options.js';
import { Trainer, TrainingStoppedError, type TrainerEvents } from '../src/train/trainer.js';
import { BatchNorm2d, Conv2d, DepthwiseSeparable, Flatten, GlobalAvgPool2d, Linear, ReLU } from '../src/nn/layers.js';
import { Sequential } from '../src/nn/module.js';
import type { ImageClassifier } from '../src/nn/mobilenet.js';
import { clipGradNorm, SGD } from '../src/train/optim.js';

const BUNDLED = resolve(import.meta.dirname, '../data/fashion-mnist-subset');
const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), prefix));

/** The first n images of a dataset. */
function head(ds: ImageDataset, n: number): ImageDataset {
  const plane = ds.channels * ds.height * ds.width;
  return { ...ds, count: n, images: ds.images.subarray(0, n * plane), labels: ds.labels.subarray(0, n) };
}

describe('IDX reader', () => {
  it('reads the bundled Fashion-MNIST subset: 10,000 / 2,000 images, 1,000 / 200 per class', () => {
    const train = loadIdxDataset(BUNDLED, 'train');
    const test = loadIdxDataset(BUNDLED, 'test');
    expect([train.count, train.height, train.width, train.channels]).toEqual([10000, 28, 28, 1]);
    expect(test.count).toBe(2000);
    const counts = new Array(10).fill(0);
    for (const l of train.labels) counts[l]++;
    expect(counts).toEqual(new Array(10).fill(1000));
  });
  it('reads raw and gzipped files alike', async () => {
    const dir = tmp('idx-');
    const images = Uint8Array.from({ length: 3 * 4 * 5 }, (_, i) => i);
    writeFileSync(join(dir, 'train-images-idx3-ubyte'), encodeIdx([3, 4, 5], images));
    writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(encodeIdx([3], Uint8Array.of(0, 9, 4))));
    const ds = loadIdxDataset(dir, 'train');
    expect(Array.from(ds.labels)).toEqual([0, 9, 4]);
    expect(ds.images[59]).toBe(59);
  });
  it('rejects wrong magic numbers, truncated data and label/image count mismatches, naming the file', () => {
    expect(() => parseIdx(Uint8Array.of(1, 2, 8, 1, 0, 0, 0, 1, 5), 'x.idx')).toThrow('x.idx: wrong magic number 0x01020801');
    expect(() => parseIdx(encodeIdx([2, 2, 2], new Uint8Array(8)).subarray(0, 20), 'y.idx')).toThrow('y.idx: header says 2 x 2 x 2 = 8 bytes of data but the file holds 4');
    expect(() => parseIdx(Uint8Array.of(0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0), 'f.idx')).toThrow(/unsupported IDX element type 0x0d/);
    // A header claiming 10^12 elements is rejected from the header alone.
    expect(() => parseIdx(encodeIdx([1_000_000, 1_000_000], new Uint8Array(0)), 'huge.idx')).toThrow(/header says 1000000 x 1000000 = 1000000000000 bytes/);
    const dir = tmp('idx-');
    writeFileSync(join(dir, 't10k-images-idx3-ubyte'), encodeIdx([3, 2, 2], new Uint8Array(12)));
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), encodeIdx([2], new Uint8Array(2)));
    expect(() => loadIdxDataset(dir, 'test')).toThrow(/t10k-labels-idx1-ubyte: 2 labels for 3 images/);
    expect(() => loadIdxDataset(join(dir, 'nope'), 'train')).toThrow(/dataset-fashion-mnist/);
  });
});

describe('CIFAR-10 binary reader', () => {
  it('reads 3073-byte records and rejects a bad size or label', async () => {
    const dir = tmp('cifar-');
    const record = (label: number, fill: number) => Uint8Array.from({ length: 3073 }, (_, i) => (i === 0 ? label : fill));
    const batch = (labels: number[]) => Buffer.concat(labels.map((l, i) => record(l, i + 1)));
    writeFileSync(join(dir, 'test_batch.bin'), batch([3, 7]));
    const ds = loadCifar10(dir, 'test');
    expect([ds.count, ds.channels, ds.height, Array.from(ds.labels)]).toEqual([2, 3, 32, [3, 7]]);
    expect(ds.images[3072]).toBe(2);
    writeFileSync(join(dir, 'test_batch.bin'), batch([3]).subarray(0, 3000));
    expect(() => loadCifar10(dir, 'test')).toThrow(/size 3000 is not a whole number of 3073-byte records/);
    writeFileSync(join(dir, 'test_batch.bin'), batch([12]));
    expect(() => loadCifar10(dir, 'test')).toThrow(/record 0 has label 12/);
    expect(() => loadCifar10(dir, 'train')).toThrow(/missing data_batch_1.bin/);
  });
});

describe('image folder reader (sharp)', () => {
  async function makeFolder() {
    const root = tmp('folder-');
    for (const cls of ['cat', 'dog']) mkdirSync(join(root, cls));
    const rgb = { width: 10, height: 6, channels: 3 as const, background: { r: 200, g: 10, b: 10 } };
    await sharp({ create: rgb }).png().toFile(join(root, 'cat', 'a.png'));
    await sharp({ create: { ...rgb, channels: 4, background: { r: 0, g: 0, b: 250, alpha: 0.5 } } }).png().toFile(join(root, 'cat', 'rgba.png'));
    await sharp({ create: rgb }).jpeg().toFile(join(root, 'dog', 'b.jpg'));
    await sharp({ create: rgb }).webp().toFile(join(root, 'dog', 'c.webp'));
    await sharp({ create: rgb }).grayscale().png().toFile(join(root, 'dog', 'gray.png'));
    await sharp({ create: rgb }).toColourspace('rgb16').png().toFile(join(root, 'dog', 'deep16.png'));
    return root;
  }
  it('decodes JPEG, PNG, WebP, RGBA, grayscale and 16-bit images to the requested size, classes sorted', async () => {
    const ds = await loadImageFolder(await makeFolder(), { size: 8 });
    expect(ds.classNames).toEqual(['cat', 'dog']);
    expect(Array.from(ds.labels)).toEqual([0, 0, 1, 1, 1, 1]);
    expect([ds.channels, ds.height, ds.width]).toEqual([3, 8, 8]);
    expect(ds.images[0]).toBeGreaterThan(190); // red channel of the red PNG, CHW order
    expect(ds.images[64]).toBeLessThan(20);
  });
  it('names a corrupt file, and skips it with a warning when asked', async () => {
    const root = await makeFolder();
    writeFileSync(join(root, 'cat', 'broken.jpg'), 'not a jpeg at all');
    await expect(loadImageFolder(root, { size: 8 })).rejects.toThrow(/broken\.jpg: cannot decode image/);
    const warnings: string[] = [];
    const ds = await loadImageFolder(root, { size: 8, onCorrupt: 'skip', onWarning: (m) => warnings.push(m) });
    expect(ds.count).toBe(6);
    expect(warnings[0]).toMatch(/skipping .*broken\.jpg/);
  });
  it('rejects an empty class folder by name', async () => {
    const root = await makeFolder();
    mkdirSync(join(root, 'empty'));
    await expect(loadImageFolder(root, { size: 8 })).rejects.toThrow(/class folder 'empty' has no images/);
  });
});

describe('data loader', () => {
  const ds = head(loadIdxDataset(BUNDLED, 'train'), 100);
  const make = (seed: number) => new DataLoader(ds, { batchSize: 32, shuffle: true, seed, resolution: 32, channels: 3, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], augment: { cropPadding: 4, horizontalFlip: true, randomErasing: 0.5 } });
  it('batches, resizes, converts channels, keeps the last partial batch', () => {
    const batches = [...make(1).epoch(0)];
    expect(batches.map((b) => b.labels.length)).toEqual([32, 32, 32, 4]);
    expect([...batches[0].x.shape]).toEqual([32, 3, 32, 32]);
    expect(new DataLoader(ds, { batchSize: 32, dropLast: true }).batchesPerEpoch).toBe(3);
  });
  it('augmentation and shuffling are deterministic per (seed, epoch, batch) and differ otherwise', () => {
    const a = [...make(1).epoch(2)], b = [...make(1).epoch(2)];
    expect(Array.from(a[1].x.data)).toEqual(Array.from(b[1].x.data));
    const resumed = [...make(1).epoch(2, 1)];
    expect(Array.from(resumed[0].x.data)).toEqual(Array.from(a[1].x.data));
    expect(Array.from(make(2).epoch(2).next().value!.labels)).not.toEqual(Array.from(a[0].labels));
    expect(Array.from([...make(1).epoch(3)][1].x.data)).not.toEqual(Array.from(a[1].x.data));
  });
  it('without augmentation, pixels are normalised exactly: (byte / 255 - mean) / std', () => {
    const plain = new DataLoader(ds, { batchSize: 1, mean: [0.25], std: [0.5] });
    const x = plain.epoch(0).next().value!.x.data;
    for (const i of [0, 300, 783]) expect(x[i]).toBeCloseTo((ds.images[i] / 255 - 0.25) / 0.5, 5);
  });
  it('normalizePixels (predict, step) gives the loader inputs bit for bit, gray and colour', () => {
    const gray = new DataLoader(ds, { batchSize: 4, mean: [0.25], std: [0.5] }).epoch(0).next().value!.x.data;
    expect(Array.from(normalizePixels(ds.images.subarray(0, 4 * 784), 1, 784, { mean: [0.25], std: [0.5] }))).toEqual(Array.from(gray));
    const colour = { ...ds, channels: 3, images: Uint8Array.from({ length: ds.count * 3 * 784 }, (_, i) => (i * 7) % 256) };
    const norm = { mean: [0.2, 0.4, 0.6], std: [0.3, 0.2, 0.1] };
    const x = new DataLoader(colour, { batchSize: 2, channels: 3, ...norm }).epoch(0).next().value!.x.data;
    expect(Array.from(normalizePixels(colour.images.subarray(0, 2 * 3 * 784), 3, 784, norm))).toEqual(Array.from(x));
  });
});

describe('metrics', () => {
  it('top-1, top-5, confusion matrix and per-class accuracy', () => {
    const m = new ClassificationMetrics(6);
    const logits = Float32Array.from([
      5, 4, 3, 2, 1, 0, // true 0: top-1 hit
      0, 1, 2, 3, 4, 5, // true 0: rank 6 -> top-5 miss
      0, 5, 4, 3, 2, 1, // true 2: rank 2 -> top-1 miss, top-5 hit
    ]);
    m.update(logits, [0, 0, 2], 1.5);
    expect([m.top1, m.top5, m.loss]).toEqual([1 / 3, 2 / 3, 1.5]);
    expect(m.confusion[0 * 6 + 0]).toBe(1);
    expect(m.confusion[0 * 6 + 5]).toBe(1);
    expect(m.confusion[2 * 6 + 1]).toBe(1);
    expect(m.perClassAccuracy().slice(0, 3)).toEqual([0.5, NaN, 0]);
  });
  it('NaN logits are no hit: a model that overflowed scores 0%, not 100%', () => {
    const m = new ClassificationMetrics(6);
    m.update(Float32Array.from([NaN, NaN, NaN, NaN, NaN, NaN, 5, NaN, 0, 0, 0, 0]), [0, 0], NaN);
    expect([m.top1, m.top5]).toEqual([0, 0.5]); // row 2: the label's 5 is ranked below one NaN
  });
});

describe('training', () => {
  const trainSet = head(loadIdxDataset(BUNDLED, 'train'), 192);
  const valSet = head(loadIdxDataset(BUNDLED, 'test'), 64);
  const config = (over: Partial<TrainConfig> = {}): TrainConfig => ({ ...TRAIN_DEFAULTS, alpha: 0.25, batchSize: 32, epochs: 2, lr: 0.05, evalBatchSize: 64, dropout: 0.1, ...over });
  const weightsHash = (t: Trainer) => {
    const h = createHash('sha256');
    for (const [, p] of t.model.stateDict()) h.update(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength));
    return h.digest('hex');
  };

  it('a setting that does not fit the model or the run is a ConfigError naming the setting and the value, as data', () => {
    const error = (() => {
      try {
        new Trainer(config({ trainableBlocks: 30 }), trainSet, valSet);
      } catch (e) {
        return e as ConfigError;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).toMatchObject({ options: ['trainableBlocks'], value: 30, detail: 'this model has 9 blocks in its features', message: 'trainableBlocks 30: this model has 9 blocks in its features' });
  });

  it('--lr-min is where cosineannealinglr ends: the schedule ends at lrMin, not 0', async () => {
    const lastLr = async (lrMin: number) => {
      const t = new Trainer(config({ epochs: 1, lrScheduler: 'cosineannealinglr', lrMin }), head(trainSet, 64), valSet);
      let lr = NaN;
      t.on('batchEnd', (e) => (lr = e.lr));
      await t.fit();
      return lr;
    };
    // batchEnd reports the lr after the batch's step: after the last one, t = tMax and the
    // cosine eta_min + (lr - eta_min) (1 + cos(pi t / tMax)) / 2 is at eta_min.
    expect(await lastLr(0.01)).toBeCloseTo(0.01, 9);
    expect(await lastLr(0)).toBeCloseTo(0, 9);
  });

  it('--decay-depthwise puts the depthwise filters in the weight-decay group; by default they are left out with BatchNorm and biases', () => {
    const decayed = (decayDepthwise: boolean) => {
      const t = new Trainer(config({ decayDepthwise }), trainSet, valSet);
      const group = t.optimizer.groups.find((g) => g.name === 'decay')!;
      const names = new Map([...t.model.namedParameters()].map(([name, p]) => [p, name]));
      return group.params.map((p) => names.get(p)!).filter((name) => /\.dw\.weight$/.test(name)).length;
    };
    expect(decayed(false)).toBe(0);
    expect(decayed(true)).toBe(8); // the shallow net's eight separable blocks
  });

  it('learns: the loss falls on a small problem', async () => {
    const t = new Trainer(config({ epochs: 3, lr: 0.1 }), trainSet, valSet);
    const losses: number[] = [];
    t.on('epochEnd', (e) => losses.push(e.train.loss));
    await t.fit();
    expect(losses[2]).toBeLessThan(losses[0]);
  });

  it('trains a model the caller built (a Sequential of library layers) with its own optimizer, checkpoints and resumes it bit-exactly', async () => {
    const build = () =>
      new Sequential(
        new Conv2d(1, 8, 3, { stride: 2, padding: 1, rng: new Rng(1) }),
        new BatchNorm2d(8),
        new ReLU(),
        new DepthwiseSeparable(8, 16, 2, new Rng(2)),
        new GlobalAvgPool2d(),
        new Flatten(),
        new Linear(16, 10, { rng: new Rng(3) }),
      ).nameParameters();
    const withOptimizer = (model: Sequential) => ({ model, optimizer: new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 }) });
    const straightModel = build();
    const straight = new Trainer(config(), trainSet, valSet, withOptimizer(straightModel));
    expect(straight.model).toBe(straightModel);
    const losses: number[] = [];
    straight.on('epochEnd', (e) => losses.push(e.train.loss));
    await straight.fit();
    expect(losses[1]).toBeLessThan(losses[0]);
    // The same run stopped after 3 batches and resumed with a fresh model of the same build.
    const dir = tmp('custom-');
    const controller = new AbortController();
    const first = new Trainer(config(), trainSet, valSet, withOptimizer(build()));
    first.on('batchEnd', (e) => { if (e.step === 3) controller.abort(); });
    await first.fit({ outputDir: dir, signal: controller.signal });
    const again = build();
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {}, {}, withOptimizer(again));
    expect(resumed.model).toBe(again);
    await resumed.fit({ outputDir: dir });
    expect(weightsHash(resumed)).toBe(weightsHash(straight));
    expect(readCheckpoint(join(dir, 'last.safetensors')).meta.model).toEqual({ architecture: 'custom', typeName: 'Sequential' });
  });

  it('clipGradNorm scales every gradient by min(1, max / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_', () => {
    const a = new Tensor(new Float32Array([0, 0]), [2], true), b = new Tensor(new Float32Array([0]), [1], true);
    a.grad = new Tensor(new Float32Array([3, 0]), [2]);
    b.grad = new Tensor(new Float32Array([4]), [1]);
    expect(clipGradNorm([a, b], 1)).toBe(5);
    expect(Array.from(a.grad.data)).toEqual([Math.fround(3 / (5 + 1e-6)), 0]);
    expect(Array.from(b.grad.data)).toEqual([Math.fround(4 / (5 + 1e-6))]);
    expect(clipGradNorm([a, b], 10)).toBeCloseTo(1, 5); // below the bound: unchanged
    expect(Array.from(b.grad.data)).toEqual([Math.fround(4 / (5 + 1e-6))]);
  });

  it('--clip-grad-norm changes training, and a run with it stopped mid-epoch and resumed ends bit-identical', async () => {
    const plain = new Trainer(config(), trainSet, valSet);
    await plain.fit();
    const clipped = new Trainer(config({ clipGradNorm: 0.05 }), trainSet, valSet);
    await clipped.fit();
    expect(weightsHash(clipped)).not.toBe(weightsHash(plain));
    const dir = tmp('clip-');
    const controller = new AbortController();
    const first = new Trainer(config({ clipGradNorm: 0.05 }), trainSet, valSet);
    first.on('batchEnd', (e) => { if (e.step === 4) controller.abort(); });
    await first.fit({ outputDir: dir, signal: controller.signal });
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {});
    await resumed.fit({ outputDir: dir });
    expect(weightsHash(resumed)).toBe(weightsHash(clipped));
  });

  it('--model-ema evaluates the moving average and keeps it as best; stopped mid-epoch and resumed, it ends bit-identical', async () => {
    const emaConfig = config({ modelEma: true, modelEmaSteps: 2, modelEmaDecay: 0.999 });
    const plainVal: number[] = [], emaVal: number[] = [];
    const plain = new Trainer(config(), trainSet, valSet);
    plain.on('epochEnd', (e) => plainVal.push(e.val.loss));
    await plain.fit();
    const dirA = tmp('ema-a-');
    const straight = new Trainer(emaConfig, trainSet, valSet);
    straight.on('epochEnd', (e) => emaVal.push(e.val.loss));
    await straight.fit({ outputDir: dirA });
    expect(emaVal).not.toEqual(plainVal); // the average was evaluated, not the trained weights
    expect(weightsHash(straight)).toBe(weightsHash(plain)); // training itself is unchanged
    // best holds the averaged weights: they differ from the trained ones.
    const best = readCheckpoint(join(dirA, 'best.safetensors')).model.get('features.0.0.weight')!.data;
    expect(Array.from(best)).not.toEqual(Array.from(straight.model.stateDict().get('features.0.0.weight')!.data));
    const dirB = tmp('ema-b-');
    const controller = new AbortController();
    const first = new Trainer(emaConfig, trainSet, valSet);
    first.on('batchEnd', (e) => { if (e.step === 5) controller.abort(); });
    await first.fit({ outputDir: dirB, signal: controller.signal });
    const { trainer: resumed } = Trainer.resume(dirB, trainSet, valSet, () => {});
    await resumed.fit({ outputDir: dirB });
    const digest = (p: string) => createHash('sha256').update(Buffer.concat([...readCheckpoint(p).model.values()].map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)))).digest('hex');
    expect(digest(join(dirB, 'best.safetensors'))).toBe(digest(join(dirA, 'best.safetensors')));
    expect([...readCheckpoint(join(dirB, 'last.safetensors')).ema.values()].map((t) => Array.from(t))).toEqual([...readCheckpoint(join(dirA, 'last.safetensors')).ema.values()].map((t) => Array.from(t)));
  });

  it('--model-ema warns when the run is too short for the adjusted decay to forget its first weights, and not with a lower decay', async () => {
    const warningsOf = async (c: TrainConfig) => {
      const warnings: string[] = [];
      const trainer = new Trainer(c, trainSet, valSet);
      trainer.on('warning', (e) => warnings.push(e.message));
      await trainer.fit();
      return warnings;
    };
    const batches = Math.ceil(trainSet.count / config().batchSize) * config().epochs;
    const [warning] = await warningsOf(config({ modelEma: true, modelEmaSteps: 1 }));
    expect(warning).toMatch(new RegExp(`^--model-ema: the average is updated every 1 batches with decay 0\\.999\\d+ \\(0\\.99998 adjusted for batch ${config().batchSize} and ${config().epochs} epochs, as the reference script does\\); after this run's ${batches} updates its first update still weighs \\d+% of it`));
    expect(warning).toContain('A lower --model-ema-decay (e.g. 0.999) suits a run this short');
    expect(await warningsOf(config({ modelEma: true, modelEmaSteps: 1, modelEmaDecay: 0.9 }))).toEqual([]);
    expect(await warningsOf(config())).toEqual([]);
  });

  it('frozen features: the pooled features are computed once and the classifier trains on them, bit-identical to running the features every batch', async () => {
    // No random augmentation (flips are on by default): the features of an image are then the same every epoch.
    const frozen = (cacheFrozenFeatures: boolean) => new Trainer(config({ freeze: 'features', cacheFrozenFeatures, dropout: 0.2, epochs: 3, hflip: false }), trainSet, valSet);
    const slow = frozen(false), fast = frozen(true);
    const slowEpochs: TrainerEvents['epochEnd'][] = [], fastEpochs: TrainerEvents['epochEnd'][] = [];
    slow.on('epochEnd', (e) => slowEpochs.push(e));
    fast.on('epochEnd', (e) => fastEpochs.push(e));
    // Count how many images went through the features while training (validation aside).
    const countImages = (t: Trainer) => {
      const features = (t.model as ImageClassifier).features;
      const forward = features.forward.bind(features);
      let images = 0;
      features.forward = (x) => ((images += features.training ? x.shape[0] : 0), forward(x));
      return () => images;
    };
    const slowImages = countImages(slow), fastImages = countImages(fast);
    await slow.fit();
    await fast.fit();
    expect(weightsHash(fast)).toBe(weightsHash(slow));
    expect(fastEpochs.map((e) => [e.train, e.val])).toEqual(slowEpochs.map((e) => [e.train, e.val]));
    expect(slowImages()).toBe(3 * trainSet.count); // every batch of three epochs
    expect(fastImages()).toBe(0); // computed once, in eval mode, before training
  });

  it('resume is bit-exact: 2 epochs == 1 epoch, stop, resume, 1 more (sha256 of the weights)', async () => {
    const straight = new Trainer(config(), trainSet, valSet);
    await straight.fit();
    const dir = tmp('resume-');
    // The same 2-epoch run (the one-cycle schedule spans both epochs), stopped after the first.
    const controller = new AbortController();
    const first = new Trainer(config(), trainSet, valSet);
    first.on('epochEnd', () => controller.abort());
    await first.fit({ outputDir: dir, signal: controller.signal });
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {});
    expect(resumed.progress.epoch).toBe(1);
    await resumed.fit({ outputDir: dir });
    expect(weightsHash(resumed)).toBe(weightsHash(straight));
    expect(readdirSync(dir).sort()).toEqual(['best.safetensors', 'last.safetensors', 'previous.safetensors']);
  });

  it('resume is bit-exact mid-epoch too (stopped by an AbortSignal after batch 3)', async () => {
    const straight = new Trainer(config(), trainSet, valSet);
    const straightEpochs: TrainerEvents['epochEnd'][] = [];
    straight.on('epochEnd', (e) => straightEpochs.push(e));
    await straight.fit();
    const dir = tmp('abort-');
    const controller = new AbortController();
    const first = new Trainer(config(), trainSet, valSet);
    first.on('batchEnd', (e) => { if (e.step === 3) controller.abort(); });
    const stops: unknown[] = [];
    first.on('stopped', (e) => stops.push(e));
    await first.fit({ outputDir: dir, signal: controller.signal });
    expect(stops).toEqual([{ epoch: 0, batch: 3, checkpoint: join(dir, 'last.safetensors') }]);
    const { trainer: resumed } = Trainer.resume(dir, trainSet, valSet, () => {});
    expect(resumed.progress).toMatchObject({ epoch: 0, batch: 3, step: 3 });
    const resumedEpochs: TrainerEvents['epochEnd'][] = [];
    resumed.on('epochEnd', (e) => resumedEpochs.push(e));
    await resumed.fit({ outputDir: dir });
    expect(weightsHash(resumed)).toBe(weightsHash(straight));
    // The resumed epoch's training figures cover all its batches, not only those after the stop.
    expect(resumedEpochs.map((e) => e.train)).toEqual(straightEpochs.map((e) => e.train));
  });

  it('a NaN loss stops training with the epoch and step, and keeps the last good checkpoint intact', async () => {
    const dir = tmp('nan-');
    const t = new Trainer(config({ epochs: 3, lr: 1e-3, lrScheduler: 'constant' }), trainSet, valSet);
    await t.fit({ outputDir: join(dir) }); // 3 good epochs
    const before = readFileSync(join(dir, 'last.safetensors'));
    const { trainer } = Trainer.resume(dir, trainSet, valSet, () => {}, { epochs: 4 });
    // Poison one weight: the next forward produces NaN.
    trainer.model.parameters()[0].data[0] = NaN;
    const events: unknown[] = [];
    trainer.on('nanLoss', (e) => events.push(e));
    await expect(trainer.fit({ outputDir: dir })).rejects.toThrow(TrainingStoppedError);
    await expect(trainer.fit({ outputDir: dir })).rejects.toThrow(/the loss is NaN at epoch 4, batch 1 \(step 19\); the last good checkpoint is kept in/);
    // The advice names its setting as data, for a caller to render (the CLI names --lr).
    await expect(trainer.fit({ outputDir: dir })).rejects.toMatchObject({ advice: { text: 'Try a lower learning rate', option: 'lr' } });
    expect(events[0]).toMatchObject({ epoch: 3, batch: 0, step: 18 });
    expect(readFileSync(join(dir, 'last.safetensors')).equals(before)).toBe(true);
  });

  it('checkpoints verify their payload sha256; --resume falls back to previous when last is corrupt', async () => {
    const dir = tmp('corrupt-');
    await new Trainer(config(), trainSet, valSet).fit({ outputDir: dir });
    const last = join(dir, 'last.safetensors');
    const bytes = readFileSync(last);
    bytes[bytes.length - 10] ^= 0xff;
    writeFileSync(last, bytes);
    expect(() => readCheckpoint(last)).toThrow(CheckpointError);
    expect(() => readCheckpoint(last)).toThrow(/last\.safetensors: its sha256 .* does not match/);
    const warnings: string[] = [];
    const { trainer, path } = Trainer.resume(dir, trainSet, valSet, (m) => warnings.push(m));
    expect(path).toBe(join(dir, 'previous.safetensors'));
    expect(trainer.progress.epoch).toBe(1);
    expect(warnings[0]).toMatch(/resuming from .*previous\.safetensors because .*its sha256/);
    truncateSync(join(dir, 'previous.safetensors'), 100);
    expect(() => Trainer.resume(dir, trainSet, valSet, () => {})).toThrow(/cannot resume: .*last\.safetensors: its sha256.*previous\.safetensors/);
  });

  it('a failing checkpoint write leaves the previous checkpoint intact and stops with the error', async () => {
    const dir = tmp('fail-');
    await new Trainer(config({ epochs: 1 }), trainSet, valSet).fit({ outputDir: dir });
    const before = readFileSync(join(dir, 'last.safetensors'));
    const full: CheckpointWriter = { write: () => { throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }); } };
    const { trainer } = Trainer.resume(dir, trainSet, valSet, () => {}, { epochs: 2 });
    await expect(trainer.fit({ outputDir: dir, writer: full })).rejects.toThrow(/ENOSPC/);
    expect(readFileSync(join(dir, 'last.safetensors')).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([]);
  });
});
