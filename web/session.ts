// The learner's session: one model, one batch of images, its forward graph and its backward
// pass walked one node at a time, as `mobilenet step` walks it, plus a few SGD steps to watch the
// maps and gradients change. It runs in the page's Web Worker and, unchanged, in Node (the tests
// compare the two bit for bit). Only engine modules that need no Node API are imported here.

import type { Module } from '../src/nn/module.js';
import { TinyNet } from '../src/nn/tiny.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { topologicalOrder, type BackwardStep } from '../src/tensor/autograd.js';
import { reuseBuffers } from '../src/tensor/buffers.js';
import { parseSafetensors } from '../src/tensor/safetensors.js';
import { readCheckpointMetadata } from '../src/train/metadata.js';
import { modelFromSpec, trainConfig } from '../src/train/options.js';
import { checkStep, describeStep, matchesOp, sabotageBackward, tensorStats, topPredictions, type InputCheck, type StepReport, type TensorStats } from '../src/tensor/stepper.js';
import { Tensor } from '../src/tensor/tensor.js';
import { normalizePixels, resizeBilinear, type Normalization } from '../src/train/loader.js';
import { SGD } from '../src/train/optim.js';

/** Fashion-MNIST's class names and its bundled subset's pixel statistics (as `mobilenet step`). */
export const FASHION_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
const FASHION_NORMALIZATION: Normalization = { mean: [0.286], std: [0.353] };

/** A gray 28x28 image with its label: the page's bundled samples, or one the learner dropped (label null). */
export interface SampleImage {
  pixels: Uint8Array;
  width: number;
  height: number;
  /** 1 (gray) or 3 (RGB, channel-planar). */
  channels: number;
  label: number | null;
}

/** What the learner chose: a model (or a checkpoint's), the images of the batch, the seed. */
export interface SessionSetup {
  model: 'tiny' | 'v1' | 'v2';
  alpha?: number;
  /** A checkpoint written by `mobilenet train` (safetensors bytes): its model replaces `model`. */
  checkpoint?: Uint8Array;
  images: SampleImage[];
  seed?: number;
  /** BatchNorm with batch statistics (train mode, the default for a batch of several) or running ones. */
  trainMode?: boolean;
}

/** A node of the forward graph as the page lists it. */
export interface GraphNode {
  index: number;
  op: string;
  formula: string;
  shape: number[];
  /** The node's inputs: the forward index of the node that made each, or a leaf's name. */
  inputs: { from: number | null; name: string | null; shape: number[]; isParameter: boolean }[];
}

/** Maps of one image of the batch: each channel's plane (C x H x W), or a vector (length K). */
export interface Maps {
  shape: number[];
  data: Float32Array;
  stats: TensorStats;
}

/** Everything the page shows for one position of the walk. */
export interface StepView {
  phase: 'forward' | 'backward';
  /** Position in its phase, and the phase's length. */
  index: number;
  total: number;
  /** The forward index of the node shown. */
  node: number;
  op: string;
  formula: string;
  output: Maps;
  /** Backward only: dL/dy as it arrived, and the report `mobilenet step` prints. */
  gradient: Maps | null;
  report: StepReport | null;
  /** Backward only: what the node sent to each input, for the first image (or the parameter's whole gradient). */
  sent: (Maps | null)[];
  loss: number;
}

/** An error the page shows as a message (a bad checkpoint, an image it cannot use). */
export class SessionError extends Error {
  override name = 'SessionError';
}

/** The channel planes of the first image of a (N, ...) tensor, or a whole parameter. */
function firstImage(data: Float32Array, shape: readonly number[], isBatch: boolean): Maps {
  const per = isBatch ? data.length / shape[0] : data.length;
  const view = data.slice(0, per);
  return { shape: isBatch ? shape.slice(1) : [...shape], data: view, stats: tensorStats(view) };
}

/** The session: build with `new LearnerSession(setup)`, then walk with `next` / `previous`. */
export class LearnerSession {
  readonly model: Module;
  readonly inChannels: number;
  readonly resolution: number;
  readonly classNames: string[];
  readonly normalization: Normalization;
  readonly input: Tensor;
  readonly labels: number[];
  readonly losses: number[] = [];
  private readonly optimizer: SGD;
  private loss!: Tensor;
  private forwardOrder!: Tensor[];
  private steps!: Generator<BackwardStep, void, undefined>;
  /** The walk so far: every position visited, so that `previous` can go back. */
  private history: StepView[] = [];
  private position = -1;
  private current: BackwardStep | null = null;
  private sabotaged: string | null = null;

  constructor(setup: SessionSetup) {
    const built = setup.checkpoint ? modelFromCheckpoint(setup.checkpoint) : null;
    this.model = built?.model ?? (setup.model === 'tiny' ? new TinyNet({ seed: setup.seed ?? 0 }) : modelFromSpec(trainConfig({ model: setup.model, alpha: setup.alpha ?? 0.25, resolution: 28, dropout: 0, seed: setup.seed ?? 0 }), { numClasses: 10, inChannels: 1 }));
    this.inChannels = built?.inChannels ?? 1;
    this.resolution = built?.resolution ?? 28;
    this.classNames = built?.classNames ?? FASHION_CLASSES;
    this.normalization = built?.normalization ?? FASHION_NORMALIZATION;
    if (setup.images.length === 0) throw new SessionError('no image to step through');
    // The graph training runs: each BatchNorm + ReLU pair is one fused node, as `mobilenet step` shows.
    this.model.fuseActivations();
    this.model.train(setup.trainMode ?? setup.images.length > 1);
    const plane = this.resolution * this.resolution;
    const pixels = new Uint8Array(setup.images.length * this.inChannels * plane);
    setup.images.forEach((image, n) => pixels.set(toModelInput(image, this.inChannels, this.resolution), n * this.inChannels * plane));
    this.input = new Tensor(normalizePixels(pixels, this.inChannels, plane, this.normalization), [setup.images.length, this.inChannels, this.resolution, this.resolution]);
    // Labels: the images' own where they are Fashion-MNIST's classes, else the model's top
    // prediction (the walk then shows what pushes the network towards the class it chose).
    const known = setup.images.every((i) => i.label !== null) && this.classNames.length === FASHION_CLASSES.length && this.classNames.every((c, i) => c === FASHION_CLASSES[i]);
    this.labels = known ? setup.images.map((i) => i.label!) : topPredictions(this.model.forward(this.input));
    this.optimizer = new SGD(this.model.parameters(), { lr: 0.05, momentum: 0.9 });
    this.restart();
  }

  /** A new forward pass (after training steps, or to walk again from the start). */
  restart(): void {
    this.model.zeroGrad();
    this.loss = softmaxCrossEntropy(this.model.forward(this.input), this.labels);
    this.forwardOrder = topologicalOrder(this.loss).reverse();
    if (this.sabotaged) this.sabotage(this.sabotaged);
    this.steps = this.loss.backwardSteps();
    this.history = [];
    this.position = -1;
    this.current = null;
  }

  /** The forward graph in execution order, with where each input comes from. */
  graph(): GraphNode[] {
    const indexOf = new Map(this.forwardOrder.map((t, i) => [t, i]));
    return this.forwardOrder.map((t, index) => ({
      index,
      op: t.node!.op,
      formula: t.node!.formula,
      shape: [...t.shape],
      inputs: t.node!.inputs.map((x) => ({ from: indexOf.get(x) ?? null, name: x.name ?? null, shape: [...x.shape], isParameter: x.node === null && x.requiresGrad })),
    }));
  }

  get lossValue(): number {
    return this.loss.data[0];
  }

  /** The forward nodes and then the backward steps, one position at a time. */
  get length(): number {
    return 2 * this.forwardOrder.length;
  }

  get at(): number {
    return this.position;
  }

  /** The next position (forward nodes first, then backward steps), or null at the end. */
  next(): StepView | null {
    if (this.position + 1 < this.history.length) return this.history[++this.position];
    const n = this.forwardOrder.length;
    const k = this.history.length;
    let view: StepView;
    if (k < n) {
      const t = this.forwardOrder[k];
      view = { phase: 'forward', index: k, total: n, node: k, op: t.node!.op, formula: t.node!.formula, output: firstImage(t.data, t.shape, t.shape.length > 1 && t.shape[0] === this.input.shape[0]), gradient: null, report: null, sent: [], loss: this.lossValue };
    } else {
      const result = this.steps.next();
      if (result.done) return null;
      const s = result.value;
      this.current = s;
      const isBatch = (x: Tensor) => x.node !== null || x === this.input;
      const node = this.forwardOrder.indexOf(s.output);
      view = {
        phase: 'backward',
        index: s.index,
        total: s.total,
        node,
        op: s.op,
        formula: s.formula,
        output: firstImage(s.output.data, s.output.shape, s.output.shape.length > 1),
        gradient: firstImage(s.gradOutput, s.output.shape, s.output.shape.length > 1),
        report: describeStep(s),
        sent: s.inputs.map((x, i) => (s.inputGrads[i] === null || !x.requiresGrad ? null : firstImage(s.inputGrads[i]!, x.shape, isBatch(x) && x.shape.length > 1))),
        loss: this.lossValue,
      };
    }
    this.history.push(view);
    this.position = this.history.length - 1;
    return view;
  }

  /** The position shown now, or null before the first. */
  currentView(): StepView | null {
    return this.history[this.position] ?? null;
  }

  /** The position before, or null at the start. */
  previous(): StepView | null {
    if (this.position <= 0) return null;
    return this.history[--this.position];
  }

  /** Move to the next node whose op is `op` (a fused `batchNorm2d+relu` counts as batchNorm2d), or to the end. */
  continueTo(op: string | null): StepView | null {
    let view: StepView | null = null;
    for (;;) {
      const next = this.next();
      if (next === null) return view;
      view = next;
      if (op !== null && matchesOp(view.op, op)) return view;
    }
  }

  /** The numerical check of the current backward step (only there: later steps free its buffers). */
  check(): InputCheck[] | null {
    const view = this.history[this.position];
    if (!view || view.phase !== 'backward' || this.current === null || this.position !== this.history.length - 1) return null;
    return checkStep(this.loss, this.current, {}, this.forwardOrder);
  }

  /**
   * For the lesson on numerical checks: scale the gradients the first node of `op` sends by 1.5
   * (the `--sabotage` of `mobilenet step`). Takes effect from the next restart.
   */
  sabotage(op: string): void {
    if (!sabotageBackward(this.forwardOrder, op)) throw new SessionError(`no node of op ${op} in this graph`);
    this.sabotaged = op;
  }

  /**
   * `count` SGD steps (lr 0.05, momentum 0.9) on the batch; returns the losses. The walk then
   * runs again on the new weights up to the position it was at, so the node shown is the same
   * with its maps and gradients as they are now.
   */
  train(count: number): number[] {
    const at = this.position;
    const out: number[] = [];
    for (let k = 0; k < count; k++) {
      // One step in one buffer scope, as the trainer runs it: its buffers are shared memory that
      // worker threads use in place, and are reused by the next step.
      out.push(
        reuseBuffers(() => {
          this.model.zeroGrad();
          const loss = softmaxCrossEntropy(this.model.forward(this.input), this.labels);
          loss.backward();
          this.optimizer.step();
          return loss.data[0];
        }),
      );
    }
    this.model.zeroGrad(); // the gradients' buffers went back to the cache
    this.losses.push(...out);
    this.restart();
    while (this.position < at && this.next() !== null);
    return out;
  }

  /** A digest of the model's weights (FNV-1a over their bytes), to compare runs bit for bit. */
  weightsDigest(): string {
    let h = 0x811c9dc5;
    for (const [, t] of this.model.stateDict()) {
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
    }
    return h.toString(16).padStart(8, '0');
  }
}

/** An image as the model's input: its channels (gray <-> RGB) and resolution, bilinear as the loader resizes. */
export function toModelInput(image: SampleImage, channels: number, resolution: number): Uint8Array {
  const plane = image.width * image.height;
  const gray = new Float32Array(plane);
  for (let i = 0; i < plane; i++) {
    let s = 0;
    for (let c = 0; c < image.channels; c++) s += image.pixels[c * plane + i];
    gray[i] = s / image.channels;
  }
  const out = new Uint8Array(channels * resolution * resolution);
  for (let c = 0; c < channels; c++) {
    const source = image.channels === channels ? Float32Array.from(image.pixels.subarray(c * plane, (c + 1) * plane)) : gray;
    const resized = image.width === resolution && image.height === resolution ? source : resizeBilinear(source, image.height, image.width, resolution, resolution);
    for (let i = 0; i < resized.length; i++) out[c * resolution * resolution + i] = Math.min(255, Math.max(0, Math.round(resized[i])));
  }
  return out;
}

/** A model from a checkpoint `mobilenet train` wrote: its settings from the metadata (checked by the one reader), its tensors from `model.*`. */
function modelFromCheckpoint(bytes: Uint8Array): { model: Module; inChannels: number; resolution: number; classNames: string[]; normalization: Normalization } {
  let file, meta;
  try {
    file = parseSafetensors(bytes, 'the dropped file');
    const raw: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(file.metadata)) if (k !== 'format' && k !== 'sha256' && k !== 'payload_sha256') raw[k] = JSON.parse(v);
    meta = readCheckpointMetadata(raw, 'the dropped file');
  } catch (e) {
    throw new SessionError(`${(e as Error).message}: not a checkpoint written by mobilenet train`);
  }
  if (meta.model.architecture === 'custom') throw new SessionError(`the dropped checkpoint holds a model built in code (${meta.model.typeName}), not a MobileNet`);
  const model = modelFromSpec(meta.config, { numClasses: meta.dataset.classNames.length, inChannels: meta.dataset.channels });
  const dict = new Map<string, Tensor>();
  for (const [k, t] of file.tensors) if (k.startsWith('model.')) dict.set(k.slice(6), new Tensor(Float32Array.from(t.data as ArrayLike<number>), t.shape));
  try {
    model.loadStateDict(dict);
  } catch (e) {
    throw new SessionError(`the dropped checkpoint does not fit its own model: ${(e as Error).message}`);
  }
  return { model, inChannels: meta.dataset.channels, resolution: meta.config.resolution, classNames: meta.dataset.classNames, normalization: meta.normalization };
}
