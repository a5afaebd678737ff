export * from './datasets.js';
export * from './loader.js';
export * from './metrics.js';
export * from './optim.js';
export * from './schedule.js';
export * from './checkpoint.js';
export * from './trainer.js';
export * from './tta.js';
