// Both cores: a pool of worker threads that run slices of GEMMs and of other kernels.
//
// The calling thread and the workers share memory: a growable arena (a SharedArrayBuffer) into
// which GEMM operands are copied when they live elsewhere, and the buffer cache's own buffers
// (src/tensor/buffers.ts: every buffer an op takes inside `reuseBuffers` is a SharedArrayBuffer),
// which each worker learns about once and then reads and writes in place. A job publishes its
// parameters in a shared Float64Array, bumps a generation counter and wakes the workers with
// Atomics.notify; every thread computes its own slice, and the caller waits on a done counter
// with Atomics.wait. No message is sent per job.
//
// Determinism: work is split by rows of C (GEMM), by image planes or by channels (depthwise,
// BatchNorm), never along a sum, so every output element is computed by exactly the same
// sequence of operations as on one thread. Results are bit-identical for any thread count (tested).
//
// The workers run the kernels as source text (`Function.prototype.toString`): a worker cannot
// import TypeScript when the library runs from source, and source text works the same from tsx,
// from vitest and from the built package. The rule this imposes on a kernel: it may call only
// the functions it lists as dependencies, and no imported name (transpilers rewrite those).

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { isCached, onCacheDrop } from '../tensor/buffers.js';
import { checkGemmArgs, gemm, gemmCore, KC, MC, microKernel4x4, MR, NC, NR, packA, packB, runGemmSlice, scaleC, sliceOf, type GemmArgs } from './gemm.js';

/** Below this many multiply-adds a GEMM runs on the calling thread (waking workers costs ~10-50 us). */
export const PARALLEL_MIN_MULT_ADDS = 1 << 18;
/** Below this many elements touched, a memory-bound kernel (BatchNorm, depthwise) stays on one thread. */
export const PARALLEL_MIN_ELEMENTS = 1 << 15;

// Layout of the shared control block.
const GENERATION = 0;
const DONE = 1;
const OP = 2;
const OP_GEMM = 1;
const OP_EXIT = 2;
/** Kernel codes start here (index into the registry + FIRST_KERNEL). */
const FIRST_KERNEL = 3;
const READY = 3;
const FAILED = 4;
/** How long to wait for workers to start before giving up on threads. */
const WORKER_START_TIMEOUT_MS = 20_000;
/** Parameters: a kernel's own arguments in [0, 32); each thread's slice [lo, hi) at 32 + 2 * index. */
const PARAM_SLOTS = 96;
const RANGE_BASE = 32;
export const MAX_THREADS = (PARAM_SLOTS - RANGE_BASE) / 2;
const ERROR_BYTES = 4096;

// Layout of the shared job parameters (GEMM; offsets are element offsets into the arena).
const P = { transA: 0, transB: 1, M: 2, N: 3, K: 4, alpha: 5, aOffset: 6, lda: 7, bOffset: 8, ldb: 9, beta: 10, cOffset: 11, ldc: 12, threads: 13, aId: 14, bId: 15, cId: 16 } as const;

/** The buffers a kernel can reach, by the ids its parameters name. */
export type SharedBuffers = (Float32Array | Float64Array | undefined)[];

/**
 * A kernel the worker threads can run: `run(par, bufs, lo, hi)` does the slice [lo, hi) of the
 * job described by `par` (numbers, buffer ids into `bufs`). It and its `deps` are shipped as
 * source text, so they may call only each other (see the file comment).
 */
export interface ParallelKernel {
  run: (par: Float64Array, bufs: SharedBuffers, lo: number, hi: number) => void;
  deps: readonly ((...args: never[]) => unknown)[];
}

const kernels: ParallelKernel[] = [];

/** Make a kernel available to the worker threads (modules call this when they load). */
export function registerKernel(kernel: ParallelKernel): ParallelKernel {
  const names = new Map<string, unknown>();
  for (const k of [...kernels, kernel]) {
    for (const f of [k.run, ...k.deps]) {
      if (names.has(f.name) && names.get(f.name) !== f) throw new Error(`registerKernel: two different functions named ${f.name}`);
      names.set(f.name, f);
    }
  }
  kernels.push(kernel);
  return kernel;
}

/**
 * The worker's side: wait for a job, run its slice, count it done. Runs as source text in the
 * worker, so it may not refer to imports: the runners come in as arguments.
 */
function workerMain(runGemm: (par: Float64Array, A: Float32Array, B: Float32Array, C: Float32Array, index: number) => void, runners: ((par: Float64Array, bufs: SharedBuffers, lo: number, hi: number) => void)[]): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const threads = require('node:worker_threads');
  const { control, params, errorText, index } = threads.workerData as { control: SharedArrayBuffer; params: SharedArrayBuffer; errorText: SharedArrayBuffer; index: number };
  const ctl = new Int32Array(control);
  const par = new Float64Array(params);
  const bufs: SharedBuffers = [];
  let arena = new Float32Array(0);
  let seen = 0;
  Atomics.add(ctl, 3, 1); // ready
  Atomics.notify(ctl, 3);
  for (;;) {
    Atomics.wait(ctl, 0, seen);
    seen = Atomics.load(ctl, 0);
    // New shared memory arrives as messages before the job that needs it.
    for (let m = threads.receiveMessageOnPort(threads.parentPort); m !== undefined; m = threads.receiveMessageOnPort(threads.parentPort)) {
      const msg = m.message;
      if (msg.arena !== undefined) arena = new Float32Array(msg.arena);
      else if (msg.forget !== undefined) bufs[msg.forget] = undefined;
      else bufs[msg.id] = msg.f64 ? new Float64Array(msg.buffer) : new Float32Array(msg.buffer);
    }
    const op = Atomics.load(ctl, 2);
    if (op === 2) break;
    try {
      if (op === 1) {
        // Operand ids at 14..16: a cached buffer, or -1 for the arena.
        const pick = (id: number) => (id < 0 ? arena : (bufs[id] as Float32Array));
        runGemm(par, pick(par[14]), pick(par[15]), pick(par[16]), index);
      }
      else runners[op - 3](par, bufs, par[32 + 2 * index], par[33 + 2 * index]);
    } catch (e) {
      // Report (once) instead of dying: the caller is waiting for this thread to count done.
      if (Atomics.compareExchange(ctl, 4, 0, 1) === 0) {
        const text = new TextEncoder().encode(String((e as Error)?.stack ?? e)).subarray(0, 4095);
        new Uint8Array(errorText).set(text);
        new Uint8Array(errorText)[text.length] = 0;
      }
    }
    Atomics.add(ctl, 1, 1);
    Atomics.notify(ctl, 1);
  }
}

export function workerSource(): string {
  const shipped = new Set<(...args: never[]) => unknown>();
  for (const k of kernels) for (const f of [...k.deps, k.run]) shipped.add(f);
  return [
    'const __name = (f) => f;',
    `const MR = ${MR}, NR = ${NR}, KC = ${KC}, MC = ${MC}, NC = ${NC};`,
    'let packedA = new Float64Array(MC * KC);',
    'let packedB = new Float64Array(NC * KC);',
    ...[scaleC, packA, packB, microKernel4x4, gemmCore, sliceOf, runGemmSlice, workerMain].map((f) => f.toString()),
    ...[...shipped].map((f) => f.toString()),
    `workerMain(runGemmSlice, [${kernels.map((k) => k.run.name).join(', ')}]);`,
  ].join('\n');
}

class ThreadPool {
  private readonly control = new SharedArrayBuffer(16 * 4);
  private readonly params = new SharedArrayBuffer(PARAM_SLOTS * 8);
  private readonly errorText = new SharedArrayBuffer(ERROR_BYTES);
  private readonly ctl = new Int32Array(this.control);
  readonly par = new Float64Array(this.params);
  private readonly workers: Worker[] = [];
  private arena = new Float32Array(new SharedArrayBuffer(0));
  /** Buffers the workers know, by id (the same ids on every thread). */
  readonly bufs: SharedBuffers = [];
  private readonly ids = new WeakMap<ArrayBufferLike, number>();
  /** How many kernels the workers were given (kernels registered later run on one thread). */
  readonly kernelCount = kernels.length;
  /** Staging buffers for small operands that do not live in shared memory (weights), by slot. */
  private readonly staging: (Float32Array | Float64Array)[] = [];

  constructor(readonly threads: number) {
    const source = workerSource();
    for (let i = 1; i < threads; i++) {
      const w = new Worker(source, { eval: true, workerData: { control: this.control, params: this.params, errorText: this.errorText, index: i } });
      w.unref(); // idle workers never keep the process alive
      this.workers.push(w);
    }
    // Wait (synchronously) until every worker has started; a worker that cannot start must not
    // leave the first GEMM waiting forever.
    const deadline = Date.now() + WORKER_START_TIMEOUT_MS;
    for (let ready = Atomics.load(this.ctl, READY); ready < threads - 1; ready = Atomics.load(this.ctl, READY)) {
      if (Date.now() > deadline || Atomics.wait(this.ctl, READY, ready, deadline - Date.now()) === 'timed-out') {
        this.close();
        throw new Error(`threads: only ${Atomics.load(this.ctl, READY)} of ${threads - 1} worker threads started within ${WORKER_START_TIMEOUT_MS / 1000} s`);
      }
    }
  }

  /** A shared arena of at least `floats` floats (grown, and re-sent to the workers, when needed). */
  reserve(floats: number): Float32Array {
    if (this.arena.length < floats) {
      const size = Math.max(floats, Math.ceil(this.arena.length * 1.5));
      this.arena = new Float32Array(new SharedArrayBuffer(size * 4));
      for (const w of this.workers) w.postMessage({ arena: this.arena.buffer });
    }
    return this.arena;
  }

  /** The id under which the workers know this shared buffer (told to them on first use). */
  idOf(buffer: Float32Array | Float64Array): number {
    let id = this.ids.get(buffer.buffer);
    if (id === undefined) {
      id = this.bufs.indexOf(undefined);
      if (id < 0) id = this.bufs.length;
      this.bufs[id] = buffer;
      this.ids.set(buffer.buffer, id);
      for (const w of this.workers) w.postMessage({ id, buffer: buffer.buffer, f64: buffer instanceof Float64Array });
    }
    return id;
  }

  /** The workers forget a buffer (the cache dropped it). */
  forget(buffer: Float32Array | Float64Array): void {
    const id = this.ids.get(buffer.buffer);
    if (id === undefined) return;
    this.ids.delete(buffer.buffer);
    this.bufs[id] = undefined;
    for (const w of this.workers) w.postMessage({ forget: id });
  }

  /** A shared buffer for slot `slot` of at least `length` elements (float64 or float32). */
  stage(slot: number, length: number, f64: boolean): Float32Array | Float64Array {
    let buffer = this.staging[slot];
    if (buffer === undefined || buffer.length < length || buffer instanceof Float64Array !== f64) {
      if (buffer !== undefined) this.forget(buffer);
      const n = Math.max(length, 64);
      buffer = f64 ? new Float64Array(new SharedArrayBuffer(n * 8)) : new Float32Array(new SharedArrayBuffer(n * 4));
      this.staging[slot] = buffer;
    }
    return buffer;
  }

  /** Wake the workers for job `op`, run slice 0 here, wait for the others, surface any failure. */
  private dispatch(op: number, runHere: () => void): void {
    Atomics.store(this.ctl, DONE, 0);
    Atomics.store(this.ctl, FAILED, 0);
    Atomics.store(this.ctl, OP, op);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
    let failure: unknown = null;
    try {
      runHere();
    } catch (e) {
      failure = e;
    }
    const others = this.threads - 1;
    for (let done = Atomics.load(this.ctl, DONE); done < others; done = Atomics.load(this.ctl, DONE)) {
      Atomics.wait(this.ctl, DONE, done);
    }
    if (failure !== null) throw failure;
    if (Atomics.load(this.ctl, FAILED) !== 0) {
      const bytes = new Uint8Array(this.errorText);
      const text = new TextDecoder().decode(bytes.slice(0, Math.max(0, bytes.indexOf(0))));
      throw new Error(`threads: a worker thread failed: ${text}`);
    }
  }

  /**
   * C = alpha op(A) op(B) + beta C with each operand in shared memory: a cached buffer, or the
   * arena (null). Offsets are into the operand's own buffer.
   */
  gemmShared(a: Omit<GemmArgs, 'A' | 'B' | 'C'>, A: Float32Array | null, B: Float32Array | null, C: Float32Array | null): void {
    const par = this.par;
    par[P.transA] = a.transA ? 1 : 0;
    par[P.transB] = a.transB ? 1 : 0;
    par[P.M] = a.M;
    par[P.N] = a.N;
    par[P.K] = a.K;
    par[P.alpha] = a.alpha;
    par[P.aOffset] = a.aOffset;
    par[P.lda] = a.lda;
    par[P.bOffset] = a.bOffset;
    par[P.ldb] = a.ldb;
    par[P.beta] = a.beta;
    par[P.cOffset] = a.cOffset;
    par[P.ldc] = a.ldc;
    par[P.threads] = this.threads;
    par[P.aId] = A === null ? -1 : this.idOf(A);
    par[P.bId] = B === null ? -1 : this.idOf(B);
    par[P.cId] = C === null ? -1 : this.idOf(C);
    const arena = this.arena;
    this.dispatch(OP_GEMM, () => runGemmSlice(par, A ?? arena, B ?? arena, C ?? arena, 0));
  }

  /** Run `kernel` over [0, total) split into one contiguous slice per thread (par already filled). */
  runKernel(kernel: ParallelKernel, total: number): void {
    const code = kernels.indexOf(kernel);
    for (let i = 0; i < this.threads; i++) {
      this.par[RANGE_BASE + 2 * i] = Math.floor((total * i) / this.threads);
      this.par[RANGE_BASE + 2 * i + 1] = Math.floor((total * (i + 1)) / this.threads);
    }
    this.dispatch(FIRST_KERNEL + code, () => kernel.run(this.par, this.bufs, this.par[RANGE_BASE], this.par[RANGE_BASE + 1]));
  }

  close(): void {
    Atomics.store(this.ctl, OP, OP_EXIT);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
  }
}

let pool: ThreadPool | null = null;
let jobsOnThreads = 0;
onCacheDrop((buffer) => pool?.forget(buffer));

/**
 * Use `n` threads (the calling thread and n - 1 workers) for the kernels that can split their
 * work, like torch.set_num_threads. The default is 1; the CLI sets the number of cores.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new RangeError(`setThreads: need an integer from 1 to ${MAX_THREADS}, got ${n}`);
  if (pool?.threads === n || (pool === null && n === 1)) return;
  pool?.close();
  pool = n > 1 ? new ThreadPool(n) : null;
}

export function getThreads(): number {
  return pool?.threads ?? 1;
}

/** How many non-GEMM kernel jobs have run split over threads (tests check that threading happens). */
export function kernelJobsOnThreads(): number {
  return jobsOnThreads;
}

export function defaultThreads(): number {
  return availableParallelism();
}

/**
 * A job for `kernel` on all threads, or null when it should run on this thread alone: one
 * thread, a kernel the workers were not given, too little work, or a large operand outside
 * shared memory (copying it in would cost as much as the work).
 */
export function kernelJob(kernel: ParallelKernel, elements: number, large: readonly (Float32Array | null)[]): KernelJob | null {
  if (pool === null || elements < PARALLEL_MIN_ELEMENTS || kernels.indexOf(kernel) >= pool.kernelCount) return null;
  for (const b of large) if (b !== null && !isCached(b)) return null;
  return new KernelJob(pool, kernel);
}

/** Fills a kernel's parameters, then runs it on every thread. */
export class KernelJob {
  constructor(private readonly pool: ThreadPool, private readonly kernel: ParallelKernel) {}

  get par(): Float64Array {
    return this.pool.par;
  }

  /** The id of a buffer already in shared memory (a cached buffer), or -1 for null. */
  shared(buffer: Float32Array | Float64Array | null): number {
    return buffer === null ? -1 : this.pool.idOf(buffer);
  }

  /** Copy a small operand (a weight, per-channel numbers) into staging slot `slot`; its id. */
  staged(slot: number, values: Float32Array | Float64Array): number {
    const buffer = this.pool.stage(slot, values.length, values instanceof Float64Array);
    buffer.set(values);
    return this.pool.idOf(buffer);
  }

  /** A shared float64 scratch buffer in slot `slot` (e.g. per-channel results), zero-filled. */
  scratch64(slot: number, length: number): { id: number; data: Float64Array } {
    const buffer = this.pool.stage(slot, length, true) as Float64Array;
    buffer.fill(0, 0, length);
    return { id: this.pool.idOf(buffer), data: buffer };
  }

  /** Copy a staged output back to where it belongs. */
  copyBack(slot: number, out: Float32Array | Float64Array): void {
    out.set(this.pool.stage(slot, out.length, out instanceof Float64Array).subarray(0, out.length));
  }

  run(total: number): void {
    jobsOnThreads++;
    this.pool.runKernel(this.kernel, total);
  }
}

/** Extent of a row-major matrix slice: from its offset to one past its last element. */
function extent(rows: number, cols: number, ld: number): number {
  return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
}

/**
 * GEMM on all threads when it is big enough to pay for the hand-off, else on this one.
 * Operands in the buffer cache's shared memory are used in place; the others are copied into
 * the shared arena (and C copied back).
 */
export function parallelGemm(args: GemmArgs): void {
  if (pool === null || args.M * args.N * args.K < PARALLEL_MIN_MULT_ADDS) {
    gemm(args);
    return;
  }
  checkGemmArgs(args);
  const { transA, transB, M, N, K, lda, ldb, ldc } = args;
  const aShared = isCached(args.A), bShared = isCached(args.B), cShared = isCached(args.C);
  const aLen = aShared ? 0 : transA ? extent(K, M, lda) : extent(M, K, lda);
  const bLen = bShared ? 0 : transB ? extent(N, K, ldb) : extent(K, N, ldb);
  const cLen = cShared ? 0 : extent(M, N, ldc);
  const arena = pool.reserve(aLen + bLen + cLen);
  if (!aShared) arena.set(args.A.subarray(args.aOffset, args.aOffset + aLen), 0);
  if (!bShared) arena.set(args.B.subarray(args.bOffset, args.bOffset + bLen), aLen);
  const cBase = aLen + bLen;
  if (!cShared && args.beta !== 0) arena.set(args.C.subarray(args.cOffset, args.cOffset + cLen), cBase);
  pool.gemmShared(
    { transA, transB, M, N, K, alpha: args.alpha, aOffset: aShared ? args.aOffset : 0, lda, bOffset: bShared ? args.bOffset : aLen, ldb, beta: args.beta, cOffset: cShared ? args.cOffset : cBase, ldc },
    aShared ? args.A : null,
    bShared ? args.B : null,
    cShared ? args.C : null,
  );
  if (cShared) return;
  // Copy back row by row: between rows, C's own buffer may hold other data (ldc > N).
  if (ldc === N) args.C.set(arena.subarray(cBase, cBase + cLen), args.cOffset);
  else for (let i = 0; i < M; i++) args.C.set(arena.subarray(cBase + i * ldc, cBase + i * ldc + N), args.cOffset + i * ldc);
}

/** Shorthand for the common dense case: C(MxN) = op(A) * op(B) (+ C if accumulate). */
export function matmulInto(
  A: Float32Array,
  B: Float32Array,
  C: Float32Array,
  M: number,
  N: number,
  K: number,
  options: { transA?: boolean; transB?: boolean; accumulate?: boolean; aOffset?: number; bOffset?: number; cOffset?: number } = {},
): void {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  parallelGemm({
    transA,
    transB,
    M,
    N,
    K,
    alpha: 1,
    A,
    aOffset: options.aOffset ?? 0,
    lda: transA ? M : K,
    B,
    bOffset: options.bOffset ?? 0,
    ldb: transB ? K : N,
    beta: options.accumulate ? 1 : 0,
    C,
    cOffset: options.cOffset ?? 0,
    ldc: N,
  });
}
