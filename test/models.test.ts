import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { layerCosts, formatCostTable } from '../src/nn/cost.js';
import { loadWeights, saveWeights, tensorsFromFile } from '../src/nn/interop.js';
import { Conv2d } from '../src/nn/layers.js';
import { createModel, FullConvMobileNet, InvertedResidual, makeDivisible, MobileNetV1, MobileNetV2, ShallowMobileNet, type ImageClassifier } from '../src/nn/mobilenet.js';
import { Sequential } from '../src/nn/module.js';
import { relu, relu6 } from '../src/ops/activations.js';
import { batchNorm2d } from '../src/ops/batchnorm.js';
import { mul } from '../src/ops/elementwise.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { sum } from '../src/ops/reduce.js';
import { noGrad } from '../src/tensor/autograd.js';
import { Rng } from '../src/tensor/rng.js';
import { loadSafetensors, parseSafetensors } from '../src/tensor/safetensors.js';
import { rand, Tensor, zeros } from '../src/tensor/tensor.js';
import { expectClose, FIXTURE_DIR } from './helpers.js';

const M = 1e6;

describe('parameter counts', () => {
  it('V1 alpha 1.0 / 1000 classes = 4,231,976; V2 alpha 1.0 = 3,504,872; V1 alpha 0.25 / 10 classes = 215,642', () => {
    expect(new MobileNetV1().parameterCount()).toBe(4_231_976);
    expect(new MobileNetV2().parameterCount()).toBe(3_504_872);
    expect(new MobileNetV1({ alpha: 0.25, numClasses: 10 }).parameterCount()).toBe(215_642);
  });
  it('makeDivisible rounds like torchvision', () => {
    expect([makeDivisible(32 * 0.35), makeDivisible(16 * 0.35), makeDivisible(1280), makeDivisible(24 * 0.75), makeDivisible(100)]).toEqual([16, 8, 1280, 24, 104]);
  });
});

describe("cost model reproduces the paper's tables", () => {
  const multAdds = (m: ImageClassifier, r = 224) => layerCosts(m, [1, 3, r, r]).totalMultAdds;
  it('V1 at 224: 569M mult-adds, 4.2M params (Table 1-2), alpha 0.75/0.5/0.25: 325M/149M/41M (Table 6)', () => {
    expect(Math.round(multAdds(new MobileNetV1()) / M)).toBe(569);
    expect(Math.round(multAdds(new MobileNetV1({ alpha: 0.75 })) / M)).toBe(325);
    expect(Math.round(multAdds(new MobileNetV1({ alpha: 0.5 })) / M)).toBe(149);
    expect(Math.round(multAdds(new MobileNetV1({ alpha: 0.25 })) / M)).toBe(41);
    expect((new MobileNetV1().parameterCount() / M).toFixed(1)).toBe('4.2');
  });
  it('resolution multiplier: 192/160/128 give 418M/290M/186M (Table 7)', () => {
    expect([192, 160, 128].map((r) => Math.round(multAdds(new MobileNetV1(), r) / M))).toEqual([418, 291, 186]);
  });
  it('full-conv baseline: 4866M mult-adds (+-0.1%) and 29.3M params (Table 4)', () => {
    const b = new FullConvMobileNet();
    expect(Math.abs(multAdds(b) / M - 4866) / 4866).toBeLessThan(0.001);
    expect((b.parameterCount() / M).toFixed(1)).toBe('29.3');
  });
  it('V2 at 224: ~300M mult-adds', () => {
    expect(Math.round(multAdds(new MobileNetV2()) / M)).toBe(301);
  });
  it('Shallow MobileNet: 307M mult-adds and 2.9M params against alpha 0.75 V1\'s 325M / 2.6M (Table 5)', () => {
    const shallow = new ShallowMobileNet();
    expect(Math.round(multAdds(shallow) / M)).toBe(307);
    expect((shallow.parameterCount() / M).toFixed(1)).toBe('2.9');
    expect((new MobileNetV1({ alpha: 0.75 }).parameterCount() / M).toFixed(1)).toBe('2.6');
    // Eight separable blocks instead of thirteen: the five 14x14x512 ones are gone.
    expect(shallow.features.length).toBe(1 + 8);
  });
  it('V2 --expansion: 6 is the paper\'s network; 0.5 turns every t=6 block into a reducing bottleneck', () => {
    expect(new MobileNetV2({ expansion: 6 }).parameterCount()).toBe(new MobileNetV2().parameterCount());
    const reduced = new MobileNetV2({ expansion: 0.5 });
    const block = reduced.features.at(2) as InvertedResidual; // 16 -> 24 channels, t = 0.5: hidden 8
    const expand = (block.conv.at(0) as Sequential).at(0) as Conv2d;
    expect([expand.inChannels, expand.outChannels]).toEqual([16, 8]);
    expect(reduced.features.at(1).stateDict().get('conv.0.0.weight')!.shape).toEqual([32, 1, 3, 3]); // the t = 1 block is unchanged: depthwise on the stem's 32 channels
    expect(() => new MobileNetV2({ expansion: 0 })).toThrow('expansion must be > 0, got 0');
  });
  it('breakdown by layer type matches Table 2 (1x1 conv 94.86% of mult-adds, 74.6% of params)', () => {
    const r = layerCosts(new MobileNetV1(), [1, 3, 224, 224]);
    const share = (kind: string) => r.breakdown.find((b) => b.kind === kind)!;
    expect((100 * share('Conv 1x1').multAddsShare).toFixed(2)).toBe('94.86');
    expect((100 * share('Conv DW 3x3').multAddsShare).toFixed(2)).toBe('3.06');
    expect((100 * share('FC').multAddsShare).toFixed(2)).toBe('0.18');
    expect(Math.abs(100 * share('Conv 1x1').paramsShare - 74.59)).toBeLessThan(0.05);
    expect(Math.abs(100 * share('FC').paramsShare - 24.33)).toBeLessThan(0.05);
    const table = formatCostTable(r);
    expect(table).toContain('features.1.dw');
    expect(table).toContain('[1, 1024, 7, 7]');
  });
});

/**
 * max |a - b| / max(max |b|, 1e-6): the error relative to the tensor's own scale. The floor
 * matters for values that are mathematically zero (a BatchNorm beta whose output feeds another
 * BatchNorm gets no gradient; a running mean after a zero-mean input stays 0) and that PyTorch's
 * float64 run gives as 1e-17 while float32 gives 1e-10.
 */
function normalizedError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / Math.max(scale, 1e-6);
}

/**
 * Load a PyTorch model fixture into our model and compare one train-mode forward/backward and
 * one eval-mode forward/backward with PyTorch's float64 results.
 */
function checkModelAgainstPyTorch(model: ImageClassifier, fixtureName: string) {
  const file = loadSafetensors(join(FIXTURE_DIR, fixtureName));
  const all = tensorsFromFile(file);
  const t = (k: string) => all.get(k)!;
  const torchF32Errors = JSON.parse(file.metadata.torch_f32_grad_errors) as Record<string, number>;
  model.loadStateDict(tensorsFromFile(file, 'param.'));
  const labels = Array.from(t('labels').data);

  // Train mode: batch statistics, running statistics updated.
  const loss = softmaxCrossEntropy(model.train().forward(t('input')), labels);
  const logitsError = normalizedError((loss.node!.inputs[0]).data, t('logits').data);
  expectClose(loss.data, t('loss').data, 'loss', 1e-4, 1e-6);
  loss.backward();
  // Per gradient tensor: our distance to PyTorch float64 vs PyTorch float32's own distance.
  let worstRatio = 0, worstName = '', worstGrad = 0;
  for (const [name, p] of model.namedParameters()) {
    const e = normalizedError(p.grad!.data, t(`grad.${name}`).data);
    worstGrad = Math.max(worstGrad, e);
    const ratio = e / Math.max(torchF32Errors[name], 1e-3);
    if (ratio > worstRatio) [worstRatio, worstName] = [ratio, name];
  }
  for (const [name, b] of model.namedBuffers()) {
    if (!name.endsWith('num_batches_tracked')) expectClose(b.data, t(`buffer_after.${name}`).data, `BN statistic ${name}`, 1e-3, 1e-5);
  }

  // Eval mode: the running statistics PyTorch's train-mode pass left (ours differ from them by
  // that pass's float32 error, checked just above); every gradient is well conditioned, so the
  // bound is tight.
  for (const [name, b] of model.namedBuffers()) if (!name.endsWith('num_batches_tracked')) b.data.set(t(`buffer_after.${name}`).data);
  model.zeroGrad();
  const evalLogits = model.eval().forward(t('input'));
  const evalLogitsError = normalizedError(evalLogits.data, t('eval_logits').data);
  softmaxCrossEntropy(evalLogits, labels).backward();
  let worstEvalGrad = 0, worstEvalName = '';
  let count = 0;
  for (const [name, p] of model.namedParameters()) {
    const e = normalizedError(p.grad!.data, t(`eval_grad.${name}`).data);
    if (e > worstEvalGrad) [worstEvalGrad, worstEvalName] = [e, name];
    count++;
  }
  return { logitsError, worstGrad, worstRatio, worstName, evalLogitsError, worstEvalGrad, worstEvalName, count };
}

function expectModelMatches(r: ReturnType<typeof checkModelAgainstPyTorch>, parameterTensors: number) {
  expect(r.count).toBe(parameterTensors);
  expect(r.logitsError, 'train-mode logits').toBeLessThan(1e-3);
  // Train mode: no gradient further from float64 than twice PyTorch's own float32 run (or 2e-3).
  expect(r.worstRatio, `train-mode gradient of ${r.worstName}`).toBeLessThan(2);
  // Eval mode, from PyTorch's running statistics: PyTorch's own float32 run lands 2.9e-7 (logits)
  // and 8.3e-7 (worst gradient) from float64 on the V2 fixture.
  expect(r.evalLogitsError, 'eval-mode logits').toBeLessThan(1e-6);
  expect(r.worstEvalGrad, `eval-mode gradient of ${r.worstEvalName}`).toBeLessThan(2e-6);
}

describe('whole models match PyTorch 1.13 (logits, loss, every parameter gradient, BN statistics)', () => {
  it('MobileNetV1 alpha 0.25, 4 x 3 x 32 x 32', () => {
    const r = checkModelAgainstPyTorch(new MobileNetV1({ alpha: 0.25, numClasses: 10, resolution: 32 }), 'model_v1_a0.25.safetensors');
    console.log('MobileNetV1 alpha 0.25 vs PyTorch float64:', r);
    expectModelMatches(r, 83);
  });
  it('MobileNetV2 alpha 0.35 (torchvision), 4 x 3 x 32 x 32', () => {
    const r = checkModelAgainstPyTorch(new MobileNetV2({ alpha: 0.35, numClasses: 10, resolution: 32, dropout: 0 }), 'model_v2_a0.35.safetensors');
    console.log('MobileNetV2 alpha 0.35 vs PyTorch float64:', r);
    expectModelMatches(r, 158);
  });
});

describe('torchvision interop', () => {
  const fixturePath = join(FIXTURE_DIR, 'torchvision_v2.safetensors');
  const file = loadSafetensors(fixturePath);
  const cfg = JSON.parse(file.metadata.config) as { width_mult: number; num_classes: number };
  const weightKeys = [...file.tensors.keys()].filter((k) => !k.startsWith('@'));
  const build = () => new MobileNetV2({ alpha: cfg.width_mult, numClasses: cfg.num_classes, dropout: 0 });
  const extras = tensorsFromFile(file, '@');

  it('state-dict keys are exactly torchvision mobilenet_v2 keys, in the same order', () => {
    expect([...build().stateDict().keys()]).toEqual(weightKeys);
  });
  it('torchvision weights load and give the same logits in eval mode and in train mode', () => {
    const model = build();
    const weights = tensorsFromFile(file);
    for (const k of extras.keys()) weights.delete('@' + k);
    model.loadStateDict(weights);
    const evalLogits = noGrad(() => model.eval().forward(extras.get('input')!));
    expectClose(evalLogits.data, extras.get('logits_eval')!.data, 'eval logits', 1e-4, 1e-5);
    const trainLogits = noGrad(() => model.train().forward(extras.get('input')!));
    // Train mode runs a dozen batch-statistics BatchNorms on a batch of 2: float32 rounding is
    // amplified there (see the whole-model tests), so the bound is relative to the logits' scale.
    expect(normalizedError(trainLogits.data, extras.get('logits_train')!.data)).toBeLessThan(1e-3);
  });
  it('our export has torchvision keys, dtypes and values (so torchvision loads it back)', () => {
    const model = build();
    const weights = tensorsFromFile(file);
    for (const k of extras.keys()) weights.delete('@' + k);
    model.loadStateDict(weights);
    const dir = mkdtempSync(join(tmpdir(), 'export-'));
    const out = join(dir, 'exported.safetensors');
    saveWeights(model, out);
    const exported = loadSafetensors(out);
    expect([...exported.tensors.keys()]).toEqual(weightKeys);
    for (const key of weightKeys) {
      const a = exported.tensors.get(key)!, b = file.tensors.get(key)!;
      expect(a.dtype, key).toBe(b.dtype);
      expect(a.shape, key).toEqual(b.shape);
      expect(Array.from(a.data as ArrayLike<number | bigint>), key).toEqual(Array.from(b.data as ArrayLike<number | bigint>));
    }
    // Where PyTorch is installed (not in CI), let torchvision itself load the export.
    const python = spawnSync('/usr/bin/python3', ['-c', 'import torchvision'], { stdio: 'ignore' });
    if (python.status === 0) {
      const report = execFileSync('/usr/bin/python3', [resolve(FIXTURE_DIR, '../../scripts/export-torchvision.py'), '--check', out, '--against', fixturePath]).toString();
      expect(report).toContain('OK');
    }
  });
});

describe('Module API', () => {
  it('loadStateDict names missing keys, unexpected keys and shape mismatches', () => {
    const small = new MobileNetV1({ alpha: 0.25, numClasses: 10 });
    const other = new MobileNetV1({ alpha: 0.5, numClasses: 10 });
    expect(() => small.loadStateDict(other.stateDict())).toThrow(/\d+ shape mismatches: features\.0\.0\.weight: checkpoint has \[16, 3, 3, 3\], model has \[8, 3, 3, 3\]/);
    const dict = small.stateDict();
    dict.delete('classifier.1.bias');
    dict.set('extra.weight', zeros([1]));
    expect(() => new MobileNetV1({ alpha: 0.25, numClasses: 10 }).loadStateDict(dict)).toThrow(/1 missing key: classifier\.1\.bias\. 1 unexpected key: extra\.weight/);
    const r = new MobileNetV1({ alpha: 0.25, numClasses: 10 }).loadStateDict(dict, { strict: false });
    expect(r.missing).toEqual(['classifier.1.bias']);
  });
  it('train()/eval() reach every submodule; eval leaves BN statistics alone, train updates them', () => {
    const m = new MobileNetV1({ alpha: 0.25, numClasses: 3 });
    const x = rand([2, 3, 32, 32], new Rng(1));
    const rm = m.stateDict().get('features.0.1.running_mean')!;
    const before = rm.data.slice();
    m.eval();
    expect([...m.namedModules()].every(([, mod]) => !mod.training)).toBe(true);
    noGrad(() => m.forward(x));
    expect(Array.from(rm.data)).toEqual(Array.from(before));
    m.train();
    noGrad(() => m.forward(x));
    expect(Array.from(rm.data)).not.toEqual(Array.from(before));
  });
  it('models take any resolution and channel count (28 x 28 grayscale) and name their parameters', () => {
    for (const arch of ['v1', 'v2', 'baseline'] as const) {
      const m = createModel(arch, { alpha: 0.25, numClasses: 10, inChannels: 1, resolution: 28 });
      const y = noGrad(() => m.eval().forward(rand([2, 1, 28, 28], new Rng(2))));
      expect([...y.shape]).toEqual([2, 10]);
      expect(m.parameters().every((p) => typeof p.name === 'string')).toBe(true);
    }
    expect(createModel('v1', { alpha: 0.25 }).parameters()[3].name).toBe('features.1.dw.weight');
  });
  it('Conv2d picks the depthwise and pointwise kernels by shape, and rejects bad options', () => {
    expect(new Conv2d(8, 8, 3, { groups: 8 }).typeName).toBe('DepthwiseConv2d');
    expect(new Conv2d(8, 16, 1).typeName).toBe('PointwiseConv2d');
    expect(() => new Conv2d(8, 16, 3, { groups: 3 })).toThrow('Conv2d: groups 3 must divide inChannels 8 and outChannels 16');
    expect(() => new MobileNetV1({ alpha: 0 })).toThrow('MobileNetV1: alpha must be in (0, 4], got 0');
  });
  it('weights round-trip through saveWeights/loadWeights', () => {
    const a = new MobileNetV1({ alpha: 0.25, numClasses: 10, seed: 1 });
    const b = new MobileNetV1({ alpha: 0.25, numClasses: 10, seed: 2 });
    const path = join(mkdtempSync(join(tmpdir(), 'w-')), 'w.safetensors');
    saveWeights(a, path);
    loadWeights(b, path);
    expect(Array.from(b.parameters()[5].data)).toEqual(Array.from(a.parameters()[5].data));
    // BatchNorm's counter is stored as int64, like PyTorch's num_batches_tracked.
    expect(parseSafetensors(readFileSync(path)).tensors.get('features.0.1.num_batches_tracked')!.dtype).toBe('I64');
  });
});


describe('fused BatchNorm + activation', () => {
  it('gives bit-identical logits and gradients to separate BatchNorm and ReLU / ReLU6 (V1 and V2, train and eval mode)', () => {
    for (const arch of ['v1', 'v2'] as const) {
      for (const mode of ['train', 'eval'] as const) {
        const run = (fuse: boolean) => {
          const m = createModel(arch, { alpha: 0.35, numClasses: 5, resolution: 32, dropout: 0, seed: 4 }).fuseActivations(fuse);
          if (mode === 'eval') m.eval();
          const x = rand([3, 3, 32, 32], new Rng(8));
          const logits = m.forward(x);
          softmaxCrossEntropy(logits, [0, 3, 4]).backward();
          const ops = new Set<string>();
          for (let n = logits.node; n !== null && n !== undefined; n = n.inputs[0]?.node) ops.add(n.op);
          return { logits: Array.from(logits.data), grads: m.parameters().map((p) => Array.from(p.grad!.data)), ops };
        };
        const fused = run(true), separate = run(false);
        expect(fused.logits).toEqual(separate.logits);
        expect(fused.grads).toEqual(separate.grads);
        expect([...fused.ops].some((op) => op.startsWith('batchNorm2d+'))).toBe(true);
        expect([...separate.ops].some((op) => op.startsWith('batchNorm2d+'))).toBe(false);
      }
    }
  });
  it('an input that needs no gradient: gamma and beta get the same gradients as from separate ops', () => {
    const rng = new Rng(5);
    const x = rand([2, 3, 5, 7], rng, -8, 8);
    const dy = rand([2, 3, 5, 7], rng, -1, 1);
    for (const activation of ['relu', 'relu6'] as const) {
      for (const training of [true, false]) {
        const grads = (fuse: boolean) => {
          const gamma = new Tensor(Float32Array.of(1.5, 0.5, 2), [3], true), beta = new Tensor(Float32Array.of(0.1, -0.2, 3), [3], true);
          const stats = [new Tensor(Float32Array.of(0.5, -1, 0), [3]), new Tensor(Float32Array.of(2, 1, 4), [3])] as const;
          const y = fuse
            ? batchNorm2d(x, gamma, beta, stats[0], stats[1], { training, activation })
            : (activation === 'relu' ? relu : relu6)(batchNorm2d(x, gamma, beta, stats[0], stats[1], { training }));
          sum(mul(y, dy)).backward();
          return [Array.from(gamma.grad!.data), Array.from(beta.grad!.data)];
        };
        expect(grads(true)).toEqual(grads(false));
      }
    }
  });
});
