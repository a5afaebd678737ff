import { describe, expect, it } from 'vitest';
import { fromArray } from '../src/tensor/tensor.js';
import { averagedLogProbabilities, flipHorizontal, softmax } from '../src/train/tta.js';

describe('flip test-time augmentation', () => {
  it('flipHorizontal mirrors each row of each channel of each image', () => {
    // 2 images x 2 channels x 2 rows x 3 columns holding 0..23.
    const x = fromArray(Array.from({ length: 24 }, (_, i) => i), [2, 2, 2, 3]);
    const flipped = flipHorizontal(x);
    expect(flipped.shape).toEqual([2, 2, 2, 3]);
    expect(Array.from(flipped.data.subarray(0, 6))).toEqual([2, 1, 0, 5, 4, 3]);
    expect(Array.from(flipped.data.subarray(18, 24))).toEqual([20, 19, 18, 23, 22, 21]);
    expect(Array.from(flipHorizontal(flipped).data)).toEqual(Array.from(x.data));
    expect(() => flipHorizontal(fromArray([1, 2, 3], [3]))).toThrow(/flipHorizontal: expected an NCHW batch \(rank 4\), got shape \[3\]/);
  });

  it('averagedLogProbabilities is the log of the mean of the two softmaxes, row by row', () => {
    const a = new Float32Array([2, 0, -1, 0.5, 0.5, 3]);
    const b = new Float32Array([-1, 1, 0, 4, 0, 1]);
    const scores = averagedLogProbabilities(a, b, 3);
    for (let row = 0; row < 2; row++) {
      const pa = softmax(a.subarray(3 * row, 3 * row + 3));
      const pb = softmax(b.subarray(3 * row, 3 * row + 3));
      for (let c = 0; c < 3; c++) expect(Math.exp(scores[3 * row + c])).toBeCloseTo((pa[c] + pb[c]) / 2, 6);
    }
    // Row 0: a favours class 0 (p = 0.84), b class 1 (p = 0.67): the average picks class 0.
    expect(Math.exp(scores[0])).toBeCloseTo((Math.exp(2) / (Math.exp(2) + 1 + Math.exp(-1)) + Math.exp(-1) / (Math.exp(-1) + Math.E + 1)) / 2, 6);
    // Two identical views give back log_softmax.
    const same = averagedLogProbabilities(a, a, 3);
    expect(same[0]).toBeCloseTo(2 - Math.log(Math.exp(2) + 1 + Math.exp(-1)), 6);
    expect(() => averagedLogProbabilities(a, b.subarray(0, 3), 3)).toThrow(/3 values do not form two equal B x 3 matrices/);
  });

  it('softmax does not overflow on large logits', () => {
    const p = softmax(new Float32Array([1000, 1000]));
    expect(Array.from(p)).toEqual([0.5, 0.5]);
  });
});
