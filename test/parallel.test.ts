import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { gemm, type GemmArgs } from '../src/ops/gemm.js';
import { declareKernel, getThreads, kernelJobsOnThreads, poolControlForTests, runKernel, setThreads, workerSource } from '../src/ops/parallel.js';
import { batchNorm2d } from '../src/ops/batchnorm.js';
import { depthwiseConv2d } from '../src/ops/depthwise.js';
import { conv2d } from '../src/ops/conv2d.js';
import { pointwiseConv2d } from '../src/ops/pointwise.js';
import { mul } from '../src/ops/elementwise.js';
import { sum } from '../src/ops/reduce.js';
import { alloc, reuseBuffers } from '../src/tensor/buffers.js';
import { Rng } from '../src/tensor/rng.js';
import { rand, randn, Tensor } from '../src/tensor/tensor.js';
import { loadIdxDataset, type ImageDataset } from '../src/train/datasets.js';
import { TRAIN_DEFAULTS } from '../src/train/options.js';
import { Trainer } from '../src/train/trainer.js';
import { resolve } from 'node:path';
import { createModel } from '../src/nn/mobilenet.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';

afterAll(() => setThreads(1));

/**
 * Run `body` on `threads` threads inside a buffer-reuse scope; its byte copies of the results,
 * and how many kernel jobs ran split over threads meanwhile.
 */
function onThreads(threads: number, body: () => Float32Array[]): { out: Buffer[]; jobs: number } {
  setThreads(threads);
  const before = kernelJobsOnThreads();
  const out = reuseBuffers(() => body().map((a) => Buffer.from(a.slice().buffer)));
  return { out, jobs: kernelJobsOnThreads() - before };
}

/** A test kernel y[i] = f(x[i]) over elements, named after its slice function, always split over the threads. */
function declareElementwise(slice: (p: Record<never, number>, b: Record<'x' | 'y', Float32Array | Float64Array>, lo: number, hi: number) => void) {
  return declareKernel({ name: slice.name, ints: [], floats: [], reads: ['x'], writes: ['y'], large: [], splits: 'elements', chunksPerThread: 4, minWork: 0, slice, deps: [] });
}

/** A copy of t's values in the buffer cache's shared memory (as an activation inside a model is), as a leaf that requires grad. */
function sharedLeaf(t: Tensor): Tensor {
  const data = alloc(t.numel);
  data.set(t.data);
  return new Tensor(data, t.shape, true);
}

/** gemm on `threads` threads (then back to 2); returns how many of its jobs went to the worker threads. */
function gemmOn(threads: number, args: GemmArgs): number {
  setThreads(threads);
  const before = kernelJobsOnThreads();
  gemm(args);
  const handedOff = kernelJobsOnThreads() - before;
  setThreads(2);
  return handedOff;
}

describe('threads', () => {
  it('parallel GEMM is bit-identical to one thread for every transpose and shape', () => {
    setThreads(2);
    expect(getThreads()).toBe(2);
    const rng = new Rng(4);
    let handedOff = 0;
    for (const [M, N, K] of [[130, 70, 90], [9, 700, 64], [700, 9, 64], [64, 64, 64], [257, 3, 400]]) {
      for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const A = randn([M * K], rng).data, B = randn([K * N], rng).data, C0 = randn([M * N], rng).data;
        const args = { transA, transB, M, N, K, alpha: 1.5, A, aOffset: 0, lda: transA ? M : K, B, bOffset: 0, ldb: transB ? K : N, beta: 0.5, cOffset: 0, ldc: N };
        const one = C0.slice(), two = C0.slice();
        expect(gemmOn(1, { ...args, C: one })).toBe(0);
        handedOff += gemmOn(2, { ...args, C: two });
        expect(Buffer.from(two.buffer).equals(Buffer.from(one.buffer)), `M=${M} N=${N} K=${K} ${transA} ${transB}`).toBe(true);
      }
    }
    expect(handedOff).toBeGreaterThan(0);
  });

  it('parallel GEMM on operands in shared memory (used in place, with offsets and ldc > N) is bit-identical too', () => {
    setThreads(2);
    const rng = new Rng(5);
    reuseBuffers(() => {
      for (const [shareA, shareB, shareC] of [[true, true, true], [false, true, true], [true, false, false], [false, false, true]]) {
        const M = 70, N = 90, K = 80, ldc = 100;
        const put = (shared: boolean, values: Float32Array) => {
          const b = shared ? alloc(values.length + 7) : new Float32Array(values.length + 7);
          b.set(values, 7);
          return b;
        };
        const A = put(shareA, randn([M * K], rng).data), B = put(shareB, randn([K * N], rng).data);
        const C0 = randn([M * ldc], rng).data;
        const args = { transA: false, transB: false, M, N, K, alpha: 1, A, aOffset: 7, lda: K, B, bOffset: 7, ldb: N, beta: 1, ldc };
        const one = C0.slice(), two = put(shareC, C0);
        gemmOn(1, { ...args, C: one, cOffset: 0 });
        expect(gemmOn(2, { ...args, C: two, cOffset: 7 })).toBe(1);
        expect(Buffer.from(two.slice(7).buffer).equals(Buffer.from(one.buffer)), `shared A ${shareA} B ${shareB} C ${shareC}`).toBe(true);
      }
    });
  });

  it('training gives bit-identical weights with 1 and 2 threads', async () => {
    const full = loadIdxDataset(resolve(import.meta.dirname, '../data/fashion-mnist-subset'), 'train');
    const ds: ImageDataset = { ...full, count: 128, images: full.images.subarray(0, 128 * 784), labels: full.labels.subarray(0, 128) };
    const run = async (threads: number) => {
      setThreads(threads);
      const t = new Trainer({ ...TRAIN_DEFAULTS, alpha: 0.5, epochs: 1, batchSize: 64, evalBatchSize: 128 }, ds, ds);
      await t.fit();
      const h = createHash('sha256');
      for (const [, p] of t.model.stateDict()) h.update(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength));
      return h.digest('hex');
    };
    expect(await run(2)).toBe(await run(1));
  });

  // A fault that depends on timing (a race between the threads, say) shows only when a thread is
  // preempted at the wrong moment: the suite runs a few steps, a person runs thousands
  // (MOBILENET_SOAK_STEPS=5000, with other work on the cores).
  const soakSteps = Number(process.env.MOBILENET_SOAK_STEPS ?? 6);
  it('a training step gives the same gradients on 2 threads as on 1, step after step (soak)', () => {
    const steps = soakSteps;
    // The full-set recipe's model (stem stride 1: planes from 28x28 down to 4x4), on a batch of 16.
    const model = createModel('shallow', { alpha: 0.35, stemStride: 1, numClasses: 10, inChannels: 1, seed: 3 });
    const rng = new Rng(5);
    const x = randn([16, 1, 28, 28], rng);
    const labels = Array.from({ length: 16 }, (_, i) => i % 10);
    const params = model.parameters();
    const gradients = (): string =>
      reuseBuffers(() => {
        for (const p of params) p.grad = null;
        const loss = softmaxCrossEntropy(model.forward(x), labels, { labelSmoothing: 0.1 });
        loss.backward();
        const h = createHash('sha256');
        h.update(String(loss.item()));
        for (const p of params) h.update(new Uint8Array(p.grad!.data.buffer, p.grad!.data.byteOffset, p.grad!.data.byteLength));
        for (const p of params) p.grad = null;
        return h.digest('hex');
      });
    setThreads(1);
    const reference = gradients();
    setThreads(2);
    const before = kernelJobsOnThreads();
    const differing: number[] = [];
    for (let step = 0; step < steps; step++) if (gradients() !== reference) differing.push(step);
    expect(kernelJobsOnThreads() - before).toBeGreaterThan(steps * 10);
    expect(differing).toEqual([]);
  }, 60_000 + soakSteps * 1000);

  it('the workers\' program compiles: a prelude that several kernels share is shipped once', () => {
    // The depthwise kernels share one prelude; twice, its const would be declared twice.
    const source = workerSource();
    expect(() => new Function(source)).not.toThrow();
    expect(source.match(/const DEPTHWISE_SLACK =/g)).toHaveLength(1);
  });

  it('rejects a bad thread count', () => {
    expect(() => setThreads(0)).toThrow('setThreads: need an integer from 1 to 32, got 0');
    expect(() => setThreads(33)).toThrow('setThreads: need an integer from 1 to 32, got 33');
  });

  it('depthwise and BatchNorm kernels split over threads give bit-identical outputs and gradients', () => {
    const rng = new Rng(9);
    const cases = [
      { N: 2, C: 24, H: 30, W: 30, k: 3, stride: 1, padding: 1, act: 'relu6' as const },
      { N: 4, C: 32, H: 33, W: 31, k: 3, stride: 2, padding: 1, act: 'relu' as const },
      { N: 2, C: 12, H: 40, W: 40, k: 5, stride: 1, padding: 2, act: undefined },
    ];
    for (const { N, C, H, W, k, stride, padding, act } of cases) {
      const x = randn([N, C, H, W], rng), w = randn([C, 1, k, k], rng), gamma = randn([C], rng), beta = randn([C], rng);
      const run = (threads: number) =>
        onThreads(threads, () => {
          // The input in shared memory too, so every kernel can split.
          const xs = sharedLeaf(x), ws = new Tensor(w.data.slice(), w.shape, true);
          const gs = new Tensor(gamma.data.slice(), [C], true), bs = new Tensor(beta.data.slice(), [C], true);
          const rm = new Tensor(new Float32Array(C), [C]), rv = new Tensor(new Float32Array(C).fill(1), [C]);
          const y = batchNorm2d(depthwiseConv2d(xs, ws, null, { stride, padding }), gs, bs, rm, rv, { training: true, activation: act });
          const yData = y.data.slice();
          sum(mul(y, y)).backward();
          return [yData, xs.grad!.data, ws.grad!.data, gs.grad!.data, bs.grad!.data, rm.data, rv.data];
        });
      const one = run(1), two = run(2);
      expect(one.jobs).toBe(0);
      // Depthwise forward and its two gradients (one job), BatchNorm's training forward and its backward.
      expect(two.jobs, 'the kernels ran on threads').toBeGreaterThanOrEqual(4);
      for (let i = 0; i < one.out.length; i++) expect(two.out[i].equals(one.out[i]), `k${k} s${stride}: output ${i}`).toBe(true);
    }
  });

  it('BatchNorm in eval mode (running statistics, fused ReLU6) split over threads is bit-identical', () => {
    const rng = new Rng(10);
    const x = randn([4, 32, 17, 15], rng), gamma = randn([32], rng), beta = randn([32], rng), mean = randn([32], rng), variance = rand([32], rng, 0.5, 2);
    const run = (threads: number) =>
      onThreads(threads, () => {
        const xs = sharedLeaf(x), gs = new Tensor(gamma.data.slice(), [32], true), bs = new Tensor(beta.data.slice(), [32], true);
        const y = batchNorm2d(xs, gs, bs, new Tensor(mean.data.slice(), [32]), new Tensor(variance.data.slice(), [32]), { training: false, activation: 'relu6' });
        const yData = y.data.slice();
        sum(mul(y, y)).backward();
        return [yData, xs.grad!.data, gs.grad!.data, bs.grad!.data];
      });
    const one = run(1), two = run(2);
    expect(two.jobs, 'the kernels ran on threads').toBeGreaterThanOrEqual(2); // apply and backward
    for (let i = 0; i < one.out.length; i++) expect(two.out[i].equals(one.out[i]), `output ${i}`).toBe(true);
  });

  it('pointwise convolution on small planes (the batch read in place, or copied channel-major, split over threads) is bit-identical', () => {
    const rng = new Rng(12);
    // 9x9: in place, tiles straddling images; 4x4: in place; 3x3: copied channel-major.
    for (const size of [9, 4, 3]) {
      const x = randn([16, 48, size, size], rng), w = randn([40, 48, 1, 1], rng), dyValues = randn([16, 40, size, size], rng);
      const run = (threads: number) =>
        onThreads(threads, () => {
          const xs = sharedLeaf(x), ws = new Tensor(w.data.slice(), w.shape, true);
          const y = pointwiseConv2d(xs, ws);
          const yData = y.data.slice();
          y.backward(dyValues);
          return [yData, xs.grad!.data, ws.grad!.data];
        });
      const one = run(1), two = run(2);
      expect(two.jobs, `${size}x${size}: the GEMMs ran on threads`).toBeGreaterThanOrEqual(3);
      for (let i = 0; i < one.out.length; i++) expect(two.out[i].equals(one.out[i]), `${size}x${size}: output ${i}`).toBe(true);
    }
  });

  it('standard convolution with im2col and col2im split over threads is bit-identical (input outside shared memory too)', () => {
    const rng = new Rng(13);
    for (const { stride, padding, Cin, size } of [{ stride: 2, padding: 1, Cin: 3, size: 96 }, { stride: 1, padding: 1, Cin: 8, size: 40 }]) {
      const x = randn([2, Cin, size, size], rng), w = randn([16, Cin, 3, 3], rng), b = randn([16], rng);
      const run = (threads: number) =>
        onThreads(threads, () => {
          // The input outside shared memory, as a network's input batch is.
          const xs = new Tensor(x.data.slice(), x.shape, true), ws = new Tensor(w.data.slice(), w.shape, true), bs = new Tensor(b.data.slice(), [16], true);
          const y = conv2d(xs, ws, bs, { stride, padding });
          const yData = y.data.slice();
          sum(mul(y, y)).backward();
          return [yData, xs.grad!.data, ws.grad!.data, bs.grad!.data];
        });
      const one = run(1), two = run(2);
      expect(two.jobs, 'im2col / col2im ran on threads').toBeGreaterThanOrEqual(4);
      for (let i = 0; i < one.out.length; i++) expect(two.out[i].equals(one.out[i]), `stride ${stride}: output ${i}`).toBe(true);
    }
  });

  it('a kernel declared after setThreads runs on the threads too (the pool is restarted with it)', () => {
    setThreads(2);
    const late = declareElementwise(function doubleLate(_p: Record<never, number>, b: Record<'x' | 'y', Float32Array | Float64Array>, lo: number, hi: number) {
      for (let i = lo; i < hi; i++) b.y[i] = 2 * b.x[i];
    });
    const x = Float32Array.from({ length: 1000 }, (_, i) => i), y = new Float32Array(1000);
    const before = kernelJobsOnThreads();
    runKernel(late, {}, { x, y }, 1000, 1 << 20);
    expect(kernelJobsOnThreads()).toBe(before + 1);
    expect(Array.from(y)).toEqual(Array.from(x, (v) => 2 * v));
    setThreads(1);
  });

  it('a worker woken without a new job does not run one (the caller preempted between publishing a job and notifying)', async () => {
    setThreads(1);
    const addOne = declareElementwise(function addOneChunks(_p: Record<never, number>, b: Record<'x' | 'y', Float32Array | Float64Array>, lo: number, hi: number) {
      for (let i = lo; i < hi; i++) b.y[i] = b.x[i] + 1;
    });
    setThreads(2);
    const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));
    const x = Float32Array.from({ length: 4096 }, (_, i) => i), y = new Float32Array(4096);
    runKernel(addOne, {}, { x, y }, 4096, 1 << 20);
    const { control, at } = poolControlForTests()!;
    expect(Atomics.load(control, at.DONE)).toBe(1);
    // The worker finishes its spinning and sleeps; then the notify of the job it already did
    // arrives late, as when the caller is preempted between GENERATION + 1 and Atomics.notify.
    await sleep(100);
    expect(Atomics.notify(control, at.GENERATION)).toBe(1); // it was asleep, and is woken
    await sleep(100);
    // Woken without a new generation, the worker must not take chunks or count a job done: a
    // second count would be taken for the next job's, which would return with chunks not computed.
    expect(Atomics.load(control, at.DONE)).toBe(1);
    for (let job = 0; job < 200; job++) {
      x[job] = -job;
      runKernel(addOne, {}, { x, y }, 4096, 1 << 20);
      expect(y[job]).toBe(1 - job);
    }
    expect(Array.from(y.subarray(200, 210))).toEqual(Array.from({ length: 10 }, (_, i) => 201 + i));
    setThreads(1);
  });

  it('a failing worker thread is reported as an error, not a hang', () => {
    setThreads(1);
    const failing = declareKernel({
      name: 'failOnWorker',
      ints: [],
      floats: [],
      reads: [],
      writes: [],
      large: [],
      splits: 'nothing',
      chunksPerThread: 8,
      minWork: 0,
      // Throws on a worker thread, and on the calling thread waits a little, so that the
      // worker surely takes a chunk.
      slice: function failOnWorker() {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        if (!require('node:worker_threads').isMainThread) throw new Error('kernel blew up on a worker');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      },
      deps: [],
    });
    setThreads(2);
    const before = kernelJobsOnThreads();
    expect(() => runKernel(failing, {}, {}, 16, 1 << 20)).toThrow(/a worker thread failed: Error: kernel blew up on a worker/);
    expect(kernelJobsOnThreads()).toBe(before + 1);
    // The pool still works afterwards.
    const A = randn([64, 64], new Rng(1)).data, C = new Float32Array(64 * 64), C1 = new Float32Array(64 * 64);
    const args = { transA: false, transB: false, M: 64, N: 64, K: 64, alpha: 1, A, aOffset: 0, lda: 64, B: A, bOffset: 0, ldb: 64, beta: 0, cOffset: 0, ldc: 64 };
    gemmOn(2, { ...args, C });
    gemmOn(1, { ...args, C: C1 });
    expect(Buffer.from(C.buffer).equals(Buffer.from(C1.buffer))).toBe(true);
  });
});
