// How much memory a training run needs, estimated before it starts, so that a batch size the
// machine cannot hold is refused with a batch size that fits instead of swapping the machine
// to a halt. The cost model knows every layer's output size; a step keeps about that much per
// image for backward and as much again in gradients and reused buffers.

import { freemem, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { layerCosts } from '../nn/cost.js';
import type { ImageClassifier } from '../nn/mobilenet.js';

/**
 * Bytes a step holds per float of one image's activations, counted as the sum of every layer's
 * output in the cost model's table (which lists BatchNorm and ReLU apart, where training runs
 * them fused, so it counts more than is kept): what is kept for backward, the gradients and the
 * buffers reused between steps come to 0.7-0.9 of four bytes a counted float, measured with
 * `node --import tsx/esm bench/memory.ts` (peak RSS of training steps of V1, V2, shallow and the
 * baseline at batches 8 to 512); four bytes keeps the estimate on the safe side.
 */
export const BYTES_PER_ACTIVATION = 4 * 1.0;

/** What Node, the loaded modules and the kernels' worker threads take before any tensor: measured as above. */
export const RUNTIME_BYTES = 100 * 2 ** 20;

/** Optimizer state per parameter, in floats (SGD's momentum; Adam's two moments). */
const OPTIMIZER_SLOTS: Record<string, number> = { sgd: 1, sgd_nesterov: 1, rmsprop: 2, adam: 2, adamw: 2 };

export interface MemoryEstimate {
  /** The estimated peak resident memory of a training step, in bytes. */
  peakBytes: number;
  /** The part that grows with the batch: bytes per image of the batch. */
  perImageBytes: number;
  /** The part that does not: runtime, weights, gradients, optimizer state, checkpoint bytes, images. */
  fixedBytes: number;
}

export interface MemoryEstimateOptions {
  batchSize: number;
  resolution: number;
  /** Training images (held as uint8 at the model's resolution, and once as read). */
  images: number;
  /** Bytes of the dataset as read (before resizing); default: images at the model's resolution. */
  datasetBytes?: number;
  optimizer: string;
  ema: boolean;
}

/** The estimate for training `model` with these settings. */
export function estimateTrainingMemory(model: ImageClassifier, o: MemoryEstimateOptions): MemoryEstimate {
  const C = model.info.inChannels;
  const input = C * o.resolution * o.resolution;
  const report = layerCosts(model, [1, C, o.resolution, o.resolution]);
  let activations = input;
  for (const layer of report.layers) activations += layer.outputShape.reduce((a, b) => a * b, 1);
  const perImageBytes = activations * BYTES_PER_ACTIVATION;
  const slots = OPTIMIZER_SLOTS[o.optimizer] ?? 2;
  // Weights, gradients, optimizer state, the moving average, and a checkpoint's bytes while it is written.
  const parameterBytes = report.totalParams * 4 * (2 + slots + (o.ema ? 1 : 0) + (1 + slots + (o.ema ? 1 : 0)));
  const imageBytes = o.images * input + (o.datasetBytes ?? o.images * input);
  const fixedBytes = RUNTIME_BYTES + parameterBytes + imageBytes;
  return { peakBytes: fixedBytes + o.batchSize * perImageBytes, perImageBytes, fixedBytes };
}

/** The largest batch whose estimate stays within `bytes` (0 when not even one image fits). */
export function largestBatchThatFits(estimate: MemoryEstimate, bytes: number): number {
  return Math.max(0, Math.floor((bytes - estimate.fixedBytes) / estimate.perImageBytes));
}

/**
 * Memory this process may use: the kernel's MemAvailable (free memory plus what it can reclaim
 * from caches), or free memory where /proc/meminfo does not exist; never more than the total.
 */
export function availableMemoryBytes(): number {
  try {
    const match = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (match) return Math.min(totalmem(), Number(match[1]) * 1024);
  } catch {
    // not Linux
  }
  return freemem();
}

/** A run whose estimate passes this share of the available memory is refused (the estimate is not exact, and the machine runs other things). */
export const MEMORY_HEADROOM = 0.9;

/** "1.2 GB", "340 MB". */
export function formatBytes(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GB` : `${Math.round(bytes / 2 ** 20)} MB`;
}
