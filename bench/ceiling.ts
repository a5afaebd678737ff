// `node --import tsx/esm bench/ceiling.ts`: how fast can scalar JavaScript multiply and add on this
// machine, and how close does our GEMM come? Three figures, one thread, data in L1:
//
//   1. registers only: eight independent multiply-adds on values held in registers. The CPU's
//      scalar floating-point ceiling as V8 compiles it (no loads, no stores).
//   2. micro-kernel loops: C (MR x NR) += A panel (MR x K) * B panel (K x NR), packed float64, the
//      loop at the heart of every blocked GEMM, for several tile shapes. Each step of K loads
//      MR + NR values from typed arrays and does MR x NR multiply-adds.
//   3. our GEMM (src/ops/gemm.ts) on square and pointwise-like shapes, packing included, with the
//      TypeScript micro-kernel and with its WebAssembly SIMD twin;
//   4. the SIMD ceiling: independent chains of multiply-adds in an emitted WebAssembly loop, in
//      two float64 lanes (f64x2) and in four float32 lanes (f32x4, the GEMM kernel's).
//
// Why the second figure sits far below the first: every typed-array load is an index
// computation, a bounds check and the load itself, and a tile of 16 accumulators plus its
// operands does not fit in the 16 floating-point registers V8 allocates, so some live in memory.
// Larger tiles load less per multiply-add but spill more; smaller ones the reverse. The figures
// are what any GEMM written in plain JavaScript can reach here; SIMD is what the native
// libraries have beyond it.

import { gemmCore, KERNELS, useGemmKernel, type GemmArgs } from '../src/ops/gemm.js';
import { emitModule, i, I32, V128 } from '../src/wasm/emit.js';

/** Best GFLOP/s over `rounds` timings of `run`, which does `flops` floating-point operations. */
function bestRate(run: () => void, flops: number, rounds = 5): number {
  run();
  let best = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    run();
    best = Math.max(best, flops / ((performance.now() - t0) * 1e6));
  }
  return best;
}

/** Eight independent multiply-add chains on register values: 16 flops per iteration. */
function registersOnly(n: number, x: number, y: number): number {
  let c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
  for (let i = 0; i < n; i++) {
    c0 += x * y;
    c1 += x * 1.0001;
    c2 += y * 0.9999;
    c3 += x * 0.5;
    c4 += y * 0.25;
    c5 += x * 0.125;
    c6 += y * 0.3;
    c7 += x * 0.7;
  }
  return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
}

type MicroKernel = (kc: number, Ap: Float64Array, Bp: Float64Array, C: Float64Array) => void;

/**
 * The MR x NR micro-kernel written out as straight-line code (as src/ops/gemm.ts writes its 4x4
 * one by hand): MR x NR accumulators, then per step of K, MR loads of A, NR loads of B and
 * MR x NR multiply-adds. With `oneArray` both panels are read from Ap (B's after A's), as our
 * GEMM does: V8 checks an array's type and reloads its length and data pointer at every step of
 * the loop, once per array.
 */
function microKernel(MR: number, NR: number, oneArray = false): MicroKernel {
  const cells = Array.from({ length: MR }, (_, i) => Array.from({ length: NR }, (_, j) => `c${i}_${j}`)).flat();
  const body = [
    `let ${cells.map((c) => `${c} = 0`).join(', ')};`,
    `for (let p = 0, a = 0, b = ${oneArray ? `kc * ${MR}` : 0}; p < kc; p++, a += ${MR}, b += ${NR}) {`,
    `  const ${Array.from({ length: MR }, (_, i) => `a${i} = Ap[a + ${i}]`).join(', ')};`,
    `  const ${Array.from({ length: NR }, (_, j) => `b${j} = ${oneArray ? 'Ap' : 'Bp'}[b + ${j}]`).join(', ')};`,
    ...Array.from({ length: MR }, (_, i) => '  ' + Array.from({ length: NR }, (_, j) => `c${i}_${j} += a${i} * b${j};`).join(' ')),
    '}',
    cells.map((c, k) => `C[${k}] = ${c};`).join(' '),
  ];
  return new Function('kc', 'Ap', 'Bp', 'C', body.join('\n')) as MicroKernel;
}

const line = (what: string, rate: number) => console.log(`${what.padEnd(56)} ${rate.toFixed(2).padStart(6)} GFLOP/s`);

const ITERATIONS = 5e7;
line('registers only (8 multiply-add chains)', bestRate(() => registersOnly(ITERATIONS, 1.0000001, 0.9), ITERATIONS * 16));

const K = 256;
for (const [MR, NR, oneArray] of [[2, 4], [3, 3], [3, 4], [4, 4], [4, 4, true], [4, 8], [8, 4], [8, 8]] as const) {
  const kernel = microKernel(MR, NR, oneArray);
  const Ap = new Float64Array((MR + NR) * K).fill(1.1), Bp = new Float64Array(NR * K).fill(0.9), C = new Float64Array(MR * NR);
  const calls = Math.round(1e8 / (MR * NR * K));
  line(`micro-kernel loop ${MR}x${NR}${oneArray ? ' (one array)' : ''}, K = ${K}, data in L1`, bestRate(() => { for (let c = 0; c < calls; c++) kernel(K, Ap, Bp, C); }, calls * 2 * MR * NR * K));
}

for (const kernel of KERNELS === 'wasm' ? (['js', 'wasm'] as const) : (['js'] as const)) {
  useGemmKernel(kernel);
  for (const [M, N, K2] of [[256, 256, 256], [512, 512, 512], [64, 1024, 32], [128, 1024, 128]]) {
    const A = Float32Array.from({ length: M * K2 }, (_, i) => Math.sin(i)), B = Float32Array.from({ length: K2 * N }, (_, i) => Math.cos(i)), C = new Float32Array(M * N);
    const args: GemmArgs = { transA: false, transB: false, M, N, K: K2, alpha: 1, A, aOffset: 0, lda: K2, B, bOffset: 0, ldb: N, beta: 0, C, cOffset: 0, ldc: N };
    const reps = Math.max(1, Math.round(1e8 / (M * N * K2)));
    line(`our GEMM ${M}x${N}x${K2}, ${kernel === 'js' ? 'TypeScript' : 'WebAssembly'} kernel`, bestRate(() => { for (let r = 0; r < reps; r++) gemmCore(args); }, reps * 2 * M * N * K2));
  }
}

if (KERNELS === 'wasm') {
  // (func (param n i32): CHAINS chains acc_k = acc_k * m + c, n times), the registers-only loop in
  // SIMD, in float64 lanes (f64x2, two numbers per instruction) and float32 lanes (f32x4, four).
  const CHAINS = 12;
  for (const lanes of ['f64x2', 'f32x4'] as const) {
    const [n, m, c] = [0, 1, 2], acc = (k: number) => 3 + k;
    const body: number[] = [];
    const splat = (x: number) => (lanes === 'f64x2' ? [0x44, ...new Uint8Array(Float64Array.of(x).buffer), ...i.f64x2Splat] : [0x43, ...new Uint8Array(Float32Array.of(x).buffer), ...i.f32x4Splat]);
    const [mul, add] = lanes === 'f64x2' ? [i.f64x2Mul, i.f64x2Add] : [i.f32x4Mul, i.f32x4Add];
    body.push(...splat(0.999999), ...i.localSet(m), ...splat(1e-7), ...i.localSet(c));
    for (let k = 0; k < CHAINS; k++) body.push(...splat(k), ...i.localSet(acc(k)));
    body.push(...i.block, ...i.loop, ...i.localGet(n), ...i.i32Eqz, ...i.brIf(1));
    for (let k = 0; k < CHAINS; k++) body.push(...i.localGet(acc(k)), ...i.localGet(m), ...mul, ...i.localGet(c), ...add, ...i.localSet(acc(k)));
    body.push(...i.localGet(n), ...i.i32Const(1), ...i.i32Sub, ...i.localSet(n), ...i.br(0), ...i.end, ...i.end);
    // Store the chains, or the compiler drops the loop as dead code.
    for (let k = 0; k < CHAINS; k++) body.push(...i.i32Const(16 * k), ...i.localGet(acc(k)), ...i.v128Store(0));
    const bytes = emitModule({ memoryPages: 1, functions: [{ name: 'chains', params: [I32], results: [], locals: Array(2 + CHAINS).fill(V128), body }] });
    const chains = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.chains as (n: number) => void;
    chains(1000);
    const perLane = lanes === 'f64x2' ? 2 : 4;
    line(`WebAssembly SIMD, registers only (${CHAINS} ${lanes} chains)`, bestRate(() => chains(1e7), 1e7 * CHAINS * perLane * 2));
  }
}
