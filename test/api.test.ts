// The public API is a decision: this is the list of what `import { ... } from 'mobilenet-ts'`
// offers at run time (types aside). A name added to src/index.ts, or one that leaks from an
// internal module, fails this test until it is added here on purpose.
import { describe, expect, it } from 'vitest';
import * as api from '../src/index.js';

const PUBLIC = [
  'ARCHITECTURES', 'Adam', 'AdamW', 'AvgPool2d', 'BATCHNORM_EPS', 'BATCHNORM_MOMENTUM',
  'BEST_CHECKPOINT', 'BatchNorm2d', 'CHECKPOINT_FORMAT', 'CHECK_DEFAULTS', 'CIFAR10_CLASSES',
  'CONV2D_DEFAULTS', 'CheckpointError', 'ClassificationMetrics', 'ConfigError', 'ConstantLR',
  'Conv2d', 'CosineAnnealingLR', 'DataLoader', 'DatasetError', 'DepthwiseConv2d',
  'DepthwiseSeparable', 'Dropout', 'ExponentialLR', 'FASHION_MNIST_CLASSES', 'FREEZE_PARTS',
  'FileWriteError', 'Flatten', 'FullConvMobileNet', 'GRADCHECK_DEFAULTS', 'GlobalAvgPool2d',
  'IMAGE_EXTENSIONS', 'ImageClassifier', 'InvertedResidual', 'LAST_CHECKPOINT', 'LINEAR_INIT_STD',
  'LRScheduler', 'Linear', 'MAX_RESOLUTION', 'MAX_THREADS', 'MNIST_CLASSES', 'MOBILENET_V1_BLOCKS',
  'MOBILENET_V1_STEM_CHANNELS', 'MOBILENET_V2_EXPANSION', 'MOBILENET_V2_SETTINGS', 'MaxPool2d',
  'MobileNetV1', 'MobileNetV2', 'Module', 'MultiStepLR', 'ONNX_OPSETS', 'OPTIMIZERS',
  'OneCycleLR', 'OnnxExportError', 'Optimizer', 'PREVIOUS_CHECKPOINT', 'PickleError',
  'PointwiseConv2d', 'PthError', 'RMSprop', 'RUN_OPTIONS', 'ReLU', 'ReLU6', 'ReduceLROnPlateau', 'Rng',
  'RunFolderError', 'SCHEDULERS', 'SGD', 'SHALLOW_MOBILENET_BLOCKS', 'SafetensorsError',
  'Sequential', 'ShallowMobileNet', 'ShapeError', 'StateDictError', 'StepLR', 'TRAIN_DEFAULTS',
  'TRIVIAL_AUGMENT_OPS', 'Tensor', 'TinyNet', 'Trainer', 'TrainingStoppedError', 'WarmupLR',
  'WeightAverage', 'add', 'addScalar', 'arange', 'assertGradcheck', 'averagedLogProbabilities',
  'avgPool2d', 'backwardSteps', 'batchNorm2d', 'broadcastShapes', 'bundledFashionMnistPath',
  'cacheBytes', 'checkConfig', 'checkStep', 'clipGradNorm', 'conv2d', 'convOutputSize',
  'createModel', 'datasetFingerprint', 'decodeImage', 'defaultThreads', 'depthwiseConv2d',
  'deriveSeed', 'describeStep', 'div', 'dropout', 'emptyCache', 'encodeIdx',
  'estimateTrainingMemory', 'evaluateModel', 'exp', 'exportOnnx', 'flatten', 'flipHorizontal',
  'foldBatchNorm', 'formatCostTable', 'formatShape', 'formatTensor', 'freeze', 'fromArray',
  'full', 'gemm', 'getThreads', 'globalAvgPool2d', 'gradcheck', 'inEvalMode', 'isGradEnabled',
  'kaimingNormalFanOut', 'largestBatchThatFits', 'layerCosts', 'linear', 'loadCifar10',
  'loadIdxDataset', 'loadImageFolder', 'loadSafetensors', 'loadWeights', 'log', 'makeDivisible',
  'matchesOp', 'matmul', 'max', 'maxPool2d', 'mean', 'mixBatch', 'mul', 'mulScalar', 'neg',
  'noGrad', 'normalInit', 'normalizePixels', 'ones', 'parseIdx', 'parsePth', 'parseSafetensors',
  'permute', 'pointwiseConv2d', 'pow', 'rand', 'randn', 'readCheckpoint', 'readWeightsFile',
  'recordOp', 'relu', 'relu6', 'reshape', 'resizeBilinear', 'reuseBuffers', 'runBackward',
  'sabotageBackward', 'saveSafetensors', 'saveWeights', 'scalar', 'selectClasses',
  'serializeCheckpoint', 'serializeSafetensors', 'setThreads', 'softmax', 'softmaxCrossEntropy',
  'sqrt', 'startThreads', 'sub', 'sum', 'takePerClass', 'tensorStats', 'topPredictions',
  'topologicalOrder', 'transpose', 'trivialAugmentWide', 'unfreeze', 'weightDecayGroups',
  'writeFileAtomic', 'zeros',
  // the run specification: the options' table, one check, one reader, the run prepared as `train` does
  'checkSpec', 'flagOf', 'loadModel', 'modelFromSpec', 'modelFromWeights', 'parseOption', 'planRun',
  'prepareRun', 'readCheckpointMetadata', 'startRun', 'trainConfig',
];

describe('the public API', () => {
  it('is exactly the curated list (kernels, packing, scratch memory and thread-pool internals stay internal)', () => {
    expect(Object.keys(api).sort()).toEqual([...PUBLIC].sort());
  });

  it('has no kernel plumbing in it', () => {
    for (const internal of ['packA', 'microTile', 'gemmColumnWasm', 'workerSource', 'kernelJobsOnThreads', 'runKernel', 'declareKernel', 'im2col', 'conv2dNaiveForward', 'readPickle', 'openZip']) expect(api, internal).not.toHaveProperty(internal);
  });
});
