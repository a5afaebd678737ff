import { readFileSync } from 'node:fs';
import { writeFileAtomic } from './files.js';

// safetensors: the one file format of the project (checkpoints, PyTorch fixtures, torchvision
// interop). Layout: 8-byte little-endian header length N, N bytes of JSON, then raw
// little-endian tensor data. The JSON maps each tensor name to {dtype, shape, data_offsets:
// [begin, end]} (offsets relative to the data section), plus an optional "__metadata__" object
// of string -> string.
//
// The reader checks everything the header claims against the real file size BEFORE it
// allocates: a header that claims 10^12 elements is rejected, not attempted.

/** The element types this reader and writer support. */
export type SafetensorsDtype = 'F32' | 'F64' | 'I64' | 'I32' | 'U8';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F64: 8, I64: 8, I32: 4, U8: 1 };

/** Upper bound on the JSON header (the format's reference implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

/** The typed arrays a stored tensor can hold. */
export type TensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** A tensor as stored: dtype, shape and typed data. */
export interface StoredTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: TensorData;
}

/** A parsed safetensors file: its tensors by name and its `__metadata__`. */
export interface SafetensorsFile {
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

/** A malformed safetensors file. The message names the file and, where relevant, the tensor. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  /** What is wrong, without the file's name (the message is `<file>: <detail>`). */
  readonly detail: string;
  constructor(message: string, detail = message) {
    super(message);
    this.detail = detail;
  }
}

function isDtype(x: unknown): x is SafetensorsDtype {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, x);
}

/** Parse and validate a safetensors buffer. `source` names the file in error messages. */
export function parseSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsFile {
  const fail = (msg: string): never => {
    throw new SafetensorsError(`${source}: ${msg}`, msg);
  };
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength64 = view.getBigUint64(0, true);
  const available = bytes.length - 8;
  if (headerLength64 > BigInt(Math.min(MAX_HEADER_BYTES, available))) {
    fail(`header length ${headerLength64} exceeds ${headerLength64 > BigInt(MAX_HEADER_BYTES) ? `the limit of ${MAX_HEADER_BYTES} bytes` : `the ${available} bytes after the length field`}`);
  }
  const headerLength = Number(headerLength64);
  if (headerLength < 2) fail(`header length ${headerLength} is too short for a JSON object`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;

  // Pass 1: validate every entry and collect ranges; nothing is allocated yet.
  const entries: { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }[] = [];
  const metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('__metadata__ is not an object');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    if (typeof raw !== 'object' || raw === null) fail(`tensor '${name}': entry is not an object`);
    const info = raw as Record<string, unknown>;
    if (!isDtype(info.dtype)) fail(`tensor '${name}': unsupported dtype ${JSON.stringify(info.dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`);
    const dtype = info.dtype as SafetensorsDtype;
    const shape = info.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`tensor '${name}': shape ${JSON.stringify(shape)} is not a list of integers >= 0`);
    const offsets = info.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || offsets.some((o) => !Number.isSafeInteger(o) || o < 0)) {
      fail(`tensor '${name}': data_offsets ${JSON.stringify(offsets)} is not a pair of integers >= 0`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) fail(`tensor '${name}': data_offsets [${begin}, ${end}] has begin after end`);
    if (end > dataLength) fail(`tensor '${name}': data_offsets [${begin}, ${end}] run past the end of the data (${dataLength} bytes)`);
    // Element count in floating point first: a hostile shape could overflow exact integers.
    let elements = 1;
    for (const d of shape as number[]) elements *= d;
    const expectedBytes = elements * DTYPE_BYTES[dtype];
    if (expectedBytes !== end - begin) {
      fail(`tensor '${name}': shape ${JSON.stringify(shape)} of ${dtype} needs ${expectedBytes} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }
  const sorted = [...entries].sort((x, y) => x.begin - y.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].begin < sorted[i - 1].end) fail(`tensors '${sorted[i - 1].name}' and '${sorted[i].name}' overlap in the data section`);
  }

  // Pass 2: copy out (little-endian on disk; copying also gives each array aligned storage).
  const tensors = new Map<string, StoredTensor>();
  for (const e of entries) {
    // A fresh copy (not `bytes.slice`: on a Node Buffer that returns a view, not a copy).
    const copy = new Uint8Array(e.end - e.begin);
    copy.set(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    const buf = copy.buffer;
    let data: TensorData;
    switch (e.dtype) {
      case 'F32': data = new Float32Array(buf); break;
      case 'F64': data = new Float64Array(buf); break;
      case 'I64': data = new BigInt64Array(buf); break;
      case 'I32': data = new Int32Array(buf); break;
      case 'U8': data = new Uint8Array(buf); break;
    }
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

function dtypeOf(data: TensorData): SafetensorsDtype {
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Float64Array) return 'F64';
  if (data instanceof BigInt64Array) return 'I64';
  if (data instanceof Int32Array) return 'I32';
  return 'U8';
}

/** A tensor to write: shape and typed data (its dtype follows the array type). */
export interface TensorToWrite {
  shape: readonly number[];
  data: TensorData;
}

/** Serialise tensors (in the given order) and string metadata to safetensors bytes. */
export function serializeSafetensors(tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): Uint8Array {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of list) {
    const expected = t.shape.reduce((p, d) => p * d, 1);
    if (expected !== t.data.length) throw new SafetensorsError(`serialize: tensor '${name}' has ${t.data.length} elements but shape [${t.shape.join(', ')}]`);
    header[name] = { dtype: dtypeOf(t.data), shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data section starts 8-byte aligned (as the reference writer does).
  const jsonBytesLength = new TextEncoder().encode(json).length;
  json += ' '.repeat((8 - ((8 + jsonBytesLength) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const [, t] of list) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** A file's bytes, or a SafetensorsError naming the file and why it cannot be read. */
export function readWeightBytes(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new SafetensorsError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Read and validate a safetensors file; errors name the file. */
export function loadSafetensors(path: string): SafetensorsFile {
  return parseSafetensors(readWeightBytes(path), path);
}

export { writeFileAtomic } from './files.js';

/** Write tensors and string metadata as a safetensors file, atomically (a temporary file, fsynced, then renamed). */
export function saveSafetensors(path: string, tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
