// MobileNetV1 (Howard et al. 2017), MobileNetV2 (Sandler et al. 2018) and the paper's
// full-convolution baseline, each read from its architecture table by a loop.

import { add } from '../ops/elementwise.js';
import { Rng } from '../tensor/rng.js';
import type { Tensor } from '../tensor/tensor.js';
import { BatchNorm2d, Conv2d, DepthwiseSeparable, Dropout, Flatten, GlobalAvgPool2d, Linear, ReLU, ReLU6 } from './layers.js';
import { Module, Sequential } from './module.js';

// =============================================================================================
// MobileNetV1
// =============================================================================================

/** Table 1 of the paper after the stem: (pointwise output channels, depthwise stride) per block. */
export const MOBILENET_V1_BLOCKS: readonly (readonly [channels: number, stride: number])[] = [
  [64, 1],
  [128, 2],
  [128, 1],
  [256, 2],
  [256, 1],
  [512, 2],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [1024, 2],
  [1024, 1],
];

/**
 * The paper's "Shallow MobileNet" (Table 5): Table 1 without the five 14x14x512 separable blocks
 * (stride 1, 512 channels), to compare making the network shallower with making it thinner.
 */
export const SHALLOW_MOBILENET_BLOCKS = MOBILENET_V1_BLOCKS.filter(([channels, stride], i) => !(channels === 512 && stride === 1 && i >= 6 && i <= 10));

/** Channels of MobileNetV1's first convolution at alpha 1 (Table 1). */
export const MOBILENET_V1_STEM_CHANNELS = 32;

/** Options of every MobileNet: width multiplier, resolution, classes, input channels, dropout, seed. */
export interface MobileNetOptions {
  /** Width multiplier: every layer's channels are scaled by alpha (paper section 3.3). */
  alpha?: number;
  /** Nominal input resolution (the resolution multiplier rho: 224, 192, 160, 128, ...). */
  resolution?: number;
  numClasses?: number;
  inChannels?: number;
  /** Dropout probability before the classifier. */
  dropout?: number;
  /** Seed for weight initialisation and the dropout generator. */
  seed?: number;
  /**
   * MobileNetV2 only: the expansion factor t of every inverted residual block whose table row
   * says 6 (the first block's t = 1 stays). Below 1 the block reduces channels before the
   * depthwise convolution: the classic bottleneck V2 turned inside out.
   */
  expansion?: number;
  /**
   * The stride of the first convolution: 2 in the papers (224 -> 112); 1 keeps the resolution
   * of small images (28x28 Fashion-MNIST would otherwise be 1x1 after five more stride-2 layers),
   * at four times the multiply-adds.
   */
  stemStride?: 1 | 2;
}

/** What defines a built MobileNet; stored in checkpoints so that it can be rebuilt. */
export interface ModelInfo {
  architecture: Architecture;
  alpha: number;
  resolution: number;
  numClasses: number;
  inChannels: number;
  dropout: number;
  /** MobileNetV2's expansion factor t of the inverted residual blocks (6 in the paper). */
  expansion?: number;
  /** The first convolution's stride (2 in the papers; 1 keeps small images' resolution). */
  stemStride?: number;
}

/** Common shape of the three models: features -> global pool -> flatten -> classifier. */
export abstract class ImageClassifier extends Module {
  abstract readonly info: ModelInfo;
  abstract readonly features: Sequential;
  abstract readonly classifier: Sequential;
  protected readonly pool = new GlobalAvgPool2d();
  protected readonly flatten = new Flatten();

  forward(x: Tensor): Tensor {
    return this.forwardHead(this.features.forward(x));
  }

  /** From the last feature map (N, C, h, w) to logits: pool, flatten, classifier (Grad-CAM starts here). */
  forwardHead(features: Tensor): Tensor {
    return this.classifier.forward(this.flattenPool(features));
  }

  /** The last feature map (N, C, h, w) averaged and flattened to (N, C): the classifier's input. */
  flattenPool(features: Tensor): Tensor {
    return this.flatten.forward(this.pool.forward(features));
  }

  /**
   * A new classifier for `numClasses` classes, freshly initialised, in place of the old one:
   * transfer learning keeps the features and learns a new head (every other tensor stays).
   */
  replaceClassifier(numClasses: number, rng: Rng = new Rng(0)): this {
    if (!Number.isInteger(numClasses) || numClasses < 1) throw new RangeError(`replaceClassifier: numClasses must be an integer >= 1, got ${numClasses}`);
    const old = this.classifier.at(this.classifier.length - 1);
    if (!(old instanceof Linear)) throw new Error(`replaceClassifier: the classifier's last layer is a ${old.typeName}, not Linear`);
    this.classifier.replace(this.classifier.length - 1, new Linear(old.inFeatures, numClasses, { rng }));
    this.info.numClasses = numClasses;
    return this.nameParameters();
  }

  /** Register children in execution order (the cost table walks them in that order). */
  protected registerHead(features: Sequential, classifier: Sequential): void {
    this.registerModule('features', features);
    this.registerModule('pool', this.pool);
    this.registerModule('flatten', this.flatten);
    this.registerModule('classifier', classifier);
  }
}

function checkAlpha(model: string, alpha: number): void {
  if (!(alpha > 0 && alpha <= 4)) throw new RangeError(`${model}: alpha must be in (0, 4], got ${alpha}`);
}

function resolveOptions(options: MobileNetOptions, defaultDropout: number): Required<MobileNetOptions> {
  const o = { alpha: 1, resolution: 224, numClasses: 1000, inChannels: 3, dropout: defaultDropout, seed: 0, expansion: MOBILENET_V2_EXPANSION, stemStride: 2 as 1 | 2, ...options };
  if (o.stemStride !== 1 && o.stemStride !== 2) throw new RangeError(`stemStride must be 1 or 2, got ${o.stemStride}`);
  if (!(o.expansion > 0)) throw new RangeError(`expansion must be > 0, got ${o.expansion}`);
  if (!Number.isInteger(o.numClasses) || o.numClasses < 1) throw new RangeError(`numClasses must be an integer >= 1, got ${o.numClasses}`);
  if (!Number.isInteger(o.inChannels) || o.inChannels < 1) throw new RangeError(`inChannels must be an integer >= 1, got ${o.inChannels}`);
  if (!Number.isInteger(o.resolution) || o.resolution < 8) throw new RangeError(`resolution must be an integer >= 8, got ${o.resolution}`);
  return o;
}

/** conv 3x3 -> BN -> ReLU (or ReLU6), the stem of both networks. */
function convBnAct(inC: number, outC: number, kernel: number, stride: number, rng: Rng, activation: 'relu' | 'relu6', groups = 1): Sequential {
  return new Sequential(
    new Conv2d(inC, outC, kernel, { stride, padding: (kernel - 1) >> 1, groups, rng }),
    new BatchNorm2d(outC),
    activation === 'relu' ? new ReLU() : new ReLU6(),
  );
}

/**
 * The V1 body of Table 1, shared by MobileNetV1 and the full-convolution baseline: stem conv 3x3
 * s2 (round(32 alpha) channels), then one block per table row (channels floor(c alpha)), then
 * global average pool -> (dropout) -> fully connected. `block` builds a row's block.
 */
function mobileNetV1Body(o: Required<MobileNetOptions>, block: (inC: number, outC: number, stride: number, rng: Rng) => Module, rows = MOBILENET_V1_BLOCKS): { features: Sequential; classifier: Sequential } {
  const rng = new Rng(o.seed);
  let channels = Math.round(MOBILENET_V1_STEM_CHANNELS * o.alpha);
  if (channels < 1) throw new RangeError(`MobileNetV1: alpha ${o.alpha} leaves the stem with no channels (round(32 alpha) = 0; the smallest alpha is 1/64)`);
  const layers: Module[] = [convBnAct(o.inChannels, channels, 3, o.stemStride, rng, 'relu')];
  for (const [c, stride] of rows) {
    const out = Math.max(1, Math.floor(c * o.alpha));
    layers.push(block(channels, out, stride, rng));
    channels = out;
  }
  return {
    features: new Sequential(...layers),
    classifier: new Sequential(new Dropout(o.dropout, new Rng(o.seed + 1)), new Linear(channels, o.numClasses, { rng })),
  };
}

/** The Table 1 body with a block of its own per row: MobileNetV1 and the full-convolution baseline. */
abstract class MobileNetV1Family extends ImageClassifier {
  readonly info: ModelInfo;
  readonly features: Sequential;
  readonly classifier: Sequential;

  constructor(architecture: 'v1' | 'baseline' | 'shallow', options: MobileNetOptions, block: (inC: number, outC: number, stride: number, rng: Rng) => Module, rows = MOBILENET_V1_BLOCKS) {
    super();
    const o = resolveOptions(options, 0);
    checkAlpha({ v1: 'MobileNetV1', baseline: 'FullConvMobileNet', shallow: 'ShallowMobileNet' }[architecture], o.alpha);
    this.info = { architecture, alpha: o.alpha, resolution: o.resolution, numClasses: o.numClasses, inChannels: o.inChannels, dropout: o.dropout, stemStride: o.stemStride };
    ({ features: this.features, classifier: this.classifier } = mobileNetV1Body(o, block, rows));
    this.registerHead(this.features, this.classifier);
  }
}

/**
 * MobileNetV1: the Table 1 body with depthwise separable blocks.
 * Keys: features.0.{0,1} (stem conv, BN), features.k.{dw, dw_bn, pw, pw_bn}, classifier.1.
 */
export class MobileNetV1 extends MobileNetV1Family {
  constructor(options: MobileNetOptions = {}) {
    super('v1', options, (inC, outC, stride, rng) => new DepthwiseSeparable(inC, outC, stride, rng));
  }
}

/** The paper's Shallow MobileNet (Table 5): MobileNetV1 without the five 14x14x512 blocks. */
export class ShallowMobileNet extends MobileNetV1Family {
  constructor(options: MobileNetOptions = {}) {
    super('shallow', options, (inC, outC, stride, rng) => new DepthwiseSeparable(inC, outC, stride, rng), SHALLOW_MOBILENET_BLOCKS);
  }
}

/**
 * The paper's "Conv MobileNet" baseline (Table 4): MobileNetV1 with every depthwise separable
 * block replaced by one standard 3x3 convolution (same channels and stride) -> BN -> ReLU.
 */
export class FullConvMobileNet extends MobileNetV1Family {
  constructor(options: MobileNetOptions = {}) {
    super('baseline', options, (inC, outC, stride, rng) => convBnAct(inC, outC, 3, stride, rng, 'relu'));
  }
}

// =============================================================================================
// MobileNetV2
// =============================================================================================

/** MobileNetV2's expansion factor t (Sandler et al. 2018, Table 2). */
export const MOBILENET_V2_EXPANSION = 6;

/** Table 2 of Sandler et al.: expansion t, output channels c, repeats n, first stride s. */
export const MOBILENET_V2_SETTINGS: readonly (readonly [t: number, c: number, n: number, s: number])[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/**
 * Round channels to a multiple of `divisor` (8), never below `divisor` and never more than 10%
 * below the requested value (torchvision's `_make_divisible`).
 */
export function makeDivisible(value: number, divisor = 8, minValue = divisor): number {
  let rounded = Math.max(minValue, Math.floor((value + divisor / 2) / divisor) * divisor);
  if (rounded < 0.9 * value) rounded += divisor;
  return rounded;
}

/**
 * Inverted residual block: expand 1x1 (t x channels) -> BN -> ReLU6 -> depthwise 3x3 -> BN ->
 * ReLU6 -> project 1x1 -> BN (linear bottleneck: no activation), plus the input when stride is 1
 * and the shapes match. Keys as torchvision: conv.0 (expand), conv.1 (depthwise), conv.2, conv.3.
 */
export class InvertedResidual extends Module {
  readonly conv: Sequential;
  readonly useResidual: boolean;

  constructor(inChannels: number, outChannels: number, stride: number, expandRatio: number, rng: Rng) {
    super();
    const hidden = Math.round(inChannels * expandRatio);
    this.useResidual = stride === 1 && inChannels === outChannels;
    const layers: Module[] = [];
    if (expandRatio !== 1) layers.push(convBnAct(inChannels, hidden, 1, 1, rng, 'relu6'));
    layers.push(convBnAct(hidden, hidden, 3, stride, rng, 'relu6', hidden));
    layers.push(new Conv2d(hidden, outChannels, 1, { rng }));
    layers.push(new BatchNorm2d(outChannels));
    this.conv = this.registerModule('conv', new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.conv.forward(x);
    return this.useResidual ? add(x, y) : y;
  }
}

/**
 * MobileNetV2, torchvision-compatible (same state-dict keys as `torchvision.models.mobilenet_v2`):
 * features.0 stem conv 3x3 s2 (makeDivisible(32 alpha)), features.1..17 inverted residuals,
 * features.18 1x1 conv to makeDivisible(1280 max(1, alpha)), then pool -> dropout -> linear.
 */
export class MobileNetV2 extends ImageClassifier {
  readonly info: ModelInfo;
  readonly features: Sequential;
  readonly classifier: Sequential;

  constructor(options: MobileNetOptions = {}) {
    super();
    const o = resolveOptions(options, 0.2);
    checkAlpha('MobileNetV2', o.alpha);
    this.info = { architecture: 'v2', alpha: o.alpha, resolution: o.resolution, numClasses: o.numClasses, inChannels: o.inChannels, dropout: o.dropout, expansion: o.expansion, stemStride: o.stemStride };
    const rng = new Rng(o.seed);
    let channels = makeDivisible(32 * o.alpha);
    const lastChannels = makeDivisible(1280 * Math.max(1, o.alpha));
    const layers: Module[] = [convBnAct(o.inChannels, channels, 3, o.stemStride, rng, 'relu6')];
    for (const [t, c, n, s] of MOBILENET_V2_SETTINGS) {
      const out = makeDivisible(c * o.alpha);
      for (let i = 0; i < n; i++) {
        layers.push(new InvertedResidual(channels, out, i === 0 ? s : 1, t === MOBILENET_V2_EXPANSION ? o.expansion : t, rng));
        channels = out;
      }
    }
    layers.push(convBnAct(channels, lastChannels, 1, 1, rng, 'relu6'));
    this.features = new Sequential(...layers);
    this.classifier = new Sequential(new Dropout(o.dropout, new Rng(o.seed + 1)), new Linear(lastChannels, o.numClasses, { rng }));
    this.registerHead(this.features, this.classifier);
  }
}

/** The models `createModel` builds: MobileNetV1, MobileNetV2, and the paper's full-convolution baseline. */
export type Architecture = 'v1' | 'v2' | 'baseline' | 'shallow';

/** Every architecture, for option parsers and messages. */
export const ARCHITECTURES: readonly Architecture[] = ['v1', 'v2', 'baseline', 'shallow'];

/** Build a model by name (the CLI's `--model`). */
export function createModel(architecture: Architecture, options: MobileNetOptions = {}): ImageClassifier {
  switch (architecture) {
    case 'v1':
      return new MobileNetV1(options).nameParameters();
    case 'v2':
      return new MobileNetV2(options).nameParameters();
    case 'baseline':
      return new FullConvMobileNet(options).nameParameters();
    case 'shallow':
      return new ShallowMobileNet(options).nameParameters();
  }
  // JavaScript callers are not held to the Architecture type.
  throw new RangeError(`createModel: unknown architecture ${JSON.stringify(architecture)} (known: ${ARCHITECTURES.join(', ')})`);
}
