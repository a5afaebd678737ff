import { describe, expect, it } from 'vitest';
import { createModel, type ImageClassifier } from '../src/nn/mobilenet.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { add } from '../src/ops/elementwise.js';
import { alloc, arenaMemory, arenaOffset, cacheBytes, emptyCache, isCached, release, reuseBuffers } from '../src/tensor/buffers.js';
import { Rng } from '../src/tensor/rng.js';
import { noGrad } from '../src/tensor/autograd.js';
import { rand, Tensor } from '../src/tensor/tensor.js';
import { SGD } from '../src/train/optim.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Node's gc(), which vitest's workers do not expose: turn the flag on and fetch it from a fresh context. */
function fullGarbageCollector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** sha256-free fingerprint: the bytes of every parameter, concatenated. */
function weightsOf(model: ImageClassifier): Buffer {
  return Buffer.concat(model.parameters().map((p) => Buffer.from(p.data.buffer, p.data.byteOffset, p.data.byteLength)));
}

function trainSteps(arch: 'v1' | 'v2', steps: number, scoped: boolean): { weights: Buffer; losses: number[] } {
  const rng = new Rng(5);
  const model = createModel(arch, { alpha: 0.25, numClasses: 10, resolution: 32, seed: 3 }).fuseActivations();
  model.train();
  const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
  const x = rand([4, 3, 32, 32], rng);
  const labels = [1, 2, 3, 4];
  const losses: number[] = [];
  const step = () => {
    opt.zeroGrad();
    const loss = softmaxCrossEntropy(model.forward(x), labels);
    losses.push(loss.item());
    loss.backward();
    opt.step();
    opt.zeroGrad();
  };
  for (let i = 0; i < steps; i++) {
    if (scoped) reuseBuffers(step);
    else step();
  }
  return { weights: weightsOf(model), losses };
}

describe('buffer reuse', () => {
  it('alloc outside a scope is a plain zeroed array; inside, buffers come back zeroed and are reused', () => {
    const plain = alloc(8);
    expect(plain.buffer).toBeInstanceOf(ArrayBuffer);
    expect(isCached(plain)).toBe(false);
    let first: Float32Array | undefined;
    reuseBuffers(() => {
      first = alloc(1000);
      first.fill(7);
      expect(isCached(first)).toBe(true);
    });
    reuseBuffers(() => {
      const again = alloc(1000);
      expect(again).toBe(first); // the same memory, handed out again
      expect(again.every((v) => v === 0)).toBe(true);
      const other = alloc(1000); // in use: a new one
      expect(other).not.toBe(first);
    });
  });

  it('release hands a buffer to the next alloc of the same step, and ignores buffers of other scopes', () => {
    reuseBuffers(() => {
      const a = alloc(333);
      release(a);
      expect(alloc(333)).toBe(a);
      const outside = new Float32Array(333);
      release(outside); // not the cache's: nothing happens
      expect(alloc(333)).not.toBe(outside);
    });
  });

  it('training steps in a reuse scope give bit-identical weights to plain allocation (V1 and V2 with residual adds)', () => {
    for (const arch of ['v1', 'v2'] as const) {
      const plain = trainSteps(arch, 3, false);
      const reused = trainSteps(arch, 3, true);
      expect(reused.losses).toEqual(plain.losses);
      expect(reused.weights.equals(plain.weights), arch).toBe(true);
    }
  });

  it('add(x, x) of a non-leaf inside a scope: both gradient paths survive', () => {
    const x = new Tensor(Float32Array.from([1, 2, 3]), [3], true);
    reuseBuffers(() => {
      const h = add(x, x); // non-leaf
      const y = add(add(h, h), h); // h's gradient comes from three places: 3 * 2 = 6 per element
      y.backward(new Tensor(Float32Array.from([1, 1, 1]), [3]));
      expect(Array.from(x.grad!.data)).toEqual([6, 6, 6]);
    });
  });

  it('the arena: buffers in one shared WebAssembly memory, 64-byte aligned and apart, kept through its growth, zeroed when reused after emptyCache', () => {
    const arena = arenaMemory();
    expect(arena, 'this Node has shared WebAssembly memory').not.toBeNull();
    emptyCache();
    reuseBuffers(() => {
      const first = alloc(3), second = alloc(5);
      first.set([1, 2, 3]);
      second.fill(7);
      for (const b of [first, second]) {
        expect(arenaOffset(b) % 16, 'float offset of a 64-byte boundary').toBe(0);
        expect(isCached(b)).toBe(true);
        expect(b.buffer).toBeInstanceOf(SharedArrayBuffer);
      }
      expect(arenaOffset(second) - arenaOffset(first)).toBe(16); // 12 bytes rounded up to 64
      expect(arenaOffset(first.subarray(1)), 'a view the cache did not hand out').toBe(-1);
      const pages = arena!.buffer.byteLength / 65536;
      const big = alloc(arena!.buffer.byteLength / 4); // more than the arena has: it grows
      expect(arena!.buffer.byteLength / 65536).toBeGreaterThan(pages);
      big.fill(9);
      expect(Array.from(first)).toEqual([1, 2, 3]);
      expect(Array.from(new Float32Array(arena!.buffer, second.byteOffset, 5))).toEqual([7, 7, 7, 7, 7]);
    });
    emptyCache(); // nothing in use: the arena is handed out again from its start
    expect(cacheBytes()).toBe(0);
    reuseBuffers(() => {
      const again = alloc(65536);
      expect(arenaOffset(again)).toBe(0);
      expect(again.every((v) => v === 0), 'reused memory is zeroed').toBe(true);
    });
    // Inside a scope, emptyCache keeps the arena's free buffers (the arena cannot shrink) and the ones in use.
    reuseBuffers(() => {
      const held = alloc(100);
      held.fill(3);
      emptyCache();
      const next = alloc(100);
      expect(arenaOffset(next)).not.toBe(arenaOffset(held));
      expect(held.every((v) => v === 3)).toBe(true);
    });
    emptyCache();
  });

  it('inference without a graph frees each activation once the next layer has read it: same logits, about half the memory (free lists are per exact size, so only same-size layers share)', () => {
    for (const arch of ['v1', 'v2'] as const) {
      const model = createModel(arch, { alpha: 0.5, numClasses: 10, resolution: 64, seed: 2 }).fuseActivations();
      model.eval();
      const x = rand([2, 3, 64, 64], new Rng(8));
      const plain = noGrad(() => model.forward(x)).data.slice();
      emptyCache();
      const reused = reuseBuffers(() => noGrad(() => model.forward(x)).data.slice());
      const inferenceCache = cacheBytes();
      emptyCache();
      reuseBuffers(() => void model.forward(x)); // with a graph: every activation stays alive
      const graphCache = cacheBytes();
      emptyCache();
      expect(Buffer.from(reused.buffer).equals(Buffer.from(plain.buffer)), arch).toBe(true);
      expect(inferenceCache, `${arch}: ${inferenceCache} bytes without a graph vs ${graphCache} with one`).toBeLessThan(0.6 * graphCache);
    }
  });

  it('after the first step a training step allocates nothing new: cache size flat, and live memory flat over 200 steps', () => {
    const steps = Number(process.env.MOBILENET_MEMORY_STEPS ?? 200);
    emptyCache();
    const rng = new Rng(6);
    const model = createModel('v1', { alpha: 0.25, numClasses: 10, resolution: 32, seed: 1 }).fuseActivations();
    model.train();
    const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    const x = rand([8, 3, 32, 32], rng);
    const labels = Array.from({ length: 8 }, (_, i) => i % 10);
    const step = () =>
      reuseBuffers(() => {
        opt.zeroGrad();
        softmaxCrossEntropy(model.forward(x), labels).backward();
        opt.step();
        opt.zeroGrad();
      });
    step();
    step();
    const cacheAfterWarmup = cacheBytes();
    expect(cacheAfterWarmup).toBeGreaterThan(0);
    // Live memory = JS heap in use + array buffers, measured right after a full collection.
    // RSS is not used: it follows when V8 decides to grow or give back its heap, which differs
    // run to run by tens of MB (one CI run saw 120 -> 146 MB) without anything leaking.
    const gc = fullGarbageCollector();
    const liveBytes = () => {
      gc(); // a second collection frees what the first only unlinked (without it: a 3.6 MB wobble)
      gc();
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.arrayBuffers;
    };
    const liveAt = [liveBytes()];
    for (let i = 0; i < steps; i++) {
      step();
      expect(cacheBytes()).toBe(cacheAfterWarmup);
      if ((i + 1) % 50 === 0) liveAt.push(liveBytes());
    }
    // A leak keeps something from every step: even 1% of one step's buffers, kept 200 times,
    // is 2 x cacheAfterWarmup, twice the limit. Without a leak live memory moves by ~0.1 MB.
    // (Checked by hand: keeping one 32 kB array, or the loss tensor, per step fails this.)
    const growth = Math.max(...liveAt) - liveAt[0];
    const limit = Math.max(2 ** 20, (0.01 * steps * cacheAfterWarmup) / 2);
    expect(
      growth,
      `live MB every 50 steps: ${liveAt.map((b) => (b / 2 ** 20).toFixed(2)).join(', ')}; one step's buffers ${(cacheAfterWarmup / 2 ** 20).toFixed(2)} MB`,
    ).toBeLessThan(limit);
  });
});
