// TrivialAugmentWide (Müller and Hutter 2021), as torchvision.transforms.TrivialAugmentWide: per
// image, one operation chosen uniformly from fourteen, at a magnitude chosen uniformly from 31
// bins (and a random sign for the signed ones), on the uint8 image before normalisation. Works on
// gray and colour images: (C, H, W) planes, C = 1 or 3. Geometric operations sample the source
// pixel of each output pixel with nearest-neighbour interpolation and fill 0 outside, as
// torchvision does by default. Every draw comes from the generator passed in (the batch's), so a
// resumed run augments every image exactly as before.

import type { Rng } from '../tensor/rng.js';

/** The magnitude bins of torchvision's TrivialAugmentWide. */
const BINS = 31;
const linspace = (start: number, end: number) => Array.from({ length: BINS }, (_, i) => start + ((end - start) * i) / (BINS - 1));

/** Operation name -> magnitudes per bin and whether the sign is random (torchvision's `_augmentation_space`). */
const SPACE: [name: string, magnitudes: number[], signed: boolean][] = [
  ['Identity', [0], false],
  ['ShearX', linspace(0, 0.99), true],
  ['ShearY', linspace(0, 0.99), true],
  ['TranslateX', linspace(0, 32), true],
  ['TranslateY', linspace(0, 32), true],
  ['Rotate', linspace(0, 135), true],
  ['Brightness', linspace(0, 0.99), true],
  ['Color', linspace(0, 0.99), true],
  ['Contrast', linspace(0, 0.99), true],
  ['Sharpness', linspace(0, 0.99), true],
  ['Posterize', Array.from({ length: BINS }, (_, i) => 8 - Math.round(i / ((BINS - 1) / 6))), false],
  ['Solarize', linspace(255, 0), false],
  ['AutoContrast', [0], false],
  ['Equalize', [0], false],
];

/** The names of the fourteen operations, in torchvision's order. */
export const TRIVIAL_AUGMENT_OPS = SPACE.map(([name]) => name);

const clamp255 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

/** Gray value of each pixel (ITU-R 601-2 luma, as PIL's "L"), or the plane itself for one channel. */
function grayOf(img: Uint8Array, C: number, plane: number): Float64Array {
  const gray = new Float64Array(plane);
  if (C === 1) for (let i = 0; i < plane; i++) gray[i] = img[i];
  else for (let i = 0; i < plane; i++) gray[i] = (299 * img[i] + 587 * img[plane + i] + 114 * img[2 * plane + i]) / 1000;
  return gray;
}

/** out = clamp(other + factor (img - other)): torchvision's `_blend(img, other, factor)` rounded to uint8. */
function blend(img: Uint8Array, other: (c: number, i: number) => number, factor: number, C: number, plane: number): void {
  for (let c = 0; c < C; c++) for (let i = 0; i < plane; i++) img[c * plane + i] = Math.round(clamp255(other(c, i) + factor * (img[c * plane + i] - other(c, i))));
}

/** Move pixels: out(x, y) = in(source(x, y)) (nearest), 0 where the source lies outside. */
function remap(img: Uint8Array, C: number, H: number, W: number, source: (x: number, y: number) => [number, number]): void {
  const src = img.slice();
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [sx, sy] = source(x, y);
      const ix = Math.round(sx), iy = Math.round(sy);
      const inside = ix >= 0 && ix < W && iy >= 0 && iy < H;
      for (let c = 0; c < C; c++) img[c * H * W + y * W + x] = inside ? src[c * H * W + iy * W + ix] : 0;
    }
  }
}

/** Histogram equalisation of one channel, as PIL's ImageOps.equalize. */
function equalizeChannel(img: Uint8Array, offset: number, plane: number): void {
  const hist = new Int32Array(256);
  for (let i = 0; i < plane; i++) hist[img[offset + i]]++;
  let last = 255;
  while (last > 0 && hist[last] === 0) last--;
  const step = Math.floor((plane - hist[last]) / 255);
  if (step === 0) return;
  const lut = new Uint8Array(256);
  let n = Math.floor(step / 2);
  for (let v = 0; v < 256; v++) {
    lut[v] = Math.min(255, Math.floor(n / step));
    n += hist[v];
  }
  for (let i = 0; i < plane; i++) img[offset + i] = lut[img[offset + i]];
}

/** Apply one operation at magnitude m to a (C, H, W) uint8 image, in place. */
export function applyOp(img: Uint8Array, C: number, H: number, W: number, name: string, m: number): void {
  const plane = H * W;
  const cx = (W - 1) / 2, cy = (H - 1) / 2;
  switch (name) {
    case 'Identity':
      return;
    case 'ShearX':
      return remap(img, C, H, W, (x, y) => [x + m * y, y]);
    case 'ShearY':
      return remap(img, C, H, W, (x, y) => [x, y + m * x]);
    case 'TranslateX':
      return remap(img, C, H, W, (x, y) => [x - Math.trunc(m), y]);
    case 'TranslateY':
      return remap(img, C, H, W, (x, y) => [x, y - Math.trunc(m)]);
    case 'Rotate': {
      const a = (m * Math.PI) / 180, cos = Math.cos(a), sin = Math.sin(a);
      return remap(img, C, H, W, (x, y) => [cos * (x - cx) + sin * (y - cy) + cx, -sin * (x - cx) + cos * (y - cy) + cy]);
    }
    case 'Brightness':
      return blend(img, () => 0, 1 + m, C, plane);
    case 'Color': {
      const gray = grayOf(img, C, plane);
      return blend(img, (_, i) => gray[i], 1 + m, C, plane);
    }
    case 'Contrast': {
      const gray = grayOf(img, C, plane);
      let mean = 0;
      for (let i = 0; i < plane; i++) mean += gray[i];
      mean /= plane;
      return blend(img, () => mean, 1 + m, C, plane);
    }
    case 'Sharpness': {
      // The degenerate image: each interior pixel smoothed by [[1,1,1],[1,5,1],[1,1,1]] / 13, the border kept.
      const smooth = Float64Array.from(img);
      for (let c = 0; c < C; c++) {
        for (let y = 1; y < H - 1; y++) {
          for (let x = 1; x < W - 1; x++) {
            let s = 4 * img[c * plane + y * W + x];
            for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) s += img[c * plane + (y + dy) * W + x + dx];
            smooth[c * plane + y * W + x] = Math.round(s / 13);
          }
        }
      }
      return blend(img, (c, i) => smooth[c * plane + i], 1 + m, C, plane);
    }
    case 'Posterize': {
      const mask = (0xff << (8 - m)) & 0xff;
      for (let i = 0; i < img.length; i++) img[i] &= mask;
      return;
    }
    case 'Solarize':
      for (let i = 0; i < img.length; i++) if (img[i] >= m) img[i] = 255 - img[i];
      return;
    case 'AutoContrast':
      for (let c = 0; c < C; c++) {
        let lo = 255, hi = 0;
        for (let i = 0; i < plane; i++) {
          const v = img[c * plane + i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        if (hi > lo) for (let i = 0; i < plane; i++) img[c * plane + i] = Math.round(((img[c * plane + i] - lo) * 255) / (hi - lo));
      }
      return;
    case 'Equalize':
      for (let c = 0; c < C; c++) equalizeChannel(img, c * plane, plane);
      return;
    default:
      throw new RangeError(`TrivialAugmentWide: no operation '${name}'`);
  }
}

/** One TrivialAugmentWide draw on a (C, H, W) uint8 image, in place; returns what was applied. */
export function trivialAugmentWide(img: Uint8Array, C: number, H: number, W: number, rng: Rng): { op: string; magnitude: number } {
  const [name, magnitudes, signed] = SPACE[rng.int(0, SPACE.length)];
  let magnitude = magnitudes.length > 1 ? magnitudes[rng.int(0, BINS)] : magnitudes[0];
  if (signed && rng.int(0, 2) === 1) magnitude = -magnitude;
  applyOp(img, C, H, W, name, magnitude);
  return { op: name, magnitude };
}
