import { afterAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { gemm } from '../src/ops/gemm.js';
import { getThreads, parallelGemm, setThreads } from '../src/ops/parallel.js';
import { Rng } from '../src/tensor/rng.js';
import { randn } from '../src/tensor/tensor.js';
import { loadIdxDataset, type ImageDataset } from '../src/train/datasets.js';
import { TRAIN_DEFAULTS, Trainer } from '../src/train/trainer.js';
import { resolve } from 'node:path';

afterAll(() => setThreads(1));

describe('threads', () => {
  it('parallel GEMM is bit-identical to one thread for every transpose and shape', () => {
    setThreads(2);
    expect(getThreads()).toBe(2);
    const rng = new Rng(4);
    for (const [M, N, K] of [[130, 70, 90], [9, 700, 64], [700, 9, 64], [64, 64, 64], [257, 3, 400]]) {
      for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const A = randn([M * K], rng).data, B = randn([K * N], rng).data, C0 = randn([M * N], rng).data;
        const args = { transA, transB, M, N, K, alpha: 1.5, A, aOffset: 0, lda: transA ? M : K, B, bOffset: 0, ldb: transB ? K : N, beta: 0.5, cOffset: 0, ldc: N };
        const one = C0.slice(), two = C0.slice();
        gemm({ ...args, C: one });
        parallelGemm({ ...args, C: two });
        expect(Buffer.from(two.buffer).equals(Buffer.from(one.buffer)), `M=${M} N=${N} K=${K} ${transA} ${transB}`).toBe(true);
      }
    }
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

  it('rejects a bad thread count', () => {
    expect(() => setThreads(0)).toThrow('setThreads: need an integer >= 1, got 0');
  });
});
