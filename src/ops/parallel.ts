// Both cores: a pool of worker threads, and declared kernels that it runs on all of them.
//
// A kernel is declared once, next to its math (see `declareKernel`): its name, its integer and
// float parameters by name, the buffers it reads and writes by name, what its work range
// [lo, hi) counts, and the slice function that does the part [lo, hi) of the work. The pool
// derives everything else from that declaration, on the calling thread and in the workers alike:
// how parameters are written to shared memory and read back (integers through an Int32Array,
// so that a slice function sees small integers, never doubles: V8 optimises a kernel for the
// types it first sees, and sizes arriving as doubles measured 1.6 -> 3.0 ms for a depthwise
// convolution, on one thread too), which buffers can be used in place and which must be copied
// in and out, and how the work is cut. Without threads, `runKernel` calls the same slice on the
// whole range: one code path.
//
// Shared memory: the calling thread and the workers share the buffer cache's buffers
// (src/tensor/buffers.ts: every buffer an op takes inside `reuseBuffers` is shared memory). Those
// in the cache's arena (one shared WebAssembly.Memory, which every worker holds from its start)
// are passed as their offset and length in it; the others, a SharedArrayBuffer each, are passed
// by an id that each worker learns once (in a message), and then read and written in place. A buffer that lives
// elsewhere (a weight, a small per-channel array) is copied into a staging buffer of the
// kernel's own, and copied back if the kernel writes it. A job is published in a shared control
// block, the workers are woken with Atomics.notify, and the caller waits with Atomics.wait: no
// message is sent per job.
//
// Work is cut into chunks that the threads take from a shared counter as they finish, so a
// core slowed down by a neighbour takes fewer chunks instead of holding the other one up.
// Determinism: chunks are ranges of independent outputs (rows of C, image planes, channels),
// never parts of one sum, so every output element is computed by exactly the same sequence of
// operations whichever thread takes its chunk. Results are bit-identical for any thread count
// and any order (tested).
//
// The workers run the kernels as source text (`Function.prototype.toString`): a worker cannot
// import TypeScript when the library runs from source, and source text works the same from tsx,
// from vitest and from the built package. The rule this imposes on a slice function: it may call
// only the functions it lists as dependencies, and no imported name (transpilers rewrite those).

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { arenaMemory, arenaOffset, isCached, onCacheDrop } from '../tensor/buffers.js';

/** A buffer a kernel reads or writes. */
export type KernelBuffer = Float32Array | Float64Array;

/**
 * What a slice function knows of the thread it runs on: the buffer cache's arena (the shared
 * WebAssembly.Memory its WebAssembly kernels import, or null), and a place for what the thread
 * makes once (such as its instance of a kernel module: `cache.name ??= ...`).
 */
export interface ThreadContext {
  arena: WebAssembly.Memory | null;
  cache: Record<string, unknown>;
}

/**
 * A kernel as it is declared: the names of its integer parameters (`ints`), float parameters
 * (`floats`) and buffers (`reads`, `writes`, `large`), and its slice function.
 */
export interface KernelDeclaration<I extends string, F extends string, B extends string> {
  /** Unique name (also the slice function's, for error messages). */
  name: string;
  /** Integer parameters: sizes, offsets, flags. They arrive in `slice` as small integers. */
  ints: readonly I[];
  /** Float parameters (scale factors, clamp bounds). */
  floats: readonly F[];
  /** Buffers the kernel only reads. */
  reads: readonly B[];
  /** Buffers the kernel writes (and may read). */
  writes: readonly B[];
  /**
   * Buffers too large to copy: when one of them is not in shared memory the job runs on the
   * calling thread alone (copying would cost as much as the work). The others are copied.
   */
  large: readonly B[];
  /** What one unit of the work range counts (for the reader: 'image planes', 'channels', ...). */
  splits: string;
  /** How many chunks per thread the range is cut into (more: better balance, more overhead). */
  chunksPerThread: number;
  /** Below this much work (the caller's measure) the job stays on the calling thread. */
  minWork: number;
  /** The work for [lo, hi) of the range. Shipped to the workers as source text. */
  slice: (p: Record<I | F, number>, b: Record<B, KernelBuffer>, lo: number, hi: number, thread: ThreadContext) => void;
  /** Functions `slice` calls (shipped with it). */
  deps: readonly ((...args: never[]) => unknown)[];
  /** Source text the workers need before the functions (module-level constants, scratch). */
  prelude?: string;
}

/** A declared kernel: its declaration and the index the pool knows it by. */
export interface Kernel<I extends string, F extends string, B extends string> extends KernelDeclaration<I, F, B> {
  readonly index: number;
}

// Layout of the shared memory: a control block, and the job's parameters.
const GENERATION = 0; // bumped to publish a job
const DONE = 1; // workers that finished the job
const KERNEL = 2; // which kernel (index), or EXIT
const READY = 3; // workers that have started
const FAILED = 4; // set by the first worker whose slice threw
const NEXT_CHUNK = 5; // the chunk counter threads take work from
const CHUNKS = 6; // how many chunks the job has
const TOTAL = 7; // the job's range is [0, TOTAL)
const MESSAGES = 8; // bumped after posting the workers a buffer to learn or forget
/** The control indices by name, as the worker program receives them (it sees no module constants). */
const CONTROL = { GENERATION, DONE, KERNEL, READY, FAILED, NEXT_CHUNK, CHUNKS, TOTAL, MESSAGES };
const EXIT = -1;
/**
 * How many times a thread that waits (a worker for the next job, the caller for the workers)
 * checks the shared counter before it sleeps. Waking a sleeping thread costs 50-90 us, more
 * than many of a training step's kernels take; checking for about 0.1 ms first (as OpenMP
 * runtimes and PyTorch's pool do) lets back-to-back jobs start without that delay.
 */
const SPIN_CHECKS = 10000;
const CONTROL_INTS = 16;
/** Room for a kernel's parameters and buffer ids. */
const MAX_INTS = 32;
const MAX_FLOATS = 8;
const MAX_BUFFERS = 8;
/** Threads the pool accepts (the calling thread and MAX_THREADS - 1 workers). */
export const MAX_THREADS = 32;
/** How long to wait for workers to start before giving up on threads. */
const WORKER_START_TIMEOUT_MS = 20_000;
const ERROR_BYTES = 4096;

/**
 * Below this many multiply-adds a GEMM runs on the calling thread. With workers that spin
 * before they sleep a hand-off costs a few microseconds; measured on T1 and T3 with two
 * threads, 2^14 beat 2^12, 2^16 and 2^18 (T1 44.5 -> 41 ms against 2^18).
 */
export const PARALLEL_MIN_MULT_ADDS = 1 << 14;
/** Below this many elements touched, a memory-bound kernel (BatchNorm, depthwise) stays on one thread (measured as above). */
export const PARALLEL_MIN_ELEMENTS = 1 << 11;

// The registry, in declaration order (an explicit list: a name declared twice throws).
type AnyKernel = Kernel<string, string, string>;
const kernels: AnyKernel[] = [];

/** Declare a kernel (at module load, next to its math). */
export function declareKernel<I extends string, F extends string, B extends string>(declaration: KernelDeclaration<I, F, B>): Kernel<I, F, B> {
  if (kernels.some((k) => k.name === declaration.name)) throw new Error(`declareKernel: a kernel named ${declaration.name} is already declared`);
  if (declaration.ints.length > MAX_INTS || declaration.floats.length > MAX_FLOATS || declaration.reads.length + declaration.writes.length > MAX_BUFFERS) {
    throw new Error(`declareKernel ${declaration.name}: at most ${MAX_INTS} ints, ${MAX_FLOATS} floats and ${MAX_BUFFERS} buffers`);
  }
  const functions = new Map<string, unknown>();
  for (const k of [...kernels, declaration]) {
    for (const f of [k.slice, ...k.deps]) {
      if (functions.has(f.name) && functions.get(f.name) !== f) throw new Error(`declareKernel ${declaration.name}: two different functions named ${f.name} would be shipped to the workers`);
      functions.set(f.name, f);
    }
  }
  const kernel = { ...declaration, index: kernels.length };
  kernels.push(kernel as unknown as AnyKernel);
  // The workers run the program they were started with: a kernel declared after setThreads
  // needs new ones, else it would run on the calling thread alone without a word. (In a
  // browser workers start asynchronously: there the next startThreads brings them up to date.)
  if (pool !== null && IN_NODE) {
    const threads = pool.threads;
    pool.close();
    pool = new ThreadPool(threads);
  }
  return kernel;
}

/** The buffer names of a kernel, in the order their ids are written. */
function bufferNames(k: KernelDeclaration<string, string, string>): string[] {
  return [...k.reads, ...k.writes];
}

/**
 * Source of a function that builds a kernel's parameter and buffer objects from the shared
 * arrays: an object literal with the declared names, so every call (on any thread) makes
 * objects of one shape. Used on the calling thread (new Function) and in the workers alike.
 */
function decoderSource(k: KernelDeclaration<string, string, string>): string {
  const fields = [...k.ints.map((n, i) => `${n}: ints[${i}]`), ...k.floats.map((n, i) => `${n}: floats[${i}]`)];
  // ids[i] < 0: the buffer is floats [offsets[i], + lengths[i]) of the arena.
  const buffers = bufferNames(k).map((n, i) => `${n}: ids[${i}] < 0 ? arena(offsets[${i}], lengths[${i}]) : bufs[ids[${i}]]`);
  return `{ params: (ints, floats) => ({ ${fields.join(', ')} }), buffers: (bufs, ids, offsets, lengths, arena) => ({ ${buffers.join(', ')} }) }`;
}

/** A thread's view of the arena's floats [offset, offset + length). */
type ArenaSlice = (offset: number, length: number) => Float32Array;

type Decoder = {
  params: (ints: Int32Array, floats: Float64Array) => Record<string, number>;
  buffers: (bufs: (KernelBuffer | undefined)[], ids: Int32Array, offsets: Int32Array, lengths: Int32Array, arena: ArenaSlice) => Record<string, KernelBuffer>;
};

/**
 * The arena's floats [offset, offset + length) as a view, for a thread holding the arena (or
 * null). A view of the whole arena is kept and made again when the arena has grown past it (a
 * shared memory's buffer never detaches: it is a longer one after growing).
 */
function arenaSlicer(memory: WebAssembly.Memory | null): ArenaSlice {
  let all = memory === null ? new Float32Array(0) : new Float32Array(memory.buffer);
  return (offset, length) => {
    if (offset + length > all.length) all = new Float32Array(memory!.buffer);
    return all.subarray(offset, offset + length);
  };
}

function makeDecoder(k: AnyKernel): Decoder {
  return new Function(`return ${decoderSource(k)};`)() as Decoder;
}

/**
 * The worker's side: wait for a job, take chunks of it until none are left, count it done.
 * Runs as source text in the worker, so it may not refer to imports. In Node it is a
 * worker_threads worker (shared memory in `workerData`, new buffers read synchronously off its
 * port); in a browser a Web Worker, which gets its shared memory in a first message and, when
 * new buffers are announced, returns to its event loop until their messages have arrived (a
 * Web Worker has no synchronous read of its port). The jobs themselves run the same way.
 */
async function workerMain(slices: ((p: Record<string, number>, b: Record<string, KernelBuffer>, lo: number, hi: number, thread: ThreadContext) => void)[], decoders: Decoder[], layout: { ints: number; floats: number; ids: number }, spinChecks: number, at: typeof CONTROL, makeArenaSlicer: typeof arenaSlicer): Promise<void> {
  type BufferMessage = { forget?: number; id: number; buffer: ArrayBufferLike; f64: boolean };
  // (Not `require`: a bundler rewrites that name, and this function ships as its source text.)
  const inNode = typeof process === 'object' && typeof process.versions?.node === 'string';
  const threads = inNode ? (process.getBuiltinModule('node:worker_threads') as typeof import('node:worker_threads')) : null;
  const inbox: BufferMessage[] = [];
  let wake: (() => void) | null = null;
  const scope = globalThis as unknown as { onmessage: ((e: { data: unknown }) => void) | null };
  const data = (inNode ? threads!.workerData : await new Promise<unknown>((done) => (scope.onmessage = (e) => done(e.data)))) as { control: SharedArrayBuffer; params: SharedArrayBuffer; errorText: SharedArrayBuffer; arena: WebAssembly.Memory | null };
  if (!inNode) {
    scope.onmessage = (e) => {
      inbox.push(e.data as BufferMessage);
      wake?.();
      wake = null;
    };
  }
  const { control, params, errorText } = data;
  const ctl = new Int32Array(control);
  const ints = new Int32Array(params, 0, layout.ints);
  const ids = new Int32Array(params, layout.ints * 4, layout.ids);
  const offsets = new Int32Array(params, (layout.ints + layout.ids) * 4, layout.ids);
  const lengths = new Int32Array(params, (layout.ints + 2 * layout.ids) * 4, layout.ids);
  const floats = new Float64Array(params, (layout.ints + 3 * layout.ids) * 4, layout.floats);
  const arena = makeArenaSlicer(data.arena);
  const thread: ThreadContext = { arena: data.arena, cache: {} };
  const bufs: (KernelBuffer | undefined)[] = [];
  const learn = (msg: BufferMessage) => {
    if (msg.forget !== undefined) bufs[msg.forget] = undefined;
    else bufs[msg.id] = msg.f64 ? new Float64Array(msg.buffer) : new Float32Array(msg.buffer);
  };
  let seen = 0, messages = 0;
  Atomics.add(ctl, at.READY, 1);
  Atomics.notify(ctl, at.READY);
  for (;;) {
    // GENERATION: check it spinChecks times, then sleep until it changes. Waking up is not a new
    // job: the caller publishes a job (GENERATION + 1) and then notifies, and when it is preempted
    // between the two, this thread can see the job, do all of it, and be asleep again before that
    // notify arrives. Taking that wake-up as a job would run the old job's kernel on chunks of the
    // next job's counter and count it done: the next job returns with chunks never computed (the
    // cause of the rare NaN losses and gradient differences under load). So sleep again until
    // GENERATION really moves.
    for (let i = 0; i < spinChecks && Atomics.load(ctl, at.GENERATION) === seen; i++);
    while (Atomics.load(ctl, at.GENERATION) === seen) Atomics.wait(ctl, at.GENERATION, seen);
    seen = Atomics.load(ctl, at.GENERATION);
    // New shared memory arrives as messages before the job that needs it (MESSAGES counts them,
    // one message to each worker per count).
    const announced = Atomics.load(ctl, at.MESSAGES);
    if (inNode && announced !== messages) {
      for (let m = threads!.receiveMessageOnPort(threads!.parentPort!); m !== undefined; m = threads!.receiveMessageOnPort(threads!.parentPort!)) learn(m.message as BufferMessage);
      messages = announced;
    }
    while (!inNode && messages < announced) {
      if (inbox.length === 0) await new Promise<void>((done) => (wake = done));
      learn(inbox.shift()!);
      messages++;
    }
    const kernel = Atomics.load(ctl, at.KERNEL);
    if (kernel < 0) break;
    try {
      const p = decoders[kernel].params(ints, floats);
      const b = decoders[kernel].buffers(bufs, ids, offsets, lengths, arena);
      const chunks = Atomics.load(ctl, at.CHUNKS), total = Atomics.load(ctl, at.TOTAL);
      for (let c = Atomics.add(ctl, at.NEXT_CHUNK, 1); c < chunks; c = Atomics.add(ctl, at.NEXT_CHUNK, 1)) {
        slices[kernel](p, b, Math.floor((total * c) / chunks), Math.floor((total * (c + 1)) / chunks), thread);
      }
    } catch (e) {
      // Report (once) instead of dying: the caller is waiting for this thread to count done.
      if (Atomics.compareExchange(ctl, at.FAILED, 0, 1) === 0) {
        const text = new TextEncoder().encode(String((e as Error)?.stack ?? e)).subarray(0, 4095);
        new Uint8Array(errorText).set(text);
        new Uint8Array(errorText)[text.length] = 0;
      }
    }
    Atomics.add(ctl, at.DONE, 1);
    Atomics.notify(ctl, at.DONE);
  }
}

/** True in Node (worker_threads); false in a browser (Web Workers). */
const IN_NODE = typeof process === 'object' && typeof process.versions?.node === 'string';

/** The worker interface the pool needs, from worker_threads or the browser. */
interface PoolWorker {
  postMessage(message: unknown): void;
  terminate(): unknown;
}

const LAYOUT = { ints: MAX_INTS, floats: MAX_FLOATS, ids: MAX_BUFFERS };

/** The workers' program: every declared kernel's prelude, functions and decoder, then the loop. */
export function workerSource(): string {
  const shipped = new Set<(...args: never[]) => unknown>();
  for (const k of kernels) for (const f of [...k.deps, k.slice]) shipped.add(f);
  return [
    'const __name = (f) => f;',
    // A prelude several kernels share (the same text) is shipped once: its consts declared once.
    ...new Set(kernels.flatMap((k) => (k.prelude ? [k.prelude] : []))),
    ...[...shipped].map((f) => f.toString()),
    workerMain.toString(),
    arenaSlicer.toString(),
    `workerMain([${kernels.map((k) => k.slice.name).join(', ')}], [${kernels.map(decoderSource).join(', ')}], ${JSON.stringify(LAYOUT)}, ${SPIN_CHECKS}, ${JSON.stringify(CONTROL)}, arenaSlicer);`,
  ].join('\n');
}

class ThreadPool {
  private readonly control = new SharedArrayBuffer(CONTROL_INTS * 4);
  // The parameters: ints, buffer ids, arena offsets, arena lengths, then floats (8-byte aligned: MAX_INTS + 3 MAX_BUFFERS is even).
  private readonly params = new SharedArrayBuffer((MAX_INTS + 3 * MAX_BUFFERS) * 4 + MAX_FLOATS * 8);
  private readonly errorText = new SharedArrayBuffer(ERROR_BYTES);
  /** The control block (GENERATION, DONE, ...), as an Int32Array for Atomics. */
  readonly ctl = new Int32Array(this.control);
  readonly ints = new Int32Array(this.params, 0, MAX_INTS);
  readonly ids = new Int32Array(this.params, MAX_INTS * 4, MAX_BUFFERS);
  readonly offsets = new Int32Array(this.params, (MAX_INTS + MAX_BUFFERS) * 4, MAX_BUFFERS);
  readonly lengths = new Int32Array(this.params, (MAX_INTS + 2 * MAX_BUFFERS) * 4, MAX_BUFFERS);
  readonly floats = new Float64Array(this.params, (MAX_INTS + 3 * MAX_BUFFERS) * 4, MAX_FLOATS);
  /** This thread's view of the arena. */
  readonly arena = arenaSlicer(arenaMemory());
  private readonly workers: PoolWorker[] = [];
  /** Buffers the workers know, by id (the same ids on every thread). */
  readonly bufs: (KernelBuffer | undefined)[] = [];
  private readonly bufferIds = new WeakMap<ArrayBufferLike, number>();
  /** How many kernels the workers were given (kernels declared later run on one thread). */
  readonly kernelCount = kernels.length;
  /** Staging copies of operands outside shared memory, per kernel and buffer name. */
  private readonly staging = new Map<string, KernelBuffer>();

  /** Resolves when every worker has started (at once in Node, where the constructor waits). */
  readonly started: Promise<void>;

  constructor(readonly threads: number) {
    const source = workerSource();
    // A program that does not compile would make every worker fail silently while this thread
    // waits for them below: say why at once instead.
    try {
      new Function(source);
    } catch (e) {
      throw new Error(`threads: the worker threads' program does not compile: ${(e as Error).message}`);
    }
    const shared = { control: this.control, params: this.params, errorText: this.errorText, arena: arenaMemory() };
    const url = IN_NODE ? '' : URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    for (let i = 1; i < threads; i++) {
      if (IN_NODE) {
        const w = new Worker(source, { eval: true, workerData: shared });
        w.unref(); // idle workers never keep the process alive
        this.workers.push(w);
      } else {
        const w = new (globalThis as unknown as { Worker: new (url: string) => PoolWorker }).Worker(url);
        w.postMessage(shared);
        this.workers.push(w);
      }
    }
    const deadline = Date.now() + WORKER_START_TIMEOUT_MS;
    const late = () => {
      this.close();
      return new Error(`threads: only ${Atomics.load(this.ctl, READY)} of ${threads - 1} worker threads started within ${WORKER_START_TIMEOUT_MS / 1000} s`);
    };
    if (!IN_NODE) {
      // A browser starts a worker only while the thread that made it runs its event loop: wait
      // without blocking it.
      this.started = (async () => {
        while (Atomics.load(this.ctl, READY) < threads - 1) {
          if (Date.now() > deadline) throw late();
          await new Promise((done) => setTimeout(done, 5));
        }
      })();
      return;
    }
    // Wait (synchronously) until every worker has started; a worker that cannot start must not
    // leave the first job waiting forever.
    for (let ready = Atomics.load(this.ctl, READY); ready < threads - 1; ready = Atomics.load(this.ctl, READY)) {
      if (Date.now() > deadline || Atomics.wait(this.ctl, READY, ready, deadline - Date.now()) === 'timed-out') throw late();
    }
    this.started = Promise.resolve();
  }

  /** The id under which the workers know this shared buffer (told to them on first use). */
  idOf(buffer: KernelBuffer): number {
    let id = this.bufferIds.get(buffer.buffer);
    if (id === undefined) {
      id = this.bufs.indexOf(undefined);
      if (id < 0) id = this.bufs.length;
      this.bufs[id] = buffer;
      this.bufferIds.set(buffer.buffer, id);
      for (const w of this.workers) w.postMessage({ id, buffer: buffer.buffer, f64: buffer instanceof Float64Array });
      Atomics.add(this.ctl, MESSAGES, 1);
    }
    return id;
  }

  /** The workers forget a buffer (the cache dropped it). */
  forget(buffer: KernelBuffer): void {
    const id = this.bufferIds.get(buffer.buffer);
    if (id === undefined) return;
    this.bufferIds.delete(buffer.buffer);
    this.bufs[id] = undefined;
    for (const w of this.workers) w.postMessage({ forget: id });
    Atomics.add(this.ctl, MESSAGES, 1);
  }

  /** A shared staging buffer of at least `like.length` elements of `like`'s type, for (kernel, name). */
  stage(key: string, like: KernelBuffer): KernelBuffer {
    let buffer = this.staging.get(key);
    const f64 = like instanceof Float64Array;
    if (buffer === undefined || buffer.length < like.length || buffer instanceof Float64Array !== f64) {
      if (buffer !== undefined) this.forget(buffer);
      const n = Math.max(like.length, 64, buffer === undefined ? 0 : Math.ceil(buffer.length * 1.5));
      buffer = f64 ? new Float64Array(new SharedArrayBuffer(n * 8)) : new Float32Array(new SharedArrayBuffer(n * 4));
      this.staging.set(key, buffer);
    }
    return buffer;
  }

  /** Publish the job (parameters already written), take chunks here too, wait, surface failures. */
  dispatch(kernel: AnyKernel, decoder: Decoder, total: number): void {
    const chunks = Math.min(total, this.threads * kernel.chunksPerThread);
    Atomics.store(this.ctl, DONE, 0);
    Atomics.store(this.ctl, FAILED, 0);
    Atomics.store(this.ctl, NEXT_CHUNK, 0);
    Atomics.store(this.ctl, CHUNKS, chunks);
    Atomics.store(this.ctl, TOTAL, total);
    Atomics.store(this.ctl, KERNEL, kernel.index);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
    let failure: unknown = null;
    try {
      const p = decoder.params(this.ints, this.floats);
      const b = decoder.buffers(this.bufs, this.ids, this.offsets, this.lengths, this.arena);
      for (let c = Atomics.add(this.ctl, NEXT_CHUNK, 1); c < chunks; c = Atomics.add(this.ctl, NEXT_CHUNK, 1)) {
        kernel.slice(p, b, Math.floor((total * c) / chunks), Math.floor((total * (c + 1)) / chunks), callingThread);
      }
    } catch (e) {
      failure = e;
    }
    const others = this.threads - 1;
    for (let i = 0; i < SPIN_CHECKS && Atomics.load(this.ctl, DONE) < others; i++);
    for (let done = Atomics.load(this.ctl, DONE); done < others; done = Atomics.load(this.ctl, DONE)) {
      Atomics.wait(this.ctl, DONE, done);
    }
    if (failure !== null) throw failure;
    if (Atomics.load(this.ctl, FAILED) !== 0) {
      const bytes = new Uint8Array(this.errorText);
      const text = new TextDecoder().decode(bytes.slice(0, Math.max(0, bytes.indexOf(0))));
      throw new Error(`threads: a worker thread failed: ${text} (kernel ${kernel.name})`);
    }
  }

  close(): void {
    Atomics.store(this.ctl, KERNEL, EXIT);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
  }
}

/** The calling thread's context (each worker has its own). */
const callingThread: ThreadContext = { arena: arenaMemory(), cache: {} };

let pool: ThreadPool | null = null;
let jobsOnThreads = 0;
onCacheDrop((buffer) => pool?.forget(buffer));
const decoders: Decoder[] = [];

/**
 * Use `n` threads (the calling thread and n - 1 workers) for the kernels that can split their
 * work, like torch.set_num_threads. The default is 1; the CLI sets the number of cores.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new RangeError(`setThreads: need an integer from 1 to ${MAX_THREADS}, got ${n}`);
  if (pool?.threads === n || (pool === null && n === 1)) return;
  if (!IN_NODE && n > 1) throw new Error('setThreads: in a browser the workers start asynchronously: use `await startThreads(n)`');
  pool?.close();
  pool = n > 1 ? new ThreadPool(n) : null;
}

/**
 * `setThreads` that also works in a browser, where Web Workers start only after the calling
 * thread returns to its event loop: the pool is used once all of them run. Threads there need
 * SharedArrayBuffer, i.e. a cross-origin isolated page (COOP / COEP headers).
 */
export async function startThreads(n: number): Promise<void> {
  if (IN_NODE || n === 1 || (pool?.threads === n && pool.kernelCount === kernels.length)) return setThreads(n);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new RangeError(`startThreads: need an integer from 1 to ${MAX_THREADS}, got ${n}`);
  if (typeof SharedArrayBuffer !== 'function') throw new Error('startThreads: no SharedArrayBuffer here (the page is not cross-origin isolated): the kernels run on one thread');
  const next = new ThreadPool(n);
  await next.started;
  pool?.close();
  pool = next;
}

/** The number of threads the kernels use now. */
export function getThreads(): number {
  return pool?.threads ?? 1;
}

/**
 * The pool's shared control block and its indices by name, or null without threads. For tests
 * only (they play the calling thread's part in the protocol); not exported by the package.
 */
export function poolControlForTests(): { control: Int32Array; at: typeof CONTROL } | null {
  return pool === null ? null : { control: pool.ctl, at: CONTROL };
}

/** How many kernel jobs have run split over threads (tests check that threading happens). */
export function kernelJobsOnThreads(): number {
  return jobsOnThreads;
}

/** The number of cores (the CLI's default thread count). */
export function defaultThreads(): number {
  return IN_NODE ? availableParallelism() : Math.max(1, (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1);
}

/** Whether a buffer can be handed to the workers as it is: one the cache handed out (in its arena, or a whole SharedArrayBuffer), or a whole SharedArrayBuffer of float64. */
function usableInPlace(buffer: KernelBuffer): boolean {
  return buffer instanceof Float32Array ? isCached(buffer) : buffer.buffer instanceof SharedArrayBuffer && buffer.byteOffset === 0 && buffer.byteLength === buffer.buffer.byteLength;
}

/**
 * Run a declared kernel over the range [0, total): on every thread when there are threads, the
 * work is worth it and its large buffers are in shared memory; else its slice on the whole
 * range, here. `work` is the caller's measure of the job's size, compared with the kernel's
 * `minWork`.
 */
export function runKernel<I extends string, F extends string, B extends string>(kernel: Kernel<I, F, B>, params: Record<I | F, number>, buffers: Record<B, KernelBuffer>, total: number, work: number): void {
  if (total <= 0) return;
  const k = kernel as unknown as AnyKernel;
  const threaded = pool !== null && work >= k.minWork && k.index < pool.kernelCount && total > 1 && k.large.every((name) => usableInPlace((buffers as Record<string, KernelBuffer>)[name]));
  if (!threaded) {
    kernel.slice(params, buffers, 0, total, callingThread);
    return;
  }
  const p = pool!;
  const decoder = (decoders[k.index] ??= makeDecoder(k));
  k.ints.forEach((name, i) => {
    const v = (params as Record<string, number>)[name];
    if (!Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) throw new RangeError(`kernel ${k.name}: integer parameter ${name} is ${v}`);
    p.ints[i] = v;
  });
  k.floats.forEach((name, i) => (p.floats[i] = (params as Record<string, number>)[name]));
  // Buffers: in place when they are shared memory, else copied into the kernel's staging buffer
  // (and, when the kernel writes them, copied back after the job).
  const copiedOut: [KernelBuffer, KernelBuffer][] = [];
  bufferNames(k).forEach((name, i) => {
    const buffer = (buffers as Record<string, KernelBuffer>)[name];
    const offset = buffer instanceof Float32Array ? arenaOffset(buffer) : -1;
    if (offset >= 0) {
      p.ids[i] = -1;
      p.offsets[i] = offset;
      p.lengths[i] = buffer.length;
      return;
    }
    if (usableInPlace(buffer)) {
      p.ids[i] = p.idOf(buffer);
      return;
    }
    const staged = p.stage(`${k.name}.${name}`, buffer);
    staged.set(buffer);
    p.ids[i] = p.idOf(staged);
    if (k.writes.includes(name)) copiedOut.push([staged, buffer]);
  });
  jobsOnThreads++;
  p.dispatch(k, decoder, total);
  for (const [staged, buffer] of copiedOut) buffer.set(staged.subarray(0, buffer.length));
}
