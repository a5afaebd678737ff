import { describe, expect, it } from 'vitest';
import { conv2d, conv2dBackward, conv2dForward, conv2dNaiveBackward, conv2dNaiveForward, convGeometry, imagesPerColumnMatrix } from '../src/ops/conv2d.js';
import { depthwiseBackward, depthwiseBackwardFilter, depthwiseBackwardInput, depthwiseConv2d, depthwiseForward, depthwiseGeometry, depthwiseNaiveBackward, depthwiseNaiveForward } from '../src/ops/depthwise.js';
import { gemm, gemmNaive } from '../src/ops/gemm.js';
import { fromChannelMajor, pointwiseBackward, pointwiseConv2d, pointwiseForward, pointwiseGeometry, pointwiseNaiveBackward, pointwiseNaiveForward, toChannelMajor } from '../src/ops/pointwise.js';
import { assertGradcheck } from '../src/tensor/gradcheck.js';
import { Rng } from '../src/tensor/rng.js';
import { randn, Tensor } from '../src/tensor/tensor.js';
import { checkFixtureCase, expectClose, Fixture } from './helpers.js';

const fixture = new Fixture('conv');
const opt = (c: Record<string, unknown>) => ({ stride: c.stride as number, padding: c.padding as number, dilation: (c.dilation as number) ?? 1, groups: (c.groups as number) ?? 1 });

describe('conv kernels match PyTorch 1.13', () => {
  for (const c of fixture.cases) {
    it(`${c.name} ${JSON.stringify(c.config)}`, () => {
      const cfg = c.config;
      if (c.name.startsWith('conv2d_')) checkFixtureCase(fixture, c.name, (x, w, b) => conv2d(x, w, b ?? null, opt(cfg)));
      else if (c.name.startsWith('depthwise_')) checkFixtureCase(fixture, c.name, (x, w, b) => depthwiseConv2d(x, w, b ?? null, { stride: cfg.stride as number, padding: cfg.padding as number }));
      else if (c.name.startsWith('pointwise_')) checkFixtureCase(fixture, c.name, (x, w, b) => pointwiseConv2d(x, w, b ?? null));
      else throw new Error(`no runner for ${c.name}`);
    });
  }
});

describe('GEMM equals its naive twin', () => {
  const rng = new Rng(11);
  const sizes: [number, number, number][] = [[1, 1, 1], [3, 5, 7], [4, 4, 4], [17, 9, 300], [130, 67, 33], [5, 2100, 3]];
  for (const [M, N, K] of sizes) {
    for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      it(`M=${M} N=${N} K=${K} transA=${transA} transB=${transB}, alpha 0.5 beta 2, offsets and padded ld`, () => {
        const lda = (transA ? M : K) + 3, ldb = (transB ? K : N) + 1, ldc = N + 2;
        const A = randn([(transA ? K : M) * lda + 5], rng).data, B = randn([(transB ? N : K) * ldb + 5], rng).data;
        const C0 = randn([M * ldc + 4], rng).data;
        const fast = C0.slice(), naive = C0.slice();
        const args = { transA, transB, M, N, K, alpha: 0.5, A, aOffset: 2, lda, B, bOffset: 1, ldb, beta: 2, cOffset: 3, ldc };
        gemm({ ...args, C: fast });
        gemmNaive({ ...args, C: naive });
        expectClose(fast, naive, 'gemm', 1e-5, 1e-5);
      });
    }
  }
  it('beta = 0 stores over NaN garbage in C (full and edge tiles, one and two K blocks), leaving padding alone', () => {
    for (const [M, N, K] of [[130, 67, 33], [17, 9, 300], [8, 8, 600]] as [number, number, number][]) {
      const ldc = N + 2;
      const A = randn([M * K], rng).data, B = randn([K * N], rng).data;
      const fast = new Float32Array(M * ldc).fill(NaN), naive = new Float32Array(M * ldc).fill(NaN);
      const args = { transA: false, transB: false, M, N, K, alpha: 1.5, A, aOffset: 0, lda: K, B, bOffset: 0, ldb: N, beta: 0, cOffset: 0, ldc };
      gemm({ ...args, C: fast });
      gemmNaive({ ...args, C: naive });
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < ldc; j++) {
          const f = fast[i * ldc + j], n = naive[i * ldc + j];
          if (j >= N) expect(Number.isNaN(f), `padding at ${i},${j}`).toBe(true);
          else expect(Math.abs(f - n), `C[${i},${j}] of ${M}x${N}x${K}`).toBeLessThan(1e-4 * (1 + Math.abs(n)));
        }
      }
    }
  });
  it('beta = 0 overwrites NaN garbage in C', () => {
    const C = new Float32Array(4).fill(NaN);
    gemm({ transA: false, transB: false, M: 2, N: 2, K: 1, alpha: 1, A: Float32Array.of(1, 2), aOffset: 0, lda: 1, B: Float32Array.of(3, 4), bOffset: 0, ldb: 2, beta: 0, C, cOffset: 0, ldc: 2 });
    expect(Array.from(C)).toEqual([3, 4, 6, 8]);
  });
  // A batch of NCHW images read in place (GemmBatch) against the same product on an explicit
  // channel-major copy with the plain GEMM: the same bits, whatever the plane size (1, 3x3 and
  // 7x7 pixels straddle micro-tiles, 4x4 does not) and from a column in the middle of the batch.
  for (const [images, pixels, firstColumn] of [[3, 1, 0], [5, 9, 0], [4, 16, 0], [3, 49, 0], [3, 49, 52], [2, 30, 8]]) {
    it(`a batch of ${images} images of ${pixels} pixels read in place, from column ${firstColumn}: the same bits as on a channel-major copy`, () => {
      const Cin = 6, Cout = 7, cols = images * pixels, n = cols - firstColumn;
      const x = randn([images, Cin, pixels], rng).data, w = randn([Cout, Cin], rng).data, dy = randn([images, Cout, pixels], rng).data;
      // Channel-major copies: xT[c, j] = x[j / pixels, c, j % pixels].
      const channelMajor = (t: Float32Array, C: number) => {
        const out = new Float32Array(C * cols);
        for (let c = 0; c < C; c++) for (let j = 0; j < cols; j++) out[c * cols + j] = t[(Math.floor(j / pixels) * C + c) * pixels + (j % pixels)];
        return out;
      };
      const xT = channelMajor(x, Cin), dyT = channelMajor(dy, Cout);
      const columns = { along: 'columns' as const, size: pixels, aStride: 0, bStride: Cin * pixels, cStride: Cout * pixels, firstColumn };
      for (const multiply of [gemm, gemmNaive]) {
        // Forward: Y = W X over columns [firstColumn, cols); C is garbage where it is not written.
        const y = new Float32Array(images * Cout * pixels).fill(NaN), yT = new Float32Array(Cout * cols).fill(NaN);
        multiply({ transA: false, transB: false, M: Cout, N: n, K: Cin, alpha: 1, A: w, aOffset: 0, lda: Cin, B: x, bOffset: 0, ldb: pixels, beta: 0, C: y, cOffset: 0, ldc: pixels, batch: columns });
        gemm({ transA: false, transB: false, M: Cout, N: n, K: Cin, alpha: 1, A: w, aOffset: 0, lda: Cin, B: xT, bOffset: firstColumn, ldb: cols, beta: 0, C: yT, cOffset: firstColumn, ldc: cols });
        expect(Buffer.from(channelMajor(y, Cout).buffer).equals(Buffer.from(yT.buffer)), `${multiply.name} forward`).toBe(true);
        // Weight gradient: dW = dY X^T, the batch along K.
        const dw = new Float32Array(Cout * Cin), dwT = new Float32Array(Cout * Cin);
        multiply({ transA: false, transB: true, M: Cout, N: Cin, K: cols, alpha: 1, A: dy, aOffset: 0, lda: pixels, B: x, bOffset: 0, ldb: pixels, beta: 0, C: dw, cOffset: 0, ldc: Cin, batch: { along: 'depth', size: pixels, aStride: Cout * pixels, bStride: Cin * pixels, cStride: 0, firstColumn: 0 } });
        gemm({ transA: false, transB: true, M: Cout, N: Cin, K: cols, alpha: 1, A: dyT, aOffset: 0, lda: cols, B: xT, bOffset: 0, ldb: cols, beta: 0, C: dwT, cOffset: 0, ldc: Cin });
        if (multiply === gemm) expect(Array.from(dw)).toEqual(Array.from(dwT));
        else expectClose(dw, dwT, `${multiply.name} dW`, 1e-5, 1e-5);
      }
    });
  }
  it('rejects batches that do not fit their rules or buffers, naming the rule', () => {
    const A = new Float32Array(12), B = new Float32Array(2 * 3 * 4), C = new Float32Array(2 * 4 * 4);
    const args = { transA: false, transB: false, M: 4, N: 8, K: 3, alpha: 1, A, aOffset: 0, lda: 3, B, bOffset: 0, ldb: 4, beta: 0, C, cOffset: 0, ldc: 4 };
    const columns = { along: 'columns' as const, size: 4, aStride: 0, bStride: 12, cStride: 16, firstColumn: 0 };
    expect(() => gemm({ ...args, batch: columns })).not.toThrow();
    expect(() => gemm({ ...args, beta: 1, batch: columns })).toThrow('gemm: batch along columns: beta must be 0, got 1');
    expect(() => gemm({ ...args, batch: { ...columns, bStride: 8 } })).toThrow("gemm: batch along columns: B's images are 8 floats apart, less than a block of 3 rows of 4");
    expect(() => gemm({ ...args, N: 12, batch: columns })).toThrow(/gemm: B \(3 rows of 4 per image, images 12 apart, offset 0\) overruns its buffer of 24/);
    expect(() => gemm({ ...args, N: 4, batch: { ...columns, firstColumn: 2 } })).toThrow('gemm: batch along columns: firstColumn (2) must be a multiple of 4');
    expect(() => gemm({ ...args, batch: { ...columns, along: 'depth' } })).toThrow('gemm: batch along depth: A must not be transposed and B must be');
  });
  it('rejects a buffer too small for its sizes', () => {
    expect(() => gemm({ transA: false, transB: false, M: 2, N: 2, K: 2, alpha: 1, A: new Float32Array(3), aOffset: 0, lda: 2, B: new Float32Array(4), bOffset: 0, ldb: 2, beta: 0, C: new Float32Array(4), cOffset: 0, ldc: 2 })).toThrow(/gemm: A \(2x2, lda 2, offset 0\) overruns its buffer of 3/);
  });
});

describe('fast conv kernels equal their naive twins', () => {
  const rng = new Rng(3);
  const convCases = [
    { x: [2, 3, 9, 7], w: [4, 3, 3, 3], o: { stride: 1, padding: 1 } },
    { x: [1, 4, 10, 10], w: [6, 2, 3, 3], o: { stride: 2, padding: 1, groups: 2 } },
    { x: [3, 5, 6, 5], w: [7, 5, 1, 1], o: {} },
    { x: [1, 2, 11, 11], w: [3, 2, 3, 3], o: { stride: 3, padding: 2, dilation: 2 } },
  ];
  for (const c of convCases) {
    it(`conv2d x=${c.x.join('x')} w=${c.w.join('x')} ${JSON.stringify(c.o)}`, () => {
      const x = randn(c.x, rng, 0, 1, { requiresGrad: true }), w = randn(c.w, rng, 0, 1, { requiresGrad: true }), b = randn([c.w[0]], rng, 0, 1, { requiresGrad: true });
      const g = convGeometry('conv2d', x, w, b, c.o);
      const y = conv2d(x, w, b, c.o);
      expectClose(y.data, conv2dNaiveForward(x.data, w.data, b.data, g), 'forward', 1e-5, 1e-5);
      const dy = randn([...y.shape], rng);
      y.backward(dy);
      const ref = conv2dNaiveBackward(x.data, w.data, dy.data, g);
      expectClose(x.grad!.data, ref.dx, 'dx', 1e-5, 1e-5);
      expectClose(w.grad!.data, ref.dweight, 'dweight', 1e-5, 1e-4);
      expectClose(b.grad!.data, ref.dbias, 'dbias', 1e-5, 1e-4);
    });
  }
  const dwCases = [
    [2, 5, 9, 8, 3, 1, 1], [2, 5, 9, 8, 3, 2, 1], [1, 3, 10, 11, 3, 2, 0], [1, 3, 4, 4, 3, 1, 2], [1, 4, 8, 7, 5, 1, 2], [1, 2, 2, 2, 3, 1, 1], [1, 3, 7, 7, 3, 3, 1], [2, 3, 16, 16, 3, 1, 0], [1, 2, 6, 6, 1, 2, 0],
    // 1x1 planes (no interior), padding wider than the filter's reach, a 5x5 filter with stride 2
    [2, 3, 1, 1, 3, 1, 1], [1, 2, 5, 7, 3, 1, 3], [1, 2, 9, 9, 3, 2, 2], [1, 3, 11, 9, 5, 2, 2],
  ];
  /**
   * The depthwise filter gradient summed in the order the fast kernel promises: per channel a
   * float64 sum per tap over the images in order; in each image first the pixels outside the
   * 3x3 interior rectangle (row by row, valid taps only), then the interior's own sum.
   */
  function filterGradInKernelOrder(x: Float32Array, dy: Float32Array, g: ReturnType<typeof depthwiseGeometry>): Float32Array {
    // 3x3: per plane, each tap's terms in two float64 sums (even and odd output columns, row by
    // row), added to the tap's total as even + odd (a tap outside the plane adds dy * 0, which
    // leaves a sum that starts at +0 as it is). Other filters: pixel by pixel, tap by tap.
    const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
    const inside = (iy: number, ix: number) => iy >= 0 && iy < H && ix >= 0 && ix < W;
    const dw = new Float32Array(C * kH * kW);
    for (let c = 0; c < C; c++) {
      const taps = new Float64Array(kH * kW);
      for (let n = 0; n < N; n++) {
        const term = (oy: number, ox: number, ky: number, kx: number) => dy[((n * C + c) * Hout + oy) * Wout + ox] * x[((n * C + c) * H + oy * stride - padding + ky) * W + ox * stride - padding + kx];
        const lanes = [new Float64Array(kH * kW), new Float64Array(kH * kW)];
        for (let oy = 0; oy < Hout; oy++)
          for (let ox = 0; ox < Wout; ox++)
            for (let ky = 0; ky < kH; ky++)
              for (let kx = 0; kx < kW; kx++) {
                if (!inside(oy * stride - padding + ky, ox * stride - padding + kx)) continue;
                if (kH === 3 && kW === 3) lanes[ox % 2][ky * kW + kx] += term(oy, ox, ky, kx);
                else taps[ky * kW + kx] += term(oy, ox, ky, kx);
              }
        if (kH === 3 && kW === 3) for (let t = 0; t < kH * kW; t++) taps[t] += lanes[0][t] + lanes[1][t];
      }
      dw.set(taps, c * kH * kW);
    }
    return dw;
  }
  for (const [N, C, H, W, k, s, p] of dwCases) {
    it(`depthwise x=${N}x${C}x${H}x${W} k${k} s${s} p${p}`, () => {
      const x = randn([N, C, H, W], rng), w = randn([C, 1, k, k], rng);
      const g = depthwiseGeometry(x, w, null, { stride: s, padding: p });
      const y = new Float32Array(N * C * g.Hout * g.Wout);
      depthwiseForward(x.data, w.data, g, y);
      const naive = depthwiseNaiveForward(x.data, w.data, g);
      expectClose(y, naive, 'forward', 1e-5, 1e-5);
      // Exactly, too: every path (a 3x3 filter on the zero-bordered plane, other filters by border) sums
      // a pixel's terms in float64 in tap order, as the twin does; a padded tap adds w * 0.
      const firstDifference = y.findIndex((v, i) => v !== naive[i]);
      expect(firstDifference, `first differing output: ${y[firstDifference]} vs ${naive[firstDifference]}`).toBe(-1);
      const dy = randn([N, C, g.Hout, g.Wout], rng).data;
      const dx = new Float32Array(x.numel).fill(NaN), dw = new Float32Array(w.numel).fill(NaN);
      depthwiseBackwardInput(dy, w.data, g, dx);
      depthwiseBackwardFilter(dy, x.data, g, dw);
      const ref = depthwiseNaiveBackward(x.data, w.data, dy, g);
      expectClose(dx, ref.dx, 'dx', 1e-5, 1e-5);
      expectClose(dw, ref.dweight, 'dweight', 1e-5, 1e-4);
      // Exactly, too, against the order the kernel promises (whichever path a plane takes), on
      // values that make the order visible: x is 1 but for one 2^60 and one -2^60 per plane, and
      // dy is 1, so each tap's sum counts the ones added before the first large term or after
      // the second (between them 2^60 + 1 rounds to 2^60): another order gives another count.
      const xWide = new Float32Array(x.numel).fill(1), dyWide = new Float32Array(dy.length).fill(1), dwWide = new Float32Array(w.numel).fill(NaN);
      for (let plane = 0; plane < N * C; plane++) {
        xWide[plane * H * W + rng.int(0, H * W)] = 2 ** 60;
        xWide[plane * H * W + rng.int(0, H * W)] -= 2 ** 60;
      }
      depthwiseBackwardFilter(dyWide, xWide, g, dwWide);
      const ordered = filterGradInKernelOrder(xWide, dyWide, g);
      const firstDw = dwWide.findIndex((v, i) => !Object.is(v, ordered[i]));
      expect(firstDw, `first differing filter gradient: ${dwWide[firstDw]} vs ${ordered[firstDw]}`).toBe(-1);
      // Both gradients in one pass (what training runs): the same bits as the two passes.
      const dxBoth = new Float32Array(x.numel).fill(NaN), dwBoth = new Float32Array(w.numel).fill(NaN);
      depthwiseBackward(dy, x.data, w.data, g, dxBoth, dwBoth);
      expect(Array.from(dxBoth)).toEqual(Array.from(dx));
      expect(Array.from(dwBoth)).toEqual(Array.from(dw));
    });
  }
  // Small planes take a batched path, large ones the per-image path.
  // Batched in place: 5x6, 9x8, 4x4 and 17x16 planes (7x7's tiles straddle images); copied
  // channel-major: 1x1 and 3x3; image by image: one image, and 16x16 planes of 64 channels.
  for (const [N, Cin, H, W, Cout] of [[2, 13, 5, 6, 9], [3, 5, 1, 1, 7], [2, 6, 17, 16, 5], [1, 4, 3, 3, 2], [3, 7, 9, 8, 5], [4, 6, 4, 4, 5], [3, 6, 7, 7, 9], [4, 5, 3, 3, 6], [2, 64, 16, 16, 64]]) {
    it(`pointwise x=${N}x${Cin}x${H}x${W} -> ${Cout}: forward and backward equal the naive-GEMM twin`, () => {
      const x = randn([N, Cin, H, W], rng), w = randn([Cout, Cin, 1, 1], rng);
      const g = pointwiseGeometry(x, w, null);
      const y = new Float32Array(N * Cout * H * W).fill(NaN);
      pointwiseForward(x.data, w.data, g, y);
      expectClose(y, pointwiseNaiveForward(x.data, w.data, g), 'forward', 1e-5, 1e-5);
      const dy = randn([N, Cout, H, W], rng).data;
      const dx = new Float32Array(x.numel).fill(NaN), dw = new Float32Array(w.numel).fill(NaN);
      pointwiseBackward(x.data, w.data, dy, g, dx, dw);
      const ref = pointwiseNaiveBackward(x.data, w.data, dy, g);
      expectClose(dx, ref.dx, 'dx', 1e-5, 1e-5);
      expectClose(dw, ref.dweight, 'dweight', 1e-5, 1e-5);
    });
  }
});

describe('conv2d on several images at once', () => {
  const rng = new Rng(12);
  // Small products take one column matrix for several images (PER_IMAGE_GEMM_FROM_MULT_ADDS):
  // the same bits as convolving the images one at a time. The last case's images have 320
  // pixels, more than a GEMM depth block (256): the weight gradient's blocks end at each image;
  // the one before has 15-pixel planes, so that micro-tiles of the output straddle two images.
  for (const [N, Cin, H, W, Cout, k, stride, padding, groups] of [[3, 2, 9, 7, 5, 3, 2, 1, 1], [4, 3, 8, 8, 4, 3, 1, 1, 1], [2, 4, 6, 5, 6, 3, 1, 0, 2], [5, 1, 4, 4, 3, 1, 1, 0, 1], [3, 2, 5, 3, 4, 1, 1, 0, 1], [3, 1, 20, 16, 2, 3, 1, 1, 1]]) {
    it(`x=${N}x${Cin}x${H}x${W} -> ${Cout}, k${k} s${stride} p${padding} g${groups}: forward and both gradients equal image by image`, () => {
      const x = randn([N, Cin, H, W], rng), w = randn([Cout, Cin / groups, k, k], rng);
      const g = convGeometry('conv2d', x, w, null, { stride, padding, groups });
      expect(imagesPerColumnMatrix(g)).toBe(N);
      const HWin = Cin * H * W, HWout = Cout * g.Hout * g.Wout;
      const dy = randn([N, Cout, g.Hout, g.Wout], rng).data;
      const y = new Float32Array(N * HWout).fill(NaN), dx = new Float32Array(x.numel).fill(NaN), dw = new Float32Array(w.numel);
      conv2dForward(x.data, w.data, null, g, y);
      dx.fill(0);
      conv2dBackward(x.data, w.data, dy, g, dx, dw);
      const one = { ...g, N: 1 };
      const yOne = new Float32Array(N * HWout), dxOne = new Float32Array(x.numel), dwOne = new Float32Array(w.numel);
      for (let n = 0; n < N; n++) {
        const xn = x.data.slice(n * HWin, (n + 1) * HWin), dyn = dy.slice(n * HWout, (n + 1) * HWout), yn = new Float32Array(HWout), dxn = new Float32Array(HWin);
        conv2dForward(xn, w.data, null, one, yn);
        conv2dBackward(xn, w.data, dyn, one, dxn, dwOne); // accumulates into dwOne, image after image
        yOne.set(yn, n * HWout);
        dxOne.set(dxn, n * HWin);
      }
      expect(Array.from(y)).toEqual(Array.from(yOne));
      expect(Array.from(dx)).toEqual(Array.from(dxOne));
      expect(Array.from(dw)).toEqual(Array.from(dwOne));
    });
  }
});

describe('metamorphic identities', () => {
  const rng = new Rng(5);
  function gradsOf(f: (x: Tensor, w: Tensor) => Tensor, x0: Tensor, w0: Tensor, dy: Tensor) {
    const x = new Tensor(x0.data.slice(), x0.shape, true), w = new Tensor(w0.data.slice(), w0.shape, true);
    const y = f(x, w);
    y.backward(dy);
    return { y: y.data, dx: x.grad!.data, dw: w.grad!.data };
  }
  it('depthwise conv == conv2d with groups = channels (forward and gradients), stride 1 and 2', () => {
    for (const stride of [1, 2]) {
      const x = randn([2, 6, 9, 9], rng), w = randn([6, 1, 3, 3], rng);
      const dy = randn([2, 6, stride === 1 ? 9 : 5, stride === 1 ? 9 : 5], rng);
      const a = gradsOf((x, w) => depthwiseConv2d(x, w, null, { stride, padding: 1 }), x, w, dy);
      const b = gradsOf((x, w) => conv2d(x, w, null, { stride, padding: 1, groups: 6 }), x, w, dy);
      expectClose(a.y, b.y, 'y', 1e-5, 1e-5);
      expectClose(a.dx, b.dx, 'dx', 1e-5, 1e-5);
      expectClose(a.dw, b.dw, 'dw', 1e-5, 1e-4);
    }
  });
  it('channel-major regrouping moves every value where its index formula says', () => {
    for (const [N, C, HW] of [[3, 4, 5], [3, 4, 1], [2, 3, 9]]) {
      const x = Float32Array.from({ length: N * C * HW }, (_, i) => i);
      const out = toChannelMajor(x, N, C, HW, new Float32Array(x.length).fill(NaN));
      for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let q = 0; q < HW; q++) expect(out[c * N * HW + n * HW + q]).toBe(x[(n * C + c) * HW + q]);
      // Channels [1, C) only: channel 0's values stay untouched (NaN).
      const back = fromChannelMajor(out, N, C, HW, new Float32Array(x.length).fill(NaN), 1, C);
      for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let q = 0; q < HW; q++) expect(back[(n * C + c) * HW + q]).toBe(c === 0 ? NaN : x[(n * C + c) * HW + q]);
    }
  });

  it('pointwise conv == conv2d with a 1x1 kernel', () => {
    const x = randn([2, 7, 4, 5], rng), w = randn([3, 7, 1, 1], rng), dy = randn([2, 3, 4, 5], rng);
    const a = gradsOf((x, w) => pointwiseConv2d(x, w), x, w, dy);
    const b = gradsOf((x, w) => conv2d(x, w), x, w, dy);
    expectClose(a.y, b.y, 'y', 1e-5, 1e-5);
    expectClose(a.dx, b.dx, 'dx', 1e-5, 1e-5);
    expectClose(a.dw, b.dw, 'dw', 1e-5, 1e-5);
  });
});

describe('conv kernels pass finite-difference checks', () => {
  const rng = new Rng(9);
  const p = (shape: number[]) => randn(shape, rng, 0, 1, { requiresGrad: true });
  it('conv2d k3 s2 p1 with bias, grouped conv', () => {
    assertGradcheck('conv2d', (x, w, b) => conv2d(x, w, b, { stride: 2, padding: 1 }), [p([2, 3, 7, 6]), p([4, 3, 3, 3]), p([4])]);
    assertGradcheck('conv2d groups', (x, w) => conv2d(x, w, null, { padding: 1, groups: 2 }), [p([1, 4, 5, 5]), p([4, 2, 3, 3])]);
  });
  it('depthwise k3 s1/s2 and k5', () => {
    assertGradcheck('depthwise s1', (x, w, b) => depthwiseConv2d(x, w, b, { padding: 1 }), [p([2, 3, 6, 7]), p([3, 1, 3, 3]), p([3])]);
    assertGradcheck('depthwise s2', (x, w) => depthwiseConv2d(x, w, null, { stride: 2, padding: 1 }), [p([1, 3, 7, 7]), p([3, 1, 3, 3])]);
    assertGradcheck('depthwise k5', (x, w) => depthwiseConv2d(x, w, null, { padding: 2 }), [p([1, 2, 6, 6]), p([2, 1, 5, 5])]);
  });
  it('pointwise', () => {
    assertGradcheck('pointwise', (x, w, b) => pointwiseConv2d(x, w, b), [p([2, 5, 3, 4]), p([6, 5, 1, 1]), p([6])]);
  });
});

describe('conv shape errors name the op and the shapes', () => {
  const rng = new Rng(1);
  it('depthwise weight that does not match the channels', () => {
    expect(() => depthwiseConv2d(randn([1, 16, 8, 8], rng), randn([32, 1, 3, 3], rng))).toThrow('depthwiseConv2d: weight [32, 1, 3, 3] does not match input channels 16 (expected [16, 1, k, k])');
  });
  it('conv2d channel mismatch, too-small input, bad stride', () => {
    expect(() => conv2d(randn([1, 16, 8, 8], rng), randn([32, 8, 3, 3], rng))).toThrow('conv2d: input has 16 channels but weight expects 8 (weight shape [32, 8, 3, 3], groups 1)');
    expect(() => conv2d(randn([1, 3, 2, 2], rng), randn([4, 3, 3, 3], rng))).toThrow(/conv2d: input \[1, 3, 2, 2\] is too small for a 3x3 kernel/);
    expect(() => conv2d(randn([1, 3, 8, 8], rng), randn([4, 3, 3, 3], rng), null, { stride: 0 })).toThrow('conv2d: stride must be an integer >= 1, got 0');
    expect(() => conv2d(randn([3, 8, 8], rng), randn([4, 3, 3, 3], rng))).toThrow('conv2d: input must be (N, C, H, W), got [3, 8, 8]');
  });
  it('pointwise channel mismatch', () => {
    expect(() => pointwiseConv2d(randn([1, 16, 4, 4], rng), randn([8, 12, 1, 1], rng))).toThrow('pointwiseConv2d: input has 16 channels but weight expects 12 (weight shape [8, 12, 1, 1])');
  });
});
