// Both cores: a pool of worker threads that run slices of a GEMM.
//
// The calling thread and the workers share one growable arena (a SharedArrayBuffer). A job
// copies the operands into the arena (or finds them already there), publishes the job's
// parameters in a shared Float64Array, bumps a generation counter and wakes the workers with
// Atomics.notify; every thread computes its own block of rows (or columns) of C, and the caller
// waits on a done counter with Atomics.wait. No message is sent per job.
//
// Determinism: C's rows (or columns) are split, never K, so every element of C is computed by
// exactly the same sequence of operations as on one thread. Results are bit-identical for any
// thread count (tested).
//
// The workers run the kernel functions of gemm.ts, shipped to them as source text: a worker
// cannot import TypeScript when the library runs from source, and source text works the same
// from tsx, from vitest and from the built package.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { checkGemmArgs, gemm, gemmCore, KC, MC, microKernel4x4, MR, NC, NR, packA, packB, runGemmSlice, scaleC, sliceOf, type GemmArgs } from './gemm.js';

/** Below this many multiply-adds a GEMM runs on the calling thread (waking workers costs ~10-50 us). */
export const PARALLEL_MIN_MULT_ADDS = 1 << 18;

// Layout of the shared control block.
const GENERATION = 0;
const DONE = 1;
const OP = 2;
const OP_GEMM = 1;
const OP_EXIT = 2;
const READY = 3;
/** How long to wait for workers to start before giving up on threads. */
const WORKER_START_TIMEOUT_MS = 20_000;

// Layout of the shared job parameters (GEMM; offsets are element offsets into the arena).
const P = { transA: 0, transB: 1, M: 2, N: 3, K: 4, alpha: 5, aOffset: 6, lda: 7, bOffset: 8, ldb: 9, beta: 10, cOffset: 11, ldc: 12, threads: 13 } as const;

/**
 * The worker's side: wait for a job, run its slice, count it done. Runs as source text in the
 * worker, so it may not refer to imports: the slice runner comes in as an argument.
 */
function workerMain(runSlice: (par: Float64Array, arena: Float32Array, index: number) => void): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const threads = require('node:worker_threads');
  const { control, params, index } = threads.workerData as { control: SharedArrayBuffer; params: SharedArrayBuffer; index: number };
  const ctl = new Int32Array(control);
  const par = new Float64Array(params);
  let arena = new Float32Array(0);
  let seen = 0;
  Atomics.add(ctl, 3, 1); // ready
  Atomics.notify(ctl, 3);
  for (;;) {
    Atomics.wait(ctl, 0, seen);
    seen = Atomics.load(ctl, 0);
    // A grown arena arrives as a message before the job that needs it.
    for (let m = threads.receiveMessageOnPort(threads.parentPort); m !== undefined; m = threads.receiveMessageOnPort(threads.parentPort)) {
      arena = new Float32Array(m.message.arena);
    }
    const op = Atomics.load(ctl, 2);
    if (op === 2) break;
    runSlice(par, arena, index);
    Atomics.add(ctl, 1, 1);
    Atomics.notify(ctl, 1);
  }
}

export function workerSource(): string {
  return [
    'const __name = (f) => f;',
    `const MR = ${MR}, NR = ${NR}, KC = ${KC}, MC = ${MC}, NC = ${NC};`,
    'let packedA = new Float64Array(MC * KC);',
    'let packedB = new Float64Array(NC * KC);',
    ...[scaleC, packA, packB, microKernel4x4, gemmCore, sliceOf, runGemmSlice, workerMain].map((f) => f.toString()),
    'workerMain(runGemmSlice);',
  ].join('\n');
}

class ThreadPool {
  private readonly control = new SharedArrayBuffer(16 * 4);
  private readonly params = new SharedArrayBuffer(32 * 8);
  private readonly ctl = new Int32Array(this.control);
  private readonly par = new Float64Array(this.params);
  private readonly workers: Worker[] = [];
  private arena = new Float32Array(new SharedArrayBuffer(0));

  constructor(readonly threads: number) {
    const source = workerSource();
    for (let i = 1; i < threads; i++) {
      const w = new Worker(source, { eval: true, workerData: { control: this.control, params: this.params, index: i } });
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

  /** C = alpha op(A) op(B) + beta C with A, B, C already inside the arena (offsets into it). */
  gemmInArena(a: Omit<GemmArgs, 'A' | 'B' | 'C'>): void {
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
    Atomics.store(this.ctl, DONE, 0);
    Atomics.store(this.ctl, OP, OP_GEMM);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
    runGemmSlice(par, this.arena, 0);
    const others = this.threads - 1;
    for (let done = Atomics.load(this.ctl, DONE); done < others; done = Atomics.load(this.ctl, DONE)) {
      Atomics.wait(this.ctl, DONE, done);
    }
  }

  close(): void {
    Atomics.store(this.ctl, OP, OP_EXIT);
    Atomics.add(this.ctl, GENERATION, 1);
    Atomics.notify(this.ctl, GENERATION);
  }
}

let pool: ThreadPool | null = null;

/**
 * Use `n` threads (the calling thread and n - 1 workers) for the kernels that can split their
 * work, like torch.set_num_threads. The default is 1; the CLI sets the number of cores.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setThreads: need an integer >= 1, got ${n}`);
  if (pool?.threads === n || (pool === null && n === 1)) return;
  pool?.close();
  pool = n > 1 ? new ThreadPool(n) : null;
}

export function getThreads(): number {
  return pool?.threads ?? 1;
}

export function defaultThreads(): number {
  return availableParallelism();
}

/** Extent of a row-major matrix slice: from its offset to one past its last element. */
function extent(rows: number, cols: number, ld: number): number {
  return rows === 0 || cols === 0 ? 0 : (rows - 1) * ld + cols;
}

/**
 * GEMM on all threads when it is big enough to pay for the hand-off, else on this one.
 * Operands are copied into the shared arena and C is copied back.
 */
export function parallelGemm(args: GemmArgs): void {
  if (pool === null || args.M * args.N * args.K < PARALLEL_MIN_MULT_ADDS) {
    gemm(args);
    return;
  }
  checkGemmArgs(args);
  const { transA, transB, M, N, K, lda, ldb, ldc } = args;
  const aLen = transA ? extent(K, M, lda) : extent(M, K, lda);
  const bLen = transB ? extent(N, K, ldb) : extent(K, N, ldb);
  const cLen = extent(M, N, ldc);
  const arena = pool.reserve(aLen + bLen + cLen);
  arena.set(args.A.subarray(args.aOffset, args.aOffset + aLen), 0);
  arena.set(args.B.subarray(args.bOffset, args.bOffset + bLen), aLen);
  const cBase = aLen + bLen;
  if (args.beta !== 0) arena.set(args.C.subarray(args.cOffset, args.cOffset + cLen), cBase);
  pool.gemmInArena({ transA, transB, M, N, K, alpha: args.alpha, aOffset: 0, lda, bOffset: aLen, ldb, beta: args.beta, cOffset: cBase, ldc });
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
