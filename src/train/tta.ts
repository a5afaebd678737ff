// Test-time augmentation (TTA) with horizontal flips: classify an image and its mirror image
// and average the two class distributions. A model trained with random flips treats a mirrored
// garment as the same garment, so the two views are two estimates of one answer, and their
// average is less noisy than either (Keras and timm users know this as flip TTA). It doubles
// the cost of evaluation and changes nothing in training.

import { alloc } from '../tensor/buffers.js';
import { ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

/** out[n, c, h, w] = x[n, c, h, W - 1 - w]: each image of an NCHW batch mirrored left-right. */
export function flipHorizontal(x: Tensor): Tensor {
  if (x.rank !== 4) throw new ShapeError(`flipHorizontal: expected an NCHW batch (rank 4), got shape [${x.shape.join(', ')}]`);
  const W = x.shape[3];
  const rows = x.numel / W;
  // From the buffer cache like every op's output: inside eval's reuseBuffers scope each batch
  // reuses the last one's buffer, and it is already shared memory for the worker threads.
  const out = alloc(x.numel, false);
  for (let r = 0; r < rows; r++) {
    const base = r * W;
    for (let w = 0; w < W; w++) out[base + w] = x.data[base + W - 1 - w];
  }
  return new Tensor(out, x.shape);
}

/**
 * log((softmax(a) + softmax(b)) / 2), row by row, for two B x C logit matrices: the log of the
 * averaged class probabilities. Its argmax and ranking give the TTA prediction, and minus its
 * value at the true class is the cross-entropy of the averaged distribution.
 */
export function averagedLogProbabilities(a: Float32Array, b: Float32Array, numClasses: number): Float32Array {
  if (a.length !== b.length || a.length % numClasses !== 0) {
    throw new ShapeError(`averagedLogProbabilities: logits of ${a.length} and ${b.length} values do not form two equal B x ${numClasses} matrices`);
  }
  const out = new Float32Array(a.length);
  for (let row = 0; row < a.length; row += numClasses) {
    const pa = softmax(a.subarray(row, row + numClasses));
    const pb = softmax(b.subarray(row, row + numClasses));
    for (let c = 0; c < numClasses; c++) out[row + c] = Math.log((pa[c] + pb[c]) / 2);
  }
  return out;
}

/** softmax of one row of logits, in float64, shifted by the maximum so that exp cannot overflow. */
export function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const p = Float64Array.from(logits, (v) => Math.exp(v - max));
  const sum = p.reduce((s, v) => s + v, 0);
  return p.map((v) => v / sum);
}
