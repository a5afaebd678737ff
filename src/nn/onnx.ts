// ONNX export: a model as an inference graph that ONNX Runtime (phones, browsers, servers) runs.
//
// The graph is read off the module tree, layer by layer, in the order `forward` runs them:
// Conv2d -> Conv, ReLU -> Relu, ReLU6 -> Clip(0, 6), GlobalAvgPool2d -> GlobalAveragePool,
// Flatten -> Flatten, Linear -> Gemm, an inverted residual's skip -> Add; Dropout is the
// identity at inference and leaves nothing. A BatchNorm right after a convolution is folded into
// it, as inference engines do (`foldBatchNorm`): with s = gamma / sqrt(running_var + eps),
//   BN(conv(x)) = s (W * x + b - mean) + beta = (s W) * x + (s (b - mean) + beta),
// so the convolution's weights become s W and its bias s (b - mean) + beta. A BatchNorm with no
// convolution before it stays BatchNormalization.
//
// The input normalisation (x - mean) / std is either the graph's first two nodes (Sub, Div), so
// that the model takes pixels in [0, 1], or left to the caller; either way mean and std are in
// the model's metadata with the class names. It is not folded into the first convolution: that
// convolution pads its input with zeros, and a zero of the normalised input is the mean pixel,
// not a black one, so folding would change the border outputs.
//
// The protobuf encoding uses protobufjs with the subset of onnx/onnx.proto (field numbers as
// there) that a model of this kind needs.

import protobuf from 'protobufjs/light.js';
import { foldBatchNorm } from '../ops/batchnorm.js';
import { BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, AvgPool2d, ReLU, ReLU6 } from './layers.js';
import { ImageClassifier, InvertedResidual } from './mobilenet.js';
import { Module, Sequential } from './module.js';

/** Opsets the exporter writes: 11 (Clip takes its bounds as inputs from there) to 21. */
export const ONNX_OPSETS = { min: 11, max: 21, default: 13 } as const;

/** Options of `exportOnnx`. */
export interface OnnxExportOptions {
  /** The default domain's opset version (default 13). */
  opset?: number;
  /** Per-channel mean and std of the input; with `normalizationInGraph` the graph applies them. */
  normalization?: { mean: number[]; std: number[] };
  /** true (default): the graph takes pixels in [0, 1] and normalises them itself. */
  normalizationInGraph?: boolean;
  classNames?: string[];
  /** More metadata_props entries (strings). */
  metadata?: Record<string, string>;
  producerVersion?: string;
}

/** A module the exporter has no ONNX node for. */
export class OnnxExportError extends Error {
  override name = 'OnnxExportError';
}

// ONNX's TensorProto.DataType and AttributeProto.AttributeType values used here.
const FLOAT = 1;
const ATTRIBUTE_INT = 2;
const ATTRIBUTE_INTS = 7;

/** The IR version that goes with an opset (onnx/docs/Versioning.md). */
function irVersionFor(opset: number): number {
  if (opset <= 11) return 6;
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

const field = (type: string, id: number, rule?: 'repeated') => (rule ? { type, id, rule } : { type, id });
/** The messages of onnx.proto this exporter writes, with onnx.proto's field numbers. */
const ONNX_SCHEMA = {
  nested: {
    onnx: {
      nested: {
        ModelProto: { fields: { ir_version: field('int64', 1), producer_name: field('string', 2), producer_version: field('string', 3), domain: field('string', 4), model_version: field('int64', 5), doc_string: field('string', 6), graph: field('GraphProto', 7), opset_import: field('OperatorSetIdProto', 8, 'repeated'), metadata_props: field('StringStringEntryProto', 14, 'repeated') } },
        OperatorSetIdProto: { fields: { domain: field('string', 1), version: field('int64', 2) } },
        StringStringEntryProto: { fields: { key: field('string', 1), value: field('string', 2) } },
        GraphProto: { fields: { node: field('NodeProto', 1, 'repeated'), name: field('string', 2), initializer: field('TensorProto', 5, 'repeated'), doc_string: field('string', 10), input: field('ValueInfoProto', 11, 'repeated'), output: field('ValueInfoProto', 12, 'repeated') } },
        NodeProto: { fields: { input: field('string', 1, 'repeated'), output: field('string', 2, 'repeated'), name: field('string', 3), op_type: field('string', 4), attribute: field('AttributeProto', 5, 'repeated'), domain: field('string', 7) } },
        AttributeProto: { fields: { name: field('string', 1), f: field('float', 2), i: field('int64', 3), ints: field('int64', 8, 'repeated'), type: field('int32', 20) } },
        TensorProto: { fields: { dims: field('int64', 1, 'repeated'), data_type: field('int32', 2), name: field('string', 8), raw_data: field('bytes', 9) } },
        ValueInfoProto: { fields: { name: field('string', 1), type: field('TypeProto', 2) } },
        TypeProto: { fields: { tensor_type: field('TypeProtoTensor', 1) } },
        TypeProtoTensor: { fields: { elem_type: field('int32', 1), shape: field('TensorShapeProto', 2) } },
        TensorShapeProto: { fields: { dim: field('Dimension', 1, 'repeated') } },
        Dimension: { fields: { dim_value: field('int64', 1), dim_param: field('string', 2) } },
      },
    },
  },
};

interface OnnxNode {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: { name: string; type: number; i?: number; ints?: number[] }[];
}

interface OnnxTensor {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}

/** Collects nodes and initializers, naming values after the module path that made them. */
class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];

  constructor(readonly opset: number) {}

  constant(name: string, dims: number[], values: ArrayLike<number>): string {
    const data = Float32Array.from(values);
    this.initializers.push({ name, dims, data_type: FLOAT, raw_data: new Uint8Array(data.buffer) });
    return name;
  }

  node(opType: string, name: string, inputs: string[], attributes: Record<string, number | number[]> = {}): string {
    const attribute = Object.entries(attributes).map(([key, v]) => (Array.isArray(v) ? { name: key, type: ATTRIBUTE_INTS, ints: v } : { name: key, type: ATTRIBUTE_INT, i: v }));
    const output = `${name}:${opType}`;
    this.nodes.push({ input: inputs, output: [output], name, op_type: opType, attribute });
    return output;
  }
}

/** Conv2d, with the following BatchNorm (if any) folded into its weights and bias (foldBatchNorm). */
function emitConv(g: GraphBuilder, name: string, conv: Conv2d, bn: BatchNorm2d | null, input: string): string {
  const folded = bn ? foldBatchNorm(conv.weight, conv.bias, bn.weight, bn.bias, bn.runningMean, bn.runningVar, bn.eps) : { weight: conv.weight, bias: conv.bias };
  const inputs = [input, g.constant(`${name}.weight`, [...conv.weight.shape], folded.weight.data)];
  if (folded.bias) inputs.push(g.constant(`${name}.bias`, [conv.outChannels], folded.bias.data));
  const k = conv.kernelSize;
  const p = conv.padding;
  return g.node('Conv', name, inputs, { kernel_shape: [k, k], strides: [conv.stride, conv.stride], pads: [p, p, p, p], dilations: [1, 1], group: conv.groups });
}

/** The nodes of one module, from `input`; returns the name of its output. */
function emitModule(g: GraphBuilder, name: string, module: Module, input: string): string {
  if (module instanceof InvertedResidual) {
    const y = emitModule(g, `${name}.conv`, module.conv, input);
    return module.useResidual ? g.node('Add', `${name}.add`, [input, y]) : y;
  }
  if (module instanceof Sequential || module instanceof ImageClassifier) {
    // Children in the order forward runs them (ImageClassifier registers features, pool,
    // flatten, classifier in that order); a Conv2d followed by a BatchNorm2d is fused.
    const children = [...module.namedChildren()];
    let x = input;
    for (let i = 0; i < children.length; i++) {
      const [childName, child] = children[i];
      const path = name ? `${name}.${childName}` : childName;
      const next = children[i + 1]?.[1];
      if (child instanceof Conv2d && next instanceof BatchNorm2d) {
        x = emitConv(g, path, child, next, x);
        i++;
      } else {
        x = emitModule(g, path, child, x);
      }
    }
    return x;
  }
  if (module instanceof Conv2d) return emitConv(g, name, module, null, input);
  if (module instanceof BatchNorm2d) {
    const c = module.channels;
    return g.node('BatchNormalization', name, [input, g.constant(`${name}.weight`, [c], module.weight.data), g.constant(`${name}.bias`, [c], module.bias.data), g.constant(`${name}.running_mean`, [c], module.runningMean.data), g.constant(`${name}.running_var`, [c], module.runningVar.data)]);
  }
  if (module instanceof ReLU6) {
    // Clip's bounds are inputs from opset 11 on.
    return g.node('Clip', name, [input, g.constant(`${name}.min`, [], [0]), g.constant(`${name}.max`, [], [6])]);
  }
  if (module instanceof ReLU) return g.node('Relu', name, [input]);
  if (module instanceof Dropout) return input; // the identity at inference
  if (module instanceof GlobalAvgPool2d) return g.node('GlobalAveragePool', name, [input]);
  if (module instanceof Flatten) return g.node('Flatten', name, [input], { axis: 1 });
  if (module instanceof Linear) {
    // Gemm: y = x W^T + b (transB = 1, as PyTorch stores W as out x in).
    const inputs = [input, g.constant(`${name}.weight`, [...module.weight.shape], module.weight.data)];
    if (module.bias) inputs.push(g.constant(`${name}.bias`, [module.outFeatures], module.bias.data));
    return g.node('Gemm', name, inputs, { transB: 1 });
  }
  if (module instanceof MaxPool2d) {
    const k = module.kernel;
    const s = module.options.stride ?? k;
    const p = module.options.padding ?? 0;
    const attributes = { kernel_shape: [k, k], strides: [s, s], pads: [p, p, p, p] };
    // Our average pooling divides by k*k at the borders too (count_include_pad).
    return module instanceof AvgPool2d ? g.node('AveragePool', name, [input], { ...attributes, count_include_pad: 1 }) : g.node('MaxPool', name, [input], attributes);
  }
  throw new OnnxExportError(`ONNX export: no ONNX node for a ${module.typeName} (at ${name || 'the top'})`);
}

/**
 * The model as ONNX bytes: input `input` (batch x C x H x W float32, the batch dimension free),
 * output `logits` (batch x classes). See the file's header for what each layer becomes.
 */
export function exportOnnx(model: ImageClassifier, options: OnnxExportOptions = {}): Uint8Array {
  const opset = options.opset ?? ONNX_OPSETS.default;
  if (!Number.isInteger(opset) || opset < ONNX_OPSETS.min || opset > ONNX_OPSETS.max) throw new RangeError(`ONNX export: opset must be an integer from ${ONNX_OPSETS.min} to ${ONNX_OPSETS.max}, got ${opset}`);
  const { inChannels, resolution, numClasses } = model.info;
  const inGraph = options.normalizationInGraph ?? true;
  const normalization = options.normalization;
  if (normalization && (normalization.mean.length !== inChannels || normalization.std.length !== inChannels)) throw new RangeError(`ONNX export: the normalisation has ${normalization.mean.length} means and ${normalization.std.length} stds for ${inChannels} input channels`);
  const wasTraining = model.training;
  model.eval();
  const g = new GraphBuilder(opset);
  let x = 'input';
  if (normalization && inGraph) {
    x = g.node('Sub', 'normalize.sub', [x, g.constant('normalize.mean', [1, inChannels, 1, 1], normalization.mean)]);
    x = g.node('Div', 'normalize.div', [x, g.constant('normalize.std', [1, inChannels, 1, 1], normalization.std)]);
  }
  x = emitModule(g, '', model, x);
  // The last node's output is renamed `logits`.
  const last = g.nodes[g.nodes.length - 1];
  last.output = ['logits'];
  if (wasTraining) model.train();

  const valueInfo = (name: string, dims: (number | string)[]) => ({
    name,
    type: { tensor_type: { elem_type: FLOAT, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dim_param: d } : { dim_value: d })) } } },
  });
  const metadata: Record<string, string> = {
    model: model.info.architecture,
    alpha: String(model.info.alpha),
    resolution: String(resolution),
    ...(options.classNames ? { class_names: JSON.stringify(options.classNames) } : {}),
    ...(normalization ? { normalization: JSON.stringify(normalization), normalization_in_graph: String(inGraph) } : {}),
    input: `float32 batch x ${inChannels} x ${resolution} x ${resolution} (NCHW, ${inChannels === 3 ? 'RGB' : inChannels === 1 ? 'gray' : `${inChannels} channels`}), ${normalization && inGraph ? 'pixels in [0, 1]' : normalization ? 'pixels in [0, 1] normalised as (x - mean) / std by the caller' : 'as the model was trained on'}`,
    ...options.metadata,
  };
  const model_ = {
    ir_version: irVersionFor(opset),
    producer_name: 'mobilenet-ts',
    producer_version: options.producerVersion ?? '',
    model_version: 1,
    doc_string: `MobileNet ${model.info.architecture} (alpha ${model.info.alpha}), ${numClasses} classes`,
    opset_import: [{ domain: '', version: opset }],
    metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    graph: {
      name: `mobilenet_${model.info.architecture}`,
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo('input', ['batch', inChannels, resolution, resolution])],
      output: [valueInfo('logits', ['batch', numClasses])],
    },
  };
  const ModelProto = protobuf.Root.fromJSON(ONNX_SCHEMA).lookupType('onnx.ModelProto');
  const problem = ModelProto.verify(model_);
  if (problem) throw new Error(`ONNX export: ${problem}`);
  return ModelProto.encode(ModelProto.fromObject(model_)).finish();
}
