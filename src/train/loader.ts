// The data loader: seeded shuffling and batching, conversion to the model's channels and
// resolution, augmentation, normalisation.
//
// Randomness is derived from coordinates, not carried along: the order of epoch e comes from
// Rng(deriveSeed(seed, e)) and the augmentation of batch b of epoch e from
// Rng(deriveSeed(seed, e, b)). A resumed run therefore reproduces any batch exactly without
// replaying the ones before it, which is what makes resume bit-exact even mid-epoch.
//
// Resizing and channel conversion happen once, when the loader is built (the "base" images at
// the model's resolution, still bytes); per batch only the cheap steps remain: crop, flip,
// erase, normalise. The trainer measures the time spent here (`dataMs` in batch events).

import { deriveSeed, Rng } from '../tensor/rng.js';
import { trivialAugmentWide } from './autoaugment.js';
import { Tensor } from '../tensor/tensor.js';
import type { ImageDataset } from './datasets.js';

/** Training augmentation: random crop with zero padding, horizontal flips, random erasing. */
export interface AugmentOptions {
  /** Pad by this many pixels (zeros) and crop back at a random offset, as RandomCrop(size, padding). 0 = off. */
  cropPadding?: number;
  /** Mirror left-right with probability 0.5. */
  horizontalFlip?: boolean;
  /** Probability of erasing a random rectangle (RandomErasing: area 2-33%, aspect 0.3-3.3, value 0). 0 = off. */
  randomErasing?: number;
  /** 'ta_wide': TrivialAugmentWide on each uint8 image before the crop and flip (torchvision's --auto-augment ta_wide). */
  autoAugment?: 'none' | 'ta_wide';
}

/** Options of a DataLoader. */
export interface LoaderOptions {
  batchSize: number;
  shuffle?: boolean;
  /** Drop the last partial batch (default false: it is kept). */
  dropLast?: boolean;
  seed?: number;
  /** The model's input resolution (the paper's rho): images are resized to it (bilinear). */
  resolution?: number;
  /** The model's input channels: grayscale is repeated to RGB, RGB is averaged to grayscale (luma). */
  channels?: number;
  /** Per-channel normalisation, applied after scaling bytes to [0, 1]. */
  mean?: number[];
  std?: number[];
  augment?: AugmentOptions;
}

/** One batch: normalised images, labels, and its index in the epoch. */
export interface Batch {
  /** (B, C, R, R), normalised. */
  x: Tensor;
  labels: Int32Array;
  /** Index of the batch within its epoch. */
  index: number;
  /** Which images of the dataset the batch holds, in order. */
  indices: Int32Array;
}

const LUMA = [0.299, 0.587, 0.114];

/** Per-channel input normalisation: x = (pixel / 255 - mean[c]) / std[c]. */
export interface Normalization {
  mean: number[];
  std: number[];
}

/**
 * The input normalisation, defined once: x = (pixel / 255 - mean) / std, computed as
 * pixel * scale - shift with scale = 1 / (255 std) and shift = mean / std. The loader, `predict`
 * and `step` all use this form, so an image gets the same float32 input wherever it enters.
 */
export function normalizationOf(mean: number, std: number): { scale: number; shift: number } {
  return { scale: 1 / (255 * std), shift: mean / std };
}

/** uint8 pixels of NCHW images (planes of `plane` pixels, channel after channel) normalised per channel. */
export function normalizePixels(pixels: Uint8Array, channels: number, plane: number, normalization: Normalization): Float32Array {
  const out = new Float32Array(pixels.length);
  for (let start = 0, c = 0; start < pixels.length; start += plane, c = (c + 1) % channels) {
    const { scale, shift } = normalizationOf(normalization.mean[c], normalization.std[c]);
    for (let i = start; i < start + plane; i++) out[i] = pixels[i] * scale - shift;
  }
  return out;
}

/**
 * Bilinear resize of one plane (bytes) to (outH, outW), sampling at pixel centres like
 * PyTorch's interpolate(mode='bilinear', align_corners=False). Returns floats in 0..255.
 */
export function resizeBilinear(src: Float32Array, h: number, w: number, outH: number, outW: number): Float32Array {
  const out = new Float32Array(outH * outW);
  const sy = h / outH, sx = w / outW;
  for (let oy = 0; oy < outH; oy++) {
    const fy = Math.max(0, (oy + 0.5) * sy - 0.5);
    const y0 = Math.min(h - 1, Math.floor(fy)), y1 = Math.min(h - 1, y0 + 1), wy = fy - y0;
    for (let ox = 0; ox < outW; ox++) {
      const fx = Math.max(0, (ox + 0.5) * sx - 0.5);
      const x0 = Math.min(w - 1, Math.floor(fx)), x1 = Math.min(w - 1, x0 + 1), wx = fx - x0;
      const top = src[y0 * w + x0] * (1 - wx) + src[y0 * w + x1] * wx;
      const bottom = src[y1 * w + x0] * (1 - wx) + src[y1 * w + x1] * wx;
      out[oy * outW + ox] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/** Convert every image to (channels, R, R) bytes once. */
function prepareBase(ds: ImageDataset, channels: number, resolution: number): Uint8Array {
  const inPlane = ds.height * ds.width;
  const outPlane = resolution * resolution;
  const base = new Uint8Array(ds.count * channels * outPlane);
  const same = ds.height === resolution && ds.width === resolution;
  const plane = new Float32Array(inPlane);
  for (let n = 0; n < ds.count; n++) {
    const img = ds.images.subarray(n * ds.channels * inPlane, (n + 1) * ds.channels * inPlane);
    for (let c = 0; c < channels; c++) {
      // Source plane for output channel c.
      if (ds.channels === channels) for (let i = 0; i < inPlane; i++) plane[i] = img[c * inPlane + i];
      else if (ds.channels === 1) for (let i = 0; i < inPlane; i++) plane[i] = img[i];
      else if (channels === 1 && ds.channels === 3) for (let i = 0; i < inPlane; i++) plane[i] = LUMA[0] * img[i] + LUMA[1] * img[inPlane + i] + LUMA[2] * img[2 * inPlane + i];
      else throw new RangeError(`DataLoader: cannot convert ${ds.channels}-channel images to ${channels} channels`);
      const resized = same ? plane : resizeBilinear(plane, ds.height, ds.width, resolution, resolution);
      const dst = (n * channels + c) * outPlane;
      for (let i = 0; i < outPlane; i++) base[dst + i] = Math.min(255, Math.max(0, Math.round(resized[i])));
    }
  }
  return base;
}

/** Batches of a dataset at a model's resolution and channels: seeded shuffling, augmentation and normalisation, each batch reproducible from (seed, epoch, batch). */
export class DataLoader {
  readonly batchSize: number;
  readonly resolution: number;
  readonly channels: number;
  readonly count: number;
  private readonly base: Uint8Array;
  private readonly options: Required<Omit<LoaderOptions, 'augment'>> & { augment: Required<AugmentOptions> };

  /**
   * `converted`: the dataset already resized and converted to this resolution and channel count
   * (another loader's `images`), so that several loaders of one dataset convert it once.
   */
  constructor(readonly dataset: ImageDataset, options: LoaderOptions, converted?: Uint8Array) {
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) throw new RangeError(`DataLoader: batchSize must be an integer >= 1, got ${options.batchSize}`);
    const channels = options.channels ?? dataset.channels;
    const resolution = options.resolution ?? dataset.height;
    if (!Number.isInteger(resolution) || resolution < 1) throw new RangeError(`DataLoader: resolution must be an integer >= 1, got ${resolution}`);
    const mean = options.mean ?? new Array<number>(channels).fill(0);
    const std = options.std ?? new Array<number>(channels).fill(1);
    if (mean.length !== channels || std.length !== channels) throw new RangeError(`DataLoader: mean and std need ${channels} values (one per channel), got ${mean.length} and ${std.length}`);
    this.options = {
      batchSize: options.batchSize,
      shuffle: options.shuffle ?? false,
      dropLast: options.dropLast ?? false,
      seed: options.seed ?? 0,
      resolution,
      channels,
      mean,
      std,
      augment: { cropPadding: 0, horizontalFlip: false, randomErasing: 0, autoAugment: 'none', ...options.augment },
    };
    this.batchSize = options.batchSize;
    this.resolution = resolution;
    this.channels = channels;
    this.count = dataset.count;
    const expected = dataset.count * channels * resolution * resolution;
    if (converted !== undefined && converted.length !== expected) throw new RangeError(`DataLoader: converted images hold ${converted.length} bytes, expected ${expected}`);
    this.base = converted ?? prepareBase(dataset, channels, resolution);
  }

  get batchesPerEpoch(): number {
    return this.options.dropLast ? Math.floor(this.count / this.batchSize) : Math.ceil(this.count / this.batchSize);
  }

  /** The sample order of an epoch (a seeded permutation, or 0..n-1 without shuffling). */
  order(epoch: number): Int32Array {
    if (!this.options.shuffle) return Int32Array.from({ length: this.count }, (_, i) => i);
    return new Rng(deriveSeed(this.options.seed, epoch)).permutation(this.count);
  }

  /** The dataset's images at this loader's resolution and channels, as uint8 (N, C, R, R). */
  get images(): Uint8Array {
    return this.base;
  }

  /** The per-channel normalisation this loader applies. */
  get normalization(): Normalization {
    return { mean: this.options.mean, std: this.options.std };
  }

  /** Another loader of the same images (converted once) with other options. */
  with(options: Omit<LoaderOptions, 'resolution' | 'channels'>): DataLoader {
    return new DataLoader(this.dataset, { ...options, resolution: this.resolution, channels: this.channels }, this.base);
  }

  /** Batches of one epoch, starting at batch `startBatch` (for resuming mid-epoch). */
  *epoch(epoch: number, startBatch = 0): Generator<Batch> {
    const order = this.order(epoch);
    for (let b = startBatch; b < this.batchesPerEpoch; b++) {
      const indices = order.subarray(b * this.batchSize, Math.min(this.count, (b + 1) * this.batchSize));
      yield this.makeBatch(indices, new Rng(deriveSeed(this.options.seed, epoch, b)), b);
    }
  }

  /** Assemble one batch: copy, augment (crop, flip, erase) and normalise. */
  makeBatch(indices: ArrayLike<number>, rng: Rng, index = 0): Batch {
    const { channels: C, resolution: R, mean, std, augment } = this.options;
    const plane = R * R;
    const B = indices.length;
    const x = new Float32Array(B * C * plane);
    const labels = new Int32Array(B);
    const pad = augment.cropPadding;
    for (let i = 0; i < B; i++) {
      const n = indices[i];
      labels[i] = this.dataset.labels[n];
      // Augmentation draws happen in a fixed order per sample, whatever is enabled.
      const dy = pad > 0 ? rng.int(-pad, pad + 1) : 0;
      const dx = pad > 0 ? rng.int(-pad, pad + 1) : 0;
      const flip = augment.horizontalFlip && rng.uniform() < 0.5;
      // TrivialAugmentWide works on a copy of the uint8 image (its draws come after the crop and
      // flip draws, so runs without it draw exactly as before).
      let pixels = this.base, first = n * C * plane;
      if (augment.autoAugment === 'ta_wide') {
        pixels = this.base.slice(first, first + C * plane);
        first = 0;
        trivialAugmentWide(pixels, C, R, R, rng);
      }
      for (let c = 0; c < C; c++) {
        const src = first + c * plane;
        const dst = (i * C + c) * plane;
        const { scale, shift } = normalizationOf(mean[c], std[c]);
        // out[y, x] = base[y + dy, x' + dx] with x' mirrored when flipping; zero (before normalising) outside.
        for (let y = 0; y < R; y++) {
          const sy = y + dy;
          const rowOut = dst + y * R;
          if (sy < 0 || sy >= R) {
            x.fill(-shift, rowOut, rowOut + R);
            continue;
          }
          const rowIn = src + sy * R;
          for (let xo = 0; xo < R; xo++) {
            const sx = (flip ? R - 1 - xo : xo) + dx;
            x[rowOut + xo] = sx < 0 || sx >= R ? -shift : pixels[rowIn + sx] * scale - shift;
          }
        }
      }
      if (augment.randomErasing > 0 && rng.uniform() < augment.randomErasing) this.erase(x, i, rng);
    }
    return { x: new Tensor(x, [B, C, R, R]), labels, index, indices: Int32Array.from(indices) };
  }

  /** RandomErasing (Zhong et al. 2017) with torchvision's defaults; value 0 after normalisation. */
  private erase(x: Float32Array, i: number, rng: Rng): void {
    const { channels: C, resolution: R } = this.options;
    const area = R * R;
    for (let attempt = 0; attempt < 10; attempt++) {
      const target = area * rng.uniform(0.02, 0.33);
      const aspect = Math.exp(rng.uniform(Math.log(0.3), Math.log(3.3)));
      const h = Math.round(Math.sqrt(target * aspect));
      const w = Math.round(Math.sqrt(target / aspect));
      if (h < 1 || w < 1 || h > R || w > R) continue;
      const top = rng.int(0, R - h + 1), left = rng.int(0, R - w + 1);
      for (let c = 0; c < C; c++) {
        for (let y = top; y < top + h; y++) x.fill(0, (i * C + c) * area + y * R + left, (i * C + c) * area + y * R + left + w);
      }
      return;
    }
  }
}
