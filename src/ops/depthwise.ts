// Depthwise convolution: one k x k filter per channel (groups = channels), direct loops.
//
//   x: (N, C, H, W)   weight: (C, 1, k, k)   bias: (C)   y: (N, C, Hout, Wout)
//   y[n, c, oy, ox] = bias[c] + sum_{ky, kx} weight[c, 0, ky, kx] * x[n, c, oy*s - p + ky, ox*s - p + kx]
//
// Each channel's plane is independent, and the work per output is only k*k multiply-adds, so
// im2col would cost more than the arithmetic. A 3x3 filter (MobileNet's) works on a copy of each
// plane inside a zero border, where every output pixel has all nine taps: the forward pass, the
// stride-1 input gradient (a correlation of dy with the flipped filter) and the filter gradient
// are then straight loops with no edge cases. The stride-2 input gradient scatters through the
// forward's loops, and other filter sizes go pixel by pixel over their valid taps. The 3x3
// kernels (all four: correlation, filter gradient, scatter, row copies) also exist in
// WebAssembly, SIMD where it pays, each with its TypeScript twin of the same bits; there they run
// over a group of planes per call, copied into the module's memory as one block.

import { alloc } from '../tensor/buffers.js';
import { recordOp } from '../tensor/autograd.js';
import { formatShape, ShapeError } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import { addBiasPerChannel, biasGradPerChannel, convGeometry, type ConvGeometry } from './conv2d.js';
import { emitModule, F64, i, I32, V128, type WasmFunction } from '../wasm/emit.js';
import { KERNELS } from './gemm.js';
import { declareKernel, PARALLEL_MIN_ELEMENTS, runKernel } from './parallel.js';

/** Options of depthwiseConv2d: stride and padding. */
export interface DepthwiseOptions {
  stride?: number;
  padding?: number;
}

/** Check a depthwise convolution's shapes and return its geometry (errors name the expected and actual shapes). */
export function depthwiseGeometry(x: Tensor, weight: Tensor, bias: Tensor | null, options: DepthwiseOptions): ConvGeometry {
  if (x.rank === 4 && weight.rank === 4 && (weight.shape[0] !== x.shape[1] || weight.shape[1] !== 1)) {
    throw new ShapeError(`depthwiseConv2d: weight ${formatShape(weight.shape)} does not match input channels ${x.shape[1]} (expected [${x.shape[1]}, 1, k, k])`);
  }
  return convGeometry('depthwiseConv2d', x, weight, bias, { stride: options.stride ?? 1, padding: options.padding ?? 0, groups: x.rank === 4 ? x.shape[1] : 1 });
}

// =============================================================================================
// The loops: one loop nest per direction. Tap (ky, kx) of output pixel (oy, ox) is input pixel
// (oy*s + offsetY + ky, ox*s + offsetX + kx); the taps inside the input form a range of ky and a
// range of kx, computed once per call for every pixel that needs them (TapLayout.border), so the
// tap loops run without bounds checks.
//
// Each pixel's terms are summed in float64 in tap order (products of two float32 values are
// exact in float64; rounding them to float32 instead, as float32 SIMD lanes would, made the
// PyTorch parity tests of whole models fail their bounds). The correlations (the forward pass,
// and the stride-1 input gradient) with 3x3 filters, by far the most common, copy each plane
// into a zero-bordered one so that every pixel has its nine taps inside, and run one loop with
// the nine weights in registers: in WebAssembly SIMD, four pixels at a time in float64 lanes, or
// in its TypeScript twin (the same bits). Other filters go through the general nest. The filter
// gradient and the strided input gradient (a scatter) have a 3x3 interior rectangle, where all
// nine taps fall inside the input, with the nine weights or sums in locals.
// =============================================================================================

/** Where the taps of a filter fall, for one plane shape; the same for every plane of a call. */
interface TapLayout {
  /** Size of the plane the taps read from (gather) or add into (scatter). */
  inH: number;
  inW: number;
  /** Size of the plane indexed by (oy, ox). */
  outH: number;
  outW: number;
  kH: number;
  kW: number;
  stride: number;
  offsetY: number;
  offsetX: number;
  /** The output rectangle [yLo, yHi) x [xLo, xHi) where every tap is inside, for 3x3 filters; all four are 0 when there is none. */
  yLo: number;
  yHi: number;
  xLo: number;
  xHi: number;
  /**
   * The other pixels, row by row, six numbers each: the output pixel's index
   * oy*outW + ox, the input index of its tap (0, 0) (oy*s + offsetY) * inW + ox*s + offsetX (it
   * may lie outside the plane), and its valid taps [kyLo, kyHi) x [kxLo, kxHi).
   */
  border: Int32Array;
  /** border entries of output row oy: [rowStart[oy], rowStart[oy + 1]) (in entries, not numbers). */
  rowStart: Int32Array;
  /**
   * For a 3x3 correlation: the size of the input plane with zeros around it (padTop rows above,
   * padLeft columns on the left), so that every pixel has its nine taps inside. 0 for other filters.
   */
  paddedH: number;
  paddedW: number;
  padTop: number;
  padLeft: number;
}


/** Outputs o in [0, outSize) with o*stride + offset + tap in [0, size) for every tap in [tapLo, tapHi]: a range [lo, hi). */
function validOutputs(stride: number, offset: number, tapLo: number, tapHi: number, size: number, outSize: number): [number, number] {
  // As conv2d's validOutputRange (written out here: this runs in worker threads, which see no imports).
  const lo = Math.min(outSize, Math.max(0, Math.ceil(-(offset + tapLo) / stride)));
  const hi = Math.min(outSize, Math.floor((size - 1 - offset - tapHi) / stride) + 1);
  return [lo, Math.max(lo, hi)];
}

function tapLayout(inH: number, inW: number, outH: number, outW: number, kH: number, kW: number, stride: number, offsetY: number, offsetX: number): TapLayout {
  let [yLo, yHi, xLo, xHi] = [0, 0, 0, 0];
  if (kH === 3 && kW === 3) {
    [yLo, yHi] = validOutputs(stride, offsetY, 0, 2, inH, outH);
    [xLo, xHi] = validOutputs(stride, offsetX, 0, 2, inW, outW);
    if (yLo === yHi || xLo === xHi) [yLo, yHi, xLo, xHi] = [0, 0, 0, 0];
  }
  const count = outH * outW - (yHi - yLo) * (xHi - xLo);
  const border = new Int32Array(count * 6), rowStart = new Int32Array(outH + 1);
  let e = 0;
  for (let oy = 0; oy < outH; oy++) {
    rowStart[oy] = e / 6;
    const iy0 = oy * stride + offsetY;
    const interior = oy >= yLo && oy < yHi;
    for (let ox = 0; ox < outW; ox++) {
      if (interior && ox >= xLo && ox < xHi) continue;
      const ix0 = ox * stride + offsetX;
      border[e++] = oy * outW + ox;
      border[e++] = iy0 * inW + ix0;
      border[e++] = Math.max(0, -iy0);
      border[e++] = Math.min(kH, inH - iy0);
      border[e++] = Math.max(0, -ix0);
      border[e++] = Math.min(kW, inW - ix0);
    }
  }
  rowStart[outH] = e / 6;
  // Zero padding that puts every tap of every output inside: rows [-padTop, paddedH - padTop) of the input.
  let [paddedH, paddedW, padTop, padLeft] = [0, 0, 0, 0];
  if (kH === 3 && kW === 3) {
    padTop = Math.max(0, -offsetY);
    padLeft = Math.max(0, -offsetX);
    paddedH = Math.max(inH, (outH - 1) * stride + offsetY + 3) + padTop;
    paddedW = Math.max(inW, (outW - 1) * stride + offsetX + 3) + padLeft;
  }
  return { inH, inW, outH, outW, kH, kW, stride, offsetY, offsetX, yLo, yHi, xLo, xHi, border, rowStart, paddedH, paddedW, padTop, padLeft };
}

/**
 * Gather, every pixel of a filter other than 3x3:
 * dst[oy, ox] = sum over its valid taps of w[ky, kx] * src[oy*s + offsetY + ky, ox*s + offsetX + kx],
 * in float64 in tap order, rounded to float32 once.
 */
function correlateBorder(src: Float32Array, srcBase: number, w: Float32Array, wBase: number, t: TapLayout, dst: Float32Array, dstBase: number): void {
  const { border, inW, kW } = t;
  for (let e = 0; e < border.length; e += 6) {
    const kyHi = border[e + 3], kxLo = border[e + 4], kxHi = border[e + 5];
    let acc = 0;
    for (let ky = border[e + 2]; ky < kyHi; ky++) {
      const srcAt = srcBase + border[e + 1] + ky * inW, wAt = wBase + ky * kW;
      for (let kx = kxLo; kx < kxHi; kx++) acc += w[wAt + kx] * src[srcAt + kx];
    }
    dst[dstBase + border[e]] = acc;
  }
}

/**
 * dst[dstBase + oy*outW + ox] = sum_{ky,kx} w[ky, kx] * src[origin + (oy*stride + ky)*rowLength + ox*stride + kx]
 * for oy < outH, ox < outW, every tap inside src: the nine weights in locals, a pixel's terms in
 * tap order in float64, rounded to float32 once: the same bits as the WebAssembly twin's lanes
 * (depthwise3x3Wasm), which have no fused multiply-add.
 */
export function correlate3x3(src: Float32Array, origin: number, rowLength: number, stride: number, w: Float32Array, wBase: number, dst: Float32Array, dstBase: number, outH: number, outW: number): void {
  const w0 = w[wBase], w1 = w[wBase + 1], w2 = w[wBase + 2];
  const w3 = w[wBase + 3], w4 = w[wBase + 4], w5 = w[wBase + 5];
  const w6 = w[wBase + 6], w7 = w[wBase + 7], w8 = w[wBase + 8];
  for (let oy = 0; oy < outH; oy++) {
    const dstRow = dstBase + oy * outW;
    const r0 = origin + oy * stride * rowLength, r1 = r0 + rowLength, r2 = r1 + rowLength;
    if (stride === 1) {
      // Sliding window: columns (a0,b0,c0), (a1,b1,c1) are the previous pixel's last two,
      // so each output loads only its three new values.
      let a0 = src[r0], b0 = src[r1], c0 = src[r2];
      let a1 = src[r0 + 1], b1 = src[r1 + 1], c1 = src[r2 + 1];
      for (let ox = 0; ox < outW; ox++) {
        const a2 = src[r0 + ox + 2], b2 = src[r1 + ox + 2], c2 = src[r2 + ox + 2];
        dst[dstRow + ox] = w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2 + w6 * c0 + w7 * c1 + w8 * c2;
        a0 = a1; a1 = a2; b0 = b1; b1 = b2; c0 = c1; c1 = c2;
      }
      continue;
    }
    for (let ox = 0; ox < outW; ox++) {
      const a = r0 + ox * stride, b = r1 + ox * stride, c = r2 + ox * stride;
      dst[dstRow + ox] =
        w0 * src[a] + w1 * src[a + 1] + w2 * src[a + 2] +
        w3 * src[b] + w4 * src[b + 1] + w5 * src[b + 2] +
        w6 * src[c] + w7 * src[c + 1] + w8 * src[c + 2];
    }
  }
}

// Pieces the 3x3 kernels' emitters share (start-up only: the workers receive the emitted bytes).
/** Floats j of two v128 (a, b) as the byte lanes of an i8x16.shuffle: [0, 2, 4, 6] picks a's and b's even floats. */
function shuffleFloats(js: number[]): number[] {
  return js.flatMap((j) => [4 * j, 4 * j + 1, 4 * j + 2, 4 * j + 3]);
}

/** rows[0] = base + oy * stride * rowBytes, rows[1] = rows[0] + rowBytes, rows[2] = rows[1] + rowBytes: the three rows under a 3x3 window (locals). */
function windowRows(base: number, oy: number, stride: number, rowBytes: number, rows: [number, number, number]): number[] {
  const [r0, r1, r2] = rows;
  return [
    ...i.localGet(base), ...i.localGet(oy), ...i.i32Const(stride), ...i.i32Mul, ...i.localGet(rowBytes), ...i.i32Mul, ...i.i32Add, ...i.localSet(r0),
    ...i.localGet(r0), ...i.localGet(rowBytes), ...i.i32Add, ...i.localSet(r1),
    ...i.localGet(r1), ...i.localGet(rowBytes), ...i.i32Add, ...i.localSet(r2),
  ];
}

/** Each row pointer (local) += bytes. */
function advanceRows(rows: number[], bytes: number): number[] {
  return rows.flatMap((row) => [...i.localGet(row), ...i.i32Const(bytes), ...i.i32Add, ...i.localSet(row)]);
}

/**
 * correlate3x3's twin in WebAssembly SIMD, for stride 1 or 2: four output pixels per step, their
 * inputs loaded as a f32x4 and widened to two f64x2 (pixels 0-1 and 2-3), the same float64
 * products and sums in the same order, lane by lane, then narrowed to float32 (rounded to
 * nearest, as a Float32Array store rounds). Parameters (i32, addresses in bytes):
 * src (the origin), rowLength (floats), w (nine floats), dst, outH, outW. Each output row is
 * computed in whole vectors of four, so up to three pixels past its end are computed from
 * floats read past each input row (the scratch leaves room: DEPTHWISE_SLACK), but only the row's
 * own floats are stored.
 *   w_k = splat(w[k])
 *   for oy < outH: rows r0, r1, r2 = src + (oy*stride + 0, 1, 2) * rowLength
 *     for ox = 0, 4, .. < outW:
 *       x_k = r_ky[ox*stride + kx .. + 3*stride]    (stride 2: the even or odd floats of two loads)
 *       dst[oy*outW + ox ..] = float32(((w_0 x_0 + w_1 x_1) + w_2 x_2) + ...)   (in float64)
 */
export function depthwise3x3Wasm(stride: 1 | 2): WasmFunction {
  const [src, rowLength, w, dst, outH, outW] = [0, 1, 2, 3, 4, 5];
  const [oy, ox, r0, r1, r2, out, rowBytes] = [6, 7, 8, 9, 10, 11, 12];
  const weight = (k: number) => 13 + k;
  const [accLow, accHigh, v, wide] = [22, 23, 24, 25];
  const rem = 26;
  const body: number[] = [];
  // w_k as float64 in both lanes.
  for (let k = 0; k < 9; k++) body.push(...i.localGet(w), ...i.v128Load32Splat(4 * k), ...i.f64x2PromoteLowF32x4, ...i.localSet(weight(k)));
  body.push(...i.localGet(rowLength), ...i.i32Const(2), ...i.i32Shl, ...i.localSet(rowBytes));
  body.push(...i.i32Const(0), ...i.localSet(oy), ...i.block, ...i.loop, ...i.localGet(oy), ...i.localGet(outH), ...i.i32GeS, ...i.brIf(1));
  // r0, r1, r2 = the window's rows; out = dst + oy * outW * 4
  body.push(...windowRows(src, oy, stride, rowBytes, [r0, r1, r2]));
  body.push(...i.localGet(dst), ...i.localGet(oy), ...i.localGet(outW), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(out));
  body.push(...i.i32Const(0), ...i.localSet(ox), ...i.block, ...i.loop, ...i.localGet(ox), ...i.localGet(outW), ...i.i32GeS, ...i.brIf(1));
  for (let ky = 0; ky < 3; ky++) {
    const row = [r0, r1, r2][ky];
    for (let kx = 0; kx < 3; kx++) {
      if (stride === 1) body.push(...i.localGet(row), ...i.v128Load(4 * kx));
      else {
        // x[2 ox' + kx] for four ox': floats kx, kx + 2, kx + 4, kx + 6 from the row pointer.
        const first = kx === 2 ? 8 : 0, pick = kx === 1 ? [1, 3, 5, 7] : [0, 2, 4, 6];
        body.push(...i.localGet(row), ...i.v128Load(first), ...i.localGet(row), ...i.v128Load(first + 16), ...i.i8x16Shuffle(shuffleFloats(pick)));
      }
      body.push(...i.localSet(v));
      // Pixels 0-1 (floats 0-1 widened), then 2-3 (floats 2-3 moved down, widened).
      for (const [acc, high] of [[accLow, false], [accHigh, true]] as const) {
        body.push(...i.localGet(v));
        if (high) body.push(...i.localGet(v), ...i.i8x16Shuffle(shuffleFloats([2, 3, 2, 3])));
        body.push(...i.f64x2PromoteLowF32x4, ...i.localGet(weight(3 * ky + kx)), ...i.f64x2Mul);
        if (ky === 0 && kx === 0) body.push(...i.localSet(acc));
        else body.push(...i.localSet(wide), ...i.localGet(acc), ...i.localGet(wide), ...i.f64x2Add, ...i.localSet(acc));
      }
    }
  }
  // Narrow both halves to float32 and join them (floats 0-1 of each) into v.
  body.push(...i.localGet(accLow), ...i.f32x4DemoteF64x2Zero, ...i.localGet(accHigh), ...i.f32x4DemoteF64x2Zero, ...i.i8x16Shuffle(shuffleFloats([0, 1, 4, 5])), ...i.localSet(v));
  // Store the four floats, or at a row's end (rem = outW - ox < 4) only its last rem floats: two
  // (lanes 0-1) and then one, so nothing past the row is written and dst may be a tensor's plane.
  body.push(...i.localGet(outW), ...i.localGet(ox), ...i.i32Sub, ...i.localSet(rem));
  body.push(...i.localGet(rem), ...i.i32Const(4), ...i.i32GeS, ...i.if, ...i.localGet(out), ...i.localGet(v), ...i.v128Store(0), ...i.else);
  body.push(...i.localGet(rem), ...i.i32Const(2), ...i.i32And, ...i.if);
  body.push(...i.localGet(out), ...i.localGet(v), ...i.v128Store64Lane0(0), ...i.localGet(out), ...i.i32Const(8), ...i.i32Add, ...i.localSet(out));
  body.push(...i.localGet(v), ...i.localGet(v), ...i.i8x16Shuffle(shuffleFloats([2, 3, 2, 3])), ...i.localSet(v), ...i.end);
  body.push(...i.localGet(rem), ...i.i32Const(1), ...i.i32And, ...i.if, ...i.localGet(out), ...i.localGet(v), ...i.v128Store32Lane0(0), ...i.end);
  body.push(...i.end);
  // out += 16; r_k += 16 * stride; ox += 4
  body.push(...i.localGet(out), ...i.i32Const(16), ...i.i32Add, ...i.localSet(out));
  body.push(...advanceRows([r0, r1, r2], 16 * stride));
  body.push(...i.localGet(ox), ...i.i32Const(4), ...i.i32Add, ...i.localSet(ox), ...i.br(0), ...i.end, ...i.end);
  body.push(...i.localGet(oy), ...i.i32Const(1), ...i.i32Add, ...i.localSet(oy), ...i.br(0), ...i.end, ...i.end);
  return { name: `depthwise3x3s${stride}`, params: [I32, I32, I32, I32, I32, I32], results: [], locals: [I32, I32, I32, I32, I32, I32, I32, ...new Array(13).fill(V128), I32], body };
}

/**
 * Copy `rows` rows of `cols` floats, the rows `srcRow` floats apart from src and `dstRow` apart
 * at dst (addresses in bytes): whole vectors of four, then the rest one by one as integers, so
 * nothing past a row's end is written and every bit is kept. This spreads a plane, copied into
 * the module's memory in one block, into the inside of a zero-bordered plane: a JavaScript loop
 * doing the same moved about one float per 1.6 ns, this 5-10x faster.
 *   for r < rows: dst[r*dstRow .. + cols) = src[r*srcRow .. + cols)
 */
export function copyRowsWasm(): WasmFunction {
  const [src, srcRow, dst, dstRow, rows, cols] = [0, 1, 2, 3, 4, 5];
  const [r, from, to, vectorEnd, rowEnd] = [6, 7, 8, 9, 10];
  const body: number[] = [];
  body.push(...i.i32Const(0), ...i.localSet(r), ...i.block, ...i.loop, ...i.localGet(r), ...i.localGet(rows), ...i.i32GeS, ...i.brIf(1));
  // from = src + r * srcRow * 4; to = dst + r * dstRow * 4; vectorEnd = from + (cols - cols % 4) * 4; rowEnd = from + cols * 4
  body.push(...i.localGet(src), ...i.localGet(r), ...i.localGet(srcRow), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(from));
  body.push(...i.localGet(dst), ...i.localGet(r), ...i.localGet(dstRow), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(to));
  body.push(...i.localGet(from), ...i.localGet(cols), ...i.i32Const(-4), ...i.i32And, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(vectorEnd));
  body.push(...i.localGet(from), ...i.localGet(cols), ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(rowEnd));
  // Four floats at a time, then one.
  for (const [end, bytes] of [[vectorEnd, 16], [rowEnd, 4]] as const) {
    body.push(...i.block, ...i.loop, ...i.localGet(from), ...i.localGet(end), ...i.i32GeS, ...i.brIf(1));
    body.push(...i.localGet(to), ...i.localGet(from), ...(bytes === 16 ? [...i.v128Load(0), ...i.v128Store(0)] : [...i.i32Load(0), ...i.i32Store(0)]));
    body.push(...i.localGet(from), ...i.i32Const(bytes), ...i.i32Add, ...i.localSet(from), ...i.localGet(to), ...i.i32Const(bytes), ...i.i32Add, ...i.localSet(to), ...i.br(0), ...i.end, ...i.end);
  }
  body.push(...i.localGet(r), ...i.i32Const(1), ...i.i32Add, ...i.localSet(r), ...i.br(0), ...i.end, ...i.end);
  return { name: 'copyRows', params: [I32, I32, I32, I32, I32, I32], results: [], locals: [I32, I32, I32, I32, I32], body };
}

/**
 * A run of planes through one 3x3 correlation (the forward pass, or the stride-1 input gradient),
 * in one call: for each plane, copyRows puts it inside the zero-bordered plane, then the 3x3
 * kernel (depthwise3x3Wasm) writes its output plane. Planes lie one after another at src and
 * dst; plane p uses the nine weights of channel (channel + p) mod C of the C channels' weights.
 * Parameters (i32, addresses and offsets in bytes): src, dst, weights, planes, channel, C, then
 * the layout: inH, inW, padded, paddedW, interior (where the plane's first float goes, from
 * padded), origin (the first output's window, from padded), outH, outW. `copyRows` and `kernel`
 * are the module's function indices of copyRowsWasm and depthwise3x3Wasm(stride).
 *   w = weights + channel * 36
 *   for p < planes:
 *     copyRows(src, inW, padded + interior, paddedW, inH, inW)
 *     kernel(padded + origin, paddedW, w, dst, outH, outW)
 *     src += inH*inW*4; dst += outH*outW*4; w += 36, back to weights after the last channel
 */
export function correlatePlanesWasm(stride: 1 | 2, copyRows: number, kernel: number): WasmFunction {
  const [src, dst, weights, planes, channel, C, inH, inW, padded, paddedW, interior, origin, outH, outW] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
  const [p, inBytes, outBytes, w, weightsEnd] = [14, 15, 16, 17, 18];
  const body: number[] = [];
  body.push(...planeBytes(inH, inW, inBytes), ...planeBytes(outH, outW, outBytes));
  body.push(...channelPointer(weights, channel, C, 36, w, weightsEnd));
  body.push(...i.i32Const(0), ...i.localSet(p), ...i.block, ...i.loop, ...i.localGet(p), ...i.localGet(planes), ...i.i32GeS, ...i.brIf(1));
  body.push(...[src, inW].flatMap((k) => i.localGet(k)), ...i.localGet(padded), ...i.localGet(interior), ...i.i32Add, ...[paddedW, inH, inW].flatMap((k) => i.localGet(k)), ...i.call(copyRows));
  body.push(...i.localGet(padded), ...i.localGet(origin), ...i.i32Add, ...[paddedW, w, dst, outH, outW].flatMap((k) => i.localGet(k)), ...i.call(kernel));
  body.push(...addLocal(src, inBytes), ...addLocal(dst, outBytes), ...nextChannel(weights, w, weightsEnd, 36));
  body.push(...i.localGet(p), ...i.i32Const(1), ...i.i32Add, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  return { name: `correlatePlanes${stride}`, params: new Array(14).fill(I32), results: [], locals: new Array(5).fill(I32), body };
}

/**
 * A run of planes' filter-gradient sums, in one call: for each plane, copyRows puts x's plane
 * inside the zero-bordered plane, and dy's plane into rows of dyRow floats at dyScratch when its
 * width is odd (dyRow = width + 1; the scratch's extra column stays zero) or is read where it is;
 * filterGrad3x3Wasm writes the two lanes of the nine sums, and channel c's nine float64 taps get
 *   taps[c*9 + k] += sums[2k] + sums[2k + 1]
 * as filterGradPlane adds them. Planes lie one after another at x and dy, plane p of channel
 * (channel + p) mod C. Parameters (i32, bytes): x, dy, planes, channel, C, taps, the layout
 * (inH, inW, padded, paddedW, interior, origin, outH, outW as in correlatePlanesWasm), dyScratch,
 * dyRow, pairs (dyRow / 2), sums (18 float64).
 */
export function filterGradPlanesWasm(stride: 1 | 2, copyRows: number, kernel: number): WasmFunction {
  const [x, dy, planes, channel, C, taps, inH, inW, padded, paddedW, interior, origin, outH, outW, dyScratch, dyRow, pairs, sums] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
  const [p, inBytes, outBytes, tap, tapsEnd, dyPlane] = [18, 19, 20, 21, 22, 23];
  const body: number[] = [];
  body.push(...planeBytes(inH, inW, inBytes), ...planeBytes(outH, outW, outBytes));
  body.push(...channelPointer(taps, channel, C, 72, tap, tapsEnd));
  body.push(...i.i32Const(0), ...i.localSet(p), ...i.block, ...i.loop, ...i.localGet(p), ...i.localGet(planes), ...i.i32GeS, ...i.brIf(1));
  body.push(...[x, inW].flatMap((k) => i.localGet(k)), ...i.localGet(padded), ...i.localGet(interior), ...i.i32Add, ...[paddedW, inH, inW].flatMap((k) => i.localGet(k)), ...i.call(copyRows));
  // dyPlane = dy, or dy's rows copied to dyScratch when they are not dyRow floats long.
  body.push(...i.localGet(dy), ...i.localSet(dyPlane));
  body.push(...i.localGet(dyRow), ...i.localGet(outW), ...i.i32Ne, ...i.if);
  body.push(...[dy, outW, dyScratch, dyRow, outH, outW].flatMap((k) => i.localGet(k)), ...i.call(copyRows), ...i.localGet(dyScratch), ...i.localSet(dyPlane), ...i.end);
  body.push(...i.localGet(padded), ...i.localGet(origin), ...i.i32Add, ...[paddedW, dyPlane, dyRow, outH, pairs, sums].flatMap((k) => i.localGet(k)), ...i.call(kernel));
  // tap[k] += sums[2k] + sums[2k + 1], in float64
  for (let k = 0; k < 9; k++) {
    body.push(...i.localGet(tap), ...i.localGet(tap), ...i.f64Load(8 * k), ...i.localGet(sums), ...i.f64Load(16 * k), ...i.localGet(sums), ...i.f64Load(16 * k + 8), ...i.f64Add, ...i.f64Add, ...i.f64Store(8 * k));
  }
  body.push(...addLocal(x, inBytes), ...addLocal(dy, outBytes), ...nextChannel(taps, tap, tapsEnd, 72));
  body.push(...i.localGet(p), ...i.i32Const(1), ...i.i32Add, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  return { name: `filterGradPlanes${stride}`, params: new Array(18).fill(I32), results: [], locals: new Array(6).fill(I32), body };
}

/**
 * scatter3x3InteriorRow's loop in WebAssembly, stride 2, into a zero-bordered plane where every
 * tap is inside: the dy pixels [ox0, ox1) of a row each add their nine terms,
 *   dst[ox*2 + ky*rowBytes/4 + kx] += w[ky, kx] * dy[ox]
 * each product and sum in float64 and the sum rounded to float32 as it is stored, as a
 * Float32Array's `+=` does. Parameters (i32, bytes): dy (the row), ox0, ox1, dst (the tap (0, 0)
 * of pixel 0), rowBytes, w (nine floats).
 */
export function scatterRowWasm(): WasmFunction {
  const [dy, ox0, ox1, dst, rowBytes, w] = [0, 1, 2, 3, 4, 5];
  const [ox, r0, r1, r2, g] = [6, 7, 8, 9, 10];
  const weight = (k: number) => 11 + k;
  const body: number[] = [];
  for (let k = 0; k < 9; k++) body.push(...i.localGet(w), ...i.f32Load(4 * k), ...i.f64PromoteF32, ...i.localSet(weight(k)));
  body.push(...i.localGet(ox0), ...i.localSet(ox), ...i.block, ...i.loop, ...i.localGet(ox), ...i.localGet(ox1), ...i.i32GeS, ...i.brIf(1));
  // g = dy[ox]; r0 = dst + ox * 8 (two floats a pixel); r1, r2 the rows below
  body.push(...i.localGet(dy), ...i.localGet(ox), ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.f32Load(0), ...i.f64PromoteF32, ...i.localSet(g));
  body.push(...i.localGet(dst), ...i.localGet(ox), ...i.i32Const(3), ...i.i32Shl, ...i.i32Add, ...i.localSet(r0));
  body.push(...i.localGet(r0), ...i.localGet(rowBytes), ...i.i32Add, ...i.localSet(r1), ...i.localGet(r1), ...i.localGet(rowBytes), ...i.i32Add, ...i.localSet(r2));
  for (let ky = 0; ky < 3; ky++) {
    const row = [r0, r1, r2][ky];
    for (let kx = 0; kx < 3; kx++) {
      body.push(...i.localGet(row), ...i.localGet(row), ...i.f32Load(4 * kx), ...i.f64PromoteF32, ...i.localGet(weight(3 * ky + kx)), ...i.localGet(g), ...i.f64Mul, ...i.f64Add, ...i.f32DemoteF64, ...i.f32Store(4 * kx));
    }
  }
  body.push(...i.localGet(ox), ...i.i32Const(1), ...i.i32Add, ...i.localSet(ox), ...i.br(0), ...i.end, ...i.end);
  return { name: 'scatterRow', params: new Array(6).fill(I32), results: [], locals: [I32, I32, I32, I32, F64, ...new Array(9).fill(F64)], body };
}

/**
 * A run of planes of the stride-2 input gradient (scatterPlane) in one call: for each plane, the
 * zero-bordered plane is zeroed, each dy row scatters its interior pixels [xLo, xHi), then its
 * others ([0, xLo), then [xHi, outW)), or all of them in a row outside [yLo, yHi): the order in
 * which scatterPlane adds each dx element's terms, so the same bits (taps that fall outside dx
 * land in the border, which is not copied out). Then copyRows takes the inside out to dx.
 * Planes lie one after another at dy and dx, plane p with channel (channel + p) mod C's nine
 * weights. Parameters (i32, bytes): dy, dx, weights, planes, channel, C, then outH, outW, yLo,
 * yHi, xLo, xHi, padded, paddedW, paddedBytes (a multiple of 16), origin (from padded: tap (0, 0)
 * of dy's pixel (0, 0)), interior (from padded: dx's first float), inH, inW.
 */
export function scatterPlanesWasm(copyRows: number, scatterRow: number): WasmFunction {
  const [dy, dx, weights, planes, channel, C, outH, outW, yLo, yHi, xLo, xHi, padded, paddedW, paddedBytes, origin, interior, inH, inW] = Array.from({ length: 19 }, (_, k) => k);
  const [p, oy, w, weightsEnd, rowBytes, dyRow, dstRow, zero, inBytes, outBytes] = Array.from({ length: 10 }, (_, k) => 19 + k);
  const scatter = (from: number[], to: number[]) => [...i.localGet(dyRow), ...from, ...to, ...i.localGet(dstRow), ...i.localGet(rowBytes), ...i.localGet(w), ...i.call(scatterRow)];
  const body: number[] = [];
  body.push(...planeBytes(inH, inW, inBytes), ...planeBytes(outH, outW, outBytes));
  body.push(...i.localGet(paddedW), ...i.i32Const(2), ...i.i32Shl, ...i.localSet(rowBytes));
  body.push(...channelPointer(weights, channel, C, 36, w, weightsEnd));
  body.push(...i.i32Const(0), ...i.localSet(p), ...i.block, ...i.loop, ...i.localGet(p), ...i.localGet(planes), ...i.i32GeS, ...i.brIf(1));
  // The bordered plane all zero: for zero = padded, + 16, .. < padded + paddedBytes
  body.push(...i.localGet(padded), ...i.localSet(zero), ...i.block, ...i.loop, ...i.localGet(zero), ...i.localGet(padded), ...i.localGet(paddedBytes), ...i.i32Add, ...i.i32GeS, ...i.brIf(1));
  body.push(...i.localGet(zero), ...i.v128Zero, ...i.v128Store(0), ...advanceRows([zero], 16), ...i.br(0), ...i.end, ...i.end);
  // Row by row: dyRow = dy + oy*outW*4; dstRow = padded + origin + oy*2*rowBytes
  body.push(...i.i32Const(0), ...i.localSet(oy), ...i.block, ...i.loop, ...i.localGet(oy), ...i.localGet(outH), ...i.i32GeS, ...i.brIf(1));
  body.push(...i.localGet(dy), ...i.localGet(oy), ...i.localGet(outW), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(dyRow));
  body.push(...i.localGet(padded), ...i.localGet(origin), ...i.i32Add, ...i.localGet(oy), ...i.i32Const(1), ...i.i32Shl, ...i.localGet(rowBytes), ...i.i32Mul, ...i.i32Add, ...i.localSet(dstRow));
  // yLo <= oy < yHi: the interior, then the rest of the row; else the whole row.
  body.push(...i.localGet(oy), ...i.localGet(yLo), ...i.i32GeS, ...i.localGet(oy), ...i.localGet(yHi), ...i.i32LtS, ...i.i32And, ...i.if);
  body.push(...scatter(i.localGet(xLo), i.localGet(xHi)), ...scatter(i.i32Const(0), i.localGet(xLo)), ...scatter(i.localGet(xHi), i.localGet(outW)));
  body.push(...i.else, ...scatter(i.i32Const(0), i.localGet(outW)), ...i.end);
  body.push(...i.localGet(oy), ...i.i32Const(1), ...i.i32Add, ...i.localSet(oy), ...i.br(0), ...i.end, ...i.end);
  // dx's plane out of the bordered one.
  body.push(...i.localGet(padded), ...i.localGet(interior), ...i.i32Add, ...i.localGet(paddedW), ...[dx, inW, inH, inW].flatMap((k) => i.localGet(k)), ...i.call(copyRows));
  body.push(...addLocal(dy, outBytes), ...addLocal(dx, inBytes), ...nextChannel(weights, w, weightsEnd, 36));
  body.push(...i.localGet(p), ...i.i32Const(1), ...i.i32Add, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  return { name: 'scatterPlanes', params: new Array(19).fill(I32), results: [], locals: new Array(10).fill(I32), body };
}

/** bytes = rows * cols * 4 (locals). */
function planeBytes(rows: number, cols: number, bytes: number): number[] {
  return [...i.localGet(rows), ...i.localGet(cols), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.localSet(bytes)];
}

/** pointer = base + channel * stride; end = base + C * stride: a channel's entry of a per-channel table, and the table's end (locals). */
function channelPointer(base: number, channel: number, C: number, stride: number, pointer: number, end: number): number[] {
  return [
    ...i.localGet(base), ...i.localGet(channel), ...i.i32Const(stride), ...i.i32Mul, ...i.i32Add, ...i.localSet(pointer),
    ...i.localGet(base), ...i.localGet(C), ...i.i32Const(stride), ...i.i32Mul, ...i.i32Add, ...i.localSet(end),
  ];
}

/** pointer += stride, back to base past the table's end: the next plane's channel. */
function nextChannel(base: number, pointer: number, end: number, stride: number): number[] {
  return [...advanceRows([pointer], stride), ...i.localGet(pointer), ...i.localGet(end), ...i.i32Eq, ...i.if, ...i.localGet(base), ...i.localSet(pointer), ...i.end];
}

/** local += the local `amount`. */
function addLocal(local: number, amount: number): number[] {
  return [...i.localGet(local), ...i.localGet(amount), ...i.i32Add, ...i.localSet(local)];
}

/** Floats of room after a zero-bordered plane for depthwise3x3Wasm's whole-vector reads past a row's end. */
const DEPTHWISE_SLACK = 32;

/**
 * The WebAssembly path copies planes into the module's memory and out again in groups of at
 * most this many floats (128 KiB), so that a group is still in the core's cache when the kernels
 * read it, and the memory stays small whatever the tensor's size.
 */
const PLANE_GROUP_FLOATS = 32768;

// The module's functions, in order (a batched function calls its kernels by their index).
const [CORRELATE_S1, CORRELATE_S2, FILTER_GRAD_S1, FILTER_GRAD_S2, COPY_ROWS, SCATTER_ROW] = [0, 1, 2, 3, 4, 5];

/** The WebAssembly module of the 3x3 kernels (correlations and filter gradients, stride 1 and 2, and their runs over planes), emitted once at start-up; its memory grows as planes need. */
const DEPTHWISE_WASM = KERNELS === 'wasm'
  ? emitModule({
    memoryPages: 1, maxPages: 16384, sharedMemory: typeof SharedArrayBuffer === 'function',
    functions: [
      depthwise3x3Wasm(1), depthwise3x3Wasm(2), filterGrad3x3Wasm(1), filterGrad3x3Wasm(2), copyRowsWasm(), scatterRowWasm(),
      scatterPlanesWasm(COPY_ROWS, SCATTER_ROW), correlatePlanesWasm(1, COPY_ROWS, CORRELATE_S1), correlatePlanesWasm(2, COPY_ROWS, CORRELATE_S2),
      filterGradPlanesWasm(1, COPY_ROWS, FILTER_GRAD_S1), filterGradPlanesWasm(2, COPY_ROWS, FILTER_GRAD_S2),
    ],
  })
  : null;

/** correlatePlanesWasm and filterGradPlanesWasm as JavaScript sees them (their parameters in its order). */
type PlanesKernel = (...args: number[]) => void;

/**
 * This thread's instance of DEPTHWISE_WASM (or nothing without the WebAssembly kernels): its
 * memory, where groups of planes are put, and its runs over planes by stride. Self-contained:
 * the workers make their own from the same bytes.
 */
export function createCorrelateScratch(wasmBytes: Uint8Array<ArrayBuffer> | null): { memory: WebAssembly.Memory | null; correlatePlanes: PlanesKernel[]; filterGradPlanes: PlanesKernel[]; scatterPlanes: PlanesKernel | null } {
  if (wasmBytes === null) return { memory: null, correlatePlanes: [], filterGradPlanes: [], scatterPlanes: null };
  const exports = new WebAssembly.Instance(new WebAssembly.Module(wasmBytes)).exports;
  const correlatePlanes = [exports.correlatePlanes1, exports.correlatePlanes2] as PlanesKernel[];
  const filterGradPlanes = [exports.filterGradPlanes1, exports.filterGradPlanes2] as PlanesKernel[];
  const scatterPlanes = exports.scatterPlanes as PlanesKernel;
  // Past Node's baseline compiler (see createGemmScratch), with every kernel they call: two 6x6
  // planes of zeros inside a bordered plane 10 floats wide, dy of an odd width, in the first page.
  for (let k = 0; k < 200; k++) {
    for (const run of correlatePlanes) run(0, 16384, 32768, 2, 0, 2, 6, 6, 40960, 10, 44, 0, 6, 6);
    for (const run of filterGradPlanes) run(0, 16384, 2, 0, 2, 49152, 6, 6, 40960, 10, 44, 0, 6, 5, 53248, 6, 3, 57344);
    scatterPlanes(0, 16384, 32768, 2, 0, 2, 3, 3, 1, 3, 1, 3, 40960, 10, 400, 0, 44, 6, 6);
  }
  return { memory: exports.memory as WebAssembly.Memory, correlatePlanes, filterGradPlanes, scatterPlanes };
}

const correlateScratch = createCorrelateScratch(DEPTHWISE_WASM);
/** Whether the 3x3 kernels run in WebAssembly (tests switch with useDepthwiseKernel). */
let correlateInWasm = correlateScratch.memory !== null;

/** Run this thread's 3x3 depthwise kernels with the given kind (see useGemmKernel). */
export function useDepthwiseKernel(kind: 'wasm' | 'js'): void {
  if (kind === 'wasm' && correlateScratch.memory === null) throw new RangeError('useDepthwiseKernel: the WebAssembly kernels are not loaded (MOBILENET_KERNELS=js, or no WebAssembly SIMD)');
  correlateInWasm = kind === 'wasm';
}

/** Whether a layout runs in WebAssembly: a 3x3 filter (paddedH > 0) of stride 1 or 2. Others go pixel by pixel. */
function inWasm(t: TapLayout): boolean {
  return correlateInWasm && t.paddedH > 0 && (t.stride === 1 || t.stride === 2);
}

/**
 * The module's memory from its start as `floats` floats, growing it if needed, the first
 * `zeroed` of them set to 0. The memory is shared where it can be, so that growing it detaches
 * no buffer; views made before a growth do not cover the new pages, so a call makes its view once,
 * after asking for all it needs.
 */
function wasmFloats(floats: number, zeroed: number): Float32Array {
  const memory = correlateScratch.memory!;
  const pagesNeeded = Math.ceil((floats * 4) / 65536) - memory.buffer.byteLength / 65536;
  if (pagesNeeded > 0) memory.grow(pagesNeeded);
  return new Float32Array(memory.buffer, 0, floats).fill(0, 0, zeroed);
}

/** Consecutive sections of the given lengths (floats), each from a multiple of 4 floats (16 bytes: vectors, float64): their offsets, then where the last ends. */
function sections(lengths: number[]): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (const length of lengths) {
    offsets.push(at);
    at += Math.ceil(length / 4) * 4;
  }
  offsets.push(at);
  return offsets;
}

/** How many planes of `floats` floats each (what a plane copies in and out) make a group, at most `most`. */
function planesPerGroup(floats: number, most: number): number {
  return Math.max(1, Math.min(most, Math.floor(PLANE_GROUP_FLOATS / floats)));
}

/** The floats of a layout's zero-bordered plane and the room after it. */
function paddedFloats(t: TapLayout): number {
  return t.paddedH * t.paddedW + DEPTHWISE_SLACK;
}

/**
 * A layout as the runs over planes take it: inH, inW, the zero-bordered plane (at float `padded`,
 * as bytes), paddedW, the bytes from it to the plane's first float and to the first output's
 * window, outH, outW.
 */
function layoutArguments(t: TapLayout, padded: number): number[] {
  const interior = t.padTop * t.paddedW + t.padLeft, origin = (t.offsetY + t.padTop) * t.paddedW + t.offsetX + t.padLeft;
  return [t.inH, t.inW, padded * 4, t.paddedW, interior * 4, origin * 4, t.outH, t.outW];
}

/**
 * Planes [plane0, plane1) of a 3x3 correlation in WebAssembly: dst's from src's, plane p with
 * the nine weights at w[(p mod C) * 9]. Each group of planes goes into the module's memory as one
 * block, through correlatePlanesWasm, and out as one block: the same kernels as correlatePlane's
 * TypeScript, so the same bits.
 */
function correlatePlanesInWasm(src: Float32Array, w: Float32Array, C: number, t: TapLayout, dst: Float32Array, plane0: number, plane1: number): void {
  const run = correlateScratch.correlatePlanes[t.stride - 1];
  planesInWasm(src, t.inH * t.inW, w, C, paddedFloats(t), (padded) => layoutArguments(t, padded), run, dst, t.outH * t.outW, plane0, plane1);
}

/** Planes [plane0, plane1) of the stride-2 input gradient in WebAssembly (scatterPlanesWasm: scatterPlane's order of additions, so its bits), dx's from dy's. */
function scatterPlanesInWasm(dy: Float32Array, weight: Float32Array, C: number, t: TapLayout, dx: Float32Array, plane0: number, plane1: number): void {
  planesInWasm(dy, t.outH * t.outW, weight, C, paddedFloats(t), (padded) => scatterArguments(t, padded), correlateScratch.scatterPlanes!, dx, t.inH * t.inW, plane0, plane1);
}

/** A stride-2 layout as scatterPlanesWasm takes it (after its pointers and channels), with its bordered plane at float `padded`. */
function scatterArguments(t: TapLayout, padded: number): number[] {
  const interior = t.padTop * t.paddedW + t.padLeft, origin = (t.offsetY + t.padTop) * t.paddedW + t.offsetX + t.padLeft;
  return [t.outH, t.outW, t.yLo, t.yHi, t.xLo, t.xHi, padded * 4, t.paddedW, Math.ceil((t.paddedH * t.paddedW) / 4) * 16, origin * 4, interior * 4, t.inH, t.inW];
}

/**
 * Planes [plane0, plane1) of dst (dstPlane floats each) from src's (srcPlane floats each) by
 * one of the runs over planes, `run(src, dst, weights, planes, channel, C, ...layout)`: the C
 * channels' nine weights w, a bordered plane of `bordered` floats (its frame zero) and the layout's
 * arguments for it, then groups of planes copied in as one block and out as one block.
 */
function planesInWasm(src: Float32Array, srcPlane: number, w: Float32Array, C: number, bordered: number, layout: (padded: number) => number[], run: PlanesKernel, dst: Float32Array, dstPlane: number, plane0: number, plane1: number): void {
  const group = planesPerGroup(srcPlane + dstPlane, plane1 - plane0);
  const [padded, weights, inBlock, outBlock, floats] = sections([bordered, C * 9, group * srcPlane, group * dstPlane]);
  const memory = wasmFloats(floats, weights); // the bordered plane's frame and slack zero
  memory.set(w.subarray(0, C * 9), weights);
  const runArguments = layout(padded);
  for (let p = plane0; p < plane1; p += group) {
    const count = Math.min(group, plane1 - p);
    memory.set(src.subarray(p * srcPlane, (p + count) * srcPlane), inBlock);
    run(inBlock * 4, outBlock * 4, weights * 4, count, p % C, C, ...runArguments);
    dst.set(memory.subarray(outBlock, outBlock + count * dstPlane), p * dstPlane);
  }
}

/** Every channel's 3x3 filter flipped, w[c, 2 - ky, 2 - kx]: the weights of the stride-1 input gradient's correlation. */
function flippedFilters(weight: Float32Array, C: number): Float32Array {
  const flipped = new Float32Array(C * 9);
  for (let c = 0; c < C; c++) for (let k = 0; k < 9; k++) flipped[c * 9 + k] = weight[c * 9 + 8 - k];
  return flipped;
}

/**
 * Channels [c0, c1) of the filter gradient in WebAssembly, and with dx (and the weight) the
 * input gradient of the same planes. Image by image, a group of channels' planes of x and of dy
 * goes into the module's memory as two blocks; the input gradient runs from the dy block
 * through correlatePlanesWasm (stride 1) or scatterPlanesWasm (stride 2), and
 * filterGradPlanesWasm adds each plane's sums to its channel's float64 taps, over the images in
 * order as depthwiseBackwardFilter does; dweight gets the taps, rounded, at the end.
 */
function backwardInWasm(dy: Float32Array, x: Float32Array, weight: Float32Array | null, g: ConvGeometry, dx: Float32Array | null, dweight: Float32Array, c0: number, c1: number): void {
  const { N, Cin: C, H, W, Hout, Wout, stride } = g;
  const filterLayout = forwardLayout(g);
  // The input gradient: a correlation with the flipped filters (stride 1) or the forward's scatter (stride 2).
  const inputLayout = dx === null ? null : stride === 1 ? inputGradLayout(g) : filterLayout;
  const inPlane = H * W, outPlane = Hout * Wout, dyRow = Wout + (Wout & 1);
  const group = planesPerGroup(2 * inPlane + outPlane, c1 - c0);
  const [padded, dyScratch, taps, sums, inputPadded, weights, xBlock, dyBlock, dxBlock, floats] = sections([
    paddedFloats(filterLayout), Hout * dyRow, 2 * C * 9, 36,
    inputLayout === null ? 0 : paddedFloats(inputLayout), inputLayout === null ? 0 : C * 9,
    group * inPlane, group * outPlane, inputLayout === null ? 0 : group * inPlane,
  ]);
  const memory = wasmFloats(floats, weights); // bordered planes, dy's even rows and the taps zero
  const filterGrad = correlateScratch.filterGradPlanes[stride - 1], filterArguments = layoutArguments(filterLayout, padded);
  let inputGrad: PlanesKernel | null = null, inputArguments: number[] = [];
  if (inputLayout !== null) {
    memory.set(stride === 1 ? flippedFilters(weight!, C) : weight!.subarray(0, C * 9), weights);
    inputGrad = stride === 1 ? correlateScratch.correlatePlanes[0] : correlateScratch.scatterPlanes;
    inputArguments = stride === 1 ? layoutArguments(inputLayout, inputPadded) : scatterArguments(inputLayout, inputPadded);
  }
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c += group) {
      const count = Math.min(group, c1 - c), plane = n * C + c;
      memory.set(x.subarray(plane * inPlane, (plane + count) * inPlane), xBlock);
      memory.set(dy.subarray(plane * outPlane, (plane + count) * outPlane), dyBlock);
      if (inputGrad !== null) {
        inputGrad(dyBlock * 4, dxBlock * 4, weights * 4, count, c, C, ...inputArguments);
        dx!.set(memory.subarray(dxBlock, dxBlock + count * inPlane), plane * inPlane);
      }
      filterGrad(xBlock * 4, dyBlock * 4, count, c, C, taps * 4, ...filterArguments, dyScratch * 4, dyRow, dyRow / 2, sums * 4);
    }
  }
  dweight.set(new Float64Array(memory.buffer, (taps + 2 * c0 * 9) * 4, (c1 - c0) * 9), c0 * 9);
}

/** The zero-bordered plane of a 3x3 correlation in TypeScript (its frame zero), one per call and reused for its planes, or null (other filters). */
function planeScratch(t: TapLayout): Float32Array | null {
  return t.paddedH === 0 ? null : new Float32Array(paddedFloats(t));
}

/** The rows x cols plane at src[srcBase] into dst from float dstAt, its rows dstRow floats apart (what lies between them is left as it is). */
function copyPlane(src: Float32Array, srcBase: number, rows: number, cols: number, dst: Float32Array, dstAt: number, dstRow: number): void {
  for (let y = 0; y < rows; y++) {
    const from = srcBase + y * cols, to = dstAt + y * dstRow;
    for (let x = 0; x < cols; x++) dst[to + x] = src[from + x];
  }
}

/** The inH x inW plane at src[srcBase] into the inside of a zero-bordered plane (its frame is left as it is: zero). */
function copyIntoPadding(src: Float32Array, srcBase: number, t: TapLayout, padded: Float32Array): void {
  copyPlane(src, srcBase, t.inH, t.inW, padded, t.padTop * t.paddedW + t.padLeft, t.paddedW);
}

/**
 * One plane's 3x3 correlation through zero padding: the plane is copied into the padded plane
 * (whose frame stays zero: only the inside is written), then every output pixel has its nine taps
 * inside. A tap outside the plane adds w * 0, which leaves a sum's value as it was.
 */
function correlate3x3Padded(src: Float32Array, srcBase: number, w: Float32Array, wBase: number, t: TapLayout, padded: Float32Array, dst: Float32Array, dstBase: number): void {
  const origin = (t.offsetY + t.padTop) * t.paddedW + t.offsetX + t.padLeft;
  copyIntoPadding(src, srcBase, t, padded);
  correlate3x3(padded, origin, t.paddedW, t.stride, w, wBase, dst, dstBase, t.outH, t.outW);
}

/**
 * One plane of a correlation: dst[oy, ox] = sum_{ky,kx} w[ky, kx] * src[oy*s + offsetY + ky, ox*s + offsetX + kx]
 * (zero outside src). The forward pass is this with offset -padding; the stride-1 input gradient
 * is this over dy with the filter flipped and offset padding - (k - 1).
 */
function correlatePlane(src: Float32Array, srcBase: number, w: Float32Array, wBase: number, t: TapLayout, padded: Float32Array | null, dst: Float32Array, dstBase: number): void {
  if (padded !== null) return correlate3x3Padded(src, srcBase, w, wBase, t, padded, dst, dstBase);
  correlateBorder(src, srcBase, w, wBase, t, dst, dstBase);
}

/** Scatter, the border pixels of dy's rows [oy0, oy1): dx[tap] += w[ky, kx] * dy[oy, ox] for each valid tap, pixel by pixel. */
function scatterBorder(dy: Float32Array, dyBase: number, w: Float32Array, wBase: number, t: TapLayout, dx: Float32Array, dxBase: number, oy0: number, oy1: number): void {
  const { border, inW, kW } = t;
  for (let e = 6 * t.rowStart[oy0]; e < 6 * t.rowStart[oy1]; e += 6) {
    const kyHi = border[e + 3], kxLo = border[e + 4], kxHi = border[e + 5];
    const gy = dy[dyBase + border[e]];
    for (let ky = border[e + 2]; ky < kyHi; ky++) {
      const dxAt = dxBase + border[e + 1] + ky * inW, wAt = wBase + ky * kW;
      for (let kx = kxLo; kx < kxHi; kx++) dx[dxAt + kx] += w[wAt + kx] * gy;
    }
  }
}

/** The 3x3 interior of dy's row oy, columns [xLo, xHi), scattered into three dx rows from r0. */
function scatter3x3InteriorRow(dy: Float32Array, dyRow: number, xLo: number, xHi: number, w: Float32Array, wBase: number, dx: Float32Array, r0: number, inW: number, stride: number): void {
  const w0 = w[wBase], w1 = w[wBase + 1], w2 = w[wBase + 2];
  const w3 = w[wBase + 3], w4 = w[wBase + 4], w5 = w[wBase + 5];
  const w6 = w[wBase + 6], w7 = w[wBase + 7], w8 = w[wBase + 8];
  const r1 = r0 + inW, r2 = r1 + inW;
  for (let ox = xLo; ox < xHi; ox++) {
    const gy = dy[dyRow + ox];
    const a = r0 + ox * stride, b = r1 + ox * stride, c = r2 + ox * stride;
    dx[a] += w0 * gy; dx[a + 1] += w1 * gy; dx[a + 2] += w2 * gy;
    dx[b] += w3 * gy; dx[b + 1] += w4 * gy; dx[b + 2] += w5 * gy;
    dx[c] += w6 * gy; dx[c + 1] += w7 * gy; dx[c + 2] += w8 * gy;
  }
}

/**
 * One plane of the strided input gradient by scatter (dx must start at zero): the forward's loops,
 * adding instead of reading. Row by row, the interior's pixels first, then the row's others, so
 * every dx element receives its terms in the same order whatever the plane's size.
 */
function scatterPlane(dy: Float32Array, dyBase: number, w: Float32Array, wBase: number, t: TapLayout, dx: Float32Array, dxBase: number): void {
  const { inW, outH, outW, stride, yLo, yHi, xLo, xHi } = t;
  for (let oy = 0; oy < outH; oy++) {
    if (oy >= yLo && oy < yHi) scatter3x3InteriorRow(dy, dyBase + oy * outW, xLo, xHi, w, wBase, dx, dxBase + (oy * stride + t.offsetY) * inW + t.offsetX, inW, stride);
    scatterBorder(dy, dyBase, w, wBase, t, dx, dxBase, oy, oy + 1);
  }
}

/** Filter gradient of a filter other than 3x3, pixel by pixel: taps[ky, kx] += dy[oy, ox] * x[tap] for each valid tap, in float64. */
function filterGradBorder(dy: Float32Array, dyBase: number, x: Float32Array, xBase: number, t: TapLayout, taps: Float64Array, tapBase: number): void {
  const { border, inW, kW } = t;
  for (let e = 0; e < border.length; e += 6) {
    const kyHi = border[e + 3], kxLo = border[e + 4], kxHi = border[e + 5];
    const gy = dy[dyBase + border[e]];
    for (let ky = border[e + 2]; ky < kyHi; ky++) {
      const xAt = xBase + border[e + 1] + ky * inW, tapAt = tapBase + ky * kW;
      for (let kx = kxLo; kx < kxHi; kx++) taps[tapAt + kx] += gy * x[xAt + kx];
    }
  }
}

/**
 * One plane's nine 3x3 filter-gradient sums, each in two float64 partial sums: the even output
 * columns' terms and the odd ones',
 *   sums[2k + lane] = sum_{oy, ox even/odd} dy[oy, ox] * x[origin + (oy*stride + ky)*rowLength + ox*stride + kx],  k = 3 ky + kx.
 * dy's rows are `dyRow` floats apart, an even number (`pairs` pairs of columns: a plane of odd
 * width carries a zero column, whose terms are 0 * x). Every tap is inside x (the zero-bordered
 * plane). The two partial sums are the two lanes of the WebAssembly twin (filterGrad3x3Wasm),
 * which adds the same float64 products in the same order, so both give the same bits.
 */
export function filterGrad3x3(x: Float32Array, origin: number, rowLength: number, stride: number, dy: Float32Array, dyStart: number, dyRow: number, outH: number, pairs: number, sums: Float64Array): void {
  let e0 = 0, e1 = 0, e2 = 0, e3 = 0, e4 = 0, e5 = 0, e6 = 0, e7 = 0, e8 = 0;
  let o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0, o6 = 0, o7 = 0, o8 = 0;
  for (let oy = 0; oy < outH; oy++) {
    const r0 = origin + oy * stride * rowLength, r1 = r0 + rowLength, r2 = r1 + rowLength;
    const d = dyStart + oy * dyRow;
    for (let p = 0; p < pairs; p++) {
      const ge = dy[d + 2 * p], go = dy[d + 2 * p + 1];
      const a = r0 + 2 * p * stride, b = r1 + 2 * p * stride, c = r2 + 2 * p * stride;
      const s = stride;
      e0 += ge * x[a]; o0 += go * x[a + s]; e1 += ge * x[a + 1]; o1 += go * x[a + 1 + s]; e2 += ge * x[a + 2]; o2 += go * x[a + 2 + s];
      e3 += ge * x[b]; o3 += go * x[b + s]; e4 += ge * x[b + 1]; o4 += go * x[b + 1 + s]; e5 += ge * x[b + 2]; o5 += go * x[b + 2 + s];
      e6 += ge * x[c]; o6 += go * x[c + s]; e7 += ge * x[c + 1]; o7 += go * x[c + 1 + s]; e8 += ge * x[c + 2]; o8 += go * x[c + 2 + s];
    }
  }
  sums[0] = e0; sums[1] = o0; sums[2] = e1; sums[3] = o1; sums[4] = e2; sums[5] = o2;
  sums[6] = e3; sums[7] = o3; sums[8] = e4; sums[9] = o4; sums[10] = e5; sums[11] = o5;
  sums[12] = e6; sums[13] = o6; sums[14] = e7; sums[15] = o7; sums[16] = e8; sums[17] = o8;
}

/**
 * filterGrad3x3's twin in WebAssembly SIMD, stride 1 or 2: two output columns per step, their
 * dy values and each tap's two x values widened to a f64x2 (lane 0 the even column, lane 1 the
 * odd), nine f64x2 accumulators. Parameters (i32, addresses in bytes): x (the origin),
 * rowLength (floats), dy, dyRow (floats), outH, pairs, sums (18 float64, 16-byte aligned).
 *   for oy < outH, p < pairs:  g = (dy[oy, 2p], dy[oy, 2p + 1])
 *     acc_k += g * (x at column 2p*stride + kx, and (2p + 1)*stride + kx, of row oy*stride + ky)
 */
export function filterGrad3x3Wasm(stride: 1 | 2): WasmFunction {
  const [x, rowLength, dy, dyRow, outH, pairs, sums] = [0, 1, 2, 3, 4, 5, 6];
  const [oy, p, r0, r1, r2, d, rowBytes] = [7, 8, 9, 10, 11, 12, 13];
  const acc = (k: number) => 14 + k;
  const [g, v] = [23, 24];
  const body: number[] = [];
  for (let k = 0; k < 9; k++) body.push(...i.v128Zero, ...i.localSet(acc(k)));
  body.push(...i.localGet(rowLength), ...i.i32Const(2), ...i.i32Shl, ...i.localSet(rowBytes));
  body.push(...i.i32Const(0), ...i.localSet(oy), ...i.block, ...i.loop, ...i.localGet(oy), ...i.localGet(outH), ...i.i32GeS, ...i.brIf(1));
  // r0, r1, r2 = the window's rows; d = dy + oy * dyRow * 4
  body.push(...windowRows(x, oy, stride, rowBytes, [r0, r1, r2]));
  body.push(...i.localGet(dy), ...i.localGet(oy), ...i.localGet(dyRow), ...i.i32Mul, ...i.i32Const(2), ...i.i32Shl, ...i.i32Add, ...i.localSet(d));
  body.push(...i.i32Const(0), ...i.localSet(p), ...i.block, ...i.loop, ...i.localGet(p), ...i.localGet(pairs), ...i.i32GeS, ...i.brIf(1));
  // g = the two dy values as float64
  body.push(...i.localGet(d), ...i.v128Load64Splat(0), ...i.f64x2PromoteLowF32x4, ...i.localSet(g));
  for (let ky = 0; ky < 3; ky++) {
    const row = [r0, r1, r2][ky];
    for (let kx = 0; kx < 3; kx++) {
      // stride 1: floats kx, kx + 1 from the row pointer; stride 2: floats kx, kx + 2 (the even floats of a load)
      if (stride === 1) body.push(...i.localGet(row), ...i.v128Load64Splat(4 * kx));
      else body.push(...i.localGet(row), ...i.v128Load(4 * kx), ...i.localGet(row), ...i.v128Load(4 * kx), ...i.i8x16Shuffle(shuffleFloats([0, 2, 0, 2])));
      body.push(...i.f64x2PromoteLowF32x4, ...i.localSet(v));
      body.push(...i.localGet(acc(3 * ky + kx)), ...i.localGet(g), ...i.localGet(v), ...i.f64x2Mul, ...i.f64x2Add, ...i.localSet(acc(3 * ky + kx)));
    }
  }
  // d += 8; r_k += 8 * stride; p += 1
  body.push(...i.localGet(d), ...i.i32Const(8), ...i.i32Add, ...i.localSet(d));
  body.push(...advanceRows([r0, r1, r2], 8 * stride));
  body.push(...i.localGet(p), ...i.i32Const(1), ...i.i32Add, ...i.localSet(p), ...i.br(0), ...i.end, ...i.end);
  body.push(...i.localGet(oy), ...i.i32Const(1), ...i.i32Add, ...i.localSet(oy), ...i.br(0), ...i.end, ...i.end);
  for (let k = 0; k < 9; k++) body.push(...i.localGet(sums), ...i.localGet(acc(k)), ...i.v128Store(16 * k));
  return { name: `filterGrad3x3s${stride}`, params: [I32, I32, I32, I32, I32, I32, I32], results: [], locals: [I32, I32, I32, I32, I32, I32, I32, ...new Array(11).fill(V128)], body };
}

/** The scratch of a 3x3 filter gradient in TypeScript: the zero-bordered x plane, dy's plane with rows of an even length (a zero column after an odd width), the two lanes of the nine sums. */
interface FilterScratch {
  padded: Float32Array;
  dyPlane: Float32Array;
  dyRow: number;
  sums: Float64Array;
}

/** The scratch filterGradPlane needs for this layout, or null (filters other than 3x3). */
function filterScratch(t: TapLayout): FilterScratch | null {
  if (t.paddedH === 0) return null;
  const dyRow = t.outW + (t.outW & 1);
  return { padded: new Float32Array(paddedFloats(t)), dyPlane: new Float32Array(t.outH * dyRow), dyRow, sums: new Float64Array(18) };
}

/**
 * One plane's contribution to the filter gradient: taps[tapBase + ky*kW + kx] += sum_{oy,ox} dy[oy, ox] * x[oy*s + offsetY + ky, ox*s + offsetX + kx].
 * A 3x3 filter copies the x plane into its scratch's zero-bordered plane and dy's plane into
 * rows of an even length, then adds the nine sums of filterGrad3x3; other filters go tap by tap.
 */
function filterGradPlane(dy: Float32Array, dyBase: number, x: Float32Array, xBase: number, t: TapLayout, scratch: FilterScratch | null, taps: Float64Array, tapBase: number): void {
  if (scratch === null) return filterGradBorder(dy, dyBase, x, xBase, t, taps, tapBase);
  const { padded, dyPlane, dyRow, sums } = scratch;
  copyIntoPadding(x, xBase, t, padded);
  copyPlane(dy, dyBase, t.outH, t.outW, dyPlane, 0, dyRow);
  const origin = (t.offsetY + t.padTop) * t.paddedW + t.offsetX + t.padLeft;
  filterGrad3x3(padded, origin, t.paddedW, t.stride, dyPlane, 0, dyRow, t.outH, dyRow / 2, sums);
  for (let k = 0; k < 9; k++) taps[tapBase + k] += sums[2 * k] + sums[2 * k + 1];
}

/** The forward's tap layout (output pixel -> input taps), which the filter gradient and the strided input gradient's scatter share. */
function forwardLayout(g: ConvGeometry): TapLayout {
  const { H, W, kH, kW, stride, padding, Hout, Wout } = g;
  return tapLayout(H, W, Hout, Wout, kH, kW, stride, -padding, -padding);
}

/** Forward over planes [plane0, plane1) of the N*C planes (a plane range lets threads split the work). */
export function depthwiseForward(x: Float32Array, weight: Float32Array, g: ConvGeometry, y: Float32Array, plane0 = 0, plane1 = g.N * g.Cin): void {
  const { Cin: C, H, W, kH, kW, Hout, Wout } = g;
  const layout = forwardLayout(g);
  if (inWasm(layout)) return correlatePlanesInWasm(x, weight, C, layout, y, plane0, plane1);
  const scratch = planeScratch(layout);
  for (let plane = plane0; plane < plane1; plane++) {
    correlatePlane(x, plane * H * W, weight, (plane % C) * kH * kW, layout, scratch, y, plane * Hout * Wout);
  }
}

/**
 * Backward input: the forward's term `y[oy,ox] += w[ky,kx] * x[oy*s-p+ky, ox*s-p+kx]` sends
 * `dx[oy*s-p+ky, ox*s-p+kx] += w[ky,kx] * dy[oy,ox]`. With stride 1 that is a correlation of dy
 * with the filter flipped: dx[i, j] = sum_{ky,kx} w[kH-1-ky, kW-1-kx] * dy[i + p-(kH-1) + ky, j + p-(kW-1) + kx],
 * the forward's loops again. With a larger stride, the forward's loops scatter instead of gather.
 */
export function depthwiseBackwardInput(dy: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array, plane0 = 0, plane1 = g.N * g.Cin): void {
  const layout = inputGradLayout(g);
  if (inWasm(layout)) {
    if (g.stride === 1) return correlatePlanesInWasm(dy, flippedFilters(weight, g.Cin), g.Cin, layout, dx, plane0, plane1);
    return scatterPlanesInWasm(dy, weight, g.Cin, layout, dx, plane0, plane1);
  }
  const flipped = new Float32Array(g.kH * g.kW);
  const scratch = g.stride === 1 ? planeScratch(layout) : null;
  for (let plane = plane0; plane < plane1; plane++) inputGradPlane(dy, weight, g, layout, flipped, scratch, dx, plane);
}

/** The tap layout of the input gradient: the flipped filter's correlation (stride 1) or the forward's scatter. */
function inputGradLayout(g: ConvGeometry): TapLayout {
  const { H, W, kH, kW, stride, padding, Hout, Wout } = g;
  return stride === 1 ? tapLayout(Hout, Wout, H, W, kH, kW, 1, padding - (kH - 1), padding - (kW - 1)) : forwardLayout(g);
}

/** One plane (image x channel) of the input gradient; `flipped` is scratch for the flipped filter. */
function inputGradPlane(dy: Float32Array, weight: Float32Array, g: ConvGeometry, layout: TapLayout, flipped: Float32Array, scratch: Float32Array | null, dx: Float32Array, plane: number): void {
  const { Cin: C, H, W, kH, kW, stride, Hout, Wout } = g;
  const taps = kH * kW;
  const wBase = (plane % C) * taps;
  if (stride === 1) {
    for (let t = 0; t < taps; t++) flipped[t] = weight[wBase + taps - 1 - t];
    correlatePlane(dy, plane * Hout * Wout, flipped, 0, layout, scratch, dx, plane * H * W);
  } else {
    dx.fill(0, plane * H * W, (plane + 1) * H * W);
    scatterPlane(dy, plane * Hout * Wout, weight, wBase, layout, dx, plane * H * W);
  }
}

/**
 * Backward filter: dW[c, ky, kx] = sum_{n, oy, ox} dy[n, c, oy, ox] * x[n, c, oy*s-p+ky, ox*s-p+kx].
 * The k*k sums of a channel stay in float64 (a small array and, for 3x3, locals) and are written
 * once per channel. (Calling an indexing method per multiply-add here is what makes some engines
 * 40x slower.) Channels [c0, c1) are done one after another, over all images.
 */
export function depthwiseBackwardFilter(dy: Float32Array, x: Float32Array, g: ConvGeometry, dweight: Float32Array, c0 = 0, c1 = g.Cin): void {
  const { N, Cin: C, H, W, kH, kW, Hout, Wout } = g;
  const layout = forwardLayout(g);
  if (inWasm(layout)) return backwardInWasm(dy, x, null, g, null, dweight, c0, c1);
  const scratch = filterScratch(layout);
  const taps = new Float64Array(kH * kW);
  for (let c = c0; c < c1; c++) {
    taps.fill(0);
    for (let n = 0; n < N; n++) filterGradPlane(dy, (n * C + c) * Hout * Wout, x, (n * C + c) * H * W, layout, scratch, taps, 0);
    for (let t = 0; t < kH * kW; t++) dweight[c * kH * kW + t] = taps[t];
  }
}

/**
 * Both gradients in one pass, channels [c0, c1): image by image, each channel's plane of dx,
 * then the same plane's contribution to dW while dy's plane is still in cache, planes in memory
 * order. Each channel's dW sum runs over the images in the same order as in the function above,
 * and dx's planes are computed by the same loops, so the bits are the same; one job on the
 * threads instead of two.
 */
export function depthwiseBackward(dy: Float32Array, x: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array, dweight: Float32Array, c0 = 0, c1 = g.Cin): void {
  const { N, Cin: C, H, W, kH, kW, stride, Hout, Wout } = g;
  const filterLayout = forwardLayout(g);
  if (inWasm(filterLayout)) return backwardInWasm(dy, x, weight, g, dx, dweight, c0, c1);
  const inputLayout = stride === 1 ? inputGradLayout(g) : filterLayout; // a strided input gradient scatters through the forward's layout
  const flipped = new Float32Array(kH * kW);
  const inputScratch = stride === 1 ? planeScratch(inputLayout) : null; // a scatter with stride 2
  const scratch = filterScratch(filterLayout);
  const taps = new Float64Array((c1 - c0) * kH * kW); // channel c's sums at (c - c0) * kH * kW
  for (let n = 0; n < N; n++) {
    for (let c = c0; c < c1; c++) {
      const plane = n * C + c;
      inputGradPlane(dy, weight, g, inputLayout, flipped, inputScratch, dx, plane);
      filterGradPlane(dy, plane * Hout * Wout, x, plane * H * W, filterLayout, scratch, taps, (c - c0) * kH * kW);
    }
  }
  for (let t = 0; t < taps.length; t++) dweight[c0 * kH * kW + t] = taps[t];
}

// =============================================================================================
// Both cores: planes (forward, input gradient) or channels (filter gradient, both gradients) split over threads.
// Each output element is computed exactly as on one thread, so results are bit-identical.
// =============================================================================================

// On every thread: the three directions, and both gradients together, as declared kernels (parallel.ts).
type DepthwiseParams = Record<'N' | 'C' | 'H' | 'W' | 'kH' | 'kW' | 'stride' | 'padding' | 'Hout' | 'Wout', number>;
const DEPTHWISE_INTS = ['N', 'C', 'H', 'W', 'kH', 'kW', 'stride', 'padding', 'Hout', 'Wout'] as const;
const DEPTHWISE_DEPS = [
  validOutputs, tapLayout, correlateBorder, correlate3x3, createCorrelateScratch, inWasm, wasmFloats, sections, planesPerGroup, paddedFloats, layoutArguments,
  correlatePlanesInWasm, scatterPlanesInWasm, scatterArguments, planesInWasm, flippedFilters, backwardInWasm, planeScratch, copyPlane, copyIntoPadding, correlate3x3Padded, correlatePlane, scatterBorder,
  scatter3x3InteriorRow, scatterPlane, filterGradBorder, filterGrad3x3, filterScratch, filterGradPlane, forwardLayout, inputGradLayout, inputGradPlane,
];

/** The geometry object the loops take, from a kernel's parameters. */
function depthwiseGeometryOf(p: DepthwiseParams): ConvGeometry {
  return { N: p.N, Cin: p.C, H: p.H, W: p.W, Cout: p.C, kH: p.kH, kW: p.kW, stride: p.stride, padding: p.padding, dilation: 1, groups: p.C, Hout: p.Hout, Wout: p.Wout };
}

/** Output planes [lo, hi) (plane = image x channel) of y = depthwise(x, weight). */
function depthwiseForwardSlice(p: DepthwiseParams, b: Record<'x' | 'weight' | 'y', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseForward(b.x as Float32Array, b.weight as Float32Array, depthwiseGeometryOf(p), b.y as Float32Array, lo, hi);
}

/** Input-gradient planes [lo, hi) of dx from dy and the weight. */
function depthwiseBackwardInputSlice(p: DepthwiseParams, b: Record<'dy' | 'weight' | 'dx', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseBackwardInput(b.dy as Float32Array, b.weight as Float32Array, depthwiseGeometryOf(p), b.dx as Float32Array, lo, hi);
}

/** Channels [lo, hi) of the filter gradient from dy and x (a sum over images and positions, kept within a channel). */
function depthwiseBackwardFilterSlice(p: DepthwiseParams, b: Record<'dy' | 'x' | 'dweight', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseBackwardFilter(b.dy as Float32Array, b.x as Float32Array, depthwiseGeometryOf(p), b.dweight as Float32Array, lo, hi);
}

/** Channels [lo, hi) of both gradients. */
function depthwiseBackwardSlice(p: DepthwiseParams, b: Record<'dy' | 'x' | 'weight' | 'dx' | 'dweight', Float32Array | Float64Array>, lo: number, hi: number): void {
  depthwiseBackward(b.dy as Float32Array, b.x as Float32Array, b.weight as Float32Array, depthwiseGeometryOf(p), b.dx as Float32Array, b.dweight as Float32Array, lo, hi);
}

// The workers instantiate the same WebAssembly bytes (or none, as this thread).
const DEPTHWISE_PRELUDE = [
  `const DEPTHWISE_SLACK = ${DEPTHWISE_SLACK};`,
  `const PLANE_GROUP_FLOATS = ${PLANE_GROUP_FLOATS};`,
  `const correlateScratch = createCorrelateScratch(${DEPTHWISE_WASM === null ? 'null' : `new Uint8Array([${DEPTHWISE_WASM.join(',')}])`});`,
  'const correlateInWasm = correlateScratch.memory !== null;',
].join('\n');
const common = { ints: DEPTHWISE_INTS, floats: [], chunksPerThread: 4, minWork: PARALLEL_MIN_ELEMENTS, prelude: DEPTHWISE_PRELUDE } as const;
const DEPTHWISE_FORWARD = declareKernel({ ...common, name: 'depthwiseForward', reads: ['x', 'weight'], writes: ['y'], large: ['x', 'y'], splits: 'image planes', slice: depthwiseForwardSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseForward] });
const DEPTHWISE_BACKWARD_INPUT = declareKernel({ ...common, name: 'depthwiseBackwardInput', reads: ['dy', 'weight'], writes: ['dx'], large: ['dy', 'dx'], splits: 'image planes', slice: depthwiseBackwardInputSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseBackwardInput] });
const DEPTHWISE_BACKWARD_FILTER = declareKernel({ ...common, name: 'depthwiseBackwardFilter', reads: ['dy', 'x'], writes: ['dweight'], large: ['dy', 'x'], splits: 'channels', slice: depthwiseBackwardFilterSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseBackwardFilter] });
const DEPTHWISE_BACKWARD = declareKernel({ ...common, name: 'depthwiseBackward', reads: ['dy', 'x', 'weight'], writes: ['dx', 'dweight'], large: ['dy', 'x', 'dx'], splits: 'channels', slice: depthwiseBackwardSlice, deps: [...DEPTHWISE_DEPS, depthwiseGeometryOf, depthwiseBackward] });

function depthwiseParams(g: ConvGeometry): DepthwiseParams {
  return { N: g.N, C: g.Cin, H: g.H, W: g.W, kH: g.kH, kW: g.kW, stride: g.stride, padding: g.padding, Hout: g.Hout, Wout: g.Wout };
}

/** y = depthwise(x, weight) on every thread when worth it (planes split), else here. */
export function runDepthwiseForward(x: Float32Array, weight: Float32Array, g: ConvGeometry, y: Float32Array): void {
  runKernel(DEPTHWISE_FORWARD, depthwiseParams(g), { x, weight, y }, g.N * g.Cin, x.length * g.kH * g.kW);
}

/** dx from dy and the weight, on every thread when worth it (planes split). */
export function runDepthwiseBackwardInput(dy: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array): void {
  runKernel(DEPTHWISE_BACKWARD_INPUT, depthwiseParams(g), { dy, weight, dx }, g.N * g.Cin, dy.length * g.kH * g.kW);
}

/** dweight from dy and x, on every thread when worth it (channels split). */
export function runDepthwiseBackwardFilter(dy: Float32Array, x: Float32Array, g: ConvGeometry, dweight: Float32Array): void {
  runKernel(DEPTHWISE_BACKWARD_FILTER, depthwiseParams(g), { dy, x, dweight }, g.Cin, dy.length * g.kH * g.kW);
}

/** dx and dweight from dy, x and the weight in one job, on every thread when worth it (channels split). */
export function runDepthwiseBackward(dy: Float32Array, x: Float32Array, weight: Float32Array, g: ConvGeometry, dx: Float32Array, dweight: Float32Array): void {
  runKernel(DEPTHWISE_BACKWARD, depthwiseParams(g), { dy, x, weight, dx, dweight }, g.Cin, 2 * dy.length * g.kH * g.kW);
}

/** Depthwise convolution as an autograd op. */
export function depthwiseConv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, options: DepthwiseOptions = {}): Tensor {
  const g = depthwiseGeometry(x, weight, bias, options);
  const y = alloc(g.N * g.Cout * g.Hout * g.Wout, false);
  runDepthwiseForward(x.data, weight.data, g, y);
  if (bias !== null) addBiasPerChannel(y, bias.data, g.N, g.Cout, g.Hout * g.Wout);
  const inputs = bias === null ? [x, weight] : [x, weight, bias];
  return recordOp(new Tensor(y, [g.N, g.Cout, g.Hout, g.Wout]), {
    op: 'depthwiseConv2d', inputs,
    formula: `y[c] = w[c] * x[c]  (k${g.kH} s${g.stride} p${g.padding}, per channel)  ->  dx[c] = scatter(w[c] dy[c]), dw[c] = sum dy[c] x[c] (shifted)`,
    saved: { x: x.data, weight: weight.data, g },
    backward: (dy, s, needs) => {
      let dx: Float32Array | null = null;
      let dweight: Float32Array | null = null;
      if (needs[0] && needs[1]) runDepthwiseBackward(dy, s.x, s.weight, s.g, (dx = alloc(s.x.length, false)), (dweight = alloc(s.weight.length, false)));
      else if (needs[0]) runDepthwiseBackwardInput(dy, s.weight, s.g, (dx = alloc(s.x.length, false)));
      else if (needs[1]) runDepthwiseBackwardFilter(dy, s.x, s.g, (dweight = alloc(s.weight.length, false)));
      const grads: (Float32Array | null)[] = [dx, dweight];
      if (inputs.length === 3) grads.push(needs[2] ? biasGradPerChannel(dy, s.g.N, s.g.Cout, s.g.Hout * s.g.Wout) : null);
      return grads;
    },
    apply: (xs) => depthwiseConv2d(xs[0], xs[1], xs[2] ?? null, options),
  });
}

// =============================================================================================
// Naive twin: per output pixel, per tap, with bounds checks.
// =============================================================================================

/** The naive twin of the depthwise forward pass, for tests: each pixel's terms in float64 in tap order, as the kernels sum them. */
export function depthwiseNaiveForward(x: Float32Array, weight: Float32Array, g: ConvGeometry): Float32Array {
  const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const y = alloc(N * C * Hout * Wout);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          let acc = 0;
          for (let ky = 0; ky < kH; ky++)
            for (let kx = 0; kx < kW; kx++) {
              const iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += weight[(c * kH + ky) * kW + kx] * x[((n * C + c) * H + iy) * W + ix];
            }
          y[((n * C + c) * Hout + oy) * Wout + ox] = acc;
        }
  return y;
}

/** The naive twin of the depthwise backward pass (input and filter gradients), for tests. */
export function depthwiseNaiveBackward(x: Float32Array, weight: Float32Array, dy: Float32Array, g: ConvGeometry): { dx: Float32Array; dweight: Float32Array } {
  const { N, Cin: C, H, W, kH, kW, stride, padding, Hout, Wout } = g;
  const dx = alloc(x.length), dweight = alloc(weight.length);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++)
      for (let oy = 0; oy < Hout; oy++)
        for (let ox = 0; ox < Wout; ox++) {
          const gy = dy[((n * C + c) * Hout + oy) * Wout + ox];
          for (let ky = 0; ky < kH; ky++)
            for (let kx = 0; kx < kW; kx++) {
              const iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              const xi = ((n * C + c) * H + iy) * W + ix, wi = (c * kH + ky) * kW + kx;
              dx[xi] += gy * weight[wi];
              dweight[wi] += gy * x[xi];
            }
        }
  return { dx, dweight };
}
