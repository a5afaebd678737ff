// mobilenet-ts: the public API. Layers import only the ones above them:
// tensor (data, autograd, RNG, file format) <- ops (kernels) <- nn (modules, models) <- train.
//
// Every name is listed: what a user needs to build, train, check, save and export models. The
// kernels' plumbing (packing, micro-kernels, scratch memory, thread-pool internals, the naive
// twins the tests compare against) stays internal; test/api.test.ts lists these names, so that
// growing the surface is a decision. Types are exported whole (`export type *`): they cost
// nothing at run time and describe the values above.

// tensor
export { Tensor, arange, formatTensor, fromArray, full, ones, rand, randn, scalar, zeros } from './tensor/tensor.js';
export { ShapeError, broadcastShapes, formatShape } from './tensor/shape.js';
export { Rng, deriveSeed } from './tensor/rng.js';
export type * from './tensor/rng.js';
export { backwardSteps, isGradEnabled, noGrad, recordOp, runBackward, topologicalOrder } from './tensor/autograd.js';
export { cacheBytes, emptyCache, reuseBuffers } from './tensor/buffers.js';
export { GRADCHECK_DEFAULTS, assertGradcheck, gradcheck } from './tensor/gradcheck.js';
export { CHECK_DEFAULTS, checkStep, describeStep, matchesOp, sabotageBackward, tensorStats, topPredictions } from './tensor/stepper.js';
export { SafetensorsError, loadSafetensors, parseSafetensors, saveSafetensors, serializeSafetensors } from './tensor/safetensors.js';
export { FileWriteError, writeFileAtomic } from './tensor/files.js';
export { PthError, parsePth } from './tensor/pth.js';
export { PickleError } from './tensor/pickle.js';
export type * from './tensor/tensor.js';
export type * from './tensor/autograd.js';
export type * from './tensor/gradcheck.js';
export type * from './tensor/stepper.js';
export type * from './tensor/safetensors.js';

// ops
export { add, addScalar, div, exp, log, mul, mulScalar, neg, pow, sqrt, sub } from './ops/elementwise.js';
export { max, mean, sum } from './ops/reduce.js';
export { flatten, permute, reshape, transpose } from './ops/view.js';
export { matmul } from './ops/matmul.js';
export { gemm } from './ops/gemm.js';
export { CONV2D_DEFAULTS, conv2d, convOutputSize } from './ops/conv2d.js';
export { depthwiseConv2d } from './ops/depthwise.js';
export { pointwiseConv2d } from './ops/pointwise.js';
export { BATCHNORM_EPS, BATCHNORM_MOMENTUM, batchNorm2d, foldBatchNorm } from './ops/batchnorm.js';
export { relu, relu6 } from './ops/activations.js';
export { avgPool2d, globalAvgPool2d, maxPool2d } from './ops/pooling.js';
export { linear } from './ops/linear.js';
export { dropout } from './ops/dropout.js';
export { softmaxCrossEntropy } from './ops/loss.js';
export { MAX_THREADS, defaultThreads, getThreads, setThreads, startThreads } from './ops/parallel.js';
export type * from './ops/elementwise.js';
export type * from './ops/reduce.js';
export type { GemmArgs, GemmBatch } from './ops/gemm.js';
export type { Conv2dOptions } from './ops/conv2d.js';
export type { DepthwiseOptions } from './ops/depthwise.js';
export type * from './ops/batchnorm.js';
export type * from './ops/pooling.js';
export type * from './ops/loss.js';

// nn
export * from './nn/module.js';
export * from './nn/init.js';
export * from './nn/layers.js';
export * from './nn/mobilenet.js';
export * from './nn/cost.js';
export * from './nn/onnx.js';
export * from './nn/tiny.js';
export { loadWeights, readWeightsFile, saveWeights } from './nn/interop.js';

// train
export { Trainer, TrainingStoppedError, WeightAverage } from './train/trainer.js';
export { ConfigError, FREEZE_PARTS, MAX_RESOLUTION, OPTIMIZERS, RUN_OPTIONS, SCHEDULERS, TRAIN_DEFAULTS, checkConfig, checkSpec, flagOf, parseOption, trainConfig } from './train/options.js';
export { readCheckpointMetadata } from './train/metadata.js';
export { planRun, prepareRun, startRun } from './train/run.js';
export { loadModel, modelFromWeights } from './train/models.js';
export { modelFromSpec } from './train/options.js';
export * from './train/optim.js';
export * from './train/schedule.js';
export * from './train/metrics.js';
export { DataLoader, normalizePixels, resizeBilinear } from './train/loader.js';
export { CIFAR10_CLASSES, DatasetError, FASHION_MNIST_CLASSES, IMAGE_EXTENSIONS, MNIST_CLASSES, bundledFashionMnistPath, datasetFingerprint, decodeImage, encodeIdx, loadCifar10, loadIdxDataset, loadImageFolder, parseIdx, selectClasses, takePerClass } from './train/datasets.js';
export { BEST_CHECKPOINT, CHECKPOINT_FORMAT, CheckpointError, LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, RunFolderError, readCheckpoint, serializeCheckpoint } from './train/checkpoint.js';
export { evaluateModel, inEvalMode } from './train/evaluate.js';
export { averagedLogProbabilities, flipHorizontal, softmax } from './train/tta.js';
export { mixBatch } from './train/mixup.js';
export { TRIVIAL_AUGMENT_OPS, trivialAugmentWide } from './train/autoaugment.js';
export { estimateTrainingMemory, largestBatchThatFits } from './train/memory.js';
export type * from './train/trainer.js';
export type * from './train/options.js';
export type * from './train/metadata.js';
export type * from './train/run.js';
export type * from './train/models.js';
export type * from './train/loader.js';
export type * from './train/datasets.js';
export type * from './train/checkpoint.js';
export type * from './train/evaluate.js';
export type * from './train/tta.js';
export type * from './train/mixup.js';
export type * from './train/memory.js';
