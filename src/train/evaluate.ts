// One evaluation loop, for the trainer's validation, `mobilenet eval` and library users alike.

import type { Module } from '../nn/module.js';
import { softmaxCrossEntropy } from '../ops/loss.js';
import { noGrad } from '../tensor/autograd.js';
import { reuseBuffers } from '../tensor/buffers.js';
import { Tensor } from '../tensor/tensor.js';
import type { DataLoader } from './loader.js';
import { ClassificationMetrics } from './metrics.js';
import { averagedLogProbabilities, flipHorizontal } from './tta.js';

/** Options of evaluateModel. */
export interface EvaluateOptions {
  /**
   * Flip test-time augmentation: score each image by the average of its class probabilities and
   * those of its mirror image (twice the compute). Loss and top-k then refer to the average.
   */
  ttaFlip?: boolean;
}

/**
 * Loss, top-1, top-5 and the confusion matrix of `model` on every batch of `loader`, in eval
 * mode (BatchNorm with running statistics, no dropout) and without a graph. The model's
 * train/eval mode is restored afterwards.
 */
export function evaluateModel(model: Module, loader: DataLoader, numClasses: number, options: EvaluateOptions = {}): ClassificationMetrics {
  const metrics = new ClassificationMetrics(numClasses);
  inEvalMode(model, () => {
    for (const batch of loader.epoch(0)) {
      // One scope per batch: each batch reuses the previous one's activation memory.
      reuseBuffers(() => {
        const logits = model.forward(batch.x);
        // With flip TTA the scores are log-probabilities (their softmax is themselves), so the
        // same cross-entropy gives the loss of the averaged distribution.
        const scores = options.ttaFlip ? new Tensor(averagedLogProbabilities(logits.data, model.forward(flipHorizontal(batch.x)).data, numClasses), logits.shape) : logits;
        metrics.update(scores.data, batch.labels, softmaxCrossEntropy(scores, batch.labels).item());
      });
    }
  });
  return metrics;
}

/**
 * Run `fn` with the model in eval mode (BatchNorm with running statistics, no dropout) and
 * without a graph; the model's mode is restored afterwards, also when `fn` throws.
 */
export function inEvalMode<T>(model: Module, fn: () => T): T {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(fn);
  } finally {
    model.train(wasTraining);
  }
}
