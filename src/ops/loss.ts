// Softmax cross-entropy over integer labels, mean over the batch, with label smoothing.
//
//   logits: (N, C), labels: N integers in [0, C)
//   log p = logits - logsumexp(logits)      (logsumexp = max + log sum exp(logits - max): stable)
//   target q = (1 - eps) onehot(label) + eps / C        (PyTorch's label_smoothing = eps)
//   loss = mean over n of  -sum_c q_c log p_c
//   Backward: dlogits = dLoss * (softmax(logits) - q) / N

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';

/** Options of softmaxCrossEntropy: label smoothing (as PyTorch's `label_smoothing`). */
export interface CrossEntropyOptions {
  labelSmoothing?: number;
}

/** Mean softmax cross-entropy of (N, classes) logits against class labels: loss = mean_n -sum_c q_c log softmax(z)_c; dz = (softmax(z) - q) / N. */
export function softmaxCrossEntropy(logits: Tensor, labels: ArrayLike<number>, options: CrossEntropyOptions = {}): Tensor {
  const eps = options.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new RangeError(`softmaxCrossEntropy: labelSmoothing must be in [0, 1], got ${eps}`);
  if (logits.rank !== 2) throw new ShapeError(`softmaxCrossEntropy: logits must be (N, classes), got ${formatShape(logits.shape)}`);
  const [N, C] = logits.shape;
  if (labels.length !== N) throw new ShapeError(`softmaxCrossEntropy: ${labels.length} labels for a batch of ${N} logits`);
  for (let n = 0; n < N; n++) {
    const label = labels[n];
    if (!Number.isInteger(label) || label < 0 || label >= C) throw new RangeError(`softmaxCrossEntropy: label ${label} at position ${n} is outside [0, ${C})`);
  }
  const probs = alloc(N * C);
  let total = 0;
  for (let n = 0; n < N; n++) {
    const row = n * C;
    let maxLogit = -Infinity;
    for (let c = 0; c < C; c++) maxLogit = Math.max(maxLogit, logits.data[row + c]);
    let sumExp = 0;
    for (let c = 0; c < C; c++) sumExp += Math.exp(logits.data[row + c] - maxLogit);
    const logSumExp = maxLogit + Math.log(sumExp);
    let sumLogP = 0;
    for (let c = 0; c < C; c++) {
      const logP = logits.data[row + c] - logSumExp;
      probs[row + c] = Math.exp(logP);
      sumLogP += logP;
    }
    const logPLabel = logits.data[row + labels[n]] - logSumExp;
    total += -(1 - eps) * logPLabel - (eps / C) * sumLogP;
  }
  const loss = new Tensor(Float32Array.of(total / N), []);
  const labelCopy = Int32Array.from(labels);
  return recordOp(loss, {
    op: 'softmaxCrossEntropy', inputs: [logits],
    formula: `loss = mean_n -sum_c q_c log softmax(z)_c${eps > 0 ? ` (label smoothing ${eps})` : ''}  ->  dz = (softmax(z) - q) / N`,
    saved: { probs, labels: labelCopy },
    backward: (dLoss, s) => {
      const dlogits = alloc(N * C);
      const scale = dLoss[0] / N;
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < C; c++) dlogits[n * C + c] = (s.probs[n * C + c] - eps / C) * scale;
        dlogits[n * C + s.labels[n]] -= (1 - eps) * scale;
      }
      return [dlogits];
    },
    apply: (xs) => softmaxCrossEntropy(xs[0], labels, options),
  });
}
