export * from './shape.js';
export * from './rng.js';
export * from './tensor.js';
export * from './autograd.js';
export * from './safetensors.js';
export * from './gradcheck.js';
export * from './stepper.js';
export { reuseBuffers, emptyCache, cacheBytes } from './buffers.js';
export * from './arrays.js';
