// MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a training batch, as torchvision's
// reference script applies them (RandomMixup / RandomCutmix with p = 1; one of the two, chosen
// at random, when both are on). Each image is mixed with the next one in the batch (the batch
// rolled by one), with lambda ~ Beta(alpha, alpha):
//   MixUp:  x = lambda x + (1 - lambda) x_rolled
//   CutMix: a box of area (1 - lambda) W H, centred at a uniform point and clipped to the image,
//           is pasted from x_rolled; lambda is then the area actually kept.
// The loss is lambda CE(z, y) + (1 - lambda) CE(z, y_rolled): cross-entropy is linear in the
// target, so this is the cross-entropy against the mixed target. Every draw comes from the
// batch's own generator, so a resumed run mixes every batch exactly as before.

import type { Rng } from '../tensor/rng.js';
import type { Tensor } from '../tensor/tensor.js';

/** Which of MixUp and CutMix are on, by their Beta alpha (0 = off). */
export interface MixOptions {
  /** Beta(alpha, alpha) of MixUp; 0 = off. */
  mixupAlpha: number;
  /** Beta(alpha, alpha) of CutMix; 0 = off. */
  cutmixAlpha: number;
}

/** What a mixed batch trains against: lambda for its labels, 1 - lambda for `partnerLabels`. */
export interface Mixed {
  kind: 'mixup' | 'cutmix';
  lambda: number;
  partnerLabels: Int32Array;
}

/** Gamma(shape, 1) by Marsaglia and Tsang's method; shapes below 1 through Gamma(shape + 1) U^(1/shape). */
export function sampleGamma(rng: Rng, shape: number): number {
  if (shape < 1) return sampleGamma(rng, shape + 1) * Math.pow(1 - rng.uniform(), 1 / shape);
  const d = shape - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number, v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rng.uniform();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** Beta(a, b) from two Gamma samples: X / (X + Y). */
export function sampleBeta(rng: Rng, a: number, b: number): number {
  const x = sampleGamma(rng, a), y = sampleGamma(rng, b);
  return x / (x + y);
}

/**
 * Mix a normalised NCHW batch in place (see the file comment); null when both are off or the
 * batch has a single image.
 */
export function mixBatch(x: Tensor, labels: Int32Array, options: MixOptions, rng: Rng): Mixed | null {
  const on = [options.mixupAlpha > 0 ? 'mixup' : null, options.cutmixAlpha > 0 ? 'cutmix' : null].filter((k) => k !== null) as ('mixup' | 'cutmix')[];
  const [N, C, H, W] = x.shape;
  if (on.length === 0 || N < 2) return null;
  const kind = on.length === 2 ? on[rng.int(0, 2)] : on[0];
  const alpha = kind === 'mixup' ? options.mixupAlpha : options.cutmixAlpha;
  let lambda = sampleBeta(rng, alpha, alpha);
  const data = x.data;
  const image = C * H * W;
  // The partner of image n is image n - 1 (torch.roll(batch, 1, 0)); image 0's is the last.
  const rolled = data.slice(0, N * image);
  const partner = (n: number) => ((n + N - 1) % N) * image;
  const partnerLabels = Int32Array.from(labels, (_, n) => labels[(n + N - 1) % N]);
  if (kind === 'mixup') {
    for (let n = 0; n < N; n++) {
      const base = n * image, from = partner(n);
      for (let i = 0; i < image; i++) data[base + i] = lambda * rolled[base + i] + (1 - lambda) * rolled[from + i];
    }
    return { kind, lambda, partnerLabels };
  }
  const cx = rng.int(0, W), cy = rng.int(0, H);
  const r = 0.5 * Math.sqrt(1 - lambda);
  const halfW = Math.floor(r * W), halfH = Math.floor(r * H);
  const x1 = Math.max(0, cx - halfW), x2 = Math.min(W, cx + halfW);
  const y1 = Math.max(0, cy - halfH), y2 = Math.min(H, cy + halfH);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const plane = n * image + c * H * W, from = partner(n) + c * H * W;
      for (let y = y1; y < y2; y++) for (let xx = x1; xx < x2; xx++) data[plane + y * W + xx] = rolled[from + y * W + xx];
    }
  }
  lambda = 1 - ((x2 - x1) * (y2 - y1)) / (W * H);
  return { kind, lambda, partnerLabels };
}
