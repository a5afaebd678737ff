import { describe, expect, it } from 'vitest';
import { reshape, flatten, permute, transpose } from '../src/ops/view.js';
import { Rng } from '../src/tensor/rng.js';
import { arange, fromArray, full, ones, rand, randn, scalar, zeros } from '../src/tensor/tensor.js';

describe('Tensor creation', () => {
  it('zeros, ones, full, fromArray (nested and flat)', () => {
    expect(Array.from(zeros([2, 2]).data)).toEqual([0, 0, 0, 0]);
    expect(Array.from(ones([3]).data)).toEqual([1, 1, 1]);
    expect(Array.from(full([2], 7).data)).toEqual([7, 7]);
    const t = fromArray([[1, 2, 3], [4, 5, 6]]);
    expect([...t.shape]).toEqual([2, 3]);
    expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect([...fromArray([1, 2, 3, 4], [2, 2]).shape]).toEqual([2, 2]);
    expect(scalar(3).item()).toBe(3);
  });
  it('rejects data that does not fill the shape, ragged arrays and bad dims', () => {
    expect(() => fromArray([1, 2, 3], [2, 2])).toThrow('fromArray: 3 values do not fill shape [2, 2] (4 elements)');
    expect(() => fromArray([[1, 2], [3]])).toThrow(/ragged/);
    expect(() => zeros([2, -1])).toThrow(/invalid shape \[2, -1\]/);
    expect(() => zeros([2, 2]).item()).toThrow(/item: only a one-element tensor/);
  });
  it('rand and randn are reproducible from the seed and have the right moments', () => {
    expect(Array.from(randn([5], new Rng(3)).data)).toEqual(Array.from(randn([5], new Rng(3)).data));
    expect(Array.from(randn([5], new Rng(3)).data)).not.toEqual(Array.from(randn([5], new Rng(4)).data));
    const n = randn([20000], new Rng(1)).data;
    const m = n.reduce((a, b) => a + b, 0) / n.length;
    const v = n.reduce((a, b) => a + (b - m) ** 2, 0) / n.length;
    expect(Math.abs(m)).toBeLessThan(0.03);
    expect(Math.abs(v - 1)).toBeLessThan(0.05);
    const u = rand([20000], new Rng(1), 2, 4).data;
    expect(Math.min(...u)).toBeGreaterThanOrEqual(2);
    expect(Math.max(...u)).toBeLessThan(4);
  });
});

describe('views and copies', () => {
  it('reshape shares data (free) and resolves -1', () => {
    const t = arange(6);
    const r = reshape(t, [2, -1]);
    expect([...r.shape]).toEqual([2, 3]);
    expect(r.data).toBe(t.data);
    expect(() => reshape(t, [4, -1])).toThrow('reshape: cannot reshape [6] (6 elements) to [4, -1]');
  });
  it('flatten merges the given dims', () => {
    expect([...flatten(zeros([2, 3, 4, 5]), 1).shape]).toEqual([2, 60]);
    expect([...flatten(zeros([2, 3, 4, 5])).shape]).toEqual([120]);
  });
  it('permute and transpose copy in the new order', () => {
    const t = reshape(arange(6), [2, 3]);
    const tt = transpose(t);
    expect(tt.toArray()).toEqual([[0, 3], [1, 4], [2, 5]]);
    expect(tt.data).not.toBe(t.data);
    const p = permute(reshape(arange(24), [2, 3, 4]), [2, 0, 1]);
    expect([...p.shape]).toEqual([4, 2, 3]);
    // p[k, i, j] = x[i, j, k] = i*12 + j*4 + k
    expect((p.toArray() as number[][][])[3][1][2]).toBe(12 + 8 + 3);
    expect(() => permute(t, [0, 0])).toThrow(/not a permutation/);
  });
});

describe('toString', () => {
  it('prints small tensors in full like PyTorch', () => {
    expect(fromArray([[1, 2], [3, 4]]).toString()).toBe('tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])');
    expect(scalar(0.5).toString()).toBe('tensor(0.5000)');
    expect(zeros([2], { requiresGrad: true }).toString()).toContain('requires_grad=True');
  });
  it('abbreviates tensors over 1000 elements with ... and the shape', () => {
    const s = reshape(arange(2000), [40, 50]).toString();
    expect(s).toContain('...');
    expect(s).toContain('shape=[40, 50]');
    expect(s.split('\n').length).toBeLessThan(12);
    expect(s).toContain('1999.0000');
  });
});

describe('Rng', () => {
  it('is deterministic, and getState/setState round-trips mid-sequence', () => {
    const a = new Rng(42);
    for (let i = 0; i < 10; i++) a.uniform();
    const state = a.getState();
    const next = [a.uniform(), a.normal(), a.int(0, 10)];
    const b = new Rng(0);
    b.setState(state);
    expect([b.uniform(), b.normal(), b.int(0, 10)]).toEqual(next);
    expect(new Rng(42).nextUint32()).toBe(new Rng(42).nextUint32());
  });
  it('int is unbiased-range and shuffle is a permutation', () => {
    const r = new Rng(5);
    const counts = new Array(6).fill(0);
    for (let i = 0; i < 6000; i++) counts[r.int(0, 6)]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(120);
    const p = Array.from(r.permutation(50));
    expect([...p].sort((x, y) => x - y)).toEqual([...Array(50).keys()]);
    expect(p).not.toEqual([...Array(50).keys()]);
  });
  it('rejects invalid states', () => {
    expect(() => new Rng(1).setState([0, 0, 0, 0])).toThrow(/all-zero/);
    expect(() => new Rng(1).setState([1, 2, 3])).toThrow(/expected 4 uint32 words/);
  });
});
