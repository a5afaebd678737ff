// The same workloads on TensorFlow.js 4.22's pure-JS CPU backend (a devDependency used by the
// bench only; the library never imports it). Models are built with tfjs-layers following
// WORKLOADS.md (Keras-style MobileNetV1, torchvision-style MobileNetV2), channels-last as
// TensorFlow.js prefers; random init, random inputs and labels, SGD momentum 0.9.

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as tfl from '@tensorflow/tfjs-layers';

export const TFJS_VERSION = tf.version_core;

type Layer = tfl.SymbolicTensor;

function convBnRelu(x: Layer, filters: number, kernel: number, stride: number, relu6: boolean): Layer {
  let y = tfl.layers.conv2d({ filters, kernelSize: kernel, strides: stride, padding: 'same', useBias: false }).apply(x) as Layer;
  y = tfl.layers.batchNormalization({ epsilon: 1e-3 }).apply(y) as Layer;
  return tfl.layers.reLU(relu6 ? { maxValue: 6 } : {}).apply(y) as Layer;
}

function depthwiseBnRelu(x: Layer, stride: number, relu6: boolean): Layer {
  let y = tfl.layers.depthwiseConv2d({ kernelSize: 3, strides: stride, padding: 'same', useBias: false }).apply(x) as Layer;
  y = tfl.layers.batchNormalization({ epsilon: 1e-3 }).apply(y) as Layer;
  return tfl.layers.reLU(relu6 ? { maxValue: 6 } : {}).apply(y) as Layer;
}

function head(x: Layer, classes: number): Layer {
  const pooled = tfl.layers.globalAveragePooling2d({}).apply(x) as Layer;
  return tfl.layers.dense({ units: classes }).apply(pooled) as Layer;
}

const V1_BLOCKS: [number, number][] = [[64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1], [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1]];

export function tfjsMobileNetV1(alpha: number, resolution: number, classes: number): tfl.LayersModel {
  const input = tfl.input({ shape: [resolution, resolution, 3] });
  let x = convBnRelu(input, Math.round(32 * alpha), 3, 2, false);
  for (const [c, s] of V1_BLOCKS) {
    x = depthwiseBnRelu(x, s, false);
    x = convBnRelu(x, Math.floor(c * alpha), 1, 1, false);
  }
  return tfl.model({ inputs: input, outputs: head(x, classes) });
}

function makeDivisible(v: number, d = 8): number {
  let r = Math.max(d, Math.floor((v + d / 2) / d) * d);
  if (r < 0.9 * v) r += d;
  return r;
}

export function tfjsMobileNetV2(alpha: number, resolution: number, classes: number): tfl.LayersModel {
  const settings: [number, number, number, number][] = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];
  const input = tfl.input({ shape: [resolution, resolution, 3] });
  let channels = makeDivisible(32 * alpha);
  let x = convBnRelu(input, channels, 3, 2, true);
  for (const [t, c, n, s] of settings) {
    const out = makeDivisible(c * alpha);
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      let y = t !== 1 ? convBnRelu(x, Math.round(channels * t), 1, 1, true) : x;
      y = depthwiseBnRelu(y, stride, true);
      y = tfl.layers.conv2d({ filters: out, kernelSize: 1, useBias: false }).apply(y) as Layer;
      y = tfl.layers.batchNormalization({ epsilon: 1e-3 }).apply(y) as Layer;
      x = stride === 1 && channels === out ? (tfl.layers.add().apply([x, y]) as Layer) : y;
      channels = out;
    }
  }
  x = convBnRelu(x, makeDivisible(1280 * Math.max(1, alpha)), 1, 1, true);
  return tfl.model({ inputs: input, outputs: head(x, classes) });
}

/** A train step (forward, softmax-CE, backward, SGD momentum 0.9) or an inference forward. */
export function tfjsModelStep(arch: 'v1' | 'v2', alpha: number, batch: number, resolution: number, classes: number, train: boolean): () => void {
  const model = arch === 'v1' ? tfjsMobileNetV1(alpha, resolution, classes) : tfjsMobileNetV2(alpha, resolution, classes);
  const x = tf.randomUniform([batch, resolution, resolution, 3]);
  const labels = tf.oneHot(tf.randomUniform([batch], 0, classes, 'int32') as tf.Tensor1D, classes);
  if (!train) return () => tf.tidy(() => void (model.predict(x) as tf.Tensor).dataSync());
  const optimizer = tf.train.momentum(0.01, 0.9);
  return () => {
    const cost = optimizer.minimize(() => tf.losses.softmaxCrossEntropy(labels, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar, true);
    cost?.dataSync();
    cost?.dispose();
  };
}

export function tfjsGemm(n: number): () => void {
  const a = tf.randomNormal([n, n]), b = tf.randomNormal([n, n]);
  return () => tf.tidy(() => void tf.matMul(a, b).dataSync());
}

/** D1: depthwise 3x3 s1 same padding on 1 x 56 x 56 x 128 (NHWC): forward, input grad, filter grad. */
export function tfjsDepthwise(): Record<'forward' | 'backward input' | 'backward filter', () => void> {
  const x = tf.randomNormal([1, 56, 56, 128]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 128, 1]) as tf.Tensor4D;
  const dy = tf.randomNormal([1, 56, 56, 128]) as tf.Tensor4D;
  return {
    forward: () => tf.tidy(() => void tf.depthwiseConv2d(x, w, 1, 'same').dataSync()),
    // tf.grad runs the forward too: these two include one forward pass (about 2% of them).
    'backward input': () => tf.tidy(() => void tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(tf.depthwiseConv2d(xx as tf.Tensor4D, w, 1, 'same'), dy)))(x).dataSync()),
    'backward filter': () => tf.tidy(() => void tf.grad((ww: tf.Tensor) => tf.sum(tf.mul(tf.depthwiseConv2d(x, ww as tf.Tensor4D, 1, 'same'), dy)))(w).dataSync()),
  };
}
