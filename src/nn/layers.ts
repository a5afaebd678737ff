// Layers: thin modules over the ops, holding parameters and describing their cost.

import { relu, relu6 } from '../ops/activations.js';
import { batchNorm2d, BATCHNORM_EPS, BATCHNORM_MOMENTUM } from '../ops/batchnorm.js';
import { conv2d, convOutputSize } from '../ops/conv2d.js';
import { depthwiseConv2d } from '../ops/depthwise.js';
import { dropout } from '../ops/dropout.js';
import { linear } from '../ops/linear.js';
import { pointwiseConv2d } from '../ops/pointwise.js';
import { avgPool2d, globalAvgPool2d, maxPool2d } from '../ops/pooling.js';
import { flatten } from '../ops/view.js';
import { Rng } from '../tensor/rng.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { ones, scalar, Tensor, zeros } from '../tensor/tensor.js';
import { kaimingNormalFanOut, LINEAR_INIT_STD, normalInit } from './init.js';
import { Module, Sequential, type LayerDescription } from './module.js';

/** Options of a convolution layer: stride, padding, groups, bias, and the Rng of its initialisation. */
export interface Conv2dLayerOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
  /** Generator for the initial weights (Kaiming normal, fan_out). */
  rng?: Rng;
}

/**
 * 2-D convolution, as torch.nn.Conv2d (dilation 1). It runs the fastest kernel for its shape:
 * depthwise loops when groups = in = out channels, a plain GEMM for 1x1 stride 1 without
 * padding, im2col + GEMM otherwise. The state dict is the same whichever kernel runs.
 */
export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, options: Conv2dLayerOptions = {}) {
    super();
    this.stride = options.stride ?? 1;
    this.padding = options.padding ?? 0;
    this.groups = options.groups ?? 1;
    for (const [name, v] of [['inChannels', inChannels], ['outChannels', outChannels], ['kernelSize', kernelSize], ['stride', this.stride], ['groups', this.groups]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`Conv2d: ${name} must be an integer >= 1, got ${v}`);
    }
    if (inChannels % this.groups !== 0 || outChannels % this.groups !== 0) {
      throw new RangeError(`Conv2d: groups ${this.groups} must divide inChannels ${inChannels} and outChannels ${outChannels}`);
    }
    this.weight = this.registerParameter('weight', zeros([outChannels, inChannels / this.groups, kernelSize, kernelSize]));
    kaimingNormalFanOut(this.weight, options.rng ?? new Rng(0));
    this.bias = options.bias ? this.registerParameter('bias', zeros([outChannels])) : null;
  }

  get isDepthwise(): boolean {
    return this.groups === this.inChannels && this.groups === this.outChannels && this.groups > 1;
  }

  get isPointwise(): boolean {
    return this.kernelSize === 1 && this.stride === 1 && this.padding === 0 && this.groups === 1;
  }

  forward(x: Tensor): Tensor {
    if (this.isDepthwise) return depthwiseConv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding });
    if (this.isPointwise) return pointwiseConv2d(x, this.weight, this.bias);
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, groups: this.groups });
  }

  override get typeName(): string {
    return this.isDepthwise ? 'DepthwiseConv2d' : this.isPointwise ? 'PointwiseConv2d' : 'Conv2d';
  }

  override describeLayer(inputShape: readonly number[]): LayerDescription {
    const [n, c, h, w] = inputShape;
    if (c !== this.inChannels) throw new ShapeError(`${this.typeName}: input has ${c} channels but the layer expects ${this.inChannels} (input ${formatShape(inputShape)})`);
    const hOut = convOutputSize(h, this.kernelSize, this.stride, this.padding, 1);
    const wOut = convOutputSize(w, this.kernelSize, this.stride, this.padding, 1);
    const k = this.kernelSize;
    const kind = this.isDepthwise ? `Conv DW ${k}x${k}` : `Conv ${k}x${k}`;
    return { outputShape: [n, this.outChannels, hOut, wOut], multAdds: hOut * wOut * this.outChannels * (this.inChannels / this.groups) * k * k, kind };
  }
}

/** k x k depthwise convolution (one filter per channel): Conv2d with groups = channels. */
export class DepthwiseConv2d extends Conv2d {
  constructor(channels: number, kernelSize = 3, options: Omit<Conv2dLayerOptions, 'groups'> = {}) {
    super(channels, channels, kernelSize, { padding: (kernelSize - 1) / 2, ...options, groups: channels });
  }
}

/** 1x1 convolution: Conv2d with a 1x1 kernel. */
export class PointwiseConv2d extends Conv2d {
  constructor(inChannels: number, outChannels: number, options: Omit<Conv2dLayerOptions, 'groups' | 'stride' | 'padding'> = {}) {
    super(inChannels, outChannels, 1, options);
  }
}

/** Options of the BatchNorm2d layer: eps and momentum (PyTorch's defaults). */
export interface BatchNormLayerOptions {
  eps?: number;
  momentum?: number;
}

/** BatchNorm2d with affine gamma (`weight`) and beta (`bias`) and running statistics, as PyTorch. */
export class BatchNorm2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly numBatchesTracked: Tensor;
  readonly eps: number;
  readonly momentum: number;

  constructor(readonly channels: number, options: BatchNormLayerOptions = {}) {
    super();
    this.eps = options.eps ?? BATCHNORM_EPS;
    this.momentum = options.momentum ?? BATCHNORM_MOMENTUM;
    this.weight = this.registerParameter('weight', ones([channels]));
    this.bias = this.registerParameter('bias', zeros([channels]));
    // Buffer names as in PyTorch, so state dicts interoperate.
    this.runningMean = this.registerBuffer('running_mean', zeros([channels]));
    this.runningVar = this.registerBuffer('running_var', ones([channels]));
    this.numBatchesTracked = this.registerBuffer('num_batches_tracked', scalar(0));
  }

  /** The activation this BatchNorm applies itself, as one fused op (see Module.fuseActivations), or null. */
  private activation: 'relu' | 'relu6' | null = null;

  /**
   * A frozen BatchNorm normalises with its running statistics and leaves them alone even while
   * the model trains, as Keras does for a frozen base and torchvision's FrozenBatchNorm2d.
   */
  frozen = false;

  forward(x: Tensor): Tensor {
    const training = this.training && !this.frozen;
    if (training) this.numBatchesTracked.data[0] += 1;
    return batchNorm2d(x, this.weight, this.bias, this.runningMean, this.runningVar, { training, momentum: this.momentum, eps: this.eps, activation: this.activation ?? undefined });
  }

  override absorbActivation(next: Module | null): boolean {
    this.activation = next instanceof ReLU6 ? 'relu6' : next instanceof ReLU ? 'relu' : null;
    return this.activation !== null;
  }

  override describeLayer(inputShape: readonly number[]): LayerDescription {
    return { outputShape: [...inputShape], multAdds: 0, kind: 'BatchNorm' };
  }
}

abstract class ShapePreserving extends Module {
  override describeLayer(inputShape: readonly number[]): LayerDescription {
    return { outputShape: [...inputShape], multAdds: 0, kind: this.typeName };
  }
}

/** y = max(0, x) as a module. */
export class ReLU extends ShapePreserving {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** y = min(6, max(0, x)) as a module (MobileNetV2's activation). */
export class ReLU6 extends ShapePreserving {
  forward(x: Tensor): Tensor {
    return relu6(x);
  }
}

/** Inverted dropout; identity in eval mode. Its generator is saved in checkpoints. */
export class Dropout extends ShapePreserving {
  readonly rng: Rng;
  constructor(readonly p = 0.5, rng: Rng = new Rng(0)) {
    super();
    if (!(p >= 0 && p < 1)) throw new RangeError(`Dropout: p must be in [0, 1), got ${p}`);
    this.rng = this.registerRng('rng', rng);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.rng, this.training);
  }
}

/** Fully connected layer y = x W^T + b, weight (out, in), PyTorch's keys `weight` and `bias`. */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, options: { bias?: boolean; rng?: Rng } = {}) {
    super();
    this.weight = this.registerParameter('weight', zeros([outFeatures, inFeatures]));
    normalInit(this.weight, options.rng ?? new Rng(0), LINEAR_INIT_STD);
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([outFeatures])) : null;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }

  override describeLayer(inputShape: readonly number[]): LayerDescription {
    if (inputShape[inputShape.length - 1] !== this.inFeatures) {
      throw new ShapeError(`Linear: input has ${inputShape[inputShape.length - 1]} features but the layer expects ${this.inFeatures} (input ${formatShape(inputShape)})`);
    }
    return { outputShape: [inputShape[0], this.outFeatures], multAdds: this.inFeatures * this.outFeatures, kind: 'FC' };
  }
}

/** Options of the pooling layers: stride and padding. */
export interface PoolLayerOptions {
  stride?: number;
  padding?: number;
}

/** Max pooling over k x k windows (see `maxPool2d`). */
export class MaxPool2d extends Module {
  constructor(readonly kernel: number, readonly options: PoolLayerOptions = {}) {
    super();
  }
  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernel: this.kernel, ...this.options });
  }
  override describeLayer(s: readonly number[]): LayerDescription {
    const st = this.options.stride ?? this.kernel, p = this.options.padding ?? 0;
    return { outputShape: [s[0], s[1], convOutputSize(s[2], this.kernel, st, p, 1), convOutputSize(s[3], this.kernel, st, p, 1)], multAdds: 0, kind: 'Pool' };
  }
}

/** Average pooling over k x k windows (see `avgPool2d`). */
export class AvgPool2d extends MaxPool2d {
  override forward(x: Tensor): Tensor {
    return avgPool2d(x, { kernel: this.kernel, ...this.options });
  }
}

/** Average over each whole plane: (N, C, H, W) -> (N, C, 1, 1), like AdaptiveAvgPool2d(1). */
export class GlobalAvgPool2d extends Module {
  forward(x: Tensor): Tensor {
    return globalAvgPool2d(x);
  }
  override describeLayer(s: readonly number[]): LayerDescription {
    return { outputShape: [s[0], s[1], 1, 1], multAdds: 0, kind: 'Pool' };
  }
}

/** (N, C, H, W) -> (N, C*H*W). */
export class Flatten extends Module {
  forward(x: Tensor): Tensor {
    return flatten(x, 1);
  }
  override describeLayer(s: readonly number[]): LayerDescription {
    return { outputShape: [s[0], s.slice(1).reduce((p, d) => p * d, 1)], multAdds: 0, kind: 'Flatten' };
  }
}

/**
 * The depthwise separable block of MobileNetV1 (Howard et al. 2017, Figure 3):
 * depthwise 3x3 (stride s) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.
 * It replaces one standard 3x3 convolution costing  H W Cin Cout 9  mult-adds by
 * H W Cin 9 + H W Cin Cout: a fraction 1/Cout + 1/9 of the cost.
 */
export class DepthwiseSeparable extends Sequential {
  constructor(inChannels: number, outChannels: number, stride: number, rng: Rng) {
    super();
    this.registerModule('dw', new DepthwiseConv2d(inChannels, 3, { stride, padding: 1, rng }));
    this.registerModule('dw_bn', new BatchNorm2d(inChannels));
    this.registerModule('dw_relu', new ReLU());
    this.registerModule('pw', new PointwiseConv2d(inChannels, outChannels, { rng }));
    this.registerModule('pw_bn', new BatchNorm2d(outChannels));
    this.registerModule('pw_relu', new ReLU());
  }
}

/**
 * Freeze a module for transfer learning: its parameters get no gradient (so no optimizer state
 * and no weight decay), and its BatchNorms keep their running statistics in training too.
 */
export function freeze(module: Module): void {
  setFrozen(module, true);
}

/** Undo `freeze`: the parameters train again and BatchNorm uses batch statistics in training. */
export function unfreeze(module: Module): void {
  setFrozen(module, false);
}

function setFrozen(module: Module, frozen: boolean): void {
  for (const p of module.parameters()) p.requiresGrad = !frozen;
  for (const [, m] of module.namedModules()) if (m instanceof BatchNorm2d) m.frozen = frozen;
}
