// A small WebAssembly emitter: the binary format's few pieces our kernels need, written out by
// hand so that the project needs no assembler. A module is a magic number, a version and a list
// of sections (types, functions, memory, exports, code), each a byte id and its length-prefixed
// contents; a function body is a list of locals and a stream of instructions, each an opcode
// byte (SIMD ones: the prefix 0xfd and an opcode number) and its immediates. Integers are LEB128
// (seven bits a byte, low bits first, the top bit saying "more follows").
//
// Kernels are written with the instruction helpers below as arrays of bytes; `i` holds them:
//   [...i.localGet(x), ...i.localGet(y), ...i.f64x2Mul, ...i.localSet(z)]   // z = x * y
// The spec: https://webassembly.github.io/spec/core/binary/ (SIMD: the 0xfd-prefixed table).
// Nothing here is Node-only: the browser runs the same kernels.

/** Value types. */
export const I32 = 0x7f;
export const F64 = 0x7c;
export const F32 = 0x7d;
export const V128 = 0x7b;
export type ValueType = typeof I32 | typeof F32 | typeof F64 | typeof V128;

/** Unsigned LEB128. */
export function unsignedLeb(value: number): number[] {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`unsignedLeb: ${value} is not a u32`);
  const bytes: number[] = [];
  do {
    let byte = value & 0x7f;
    value = Math.floor(value / 128);
    if (value !== 0) byte |= 0x80;
    bytes.push(byte);
  } while (value !== 0);
  return bytes;
}

/** Signed LEB128 (two's complement, sign-extended from the last byte's bit 6). */
export function signedLeb(value: number): number[] {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) throw new RangeError(`signedLeb: ${value} is not an i32`);
  const bytes: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    bytes.push(done ? byte : byte | 0x80);
    if (done) return bytes;
  }
}

/** A length-prefixed byte string (names, section contents, function bodies). */
function sized(bytes: number[]): number[] {
  return [...unsignedLeb(bytes.length), ...bytes];
}

function name(text: string): number[] {
  return sized([...new TextEncoder().encode(text)]);
}

/** A vector: its length, then its items. */
function vector(items: number[][]): number[] {
  return [...unsignedLeb(items.length), ...items.flat()];
}

/** memarg: log2 of the alignment the access promises, and a constant byte offset. */
function memarg(alignLog2: number, offset: number): number[] {
  return [...unsignedLeb(alignLog2), ...unsignedLeb(offset)];
}

const simd = (opcode: number): number[] => [0xfd, ...unsignedLeb(opcode)];

/** The instructions the kernels use. Arrays are instructions without immediates. */
export const i = {
  // Control. `blockVoid` etc. take no result (block type 0x40).
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  else: [0x05],
  end: [0x0b],
  br: (depth: number) => [0x0c, ...unsignedLeb(depth)],
  brIf: (depth: number) => [0x0d, ...unsignedLeb(depth)],
  return: [0x0f],
  /** Call function `index` of the module (its position in the module's list): its parameters are the values on the stack. */
  call: (index: number) => [0x10, ...unsignedLeb(index)],
  /** (a, b, condition) -> condition !== 0 ? a : b. */
  select: [0x1b],
  // Locals.
  localGet: (index: number) => [0x20, ...unsignedLeb(index)],
  localSet: (index: number) => [0x21, ...unsignedLeb(index)],
  localTee: (index: number) => [0x22, ...unsignedLeb(index)],
  // Scalar memory (offsets in bytes; the alignment hint is the natural one).
  i32Load: (offset = 0) => [0x28, ...memarg(2, offset)],
  i32Store: (offset = 0) => [0x36, ...memarg(2, offset)],
  f32Load: (offset = 0) => [0x2a, ...memarg(2, offset)],
  f64Load: (offset = 0) => [0x2b, ...memarg(3, offset)],
  f32Store: (offset = 0) => [0x38, ...memarg(2, offset)],
  f64Store: (offset = 0) => [0x39, ...memarg(3, offset)],
  // Constants and integer arithmetic.
  i32Const: (value: number) => [0x41, ...signedLeb(value)],
  /** A float64 constant (its eight bytes, little-endian). */
  f64Const: (value: number) => [0x44, ...new Uint8Array(Float64Array.of(value).buffer)],
  i32Eqz: [0x45],
  i32Eq: [0x46],
  i32Ne: [0x47],
  i32LtS: [0x48],
  i32GtS: [0x4a],
  i32LeS: [0x4c],
  i32GeS: [0x4e],
  i32Add: [0x6a],
  i32Sub: [0x6b],
  i32Mul: [0x6c],
  i32And: [0x71],
  i32Shl: [0x74],
  // Scalar float arithmetic.
  f64Add: [0xa0],
  f64Sub: [0xa1],
  f64Mul: [0xa2],
  f64PromoteF32: [0xbb],
  f32DemoteF64: [0xb6],
  // SIMD: 128-bit loads and stores (16-byte alignment hint), lane splats, four-lane float32 and
  // two-lane float64 arithmetic.
  v128Load: (offset = 0) => [...simd(0x00), ...memarg(4, offset)],
  v128Store: (offset = 0) => [...simd(0x0b), ...memarg(4, offset)],
  /** Load one f32 and put it in all four lanes. */
  v128Load32Splat: (offset = 0) => [...simd(0x09), ...memarg(2, offset)],
  /** Load one f64 and put it in both lanes. */
  v128Load64Splat: (offset = 0) => [...simd(0x0a), ...memarg(3, offset)],
  /** All 128 bits zero. */
  v128Zero: [...simd(0x0c), ...new Array(16).fill(0)],
  f32x4Splat: simd(0x13),
  f32x4Add: simd(0xe4),
  f32x4Mul: simd(0xe6),
  f64x2Splat: simd(0x14),
  /** A f64x2 narrowed to float32 (rounded to nearest) in lanes 0 and 1 of a f32x4, lanes 2 and 3 zero. */
  f32x4DemoteF64x2Zero: simd(0x5e),
  /** Lanes 0 and 1 of a f32x4, widened to a f64x2 (exactly: every float32 is a float64). */
  f64x2PromoteLowF32x4: simd(0x5f),
  /** A vector of bytes picked from two: byte k of the result is byte lanes[k] of (a, b), 0-31. */
  i8x16Shuffle: (lanes: number[]) => [...simd(0x0d), ...lanes],
  f64x2Add: simd(0xf0),
  f64x2Sub: simd(0xf1),
  f64x2Mul: simd(0xf2),
  /** Lane-wise comparisons of two f64x2: all ones where true, all zeros where false (NaN: false). */
  f64x2Lt: simd(0x49),
  f64x2Gt: simd(0x4a),
  f64x2Ge: simd(0x4c),
  v128And: simd(0x4e),
  /** Lane k (0 or 1) of a f64x2, as a f64. */
  f64x2ExtractLane: (lane: number) => [...simd(0x21), lane],
  /** Two floats (8 bytes) into lanes 0 and 1, lanes 2 and 3 zero. */
  v128Load64Zero: (offset = 0) => [...simd(0x5d), ...memarg(3, offset)],
  /** Store lanes 0-1 as floats (the low 8 bytes of the vector). */
  v128Store64Lane0: (offset = 0) => [...simd(0x5b), ...memarg(3, offset), 0],
  /** One float into lane 0, lanes 1-3 zero. */
  v128Load32Zero: (offset = 0) => [...simd(0x5c), ...memarg(2, offset)],
  /** Store lane 0 as a float. */
  v128Store32Lane0: (offset = 0) => [...simd(0x5a), ...memarg(2, offset), 0],
};

/** One function of a module: its signature, extra locals and body (without the final `end`). */
export interface WasmFunction {
  name: string;
  params: ValueType[];
  results: ValueType[];
  /** Locals after the parameters, in order (local index = params.length + position). */
  locals: ValueType[];
  body: number[];
}

/**
 * A module of exported functions over one memory: of its own, exported as `memory`, or
 * (`importsSharedMemory`) a shared one the instance is given as `env.memory`.
 */
export interface WasmModule {
  /** 64 KiB pages (the least the memory has). */
  memoryPages: number;
  /** Pages the memory may grow to (`memory.grow` from JavaScript); without it, it never grows (and views of it stay valid). */
  maxPages?: number;
  /** Import a shared memory of memoryPages to maxPages instead of declaring one (the buffer cache's arena). */
  importsSharedMemory?: boolean;
  /**
   * Declare the module's own memory shared: growing it then never detaches its buffer (a new,
   * longer one appears), and a detached ArrayBuffer would slow every typed-array loop of the
   * thread (V8's detaching protector, docs/performance.md).
   */
  sharedMemory?: boolean;
  functions: WasmFunction[];
}

/** The module's bytes. */
export function emitModule(m: WasmModule): Uint8Array<ArrayBuffer> {
  const section = (id: number, contents: number[]) => [id, ...sized(contents)];
  const types = m.functions.map((f) => [0x60, ...vector(f.params.map((t) => [t])), ...vector(f.results.map((t) => [t]))]);
  // Locals are declared as runs of one type: (count, type) pairs.
  const localRuns = (locals: ValueType[]) => {
    const runs: number[][] = [];
    for (let k = 0; k < locals.length; ) {
      let n = 1;
      while (k + n < locals.length && locals[k + n] === locals[k]) n++;
      runs.push([...unsignedLeb(n), locals[k]]);
      k += n;
    }
    return vector(runs);
  };
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, // "\0asm"
    0x01, 0x00, 0x00, 0x00, // version 1
    ...section(1, vector(types)),
    // Imports: env.memory, kind 2 (a memory), flags 3 = minimum and maximum given, shared.
    ...(m.importsSharedMemory ? section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x03, ...unsignedLeb(m.memoryPages), ...unsignedLeb(m.maxPages ?? m.memoryPages)]])) : []),
    ...section(3, vector(m.functions.map((_, k) => unsignedLeb(k)))),
    // Memory: flags 1 = minimum and maximum given.
    // (flags 3: and shared)
    ...(m.importsSharedMemory ? [] : section(5, vector([[m.sharedMemory ? 0x03 : 0x01, ...unsignedLeb(m.memoryPages), ...unsignedLeb(m.maxPages ?? m.memoryPages)]]))),
    ...section(7, vector([...(m.importsSharedMemory ? [] : [[...name('memory'), 0x02, 0x00]]), ...m.functions.map((f, k) => [...name(f.name), 0x00, ...unsignedLeb(k)])])),
    ...section(10, vector(m.functions.map((f) => sized([...localRuns(f.locals), ...f.body, ...i.end])))),
  ];
  return Uint8Array.from(bytes);
}

/** Whether this JavaScript engine runs WebAssembly with 128-bit SIMD (a one-instruction module validates). */
export function hasWasmSimd(): boolean {
  if (typeof WebAssembly !== 'object' || typeof WebAssembly.validate !== 'function') return false;
  const probe: WasmFunction = { name: 'probe', params: [], results: [V128], locals: [], body: [...i.v128Zero] };
  return WebAssembly.validate(emitModule({ memoryPages: 1, functions: [probe] }));
}
