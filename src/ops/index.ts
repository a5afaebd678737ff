export * from './gemm.js';
export * from './elementwise.js';
export * from './reduce.js';
export * from './view.js';
export * from './matmul.js';
