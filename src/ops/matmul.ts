// Matrix product, 2-D and batched 3-D, on the blocked GEMM.

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { gemm } from './gemm.js';

/**
 * C (M x N, at cOffset) = op(A) op(B) for dense row-major matrices packed end to end (op(A) is
 * M x K, op(B) K x N; a transposed operand is stored the other way round).
 */
function denseProduct(A: Float32Array, aOffset: number, transA: boolean, B: Float32Array, bOffset: number, transB: boolean, C: Float32Array, cOffset: number, M: number, N: number, K: number): void {
  gemm({ transA, transB, M, N, K, alpha: 1, A, aOffset, lda: transA ? M : K, B, bOffset, ldb: transB ? K : N, beta: 0, C, cOffset, ldc: N });
}

/**
 * C = A B.  a: (M, K) and b: (K, N) -> (M, N); or a: (B, M, K) and b: (B, K, N) -> (B, M, N).
 * Backward (from dC = dL/dC):  dA = dC B^T,  dB = A^T dC  (per batch for 3-D).
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const batched = a.rank === 3 && b.rank === 3;
  if (!(batched || (a.rank === 2 && b.rank === 2))) {
    throw new ShapeError(`matmul: expected two 2-D or two 3-D tensors, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  }
  const batch = batched ? a.shape[0] : 1;
  const [M, K] = batched ? [a.shape[1], a.shape[2]] : [a.shape[0], a.shape[1]];
  const [K2, N] = batched ? [b.shape[1], b.shape[2]] : [b.shape[0], b.shape[1]];
  if (K !== K2 || (batched && b.shape[0] !== batch)) {
    throw new ShapeError(`matmul: cannot multiply ${formatShape(a.shape)} by ${formatShape(b.shape)} (inner dimensions ${K} and ${K2}${batched ? `, batches ${batch} and ${b.shape[0]}` : ''})`);
  }
  const out = alloc(batch * M * N);
  for (let i = 0; i < batch; i++) {
    denseProduct(a.data, i * M * K, false, b.data, i * K * N, false, out, i * M * N, M, N, K);
  }
  const outShape = batched ? [batch, M, N] : [M, N];
  return recordOp(new Tensor(out, outShape), {
    op: 'matmul', inputs: [a, b],
    formula: 'C = A B  ->  dA = dC B^T, dB = A^T dC',
    saved: { a: a.data, b: b.data },
    backward: (dC, s, needs) => {
      let dA: Float32Array | null = null;
      let dB: Float32Array | null = null;
      if (needs[0]) {
        dA = alloc(batch * M * K);
        // dA (M x K) = dC (M x N) * B^T (N x K)
        for (let i = 0; i < batch; i++) denseProduct(dC, i * M * N, false, s.b, i * K * N, true, dA, i * M * K, M, K, N);
      }
      if (needs[1]) {
        dB = alloc(batch * K * N);
        // dB (K x N) = A^T (K x M) * dC (M x N)
        for (let i = 0; i < batch; i++) denseProduct(s.a, i * M * K, true, dC, i * M * N, false, dB, i * K * N, K, N, M);
      }
      return [dA, dB];
    },
    apply: (xs) => matmul(xs[0], xs[1]),
  });
}
