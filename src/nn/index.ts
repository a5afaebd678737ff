export * from './module.js';
export * from './init.js';
export * from './layers.js';
export * from './mobilenet.js';
export * from './cost.js';
export * from './interop.js';
export * from './onnx.js';
export * from './tiny.js';
