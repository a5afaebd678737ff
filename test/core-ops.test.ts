import { describe, expect, it } from 'vitest';
import { add, div, exp, log, mul, neg, pow, sqrt, sub } from '../src/ops/elementwise.js';
import { matmul } from '../src/ops/matmul.js';
import { max, mean, sum } from '../src/ops/reduce.js';
import { permute, transpose } from '../src/ops/view.js';
import { assertGradcheck } from '../src/tensor/gradcheck.js';
import { Rng } from '../src/tensor/rng.js';
import { fromArray, rand, randn, Tensor } from '../src/tensor/tensor.js';
import { checkFixtureCase, Fixture } from './helpers.js';

const fixture = new Fixture('core');
const binary: Record<string, (a: Tensor, b: Tensor) => Tensor> = { add, sub, mul, div };
const unary: Record<string, (x: Tensor) => Tensor> = { neg, exp, log, sqrt };

type Axes = number[] | null;

describe('core ops match PyTorch 1.13 (forward and every input gradient)', () => {
  for (const c of fixture.cases) {
    const [op] = c.name.split('_');
    it(`${c.name} ${JSON.stringify(c.config)}`, () => {
      const cfg = c.config;
      if (op in binary) checkFixtureCase(fixture, c.name, binary[op]);
      else if (op in unary) checkFixtureCase(fixture, c.name, unary[op]);
      else if (op === 'pow') checkFixtureCase(fixture, c.name, (x) => pow(x, cfg.p as number));
      else if (op === 'sum') checkFixtureCase(fixture, c.name, (x) => sum(x, (cfg.axes as Axes) ?? undefined, { keepdim: cfg.keepdim as boolean }));
      else if (op === 'mean') checkFixtureCase(fixture, c.name, (x) => mean(x, (cfg.axes as Axes) ?? undefined, { keepdim: cfg.keepdim as boolean }));
      else if (op === 'max') checkFixtureCase(fixture, c.name, (x) => max(x, cfg.axis as number, { keepdim: cfg.keepdim as boolean }));
      else if (op === 'matmul') checkFixtureCase(fixture, c.name, matmul);
      else if (op === 'permute') checkFixtureCase(fixture, c.name, (x) => permute(x, cfg.perm as number[]));
      else if (op === 'transpose') checkFixtureCase(fixture, c.name, (x) => transpose(x, cfg.dim0 as number, cfg.dim1 as number));
      else throw new Error(`no runner for fixture case ${c.name}`);
    });
  }
});

describe('core ops pass finite-difference checks', () => {
  const rng = new Rng(7);
  const g = (shape: number[]) => randn(shape, rng, 0, 1, { requiresGrad: true });
  const positive = (shape: number[]) => rand(shape, rng, 0.5, 2, { requiresGrad: true });
  it('add/sub/mul/div with broadcasting [2,3,4] x [3,1]', () => {
    for (const [name, op] of Object.entries(binary)) {
      assertGradcheck(name, op, [g([2, 3, 4]), name === 'div' ? positive([3, 1]) : g([3, 1])]);
    }
  });
  it('exp, log, sqrt, pow', () => {
    assertGradcheck('exp', exp, [g([3, 5])]);
    assertGradcheck('log', log, [positive([3, 5])]);
    assertGradcheck('sqrt', sqrt, [positive([3, 5])]);
    assertGradcheck('pow', (x) => pow(x, 3), [g([3, 5])]);
  });
  it('sum, mean over axes and max over an axis (ties skipped as kinks)', () => {
    assertGradcheck('sum', (x) => sum(x, [0, 2]), [g([2, 3, 4])]);
    assertGradcheck('mean', (x) => mean(x, 1, { keepdim: true }), [g([2, 3, 4])]);
    const r = assertGradcheck('max', (x) => max(x, 1), [g([4, 6])]);
    expect(r.checked).toBeGreaterThan(0);
  });
  it('matmul 2-D and batched 3-D', () => {
    assertGradcheck('matmul2d', matmul, [g([5, 7]), g([7, 3])]);
    assertGradcheck('matmul3d', matmul, [g([2, 3, 4]), g([2, 4, 5])]);
  });
  it('a deliberately wrong gradient is caught', () => {
    // y = x * x, but checked against a function whose backward claims dx = dy * x (missing the 2).
    const wrong = (x: Tensor) => {
      const y = mul(x, x.detach());
      return y;
    };
    expect(() => assertGradcheck('wrong', wrong, [g([4])])).toThrow(/differ/);
  });
});

describe('broadcasting', () => {
  it('sums the gradient back to the input shape', () => {
    const a = fromArray([[1, 2, 3], [4, 5, 6]], undefined, { requiresGrad: true });
    const b = fromArray([10, 20, 30], undefined, { requiresGrad: true });
    sum(add(a, b)).backward();
    expect(Array.from(b.grad!.data)).toEqual([2, 2, 2]);
    expect([...b.grad!.shape]).toEqual([3]);
    expect(Array.from(a.grad!.data)).toEqual([1, 1, 1, 1, 1, 1]);
  });
  it('names the op and both shapes when shapes do not broadcast', () => {
    expect(() => add(randn([2, 3], new Rng(1)), randn([4, 3], new Rng(1)))).toThrow('add: cannot broadcast [2, 3] with [4, 3]');
    expect(() => mul(randn([2, 3], new Rng(1)), randn([2], new Rng(1)))).toThrow('mul: cannot broadcast [2, 3] with [2]');
    expect(() => matmul(randn([2, 3], new Rng(1)), randn([4, 3], new Rng(1)))).toThrow(/matmul: cannot multiply \[2, 3\] by \[4, 3\]/);
  });
});
