// Inverted dropout: in training, zero each element with probability p and scale the rest by
// 1 / (1 - p), so that the expected value is unchanged and evaluation needs no rescaling.

import { alloc } from '../tensor/buffers.js';
import { needsGraph, recordOp } from '../tensor/autograd.js';
import type { Rng } from '../tensor/rng.js';
import { Tensor } from '../tensor/tensor.js';

/** y = x * mask / (1 - p) in training (mask ~ Bernoulli(1 - p) from `rng`); y = x in eval. */
export function dropout(x: Tensor, p: number, rng: Rng, training: boolean): Tensor {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  const scale = 1 / (1 - p);
  const mask = new Uint8Array(x.numel);
  const y = alloc(x.numel);
  for (let i = 0; i < y.length; i++) {
    const keep = rng.uniform() >= p;
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x.data[i] * scale : 0;
  }
  if (!needsGraph(x)) return new Tensor(y, x.shape);
  return recordOp(new Tensor(y, x.shape), {
    op: 'dropout', inputs: [x],
    formula: `y = x * mask / (1 - ${p})  ->  dx = dy * mask / (1 - ${p})`,
    saved: { mask, scale },
    backward: (dy, s) => {
      const dx = alloc(dy.length);
      for (let i = 0; i < dy.length; i++) dx[i] = s.mask[i] === 1 ? dy[i] * s.scale : 0;
      return [dx];
    },
    apply: (xs) => new Tensor(xs[0].data.map((v, i) => (mask[i] === 1 ? v * scale : 0)), xs[0].shape),
  });
}
