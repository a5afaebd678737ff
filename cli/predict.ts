// `mobilenet predict`: images -> top-k classes with probabilities; `--explain` writes a
// Grad-CAM heat map over each image (Selvaraju et al. 2017), computed with our own autograd:
//   A = last feature map (C x h x w), y_c = the class score (logit)
//   weights_k = mean over h, w of dy_c / dA_k;  cam = ReLU(sum_k weights_k A_k), upsampled.

import { basename, extname, join } from 'node:path';
import { type Command } from 'commander';
import sharp from 'sharp';
import { numberIn, UsageError } from './common.js';
import { loadModel } from '../src/train/models.js';
import { noGrad } from '../src/tensor/autograd.js';
import { Tensor } from '../src/tensor/tensor.js';
import { DatasetError, decodeImage } from '../src/train/datasets.js';
import { normalizePixels, resizeBilinear } from '../src/train/loader.js';
import { softmax } from '../src/train/tta.js';
import { writeOutputFile } from './plots.js';
import type { ImageClassifier } from '../src/nn/mobilenet.js';

interface PredictFlags {
  top: number;
  explain: boolean;
  outputDir: string;
}

export function registerPredict(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('predict')
    .description('classify images (JPEG, PNG, WebP) with a trained checkpoint')
    .argument('<checkpoint>', 'a .safetensors checkpoint or a run folder')
    .argument('<images...>', 'image files')
    .option('-k, --top <k>', 'how many classes to show', numberIn('--top', 1, 1000, { integer: true }), 3)
    .option('--explain', 'write a Grad-CAM heat map for the top class of each image', false)
    .option('--output-dir <dir>', 'where --explain writes its PNGs', '.')
    .action((checkpoint: string, images: string[], flags: PredictFlags) => run(() => predict(checkpoint, images, flags)));
}

/** Feature maps smaller than this many positions make a blank Grad-CAM (a 1x1 map is a constant). */
const GRADCAM_MIN_POSITIONS = 16;

/**
 * Grad-CAM of class `cls` for input x (1, C, R, R): a (h x w) map in [0, 1]. It uses the last
 * feature map with at least 4 x 4 positions: at 28 x 28 input the very last one is 1 x 1.
 */
export function gradCam(model: ImageClassifier, x: Tensor, cls: number): { cam: Float32Array; h: number; w: number } {
  const blocks = model.features.children();
  // Forward without a graph, keeping each block's output, to find the layer to explain.
  const outputs = noGrad(() => {
    const list: Tensor[] = [];
    let f = x;
    for (const b of blocks) list.push((f = b.forward(f)));
    return list;
  });
  let at = outputs.length - 1;
  while (at > 0 && outputs[at].shape[2] * outputs[at].shape[3] < GRADCAM_MIN_POSITIONS) at--;
  // That feature map as a leaf that requires grad, so backward fills its .grad.
  const A = new Tensor(outputs[at].data, outputs[at].shape, true);
  let f: Tensor = A;
  for (const b of blocks.slice(at + 1)) f = b.forward(f);
  const logits = model.forwardHead(f);
  const onehot = new Float32Array(logits.numel);
  onehot[cls] = 1;
  logits.backward(new Tensor(onehot, logits.shape));
  const [, C, h, w] = A.shape;
  const grad = A.grad!.data;
  const cam = new Float32Array(h * w);
  for (let k = 0; k < C; k++) {
    let weight = 0;
    for (let i = 0; i < h * w; i++) weight += grad[k * h * w + i];
    weight /= h * w;
    for (let i = 0; i < h * w; i++) cam[i] += weight * A.data[k * h * w + i];
  }
  let max = 0;
  for (let i = 0; i < cam.length; i++) max = Math.max(max, (cam[i] = Math.max(0, cam[i])));
  if (max > 0) for (let i = 0; i < cam.length; i++) cam[i] /= max;
  return { cam, h, w };
}

/** Heat colour (blue -> green -> yellow -> red) for t in [0, 1]. */
function jet(t: number): [number, number, number] {
  const c = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))];
}

async function predict(checkpoint: string, images: string[], flags: PredictFlags): Promise<void> {
  const m = loadModel(checkpoint);
  const R = m.config.resolution;
  const C = m.channels;
  let failures = 0;
  for (const path of images) {
    let pixels: Uint8Array;
    try {
      pixels = await decodeImage(path, R, C === 1 ? 1 : 3);
    } catch (e) {
      const reason = e instanceof DatasetError ? e.message : `${path}: cannot decode image (${(e as Error).message})`;
      process.stderr.write(`mobilenet: error: ${reason}\n`);
      failures++;
      continue;
    }
    const x = normalizePixels(pixels, C, R * R, m.normalization);
    const input = new Tensor(x, [1, C, R, R]);
    const probs = softmax(noGrad(() => m.model.forward(input)).data);
    const ranked = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, flags.top);
    process.stdout.write(`${path}\n`);
    for (const k of ranked) process.stdout.write(`  ${(100 * probs[k]).toFixed(2).padStart(6)}%  ${m.classNames[k]}\n`);
    if (flags.explain) {
      const { cam, h, w } = gradCam(m.model, input, ranked[0]);
      const out = join(flags.outputDir, `${basename(path, extname(path))}.gradcam.png`);
      await writeGradCam(path, cam, h, w, out);
      process.stdout.write(`  Grad-CAM for '${m.classNames[ranked[0]]}': ${out}\n`);
    }
  }
  if (failures > 0) throw new UsageError(`${failures} of ${images.length} images could not be read`);
}

/** The original image (up to 512 px) with the heat map blended over it, as PNG. */
async function writeGradCam(path: string, cam: Float32Array, h: number, w: number, out: string): Promise<void> {
  const meta = await sharp(path).metadata();
  const w0 = meta.width ?? 224, h0 = meta.height ?? 224;
  // Small images (28 x 28) are enlarged to at least 224 px, large ones shrunk to at most 512 px.
  const scale = Math.min(512 / Math.max(w0, h0), Math.max(1, 224 / Math.max(w0, h0)));
  const W = Math.round(w0 * scale), H = Math.round(h0 * scale);
  const base = await sharp(path).removeAlpha().resize(W, H, { fit: 'fill', kernel: 'nearest' }).toColourspace('srgb').raw().toBuffer();
  const up = resizeBilinear(cam, h, w, H, W);
  const rgb = Buffer.alloc(W * H * 3);
  const channels = base.length / (W * H);
  for (let i = 0; i < W * H; i++) {
    const [r, g, b] = jet(up[i]);
    const gray = channels === 1 ? base[i] : null;
    for (let c = 0; c < 3; c++) {
      const v = gray ?? base[i * channels + c];
      rgb[i * 3 + c] = Math.round(0.55 * v + 0.45 * [r, g, b][c]);
    }
  }
  writeOutputFile(out, await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer());
}
