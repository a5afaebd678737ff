// Weights in and out as safetensors with PyTorch's state-dict keys. For MobileNetV2 the keys
// are torchvision's (`features.1.conv.0.0.weight`, ...), so a file written here loads with
// `model.load_state_dict(safetensors_to_dict(path))` in torchvision, and torchvision's weights
// (converted by scripts/export-torchvision.py) load here.

import { looksLikePth, parsePth } from '../tensor/pth.js';
import { loadSafetensors, parseSafetensors, readWeightBytes, saveSafetensors, SafetensorsError, type SafetensorsFile, type TensorToWrite } from '../tensor/safetensors.js';
import { Tensor } from '../tensor/tensor.js';
import type { Module } from './module.js';

/** BatchNorm's step counter is an int64 in PyTorch; everything else is float32. */
function isCounter(key: string): boolean {
  return key.endsWith('num_batches_tracked');
}

/** The model's state dict as safetensors entries (float32, counters as int64). */
export function stateDictEntries(model: Module): Map<string, TensorToWrite> {
  const out = new Map<string, TensorToWrite>();
  for (const [key, t] of model.stateDict()) {
    out.set(key, isCounter(key) ? { shape: [...t.shape], data: BigInt64Array.of(BigInt(Math.round(t.data[0]))) } : { shape: [...t.shape], data: t.data });
  }
  return out;
}

/** Write a model's state dict as safetensors with PyTorch's keys (float32; BatchNorm counters as int64), with optional metadata. */
export function saveWeights(model: Module, path: string, metadata: Record<string, string> = {}): void {
  saveSafetensors(path, stateDictEntries(model), metadata);
}

/** Float32 tensors from a parsed file, keys optionally filtered by prefix (which is removed). */
export function tensorsFromFile(file: SafetensorsFile, prefix = ''): Map<string, Tensor> {
  const dict = new Map<string, Tensor>();
  for (const [key, stored] of file.tensors) {
    if (!key.startsWith(prefix)) continue;
    const data = stored.data instanceof Float32Array ? stored.data : Float32Array.from(stored.data as ArrayLike<number | bigint>, (v) => Number(v));
    dict.set(key.slice(prefix.length), new Tensor(data, stored.shape));
  }
  return dict;
}

/** Load weights written by `saveWeights` or by scripts/export-torchvision.py. */
export function loadWeights(model: Module, source: string | Uint8Array | SafetensorsFile, options: { strict?: boolean } = {}): void {
  const file = typeof source === 'string' ? loadSafetensors(source) : source instanceof Uint8Array ? parseSafetensors(source) : source;
  model.loadStateDict(tensorsFromFile(file), options);
}

/**
 * Read weights from a file of either kind: safetensors, or a checkpoint written by `torch.save`
 * (`.pth` / `.pt`, zip or legacy layout; read without running its pickle, see
 * src/tensor/pth.ts). The kind is told by the bytes, not the name. Keys saved from a model
 * wrapped in `nn.DataParallel` lose their `module.` prefix.
 */
export function readWeightsFile(path: string): SafetensorsFile {
  const bytes = readWeightBytes(path);
  let file: SafetensorsFile;
  if (looksLikePth(bytes)) file = parsePth(bytes, path);
  else {
    try {
      file = parseSafetensors(bytes, path);
    } catch (e) {
      // A .safetensors file keeps the reader's own message; anything else was perhaps never weights.
      if (!(e instanceof SafetensorsError) || /\.safetensors$/i.test(path)) throw e;
      throw new SafetensorsError(`${path}: neither a PyTorch checkpoint (.pth: a ZIP archive or a pickle) nor safetensors (${e.detail})`);
    }
  }
  const keys = [...file.tensors.keys()];
  if (keys.length > 0 && keys.every((k) => k.startsWith('module.'))) {
    file.tensors = new Map([...file.tensors].map(([k, t]) => [k.slice('module.'.length), t]));
  }
  return file;
}
