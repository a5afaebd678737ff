// mobilenet-ts: the public API. Layers import only the ones above them:
// tensor (data, autograd, RNG, file format) <- ops (kernels) <- nn (modules, models) <- train.
export * from './tensor/index.js';
export * from './ops/index.js';
export * from './nn/index.js';
export * from './train/index.js';
