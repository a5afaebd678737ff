// A deliberately small network for learning backprop with `mobilenet step`: every MobileNet
// ingredient once, so the backward pass has a dozen nodes a person can read one by one.
//   conv 3x3 s2 -> BN -> ReLU -> depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU
//   -> global average pool -> flatten -> linear

import { Rng } from '../tensor/rng.js';
import type { Tensor } from '../tensor/tensor.js';
import { BatchNorm2d, Conv2d, DepthwiseConv2d, Flatten, GlobalAvgPool2d, Linear, PointwiseConv2d, ReLU } from './layers.js';
import { Module, Sequential } from './module.js';

/** A tiny CNN with one of each MobileNet ingredient (conv, depthwise, pointwise, BatchNorm, ReLU, pooling, linear): the default model of `mobilenet step`. */
export class TinyNet extends Module {
  readonly features: Sequential;
  readonly head: Sequential;
  constructor(options: { inChannels?: number; numClasses?: number; width?: number; seed?: number } = {}) {
    super();
    const rng = new Rng(options.seed ?? 0);
    const c = options.width ?? 8;
    this.features = this.registerModule(
      'features',
      new Sequential(
        new Conv2d(options.inChannels ?? 1, c, 3, { stride: 2, padding: 1, rng }),
        new BatchNorm2d(c),
        new ReLU(),
        new DepthwiseConv2d(c, 3, { rng }),
        new BatchNorm2d(c),
        new ReLU(),
        new PointwiseConv2d(c, 2 * c, { rng }),
        new BatchNorm2d(2 * c),
        new ReLU(),
      ),
    );
    this.head = this.registerModule('head', new Sequential(new GlobalAvgPool2d(), new Flatten(), new Linear(2 * c, options.numClasses ?? 10, { rng })));
    this.nameParameters();
  }

  forward(x: Tensor): Tensor {
    return this.head.forward(this.features.forward(x));
  }
}
