// Weight initialisation: one policy, in one place, as torchvision initialises MobileNet.
//   Conv weights:   Kaiming (He) normal, mode fan_out:  std = sqrt(2 / fan_out),
//                   fan_out = Cout * kH * kW  (as PyTorch computes it, not divided by groups)
//   Conv biases:    zeros
//   BatchNorm:      gamma = 1, beta = 0 (and running mean 0, running var 1)
//   Linear:         weight ~ N(0, 0.01), bias = 0

import type { Rng } from '../tensor/rng.js';
import type { Tensor } from '../tensor/tensor.js';

/** Standard deviation of the normal init of fully connected weights (torchvision MobileNetV2: 0.01). */
export const LINEAR_INIT_STD = 0.01;

/** He (Kaiming) normal init with fan-out, as torchvision initialises convolutions: std = sqrt(2 / (out channels x kernel area)). */
export function kaimingNormalFanOut(weight: Tensor, rng: Rng): void {
  const [cout, , kh = 1, kw = 1] = weight.shape;
  const std = Math.sqrt(2 / (cout * kh * kw));
  for (let i = 0; i < weight.data.length; i++) weight.data[i] = rng.normal(0, std);
}

/** Fill a tensor in place with normal values of mean 0 and the given standard deviation. */
export function normalInit(t: Tensor, rng: Rng, std: number): void {
  for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal(0, std);
}
