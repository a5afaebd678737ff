// ReLU and ReLU6. Each keeps a byte mask of where the gradient passes, nothing more.

import { alloc } from '../tensor/buffers.js';
import { needsGraph, recordOp } from '../tensor/autograd.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * Clamp x to [low, high]; mask[i] = 1 where low < x < high (strictly: the derivative there is 1).
 * NaN passes through unchanged (every comparison with NaN is false, so it is neither clamped nor masked in).
 */
function clampWithMask(x: Tensor, low: number, high: number, keepMask: boolean): { y: Float32Array; mask: Uint8Array | null } {
  const xd = x.data;
  const n = xd.length;
  const y = alloc(n);
  if (!keepMask) {
    for (let i = 0; i < n; i++) {
      const v = xd[i];
      y[i] = v < low ? low : v > high ? high : v;
    }
    return { y, mask: null };
  }
  const mask = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = xd[i];
    if (v > low) {
      if (v < high) {
        y[i] = v;
        mask[i] = 1;
      } else y[i] = high;
    } else y[i] = v === v ? low : v;
  }
  return { y, mask };
}

function maskedBackward(dy: Float32Array, saved: { mask: Uint8Array }): Float32Array[] {
  const dx = alloc(dy.length);
  const m = saved.mask;
  for (let i = 0; i < dy.length; i++) dx[i] = m[i] === 1 ? dy[i] : 0;
  return [dx];
}

/** y = max(0, x). Backward: dx = dy * [x > 0] (0 at x = 0, as in PyTorch). */
export function relu(x: Tensor): Tensor {
  const { y, mask } = clampWithMask(x, 0, Infinity, needsGraph(x));
  return recordOp(new Tensor(y, x.shape), {
    op: 'relu', inputs: [x], saved: { mask: mask! },
    formula: 'y = max(0, x)  ->  dx = dy * [x > 0]',
    backward: maskedBackward, apply: (xs) => relu(xs[0]),
  });
}

/** y = min(max(0, x), 6). Backward: dx = dy * [0 < x < 6]. */
export function relu6(x: Tensor): Tensor {
  const { y, mask } = clampWithMask(x, 0, 6, needsGraph(x));
  return recordOp(new Tensor(y, x.shape), {
    op: 'relu6', inputs: [x], saved: { mask: mask! },
    formula: 'y = min(max(0, x), 6)  ->  dx = dy * [0 < x < 6]',
    backward: maskedBackward, apply: (xs) => relu6(xs[0]),
  });
}
