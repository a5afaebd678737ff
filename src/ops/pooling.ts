// Pooling: max, average, and global average.
//   x: (N, C, H, W) -> y: (N, C, Hout, Wout),  Hout = floor((H + 2 pad - k) / stride) + 1

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { convOutputSize } from './conv2d.js';

/** Options of the pooling ops: stride and padding. */
export interface PoolOptions {
  kernel: number;
  /** Defaults to the kernel size, as in PyTorch. */
  stride?: number;
  padding?: number;
}

function poolGeometry(op: string, x: Tensor, o: PoolOptions) {
  if (x.rank !== 4) throw new ShapeError(`${op}: input must be (N, C, H, W), got ${formatShape(x.shape)}`);
  const k = o.kernel, stride = o.stride ?? o.kernel, padding = o.padding ?? 0;
  if (!Number.isInteger(k) || k < 1 || !Number.isInteger(stride) || stride < 1) throw new RangeError(`${op}: kernel and stride must be integers >= 1, got ${k} and ${stride}`);
  if (padding * 2 > k) throw new RangeError(`${op}: padding ${padding} should be at most half the kernel size ${k}`);
  const [N, C, H, W] = x.shape;
  const Hout = convOutputSize(H, k, stride, padding, 1), Wout = convOutputSize(W, k, stride, padding, 1);
  if (Hout < 1 || Wout < 1) throw new ShapeError(`${op}: input ${formatShape(x.shape)} is smaller than the ${k}x${k} window`);
  return { N, C, H, W, k, stride, padding, Hout, Wout };
}

/**
 * y = max over each window (padding counts as -Infinity). argmax keeps, per output, the flat
 * index into x of the maximum (the first one at ties). Backward: dx[argmax] += dy.
 */
export function maxPool2d(x: Tensor, options: PoolOptions): Tensor {
  const { N, C, H, W, k, stride, padding, Hout, Wout } = poolGeometry('maxPool2d', x, options);
  const y = alloc(N * C * Hout * Wout);
  const argmax = new Int32Array(y.length);
  const xd = x.data;
  let o = 0;
  for (let plane = 0; plane < N * C; plane++) {
    const base = plane * H * W;
    for (let oy = 0; oy < Hout; oy++) {
      for (let ox = 0; ox < Wout; ox++, o++) {
        let best = -Infinity, bestIndex = -1;
        for (let ky = 0; ky < k; ky++) {
          const iy = oy * stride - padding + ky;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox * stride - padding + kx;
            if (ix < 0 || ix >= W) continue;
            const v = xd[base + iy * W + ix];
            if (v > best || bestIndex < 0 || Number.isNaN(v)) {
              best = v;
              bestIndex = base + iy * W + ix;
            }
          }
        }
        y[o] = best;
        argmax[o] = bestIndex;
      }
    }
  }
  return recordOp(new Tensor(y, [N, C, Hout, Wout]), {
    op: 'maxPool2d', inputs: [x],
    formula: `y = max over ${k}x${k} windows  ->  dx[argmax] += dy`,
    saved: { argmax, n: xd.length },
    backward: (dy, s) => {
      const dx = alloc(s.n);
      for (let i = 0; i < dy.length; i++) dx[s.argmax[i]] += dy[i];
      return [dx];
    },
    apply: (xs) => maxPool2d(xs[0], options),
  });
}

/**
 * y = mean over each window, dividing by k*k including the padding (PyTorch's default
 * count_include_pad=True). Backward: every x in the window receives dy / (k*k).
 */
export function avgPool2d(x: Tensor, options: PoolOptions): Tensor {
  const { N, C, H, W, k, stride, padding, Hout, Wout } = poolGeometry('avgPool2d', x, options);
  const y = alloc(N * C * Hout * Wout);
  const xd = x.data, area = k * k;
  let o = 0;
  for (let plane = 0; plane < N * C; plane++) {
    const base = plane * H * W;
    for (let oy = 0; oy < Hout; oy++)
      for (let ox = 0; ox < Wout; ox++, o++) {
        let acc = 0;
        for (let ky = 0; ky < k; ky++) {
          const iy = oy * stride - padding + ky;
          if (iy < 0 || iy >= H) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox * stride - padding + kx;
            if (ix >= 0 && ix < W) acc += xd[base + iy * W + ix];
          }
        }
        y[o] = acc / area;
      }
  }
  return recordOp(new Tensor(y, [N, C, Hout, Wout]), {
    op: 'avgPool2d', inputs: [x],
    formula: `y = mean over ${k}x${k} windows  ->  dx += dy / ${area} over each window`,
    saved: { n: xd.length },
    backward: (dy, s) => {
      const dx = alloc(s.n);
      let i = 0;
      for (let plane = 0; plane < N * C; plane++) {
        const base = plane * H * W;
        for (let oy = 0; oy < Hout; oy++)
          for (let ox = 0; ox < Wout; ox++, i++) {
            const g = dy[i] / area;
            for (let ky = 0; ky < k; ky++) {
              const iy = oy * stride - padding + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < k; kx++) {
                const ix = ox * stride - padding + kx;
                if (ix >= 0 && ix < W) dx[base + iy * W + ix] += g;
              }
            }
          }
      }
      return [dx];
    },
    apply: (xs) => avgPool2d(xs[0], options),
  });
}

/** y[n, c, 0, 0] = mean over H, W of x[n, c]. Backward: dx = dy / (H W) everywhere in the plane. */
export function globalAvgPool2d(x: Tensor): Tensor {
  if (x.rank !== 4) throw new ShapeError(`globalAvgPool2d: input must be (N, C, H, W), got ${formatShape(x.shape)}`);
  const [N, C, H, W] = x.shape;
  const HW = H * W;
  const y = alloc(N * C);
  for (let plane = 0; plane < N * C; plane++) {
    let acc = 0;
    const base = plane * HW;
    for (let i = base; i < base + HW; i++) acc += x.data[i];
    y[plane] = acc / HW;
  }
  return recordOp(new Tensor(y, [N, C, 1, 1]), {
    op: 'globalAvgPool2d', inputs: [x],
    formula: 'y = mean over H, W  ->  dx = dy / (H W)',
    saved: { n: x.numel },
    backward: (dy, s) => {
      const dx = alloc(s.n);
      for (let plane = 0; plane < N * C; plane++) dx.fill(dy[plane] / HW, plane * HW, (plane + 1) * HW);
      return [dx];
    },
    apply: (xs) => globalAvgPool2d(xs[0]),
  });
}
