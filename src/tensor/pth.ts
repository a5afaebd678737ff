// PyTorch checkpoints (`.pth`, `.pt`) as `torch.save` writes them, read without Python and
// without running anything in them.
//
// Two layouts:
// - zip (PyTorch >= 1.6): a ZIP archive `<name>/data.pkl` (the pickle of the saved object) and
//   `<name>/data/<key>` (one entry per storage, its raw little-endian bytes).
// - legacy (older PyTorch, and torchvision's older weight files): five pickles in a row (a
//   magic number, the protocol version 1001, the system info, the object, the list of storage
//   keys), then for each key in that list an int64 element count and the storage's raw bytes.
//
// In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, hooks)`, and its storage as the persistent id `('storage',
// torch.FloatStorage, key, location, numel)`. The pickle is read by src/tensor/pickle.ts with an
// allowlist of exactly those globals (plus OrderedDict and torch's storage types): a file that
// names anything else (a whole pickled model class, `os.system`, `builtins.eval`) is refused,
// naming the global, before any storage is read.
//
// Sizes are bounded by what the file itself declares: a tensor's view (offset + sum over dims
// of (size - 1) * stride) must lie inside its storage, and a storage's bytes must be in the
// file, before anything is allocated for it.

import { looksLikeZip, openZip, ZipError, type ZipArchive } from './zip.js';
import { PickleError, readPickle, type PickleCallable } from './pickle.js';
import type { SafetensorsDtype, SafetensorsFile, StoredTensor, TensorData } from './safetensors.js';

/** A `.pth` this reader refuses or cannot read. The message names the file. */
export class PthError extends Error {
  override name = 'PthError';
}

/** torch's storage types: bytes per element and how an element is read. */
interface StorageType {
  name: string;
  bytes: number;
  /** What the tensor becomes here: float types are widened to F32 (F64 stays), integers to I64 / I32 / U8. */
  dtype: SafetensorsDtype;
}

const STORAGE_TYPES: Record<string, StorageType> = Object.fromEntries(
  (
    [
      ['FloatStorage', 4, 'F32'],
      ['DoubleStorage', 8, 'F64'],
      ['HalfStorage', 2, 'F32'],
      ['BFloat16Storage', 2, 'F32'],
      ['LongStorage', 8, 'I64'],
      ['IntStorage', 4, 'I32'],
      ['ShortStorage', 2, 'I32'],
      ['CharStorage', 1, 'I32'],
      ['ByteStorage', 1, 'U8'],
      ['BoolStorage', 1, 'U8'],
    ] as const
  ).map(([name, bytes, dtype]) => [name, { name, bytes, dtype }]),
);

/** A storage named by a persistent id; its bytes are read after the whole pickle has been checked. */
interface StorageRef {
  kind: 'storage';
  type: StorageType;
  key: string;
  numel: number;
}

/** A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage. */
interface TensorRef {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

const MAGIC_NUMBER = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;

/** Keys under which training scripts wrap a state dict with their own bookkeeping. */
export const STATE_DICT_WRAPPERS = ['state_dict', 'model', 'model_state_dict'];

/** The legacy layout starts with a pickle of protocol 2: PROTO 2. */
function looksLikeLegacyPth(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] === 0x02;
}

/** True when the bytes look like a `.pth` (a ZIP archive, or a pickle: PROTO 2 first). */
export function looksLikePth(bytes: Uint8Array): boolean {
  return looksLikeZip(bytes) || looksLikeLegacyPth(bytes);
}

/**
 * Read a state dict saved by `torch.save` (zip or legacy layout; a bare state dict or one
 * wrapped as `{'state_dict': ...}`, `{'model': ...}`, `{'model_state_dict': ...}`). Tensors come
 * out as the safetensors reader gives them (float16 / bfloat16 widened to float32), so
 * `loadWeights` takes either. `source` names the file in errors.
 */
export function parsePth(bytes: Uint8Array, source = '<buffer>'): SafetensorsFile {
  const fail = (message: string): never => {
    throw new PthError(`${source}: ${message}`);
  };
  try {
    if (looksLikeZip(bytes)) return readZipLayout(bytes, source, fail);
    if (looksLikeLegacyPth(bytes)) return readLegacyLayout(bytes, source, fail);
  } catch (e) {
    if (e instanceof ZipError || e instanceof PickleError) throw new PthError(e.message);
    if (e instanceof RangeError) fail(`damaged (${e.message})`);
    throw e;
  }
  const first = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return fail(`not a PyTorch checkpoint: expected a ZIP archive (PyTorch >= 1.6) or a pickle (older PyTorch), the file starts with ${first || 'nothing'}`);
}

/** The pickle's hooks: the allowlist, and storages recorded (not read) as they are named. */
function tensorHooks(fail: (m: string) => never, legacy: boolean) {
  const storages = new Map<string, StorageRef>();
  const callable = (qualifiedName: string, call: (args: unknown[]) => unknown): PickleCallable => ({ qualifiedName, call });
  const int = (x: unknown, what: string): number => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) fail(`${what} is ${String(x)}, expected an integer >= 0`);
    return x as number;
  };
  const ints = (x: unknown, what: string): number[] => {
    if (!Array.isArray(x)) fail(`${what} is not a tuple`);
    return (x as unknown[]).map((v, i) => int(v, `${what}[${i}]`));
  };
  const rebuildTensor = (args: unknown[]): TensorRef => {
    const [storage, offset, size, stride] = args;
    if (!isStorage(storage)) fail('_rebuild_tensor_v2 is given something other than a storage');
    const ref: TensorRef = { kind: 'tensor', storage: storage as StorageRef, offset: int(offset, 'a storage offset'), shape: ints(size, 'a tensor size'), stride: ints(stride, 'a tensor stride') };
    if (ref.shape.length !== ref.stride.length) fail(`a tensor of size (${ref.shape}) has stride (${ref.stride})`);
    // The last element the view touches must be inside the storage: this bounds the allocation.
    if (ref.shape.every((d) => d > 0)) {
      const last = ref.offset + ref.shape.reduce((sum, d, i) => sum + (d - 1) * ref.stride[i], 0);
      if (last >= ref.storage.numel) fail(`a tensor of size (${ref.shape}) at offset ${ref.offset} with stride (${ref.stride}) reaches element ${last} of a storage of ${ref.storage.numel}`);
    }
    return ref;
  };
  const allowed: Record<string, PickleCallable> = {
    'collections.OrderedDict': callable('collections.OrderedDict', (args) => {
      if (args.length !== 0) fail('OrderedDict is called with arguments');
      return new Map();
    }),
    'torch._utils._rebuild_tensor_v2': callable('torch._utils._rebuild_tensor_v2', rebuildTensor),
    // An nn.Parameter saved directly: its data tensor (requires_grad and hooks are training state).
    'torch._utils._rebuild_parameter': callable('torch._utils._rebuild_parameter', (args) => {
      if (!isTensor(args[0])) fail('_rebuild_parameter is given something other than a tensor');
      return args[0];
    }),
  };
  const hint = 'a state dict holds only tensors, OrderedDict and torch storages; save `model.state_dict()`, not the model';
  return {
    storages,
    hooks: {
      refusalHint: hint,
      resolveGlobal(module: string, name: string): PickleCallable | undefined {
        const qualified = `${module}.${name}`;
        if (module === 'torch' && name.endsWith('Storage')) {
          const type = STORAGE_TYPES[name];
          if (type === undefined) fail(`storage type torch.${name} is not supported (supported: ${Object.keys(STORAGE_TYPES).join(', ')})`);
          return callable(qualified, () => fail(`torch.${name} is called, which a state dict does not do`));
        }
        return allowed[qualified];
      },
      persistentLoad(id: unknown): StorageRef {
        // ('storage', torch.FloatStorage, key, location, numel[, view_metadata in the legacy layout])
        if (!Array.isArray(id) || id[0] !== 'storage' || id.length < 5) fail(`a persistent id that is not a storage: ${JSON.stringify(id, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
        const [, typeCallable, key, , numel, viewMetadata] = id as unknown[];
        const typeName = (typeCallable as PickleCallable | undefined)?.qualifiedName?.replace(/^torch\./, '') ?? '';
        const type = STORAGE_TYPES[typeName];
        if (type === undefined) fail(`a storage of type ${String(typeName)} is not supported`);
        if (typeof key !== 'string') fail('a storage key is not a string');
        if (legacy && viewMetadata !== undefined && viewMetadata !== null) fail(`storage ${key} is a view of another storage (legacy layout), which this reader does not read`);
        const ref: StorageRef = { kind: 'storage', type, key: key as string, numel: int(numel, `storage ${String(key)}'s size`) };
        const seen = storages.get(ref.key);
        if (seen && (seen.numel !== ref.numel || seen.type !== ref.type)) fail(`storage ${ref.key} is declared twice with different sizes or types`);
        storages.set(ref.key, seen ?? ref);
        return seen ?? ref;
      },
    },
  };
}

function isStorage(x: unknown): x is StorageRef {
  return typeof x === 'object' && x !== null && (x as StorageRef).kind === 'storage';
}

function isTensor(x: unknown): x is TensorRef {
  return typeof x === 'object' && x !== null && (x as TensorRef).kind === 'tensor';
}

function readZipLayout(bytes: Uint8Array, source: string, fail: (m: string) => never): SafetensorsFile {
  const archive = openZip(bytes, source);
  const pickles = [...archive.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
  if (pickles.length !== 1) fail(`expected one <name>/data.pkl in the archive, found ${pickles.length === 0 ? 'none' : pickles.join(', ')}: not a torch.save checkpoint`);
  const prefix = pickles[0].slice(0, -'data.pkl'.length);
  const byteorder = archive.entries.has(`${prefix}byteorder`) ? new TextDecoder().decode(archive.read(`${prefix}byteorder`)).trim() : 'little';
  if (byteorder !== 'little') fail(`its storages are ${byteorder}-endian; this reader reads little-endian ones`);
  const { hooks } = tensorHooks(fail, false);
  const { value } = readPickle(archive.read(pickles[0]), hooks, `${source}: ${pickles[0]}`);
  const dict = stateDictOf(value, fail);
  return { tensors: materialize(dict, (storage) => storageBytesFromZip(archive, prefix, storage, fail)), metadata: {} };
}

function storageBytesFromZip(archive: ZipArchive, prefix: string, storage: StorageRef, fail: (m: string) => never): Uint8Array {
  const name = `${prefix}data/${storage.key}`;
  const entry = archive.entries.get(name);
  if (entry === undefined) fail(`the pickle names storage ${storage.key} but the archive has no ${name}`);
  const need = storage.numel * storage.type.bytes;
  if (entry!.size < need) fail(`${name} holds ${entry!.size} bytes, its storage declares ${storage.numel} x ${storage.type.bytes}`);
  return archive.read(name);
}

function readLegacyLayout(bytes: Uint8Array, source: string, fail: (m: string) => never): SafetensorsFile {
  const plain = { resolveGlobal: () => undefined, refusalHint: 'the header of a legacy checkpoint holds only numbers and strings' };
  const magic = readPickle(bytes, plain, source, 0);
  if (magic.value !== MAGIC_NUMBER && magic.value !== Number(MAGIC_NUMBER)) fail('a pickle, but not a torch.save checkpoint (its first value is not PyTorch\'s magic number)');
  const version = readPickle(bytes, plain, source, magic.end);
  if (version.value !== LEGACY_PROTOCOL_VERSION) fail(`legacy protocol version ${String(version.value)}, expected ${LEGACY_PROTOCOL_VERSION}`);
  const sysInfo = readPickle(bytes, plain, source, version.end);
  if (sysInfo.value instanceof Map && sysInfo.value.get('little_endian') === false) fail('its storages are big-endian; this reader reads little-endian ones');
  const { hooks, storages } = tensorHooks(fail, true);
  const main = readPickle(bytes, hooks, source, sysInfo.end);
  const dict = stateDictOf(main.value, fail);
  const keys = readPickle(bytes, plain, source, main.end);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) fail('the storage key list is not a list of strings');
  // The storages follow in the order of the key list: int64 element count, then the bytes.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const located = new Map<string, Uint8Array>();
  let at = keys.end;
  for (const key of keys.value as string[]) {
    const storage = storages.get(key);
    if (storage === undefined) fail(`storage ${key} is listed but no tensor uses it`);
    if (at + 8 > bytes.length) fail(`storage ${key} starts past the end of the file at ${at} (truncated)`);
    const numel = view.getBigInt64(at, true);
    if (numel !== BigInt(storage!.numel)) fail(`storage ${key} declares ${storage!.numel} elements in the pickle but ${numel} in the data`);
    const length = storage!.numel * storage!.type.bytes;
    if (at + 8 + length > bytes.length) fail(`storage ${key} needs ${length} bytes at offset ${at + 8} but the file ends at ${bytes.length} (truncated)`);
    located.set(key, bytes.subarray(at + 8, at + 8 + length));
    at += 8 + length;
  }
  return {
    tensors: materialize(dict, (storage) => {
      const found = located.get(storage.key);
      if (found === undefined) fail(`storage ${storage.key} is used by a tensor but missing from the file`);
      return found!;
    }),
    metadata: {},
  };
}

/** The state dict in what was pickled: the object itself, or the one under a wrapper's key. */
function stateDictOf(value: unknown, fail: (m: string) => never): Map<string, TensorRef> {
  if (!(value instanceof Map)) fail(`holds a ${Array.isArray(value) ? 'tuple or list' : typeof value}, not a state dict`);
  let dict = value as Map<unknown, unknown>;
  const allTensors = (d: Map<unknown, unknown>) => d.size > 0 && [...d.values()].every(isTensor);
  if (!allTensors(dict)) {
    const wrapper = STATE_DICT_WRAPPERS.find((k) => dict.get(k) instanceof Map && allTensors(dict.get(k) as Map<unknown, unknown>));
    if (wrapper === undefined) {
      const keys = [...dict.keys()].slice(0, 8).map(String);
      fail(`holds no state dict: its top-level keys are ${keys.join(', ')}${dict.size > 8 ? ', ...' : ''} and none of ${STATE_DICT_WRAPPERS.join(', ')} is a dict of tensors`);
    }
    dict = dict.get(wrapper) as Map<unknown, unknown>;
  }
  for (const k of dict.keys()) if (typeof k !== 'string') fail(`a state dict key is a ${typeof k}, not a string`);
  return dict as Map<string, TensorRef>;
}

/** Copy each tensor's strided view out of its storage's bytes into a contiguous typed array. */
function materialize(dict: Map<string, TensorRef>, bytesOf: (s: StorageRef) => Uint8Array): Map<string, StoredTensor> {
  const out = new Map<string, StoredTensor>();
  const cache = new Map<string, Uint8Array>();
  for (const [name, t] of dict) {
    let raw = cache.get(t.storage.key);
    if (raw === undefined) {
      raw = bytesOf(t.storage);
      cache.set(t.storage.key, raw);
    }
    const elements = readStorage(raw, t.storage);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const data = allocate(t.storage.type.dtype, numel);
    if (isContiguous(t)) {
      // The usual case: one copy of a run of the storage.
      for (let n = 0; n < numel; n++) (data as { [k: number]: number | bigint })[n] = elements[t.offset + n];
      out.set(name, { dtype: t.storage.type.dtype, shape: [...t.shape], data });
      continue;
    }
    // Walk the view in row-major order: index = offset + sum_i index_i * stride_i.
    const rank = t.shape.length;
    const index = new Array<number>(rank).fill(0);
    let position = t.offset;
    for (let n = 0; n < numel; n++) {
      (data as { [k: number]: number | bigint })[n] = elements[position];
      for (let d = rank - 1; d >= 0; d--) {
        index[d]++;
        position += t.stride[d];
        if (index[d] < t.shape[d]) break;
        position -= t.stride[d] * t.shape[d];
        index[d] = 0;
      }
    }
    out.set(name, { dtype: t.storage.type.dtype, shape: [...t.shape], data });
  }
  return out;
}

/** Row-major without gaps: stride[i] = product of shape[i+1..] (size-1 dimensions may carry any stride). */
function isContiguous(t: TensorRef): boolean {
  let expected = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

function allocate(dtype: SafetensorsDtype, n: number): TensorData {
  switch (dtype) {
    case 'F32':
      return new Float32Array(n);
    case 'F64':
      return new Float64Array(n);
    case 'I64':
      return new BigInt64Array(n);
    case 'I32':
      return new Int32Array(n);
    case 'U8':
      return new Uint8Array(n);
  }
}

/** A storage's elements as numbers (bigints for int64), read little-endian; half types widened. */
function readStorage(raw: Uint8Array, storage: StorageRef): ArrayLike<number | bigint> {
  const n = storage.numel;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  switch (storage.type.name) {
    case 'FloatStorage':
      return raw.byteOffset % 4 === 0 ? new Float32Array(raw.buffer, raw.byteOffset, n) : new Float32Array(new Uint8Array(raw.subarray(0, 4 * n)).buffer) // (a copy: Buffer.slice would share the file's memory);
    case 'DoubleStorage':
      return Float64Array.from({ length: n }, (_, i) => view.getFloat64(8 * i, true));
    case 'HalfStorage':
      return Float32Array.from({ length: n }, (_, i) => halfToFloat(view.getUint16(2 * i, true)));
    case 'BFloat16Storage':
      // bfloat16 is the top half of a float32.
      return new Float32Array(Uint32Array.from({ length: n }, (_, i) => view.getUint16(2 * i, true) << 16).buffer);
    case 'LongStorage':
      return BigInt64Array.from({ length: n }, (_, i) => view.getBigInt64(8 * i, true));
    case 'IntStorage':
      return Int32Array.from({ length: n }, (_, i) => view.getInt32(4 * i, true));
    case 'ShortStorage':
      return Int32Array.from({ length: n }, (_, i) => view.getInt16(2 * i, true));
    case 'CharStorage':
      return Int32Array.from({ length: n }, (_, i) => view.getInt8(i));
    default:
      return raw.subarray(0, n);
  }
}

/** IEEE 754 half precision (1 sign, 5 exponent, 10 fraction bits) to a number, exactly. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal (and zero)
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
