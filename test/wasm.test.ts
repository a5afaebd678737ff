// The WebAssembly kernels: the emitter writes the bytes the spec says, and every emitted kernel
// gives the same bits as its TypeScript twin, in-process (every GEMM shape case of the suite) and
// over a whole training run (V1, V2, shallow, baseline and the options that change a kernel's
// path, on one and two threads, against MOBILENET_KERNELS=js).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import sharp from 'sharp';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { correlate3x3, depthwise3x3Wasm, depthwiseBackward, depthwiseBackwardFilter, depthwiseBackwardInput, depthwiseForward, depthwiseGeometry, useDepthwiseKernel } from '../src/ops/depthwise.js';
import { gemm, KERNELS, useGemmKernel, type GemmArgs, type GemmBatch } from '../src/ops/gemm.js';
import { batchNormApply, batchNormBackward, batchNormTrainForward, batchNormWasmForTests } from '../src/ops/batchnorm.js';
import { alloc, arenaOffset, reuseBuffers } from '../src/tensor/buffers.js';
import { Rng } from '../src/tensor/rng.js';
import { randn } from '../src/tensor/tensor.js';
import { emitModule, hasWasmSimd, i, I32, signedLeb, unsignedLeb } from '../src/wasm/emit.js';
import { CLI_FROM_SOURCE, ROOT, tinyFashionMnist, weightsDigest } from './helpers.js';

describe('the WebAssembly emitter', () => {
  it('LEB128 as the spec writes it', () => {
    expect(unsignedLeb(0)).toEqual([0]);
    expect(unsignedLeb(127)).toEqual([0x7f]);
    expect(unsignedLeb(128)).toEqual([0x80, 0x01]);
    expect(unsignedLeb(624485)).toEqual([0xe5, 0x8e, 0x26]);
    expect(signedLeb(-1)).toEqual([0x7f]);
    expect(signedLeb(63)).toEqual([0x3f]);
    expect(signedLeb(64)).toEqual([0xc0, 0x00]);
    expect(signedLeb(-64)).toEqual([0x40]);
    expect(signedLeb(-123456)).toEqual([0xc0, 0xbb, 0x78]);
    expect(() => unsignedLeb(-1)).toThrow(RangeError);
  });
  it('a known module, byte for byte, and it runs', () => {
    // (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add), one page of memory.
    const bytes = emitModule({ memoryPages: 1, functions: [{ name: 'add', params: [I32, I32], results: [I32], locals: [], body: [...i.localGet(0), ...i.localGet(1), ...i.i32Add] }] });
    expect(Array.from(bytes)).toEqual([
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
      0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f, // type section: (i32, i32) -> i32
      0x03, 0x02, 0x01, 0x00, // function section: function 0 has type 0
      0x05, 0x04, 0x01, 0x01, 0x01, 0x01, // memory section: min 1, max 1
      0x07, 0x10, 0x02, 0x06, ...Buffer.from('memory'), 0x02, 0x00, 0x03, ...Buffer.from('add'), 0x00, 0x00, // exports
      0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b, // code: no locals, the body, end
    ]);
    const add = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.add as (a: number, b: number) => number;
    expect(add(2, 40)).toBe(42);
  });
  it('an unknown MOBILENET_KERNELS is one line naming it, exit 2, before any command runs', () => {
    const r = spawnSync(process.execPath, [...CLI_FROM_SOURCE, 'summary'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MOBILENET_KERNELS: 'JS' } });
    expect(r.stderr).toBe("mobilenet: error: MOBILENET_KERNELS must be 'js' or 'wasm' (or unset), got 'JS'\n");
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
  });
  it('this Node has WebAssembly SIMD, so the suite runs the WebAssembly kernels unless MOBILENET_KERNELS=js', () => {
    expect(hasWasmSimd()).toBe(true);
    expect(KERNELS).toBe(process.env.MOBILENET_KERNELS === 'js' ? 'js' : 'wasm');
  });
});

describe.skipIf(KERNELS !== 'wasm')('GEMM: the WebAssembly kernel gives the TypeScript twin\'s bits', () => {
  afterEach(() => useGemmKernel('wasm'));
  const rng = new Rng(5);
  const same = (args: Omit<GemmArgs, 'C'>, C0: Float32Array) => {
    const out = (kind: 'js' | 'wasm') => {
      useGemmKernel(kind);
      const C = C0.slice();
      gemm({ ...args, C });
      return C;
    };
    const js = out('js'), wasm = out('wasm');
    expect(Buffer.from(wasm.buffer).equals(Buffer.from(js.buffer))).toBe(true);
  };
  const sizes: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [4, 4, 4], [17, 9, 300], [130, 67, 33], [5, 2100, 3], [97, 2050, 513], [8, 8, 600]];
  for (const [M, N, K] of sizes) {
    it(`M=${M} N=${N} K=${K}, every transpose, alpha and beta, offsets, padded ld, NaN garbage under beta 0`, () => {
      for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        for (const [alpha, beta] of [[1, 0], [0.5, 2], [-1.5, 1]]) {
          const lda = (transA ? M : K) + 3, ldb = (transB ? K : N) + 1, ldc = N + 2;
          const A = randn([(transA ? K : M) * lda + 5], rng).data, B = randn([(transB ? N : K) * ldb + 5], rng).data;
          const C0 = beta === 0 ? new Float32Array(M * ldc + 4).fill(NaN) : randn([M * ldc + 4], rng).data;
          same({ transA, transB, M, N, K, alpha, A, aOffset: 2, lda, B, bOffset: 1, ldb, beta, cOffset: 3, ldc }, C0);
        }
      }
    });
  }
  for (const [images, pixels, firstColumn] of [[3, 1, 0], [5, 9, 0], [4, 16, 0], [3, 49, 52], [2, 30, 8]]) {
    it(`a batch of ${images} images of ${pixels} pixels read in place from column ${firstColumn}, along columns and along depth`, () => {
      const Cin = 6, Cout = 7, cols = images * pixels;
      const x = randn([images, Cin, pixels], rng).data, w = randn([Cout, Cin], rng).data, dy = randn([images, Cout, pixels], rng).data;
      const columns: GemmBatch = { along: 'columns', size: pixels, aStride: 0, bStride: Cin * pixels, cStride: Cout * pixels, firstColumn };
      same({ transA: false, transB: false, M: Cout, N: cols - firstColumn, K: Cin, alpha: 1, A: w, aOffset: 0, lda: Cin, B: x, bOffset: 0, ldb: pixels, beta: 0, cOffset: 0, ldc: pixels, batch: columns }, new Float32Array(images * Cout * pixels).fill(NaN));
      for (const roundPerImage of [false, true]) {
        const depth: GemmBatch = { along: 'depth', size: pixels, aStride: Cout * pixels, bStride: Cin * pixels, cStride: 0, firstColumn: 0, roundPerImage };
        same({ transA: false, transB: true, M: Cout, N: Cin, K: cols, alpha: 1, A: dy, aOffset: 0, lda: pixels, B: x, bOffset: 0, ldb: pixels, beta: 1, cOffset: 0, ldc: Cin, batch: depth }, randn([Cout * Cin], rng).data);
      }
    });
  }
});

describe.skipIf(KERNELS !== 'wasm')('depthwise 3x3: the WebAssembly kernels give the TypeScript twin\'s bits', () => {
  afterEach(() => useDepthwiseKernel('wasm'));
  const rng = new Rng(6);
  // Planes of 1x1 to 57x57 (widths that are and are not multiples of 4), stride 1 and 2,
  // padding 0 to 2 (the first output's taps outside, inside, or the plane skipped by a stride).
  // The last three take several groups of planes through the module's memory (the last group
  // ragged), with even and odd output widths.
  const cases: [number, number, number, number, number, number][] = [[2, 3, 1, 1, 1, 1], [1, 2, 2, 3, 1, 1], [2, 5, 7, 7, 1, 1], [2, 4, 8, 8, 2, 1], [1, 3, 9, 13, 2, 1], [1, 2, 16, 16, 1, 0], [1, 2, 11, 6, 2, 2], [1, 3, 57, 57, 2, 1], [1, 2, 33, 35, 1, 1],
    [1, 3, 10, 9, 2, 0], [2, 2, 3, 3, 2, 1], [2, 70, 20, 20, 1, 1], [2, 70, 21, 21, 2, 1], [3, 50, 19, 19, 1, 1]];
  it('the 3x3 kernel writes each output row\'s floats and nothing past them, for every width', () => {
    for (const stride of [1, 2] as const) {
      const kernel = new WebAssembly.Instance(new WebAssembly.Module(emitModule({ memoryPages: 1, functions: [depthwise3x3Wasm(stride)] }))).exports;
      const run = kernel[`depthwise3x3s${stride}`] as (src: number, rowLength: number, w: number, dst: number, outH: number, outW: number) => void;
      const memory = new Float32Array((kernel.memory as WebAssembly.Memory).buffer);
      for (let outW = 1; outW <= 9; outW++) {
        const outH = 3, rowLength = outW * stride + 8, src = 0, w = 512, dst = 1024;
        memory.fill(0);
        for (let k = 0; k < 3 * stride * rowLength + 8 * rowLength; k++) memory[src + k] = rng.normal();
        for (let k = 0; k < 9; k++) memory[w + k] = rng.normal();
        memory.fill(-7, dst, dst + 64); // a sentinel, and every float after the output must keep it
        run(src * 4, rowLength, w * 4, dst * 4, outH, outW);
        const twin = new Float32Array(outH * outW);
        correlate3x3(memory, src, rowLength, stride, memory, w, twin, 0, outH, outW);
        expect(Array.from(memory.subarray(dst, dst + outH * outW)), `stride ${stride} width ${outW}`).toEqual(Array.from(twin));
        expect(Array.from(memory.subarray(dst + outH * outW, dst + 64)).every((v) => v === -7), `stride ${stride} width ${outW}: written past the output`).toBe(true);
      }
    }
  });
  for (const [N, C, H, W, stride, padding] of cases) {
    it(`x=${N}x${C}x${H}x${W} s${stride} p${padding}: forward, input and filter gradients`, () => {
      const x = randn([N, C, H, W], rng), w = randn([C, 1, 3, 3], rng);
      const g = depthwiseGeometry(x, w, null, { stride, padding });
      const dy = randn([N, C, g.Hout, g.Wout], rng).data;
      const run = (kind: 'js' | 'wasm') => {
        useDepthwiseKernel(kind);
        const y = new Float32Array(N * C * g.Hout * g.Wout).fill(NaN), dx = new Float32Array(x.numel).fill(NaN);
        const dw = new Float32Array(w.numel).fill(NaN), dxBoth = new Float32Array(x.numel).fill(NaN), dwBoth = new Float32Array(w.numel).fill(NaN);
        depthwiseForward(x.data, w.data, g, y);
        depthwiseBackwardInput(dy, w.data, g, dx);
        depthwiseBackwardFilter(dy, x.data, g, dw);
        depthwiseBackward(dy, x.data, w.data, g, dxBoth, dwBoth);
        return { y, dx, dw, dxBoth, dwBoth };
      };
      const js = run('js'), wasm = run('wasm');
      for (const name of ['y', 'dx', 'dw', 'dxBoth', 'dwBoth'] as const) expect(Buffer.from(wasm[name].buffer).equals(Buffer.from(js[name].buffer)), name).toBe(true);
      // Both gradients in one pass are the two separate passes' bits.
      expect(Buffer.from(js.dxBoth.buffer).equals(Buffer.from(js.dx.buffer)), 'dx of the joint pass').toBe(true);
      expect(Buffer.from(js.dwBoth.buffer).equals(Buffer.from(js.dw.buffer)), 'dw of the joint pass').toBe(true);
    });
  }
});

describe.skipIf(KERNELS !== 'wasm')('BatchNorm: the WebAssembly passes give the TypeScript loops\' bits', () => {
  const rng = new Rng(9);
  // Planes of 1 to 197 values (a multiple of 4, a pair left, a single one left), 1 to 3 images.
  const cases: [number, number, number][] = [[1, 2, 1], [2, 3, 2], [3, 2, 3], [1, 3, 4], [2, 2, 5], [1, 1, 7], [2, 3, 9], [3, 2, 49], [2, 2, 196], [1, 3, 197]];
  // Values around the clamps: exact 0 and -0, 6, and the rest normal with a spread that saturates ReLU6.
  const values = (n: number) => Float32Array.from({ length: n }, (_, k) => (k % 11 === 0 ? 0 : k % 13 === 0 ? -0 : k % 17 === 0 ? 6 : 4 * rng.normal()));
  const bits = (a: Float32Array | Float64Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  for (const [N, C, HW] of cases) {
    for (const high of [0, Infinity, 6]) {
      it(`x=${N}x${C}x${HW} ${high === 0 ? 'no activation' : high === 6 ? 'ReLU6' : 'ReLU'}: statistics, apply, and backward with and without dx, training and eval`, () => {
        const wasm = batchNormWasmForTests()!;
        expect(wasm).not.toBeNull();
        reuseBuffers(() => {
          const n = N * C * HW;
          // Tensors in the arena, as inside a training step.
          const [x, dy] = [alloc(n), alloc(n)];
          x.set(values(n));
          dy.set(values(n));
          expect(arenaOffset(x)).toBeGreaterThanOrEqual(0);
          const gamma = Float32Array.from({ length: C }, () => 1 + rng.normal() / 4), beta = Float32Array.from({ length: C }, () => rng.normal() / 4);
          const run = (kind: typeof wasm | null) => {
            const y = alloc(n), stats = new Float64Array(2 * C), coef = new Float64Array(2 * C), yEval = alloc(n);
            batchNormTrainForward(x, y, N, C, HW, gamma, beta, 1e-5, high, stats, coef, 0, C, kind);
            batchNormApply(x, yEval, N, C, HW, coef, high, 0, C, kind);
            // Scale 1 and shift 0: the inputs' exact 0, -0 and 6 reach the clamps as they are.
            const yExact = alloc(n);
            batchNormApply(x, yExact, N, C, HW, Float64Array.from({ length: 2 * C }, (_, k) => (k % 2 === 0 ? 1 : 0)), high, 0, C, kind);
            // (mean, invStd, gamma) per channel, as batchNorm2d's backward has them.
            const backCoef = Float64Array.from({ length: 3 * C }, (_, k) => [stats[2 * Math.floor(k / 3)], 1 / Math.sqrt(stats[2 * Math.floor(k / 3) + 1] + 1e-5), gamma[Math.floor(k / 3)]][k % 3]);
            const out: (Float32Array | Float64Array)[] = [y.slice(), yEval.slice(), yExact.slice(), stats, coef];
            for (const training of [true, false]) {
              const dx = alloc(n, false), sums = new Float64Array(2 * C), sumsOnly = new Float64Array(2 * C);
              dx.fill(NaN);
              batchNormBackward(dy, x, y, dx, N, C, HW, backCoef, sums, high, training, 0, C, kind);
              batchNormBackward(dy, x, y, null, N, C, HW, backCoef, sumsOnly, high, training, 0, C, kind);
              out.push(dx.slice(), sums, sumsOnly);
            }
            return out;
          };
          const js = run(null), simd = run(wasm);
          js.forEach((a, k) => {
            expect(a.some(Number.isNaN), `output ${k} has no NaN`).toBe(false);
            expect(bits(simd[k]).equals(bits(a)), `output ${k}`).toBe(true);
          });
        });
      });
    }
  }
});

// Whole training runs: the checkpoint's weights after a few steps, with the TypeScript kernels
// and with the WebAssembly ones, on one thread and two: one digest for all four.
describe('a training run gives the same weights with either kernels and any thread count', () => {
  const data = tinyFashionMnist(64, 16);
  // A folder of colour images (two classes of 12, 20x20: an odd size after --rho).
  const colour = mkdtempSync(join(tmpdir(), 'twins-colour-'));
  beforeAll(async () => {
    for (const [cls, hue] of [['red', [200, 40, 30]], ['teal', [20, 150, 160]]] as const) {
      mkdirSync(join(colour, cls));
      for (let k = 0; k < 12; k++) {
        const pixels = Buffer.from(Array.from({ length: 20 * 20 * 3 }, (_, j) => (hue[j % 3] + ((j * 37 + k * 101) % 60)) % 256));
        await sharp(pixels, { raw: { width: 20, height: 20, channels: 3 } }).png().toFile(join(colour, cls, `${k}.png`));
      }
    }
  });
  const digest = (kernels: 'js' | 'wasm', threads: number, options: string[]) => {
    const dir = join(mkdtempSync(join(tmpdir(), 'twins-')), 'run');
    const dataFlags = options.includes('--data') ? [] : ['--data-path', data];
    const args = [...CLI_FROM_SOURCE, '--threads', String(threads), 'train', ...dataFlags, '--epochs', '1', '-b', '16', '--log-interval', '0', '--output-dir', dir, ...options];
    const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MOBILENET_KERNELS: kernels } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return weightsDigest(join(dir, 'last.safetensors'));
  };
  const models: [string, string[]][] = [
    ['shallow (the default)', []],
    ['shallow, stem stride 1', ['--stem-stride', '1']],
    ['V1 alpha 0.25, rho 0.857 (an odd resolution)', ['--model', 'v1', '--alpha', '0.25', '--rho', '0.857']],
    ['V2 alpha 0.35, expansion 4', ['--model', 'v2', '--alpha', '0.35', '--expansion', '4']],
    ['baseline alpha 0.25 on colour images', ['--model', 'baseline', '--alpha', '0.25', '--data', colour]],
  ];
  // The digests of today's bits, committed: a change that alters any model's arithmetic (a new
  // summation order, a kernel taking another path) fails here, so it is made on purpose and said
  // in its commit. UPDATE_TRAINING_BITS=1 writes the file anew.
  const bitsFile = join(ROOT, 'test', 'fixtures', 'training-bits.json');
  const recorded = JSON.parse(readFileSync(bitsFile, 'utf8')) as Record<string, string>;
  for (const [what, options] of models) {
    it(what, () => {
      const reference = digest('js', 1, options);
      if (process.env.UPDATE_TRAINING_BITS === '1') {
        const now = JSON.parse(readFileSync(bitsFile, 'utf8')) as Record<string, string>;
        writeFileSync(bitsFile, JSON.stringify({ ...now, [what]: reference }, null, 2) + '\n');
      } else expect(reference, `the weights of '${what}' after one epoch are not the recorded bits (test/fixtures/training-bits.json): if the change is meant, run UPDATE_TRAINING_BITS=1 npx vitest run test/wasm.test.ts and say so in the commit`).toBe(recorded[what]);
      expect(digest('wasm', 1, options)).toBe(reference);
      expect(digest('wasm', 2, options)).toBe(reference);
      expect(digest('js', 2, options)).toBe(reference);
    }, 120_000);
  }
});
