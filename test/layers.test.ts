import { describe, expect, it } from 'vitest';
import { relu, relu6 } from '../src/ops/activations.js';
import { batchNorm2d, batchNormNaiveBackward, batchNormNaiveForward, batchNormStats, foldBatchNorm } from '../src/ops/batchnorm.js';
import { conv2d } from '../src/ops/conv2d.js';
import { depthwiseConv2d } from '../src/ops/depthwise.js';
import { dropout } from '../src/ops/dropout.js';
import { add, div, exp, log, mul, sqrt, sub, addScalar, mulScalar } from '../src/ops/elementwise.js';
import { linear, linearNaiveForward } from '../src/ops/linear.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { avgPool2d, globalAvgPool2d, maxPool2d } from '../src/ops/pooling.js';
import { max, mean, sum } from '../src/ops/reduce.js';
import { reshape } from '../src/ops/view.js';
import { noGrad } from '../src/tensor/autograd.js';
import { assertGradcheck } from '../src/tensor/gradcheck.js';
import { Rng } from '../src/tensor/rng.js';
import { fromArray, ones, rand, randn, Tensor, zeros } from '../src/tensor/tensor.js';
import { checkFixtureCase, expectClose, Fixture } from './helpers.js';

const fixture = new Fixture('layers');

describe('layer ops match PyTorch 1.13', () => {
  for (const c of fixture.cases) {
    it(`${c.name} ${JSON.stringify(c.config)}`, () => {
      const cfg = c.config;
      const pool = { kernel: cfg.kernel as number, stride: cfg.stride as number, padding: cfg.padding as number };
      if (c.name.startsWith('batchnorm_')) {
        const rm = fixture.tensor(c.name, 'running_mean_before'), rv = fixture.tensor(c.name, 'running_var_before');
        checkFixtureCase(fixture, c.name, (x, g, b) => batchNorm2d(x, g, b, rm, rv, { training: cfg.training as boolean, momentum: cfg.momentum as number, eps: cfg.eps as number }));
        if (cfg.training) {
          expectClose(rm.data, fixture.tensor(c.name, 'running_mean_after').data, 'running mean');
          expectClose(rv.data, fixture.tensor(c.name, 'running_var_after').data, 'running var');
        }
      } else if (c.name === 'relu') checkFixtureCase(fixture, c.name, relu);
      else if (c.name === 'relu6') checkFixtureCase(fixture, c.name, relu6);
      else if (c.name.startsWith('maxpool_')) checkFixtureCase(fixture, c.name, (x) => maxPool2d(x, pool));
      else if (c.name.startsWith('avgpool_')) checkFixtureCase(fixture, c.name, (x) => avgPool2d(x, pool));
      else if (c.name === 'globalavgpool') checkFixtureCase(fixture, c.name, globalAvgPool2d);
      else if (c.name.startsWith('linear_')) checkFixtureCase(fixture, c.name, (x, w, b) => linear(x, w, b ?? null));
      else if (c.name.startsWith('crossentropy_')) {
        const logits = fixture.tensor(c.name, 'in0', true);
        const labels = fixture.ints(c.name, 'in1');
        const loss = softmaxCrossEntropy(logits, labels, { labelSmoothing: cfg.labelSmoothing as number });
        expectClose(loss.data, fixture.tensor(c.name, 'out').data, 'loss');
        loss.backward(fixture.tensor(c.name, 'gy'));
        expectClose(logits.grad!.data, fixture.tensor(c.name, 'grad0').data, 'dlogits');
      } else throw new Error(`no runner for ${c.name}`);
    });
  }
});

describe('naive twins: layer ops equal the same math composed from core ops', () => {
  const rng = new Rng(21);
  it('batchNorm statistics in one pass (sum and sum of squares) match the two-pass mean and variance, also far from zero', () => {
    for (const offset of [0, 30, 300]) {
      const [N, C, HW] = [4, 3, 49];
      const x = randn([N, C, HW], rng, offset, 0.5).data;
      const stats = new Float64Array(2 * C);
      batchNormStats(x, N, C, HW, stats, 0, C);
      for (let c = 0; c < C; c++) {
        const values: number[] = [];
        for (let n = 0; n < N; n++) for (let i = 0; i < HW; i++) values.push(x[(n * C + c) * HW + i]);
        const m = values.reduce((s, v) => s + v, 0) / values.length;
        const variance = values.reduce((s, v) => s + (v - m) ** 2, 0) / values.length;
        expect(Math.abs(stats[2 * c] - m), `mean, offset ${offset}`).toBeLessThan(1e-12 * Math.max(1, offset));
        expect(Math.abs(stats[2 * c + 1] - variance) / variance, `variance, offset ${offset}`).toBeLessThan(1e-7);
      }
    }
  });
  it.each([
    ['training', true, undefined],
    ['training, fused ReLU6', true, 'relu6'],
    ['eval, fused ReLU', false, 'relu'],
    ['eval', false, undefined],
  ] as const)('batchNorm2d (%s) equals its naive twin, forward and backward', (_name, training, activation) => {
    const N = 3, C = 4, HW = 10;
    // Shifts spread so that some outputs fall below 0 and some above 6 (both sides of each clamp).
    const x0 = randn([N, C, 5, 2], rng, 1, 2), g0 = rand([C], rng, 2, 4), b0 = fromArray([-1, 2, 5, 7]), dy = randn([N, C, 5, 2], rng);
    const rm = randn([C], rng, 1, 0.5), rv = rand([C], rng, 0.5, 2);
    const x = new Tensor(x0.data.slice(), x0.shape, true), g = new Tensor(g0.data.slice(), [C], true), b = new Tensor(b0.data.slice(), [C], true);
    const y = batchNorm2d(x, g, b, new Tensor(rm.data.slice(), [C]), new Tensor(rv.data.slice(), [C]), { training, activation });
    y.backward(dy);
    const high = activation === 'relu6' ? 6 : activation === 'relu' ? Infinity : 0;
    const twin = batchNormNaiveForward(x0.data, N, C, HW, g0.data, b0.data, training, rm.data, rv.data, 1e-5, high);
    const back = batchNormNaiveBackward(dy.data, x0.data, twin.y, N, C, HW, g0.data, twin.mean, twin.variance, training, 1e-5, high);
    if (activation === 'relu6') expect(Array.from(twin.y).filter((v) => v === 6).length).toBeGreaterThan(0);
    expectClose(y.data, twin.y, 'y', 1e-5, 1e-5);
    expectClose(x.grad!.data, back.dx, 'dx', 1e-4, 1e-5);
    expectClose(g.grad!.data, back.dgamma, 'dgamma', 1e-4, 1e-5);
    expectClose(b.grad!.data, back.dbeta, 'dbeta', 1e-4, 1e-5);
  });
  it('batchNorm2d (training) == (x - mean) / sqrt(var + eps) * gamma + beta built from core ops', () => {
    const x0 = randn([3, 4, 5, 2], rng, 1, 2), g0 = rand([4], rng, 0.5, 1.5), b0 = randn([4], rng), dy = randn([3, 4, 5, 2], rng);
    const run = (compose: boolean) => {
      const x = new Tensor(x0.data.slice(), x0.shape, true), g = new Tensor(g0.data.slice(), [4], true), b = new Tensor(b0.data.slice(), [4], true);
      let y: Tensor;
      if (compose) {
        const m = mean(x, [0, 2, 3], { keepdim: true });
        const centred = sub(x, m);
        const variance = mean(mul(centred, centred), [0, 2, 3], { keepdim: true });
        y = add(mul(div(centred, sqrt(addScalar(variance, 1e-5))), reshape(g, [1, 4, 1, 1])), reshape(b, [1, 4, 1, 1]));
      } else y = batchNorm2d(x, g, b, zeros([4]), ones([4]), { training: true });
      y.backward(dy);
      return [y.data, x.grad!.data, g.grad!.data, b.grad!.data];
    };
    const [fast, composed] = [run(false), run(true)];
    ['y', 'dx', 'dgamma', 'dbeta'].forEach((what, i) => expectClose(fast[i], composed[i], what, 1e-4, 1e-4));
  });
  it('softmaxCrossEntropy == -mean(log(exp(z) / sum exp(z))[label]) built from core ops', () => {
    const z0 = randn([4, 6], rng), labels = [0, 5, 2, 2];
    const zA = new Tensor(z0.data.slice(), z0.shape, true), zB = new Tensor(z0.data.slice(), z0.shape, true);
    const lossA = softmaxCrossEntropy(zA, labels);
    const logp = log(div(exp(zB), sum(exp(zB), 1, { keepdim: true })));
    const onehot = zeros([4, 6]);
    labels.forEach((l, n) => (onehot.data[n * 6 + l] = 1));
    const lossB = mulScalar(sum(mul(logp, onehot)), -1 / 4);
    lossA.backward();
    lossB.backward();
    expectClose(lossA.data, lossB.data, 'loss', 1e-5, 1e-6);
    expectClose(zA.grad!.data, zB.grad!.data, 'dlogits', 1e-4, 1e-6);
  });
  it('linear forward equals the naive-GEMM twin', () => {
    const x = randn([7, 11], rng), w = randn([5, 11], rng), b = randn([5], rng);
    expectClose(linear(x, w, b).data, linearNaiveForward(x.data, w.data, b.data, 7, 11, 5), 'linear', 1e-5, 1e-5);
  });
  it('maxPool2d over the whole plane == max over the flattened axis', () => {
    const x = randn([2, 3, 4, 4], rng);
    expectClose(maxPool2d(x, { kernel: 4 }).data, max(reshape(x, [2, 3, 16]), 2).data, 'maxpool');
    expectClose(globalAvgPool2d(x).data, mean(x, [2, 3]).data, 'global average');
  });
});

describe('layer ops pass finite-difference checks (kinks skipped)', () => {
  const rng = new Rng(13);
  const p = (shape: number[], m = 0, s = 1) => randn(shape, rng, m, s, { requiresGrad: true });
  it('batchNorm2d in training and eval mode', () => {
    assertGradcheck('bn train', (x, g, b) => batchNorm2d(x, g, b, zeros([3]), ones([3]), { training: true }), [p([2, 3, 3, 3]), p([3]), p([3])], { rtol: 2e-2 });
    assertGradcheck('bn eval', (x, g, b) => batchNorm2d(x, g, b, fromArray([0.1, -0.2, 0.3]), fromArray([1.5, 0.5, 2]), { training: false }), [p([2, 3, 2, 2]), p([3]), p([3])]);
  });
  it('relu and relu6 skip points at their kinks (0 and 6)', () => {
    const r = assertGradcheck('relu', relu, [p([40], 0, 2)], { isKink: (_i, _j, v) => Math.abs(v) < 0.02 });
    expect(r.checked).toBeGreaterThan(20);
    assertGradcheck('relu6', relu6, [p([60], 3, 4)], { isKink: (_i, _j, v) => Math.abs(v) < 0.02 || Math.abs(v - 6) < 0.02 });
  });
  it('pools, linear, softmax cross-entropy with label smoothing', () => {
    assertGradcheck('maxpool', (x) => maxPool2d(x, { kernel: 3, stride: 2, padding: 1 }), [p([1, 2, 6, 6])]);
    assertGradcheck('avgpool', (x) => avgPool2d(x, { kernel: 3, stride: 2, padding: 1 }), [p([1, 2, 6, 5])]);
    assertGradcheck('globalavgpool', globalAvgPool2d, [p([2, 3, 3, 4])]);
    assertGradcheck('linear', (x, w, b) => linear(x, w, b), [p([3, 5]), p([4, 5]), p([4])]);
    assertGradcheck('cross-entropy', (z) => softmaxCrossEntropy(z, [1, 0, 3], { labelSmoothing: 0.1 }), [p([3, 4])]);
  });
  it('dropout with a fixed mask', () => {
    assertGradcheck('dropout', (x) => dropout(x, 0.3, new Rng(4), true), [p([50])]);
  });
});

describe('dropout', () => {
  it('is the identity in eval and inverted-scaled in training, reproducible from the seed', () => {
    const x = ones([10000]);
    expect(dropout(x, 0.5, new Rng(1), false)).toBe(x);
    const y = dropout(x, 0.25, new Rng(1), true);
    const kept = y.data.filter((v) => v !== 0);
    expect(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6)).toBe(true);
    expect(Math.abs(kept.length / 10000 - 0.75)).toBeLessThan(0.02);
    expect(Array.from(dropout(x, 0.25, new Rng(1), true).data)).toEqual(Array.from(y.data));
    expect(() => dropout(x, 1, new Rng(1), true)).toThrow('dropout: p must be in [0, 1), got 1');
  });
});

describe('BatchNorm folding', () => {
  it('conv folded with eval BN == conv followed by eval BN (standard and depthwise)', () => {
    const rng = new Rng(17);
    const x = randn([2, 4, 7, 7], rng);
    const gamma = rand([6], rng, 0.5, 1.5), beta = randn([6], rng), rm = randn([6], rng, 0, 0.3), rv = rand([6], rng, 0.5, 2);
    const w = randn([6, 4, 3, 3], rng), b = randn([6], rng);
    const reference = noGrad(() => batchNorm2d(conv2d(x, w, b, { padding: 1 }), gamma, beta, rm, rv, { training: false }));
    const folded = foldBatchNorm(w, b, gamma, beta, rm, rv);
    expectClose(conv2d(x, folded.weight, folded.bias, { padding: 1 }).data, reference.data, 'folded conv', 1e-4, 1e-5);
    const xd = randn([1, 6, 5, 5], rng), wd = randn([6, 1, 3, 3], rng);
    const refD = noGrad(() => batchNorm2d(depthwiseConv2d(xd, wd, null, { stride: 2, padding: 1 }), gamma, beta, rm, rv, { training: false }));
    const fd = foldBatchNorm(wd, null, gamma, beta, rm, rv);
    expectClose(depthwiseConv2d(xd, fd.weight, fd.bias, { stride: 2, padding: 1 }).data, refD.data, 'folded depthwise', 1e-4, 1e-5);
  });
});

describe('layer errors name the op and the values', () => {
  const rng = new Rng(2);
  it('bad shapes and labels', () => {
    expect(() => batchNorm2d(randn([2, 3, 4, 4], rng), ones([4]), zeros([3]), zeros([3]), ones([3]), { training: true })).toThrow('batchNorm2d: gamma must have shape [3] for an input with 3 channels, got [4]');
    expect(() => linear(randn([2, 5], rng), randn([3, 4], rng))).toThrow('linear: input has 5 features but weight [3, 4] expects 4');
    expect(() => softmaxCrossEntropy(randn([2, 3], rng), [0, 3])).toThrow('softmaxCrossEntropy: label 3 at position 1 is outside [0, 3)');
    expect(() => softmaxCrossEntropy(randn([2, 3], rng), [0])).toThrow('softmaxCrossEntropy: 1 labels for a batch of 2 logits');
    expect(() => maxPool2d(randn([1, 1, 2, 2], rng), { kernel: 3 })).toThrow(/maxPool2d: input \[1, 1, 2, 2\] is smaller than the 3x3 window/);
  });
  it('NaN in the input propagates through relu (it is not silently clamped)', () => {
    expect(Number.isNaN(relu(fromArray([NaN])).data[0])).toBe(true);
  });
});
