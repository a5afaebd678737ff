import { describe, expect, it } from 'vitest';
import { add, addScalar, mul, mulScalar } from '../src/ops/elementwise.js';
import { sum } from '../src/ops/reduce.js';
import { isGradEnabled, noGrad } from '../src/tensor/autograd.js';
import { fromArray, ones, scalar } from '../src/tensor/tensor.js';

describe('autograd tape', () => {
  it('accumulates gradients when a tensor is used twice (x*x + x)', () => {
    const x = fromArray([1, 2, 3], undefined, { requiresGrad: true });
    sum(add(mul(x, x), x)).backward();
    expect(Array.from(x.grad!.data)).toEqual([3, 5, 7]); // 2x + 1
  });
  it('add(x, x) gives each use its own buffer (gradient 2)', () => {
    const x = fromArray([1, 2], undefined, { requiresGrad: true });
    sum(add(x, x)).backward();
    expect(Array.from(x.grad!.data)).toEqual([2, 2]);
  });
  it('accumulates into .grad across backward calls until zeroGrad', () => {
    const x = fromArray([1, 2], undefined, { requiresGrad: true });
    sum(mulScalar(x, 3)).backward();
    sum(mulScalar(x, 3)).backward();
    expect(Array.from(x.grad!.data)).toEqual([6, 6]);
    x.zeroGrad();
    expect(x.grad).toBeNull();
  });
  it('walks a 100,000-node chain without overflowing the stack', () => {
    const x = scalar(0.5, { requiresGrad: true });
    let y = x;
    for (let i = 0; i < 100_000; i++) y = addScalar(y, 1e-6);
    y.backward();
    expect(x.grad!.item()).toBe(1);
  });
  it('backwardSteps yields one step per node, outputs before inputs', () => {
    const x = fromArray([1, 2], undefined, { requiresGrad: true });
    const loss = sum(mulScalar(addScalar(x, 1), 2));
    const ops = [...loss.backwardSteps()].map((s) => s.op);
    expect(ops).toEqual(['sum', 'mulScalar', 'addScalar']);
    expect(Array.from(x.grad!.data)).toEqual([2, 2]);
  });
  it('noGrad records nothing and restores grad mode even when fn throws', () => {
    const x = ones([2], { requiresGrad: true });
    const y = noGrad(() => mul(x, x));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
    expect(() => noGrad(() => { throw new Error('boom'); })).toThrow('boom');
    expect(isGradEnabled()).toBe(true);
  });
  it('releases saved tensors: a second backward through a freed graph is a clear error', () => {
    const x = ones([2], { requiresGrad: true });
    const loss = sum(mul(x, x));
    loss.backward();
    expect(() => loss.backward()).toThrow(/already freed by an earlier backward/);
  });
  it('retainGraph allows a second backward', () => {
    const x = ones([2], { requiresGrad: true });
    const loss = sum(mul(x, x));
    loss.backward(undefined, { retainGraph: true });
    loss.backward();
    expect(Array.from(x.grad!.data)).toEqual([4, 4]);
  });
  it('backward of a non-scalar without a gradient names the shape', () => {
    const x = ones([2], { requiresGrad: true });
    expect(() => mul(x, x).backward()).toThrow(/one-element output, got shape \[2\]/);
    expect(() => ones([1]).backward()).toThrow(/does not require grad/);
  });
});
