// Fully connected layer: y = x W^T + b.
//   x: (N, in)   weight: (out, in)   bias: (out)   y: (N, out)

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { gemm, gemmNaive, type Gemm } from './gemm.js';


/** y = x W^T + b on raw buffers (the fully connected layer's forward). */
export function linearForward(x: Float32Array, weight: Float32Array, bias: Float32Array | null, N: number, inF: number, outF: number, y: Float32Array, multiply: Gemm = gemm): void {
  // y (N x out) = x (N x in) * W^T (in x out)
  multiply({ transA: false, transB: true, M: N, N: outF, K: inF, alpha: 1, A: x, aOffset: 0, lda: inF, B: weight, bOffset: 0, ldb: inF, beta: 0, C: y, cOffset: 0, ldc: outF });
  if (bias !== null) for (let n = 0; n < N; n++) for (let o = 0; o < outF; o++) y[n * outF + o] += bias[o];
}

/**
 * Backward of y = x W^T + b:
 *   dx = dy W        (N x out)(out x in)
 *   dW = dy^T x      (out x N)(N x in)
 *   db = sum over n of dy
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  if (x.rank !== 2 || weight.rank !== 2) throw new ShapeError(`linear: expected x (N, in) and weight (out, in), got ${formatShape(x.shape)} and ${formatShape(weight.shape)}`);
  const [N, inF] = x.shape;
  const [outF, inW] = weight.shape;
  if (inF !== inW) throw new ShapeError(`linear: input has ${inF} features but weight ${formatShape(weight.shape)} expects ${inW}`);
  if (bias !== null && (bias.rank !== 1 || bias.shape[0] !== outF)) throw new ShapeError(`linear: bias must have shape [${outF}], got ${formatShape(bias.shape)}`);
  const y = alloc(N * outF);
  linearForward(x.data, weight.data, bias?.data ?? null, N, inF, outF, y);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp(new Tensor(y, [N, outF]), {
    op: 'linear', inputs,
    formula: 'y = x W^T + b  ->  dx = dy W, dW = dy^T x, db = sum_n dy',
    saved: { x: x.data, weight: weight.data },
    backward: (dy, s, needs) => {
      let dx: Float32Array | null = null, dW: Float32Array | null = null, db: Float32Array | null = null;
      if (needs[0]) {
        dx = alloc(N * inF);
        gemm({ transA: false, transB: false, M: N, N: inF, K: outF, alpha: 1, A: dy, aOffset: 0, lda: outF, B: s.weight, bOffset: 0, ldb: inF, beta: 0, C: dx, cOffset: 0, ldc: inF });
      }
      if (needs[1]) {
        dW = alloc(outF * inF);
        gemm({ transA: true, transB: false, M: outF, N: inF, K: N, alpha: 1, A: dy, aOffset: 0, lda: outF, B: s.x, bOffset: 0, ldb: inF, beta: 0, C: dW, cOffset: 0, ldc: inF });
      }
      if (inputs.length === 3 && needs[2]) {
        db = alloc(outF);
        for (let n = 0; n < N; n++) for (let o = 0; o < outF; o++) db[o] += dy[n * outF + o];
      }
      return inputs.length === 3 ? [dx, dW, db] : [dx, dW];
    },
    apply: (xs) => linear(xs[0], xs[1], xs[2] ?? null),
  });
}

/** Naive twin of the forward. */
export function linearNaiveForward(x: Float32Array, weight: Float32Array, bias: Float32Array | null, N: number, inF: number, outF: number): Float32Array {
  const y = alloc(N * outF);
  linearForward(x, weight, bias, N, inF, outF, y, gemmNaive);
  return y;
}
