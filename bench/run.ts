// `npm run bench [-- --workloads G1,D1 --json out.json]`: the reference workloads of
// ../shared/WORKLOADS.md, timed as specified there: 2 warm-up steps, then at least 5 timed steps
// (and at least --min-seconds), median reported.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { layerCosts } from '../src/nn/cost.js';
import { createModel } from '../src/nn/mobilenet.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { MAX_THREADS, setThreads } from '../src/ops/parallel.js';
import { decimalNumber } from '../cli/common.js';
import { noGrad } from '../src/tensor/autograd.js';
import { alloc, reuseBuffers } from '../src/tensor/buffers.js';
import { rand } from '../src/tensor/tensor.js';
import { SGD } from '../src/train/optim.js';
import { convGeometry } from '../src/ops/conv2d.js';
import { runDepthwiseBackward, runDepthwiseBackwardFilter, runDepthwiseBackwardInput, runDepthwiseForward } from '../src/ops/depthwise.js';
import { gemm } from '../src/ops/gemm.js';
import { Rng } from '../src/tensor/rng.js';
import { randn } from '../src/tensor/tensor.js';

/** The engine label of our rows run with MOBILENET_KERNELS=js. */
const JS_KERNELS_ENGINE = 'ours, js';

export interface Timing {
  medianMs: number;
  minMs: number;
  steps: number;
}

/** WORKLOADS.md: time >= 5 steps, or >= 10 s when steps are slow. */
const ENOUGH_SECONDS = 10;

/** Time `step`: 2 warm-ups, then >= minSteps steps (or >= 10 s of them) and >= minSeconds; median in ms. */
export function timeSteps(step: () => void, minSteps = 5, minSeconds = 2): Timing {
  step();
  step();
  const times: number[] = [];
  const start = performance.now();
  const elapsed = () => (performance.now() - start) / 1000;
  while (times.length === 0 || (times.length < minSteps && elapsed() < ENOUGH_SECONDS) || elapsed() < minSeconds) {
    const t0 = performance.now();
    step();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)], minMs: times[0], steps: times.length };
}

/** timeSteps for a step that resolves when its work is done (jax-js's arrays are asynchronous). */
export async function timeStepsAsync(step: () => Promise<void>, minSteps = 5, minSeconds = 2): Promise<Timing> {
  await step();
  await step();
  const times: number[] = [];
  const start = performance.now();
  const elapsed = () => (performance.now() - start) / 1000;
  while (times.length === 0 || (times.length < minSteps && elapsed() < ENOUGH_SECONDS) || elapsed() < minSeconds) {
    const t0 = performance.now();
    await step();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)], minMs: times[0], steps: times.length };
}

interface Row {
  workload: string;
  what: string;
  threads: number;
  medianMs: number;
  steps: number;
  figure: string;
  value: number;
  /** Peak resident memory of the process that ran only this workload, MB. */
  peakRssMb?: number;
  /** 'mobilenet-ts' or 'tfjs <version>'. */
  engine?: string;
}

/** WORKLOADS.md's model workloads: model, alpha, batch, resolution, classes, train or inference. */
const MODEL_WORKLOADS: Record<string, { arch: 'v1' | 'v2'; alpha: number; batch: number; resolution: number; classes: number; train: boolean }> = {
  T1: { arch: 'v1', alpha: 0.25, batch: 32, resolution: 32, classes: 10, train: true },
  T2: { arch: 'v1', alpha: 0.5, batch: 8, resolution: 128, classes: 10, train: true },
  T3: { arch: 'v2', alpha: 0.35, batch: 16, resolution: 96, classes: 10, train: true },
  I1: { arch: 'v1', alpha: 1.0, batch: 1, resolution: 224, classes: 1000, train: false },
  I2: { arch: 'v1', alpha: 1.0, batch: 8, resolution: 224, classes: 1000, train: false },
};

/** One model workload: a train step (forward, softmax-CE, backward, SGD momentum 0.9) or an eval forward. */
function modelWorkload(id: string, minSeconds: number, threads: number): Row[] {
  const w = MODEL_WORKLOADS[id];
  const rng = new Rng(3);
  const model = createModel(w.arch, { alpha: w.alpha, numClasses: w.classes, resolution: w.resolution, seed: 1 }).fuseActivations();
  const x = rand([w.batch, 3, w.resolution, w.resolution], rng);
  const labels = Array.from({ length: w.batch }, () => rng.int(0, w.classes));
  const multAdds = layerCosts(model, [w.batch, 3, w.resolution, w.resolution]).totalMultAdds * w.batch;
  let step: () => void;
  if (w.train) {
    model.train();
    const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    // The step the trainer runs: one buffer-reuse scope per step (src/tensor/buffers.ts).
    step = () =>
      reuseBuffers(() => {
        opt.zeroGrad();
        softmaxCrossEntropy(model.forward(x), labels).backward();
        opt.step();
        opt.zeroGrad();
      });
  } else {
    model.eval();
    step = () => reuseBuffers(() => void noGrad(() => model.forward(x)));
  }
  const t = timeSteps(step, 5, minSeconds);
  // A training step is about 3x the forward's multiply-adds (forward, input and weight gradients).
  const flops = 2 * multAdds * (w.train ? 3 : 1);
  return [
    { workload: id, what: `${w.arch} a${w.alpha} ${w.batch}x3x${w.resolution}x${w.resolution} ${w.train ? 'train step' : 'inference'}`, threads, medianMs: t.medianMs, steps: t.steps, figure: 'img/s', value: (w.batch * 1000) / t.medianMs },
    { workload: id, what: '  (achieved, from the cost model)', threads, medianMs: t.medianMs, steps: t.steps, figure: 'GFLOP/s', value: flops / (t.medianMs * 1e6) },
  ];
}

const WORKLOADS: Record<string, (minSeconds: number) => Row[]> = {
  /** G1: sgemm C = A B, 512 x 512 by 512 x 512; GFLOP/s = 2 * 512^3 / time. */
  G1: (minSeconds) => {
    const n = 512;
    const rng = new Rng(1);
    const A = randn([n, n], rng).data, B = randn([n, n], rng).data, C = new Float32Array(n * n);
    const t = timeSteps(() => gemm({ transA: false, transB: false, M: n, N: n, K: n, alpha: 1, A, aOffset: 0, lda: n, B, bOffset: 0, ldb: n, beta: 0, C, cOffset: 0, ldc: n }), 5, minSeconds);
    const gflops = (2 * n ** 3) / (t.medianMs * 1e6);
    return [{ workload: 'G1', what: 'sgemm 512^3', threads: 1, medianMs: t.medianMs, steps: t.steps, figure: 'GFLOP/s', value: gflops }];
  },
  /**
   * D1: depthwise 3x3 s1 p1 on 1 x 128 x 56 x 56: forward, backward input, backward filter, as
   * a model runs them: activations in the buffer cache's shared memory inside a reuse scope, so
   * that they split over the threads.
   */
  D1: (minSeconds) => {
    const rng = new Rng(2);
    const x = randn([1, 128, 56, 56], rng), w = randn([128, 1, 3, 3], rng);
    const g = convGeometry('depthwise', x, w, null, { stride: 1, padding: 1, groups: 128 });
    const dyValues = randn([1, 128, 56, 56], rng).data;
    // One reuse scope around the whole measurement: every buffer is taken from the cache once.
    return reuseBuffers(() => {
      const shared = (values: Float32Array) => {
        const b = alloc(values.length, false);
        b.set(values);
        return b;
      };
      const xs = shared(x.data), dy = shared(dyValues), y = alloc(x.numel, false), dx = alloc(x.numel, false), dw = alloc(w.numel, false);
      const parts: [string, () => void][] = [
        ['forward', () => runDepthwiseForward(xs, w.data, g, y)],
        ['backward input', () => runDepthwiseBackwardInput(dy, w.data, g, dx)],
        ['backward filter', () => runDepthwiseBackwardFilter(dy, xs, g, dw)],
        // What training runs: both gradients in one pass over dy.
        ['backward both', () => runDepthwiseBackward(dy, xs, w.data, g, dx, dw)],
      ];
      return parts.map(([what, step]): Row => {
        const t = timeSteps(step, 5, minSeconds);
        return { workload: 'D1', what: `depthwise 3x3 ${what}`, threads: 1, medianMs: t.medianMs, steps: t.steps, figure: 'ms', value: t.medianMs };
      });
    });
  },
};

const ALL_IDS = ['G1', 'D1', ...Object.keys(MODEL_WORKLOADS)];

/** The same workload on TensorFlow.js (CPU backend, one thread), loaded only when asked for. */
async function runTfjs(id: string, minSeconds: number): Promise<Row[]> {
  const t = await import('./tfjs.js');
  const engine = `tfjs ${t.TFJS_VERSION}`;
  if (id === 'G1') {
    const r = timeSteps(t.tfjsGemm(512), 5, minSeconds);
    return [{ workload: 'G1', what: 'sgemm 512^3', threads: 1, medianMs: r.medianMs, steps: r.steps, figure: 'GFLOP/s', value: (2 * 512 ** 3) / (r.medianMs * 1e6), engine }];
  }
  if (id === 'D1') {
    return Object.entries(t.tfjsDepthwise()).map(([what, step]) => {
      const r = timeSteps(step, 5, minSeconds);
      return { workload: 'D1', what: `depthwise 3x3 ${what}`, threads: 1, medianMs: r.medianMs, steps: r.steps, figure: 'ms', value: r.medianMs, engine };
    });
  }
  const w = MODEL_WORKLOADS[id];
  const r = timeSteps(t.tfjsModelStep(w.arch, w.alpha, w.batch, w.resolution, w.classes, w.train), 5, minSeconds);
  return [{ workload: id, what: `${w.arch} a${w.alpha} ${w.batch}x3x${w.resolution}x${w.resolution} ${w.train ? 'train step' : 'inference'}`, threads: 1, medianMs: r.medianMs, steps: r.steps, figure: 'img/s', value: (w.batch * 1000) / r.medianMs, engine }];
}

/** G1 and the MobileNetV1 train steps (T1, T2) on jax-js's WebAssembly device, loaded only when asked for; no rows for the others. */
async function runJax(id: string, minSeconds: number): Promise<Row[]> {
  const j = await import('./jax.js');
  const engine = `jax-js ${await j.initJax()}`;
  if (id === 'G1') {
    const r = await timeStepsAsync(j.jaxGemm(512), 5, minSeconds);
    return [{ workload: 'G1', what: 'sgemm 512^3', threads: 1, medianMs: r.medianMs, steps: r.steps, figure: 'GFLOP/s', value: (2 * 512 ** 3) / (r.medianMs * 1e6), engine }];
  }
  const w = MODEL_WORKLOADS[id];
  if (w === undefined || w.arch !== 'v1' || !w.train) return [];
  const r = await timeStepsAsync(j.jaxV1TrainStep(w.alpha, w.batch, w.resolution, w.classes), 5, minSeconds);
  return [{ workload: id, what: `${w.arch} a${w.alpha} ${w.batch}x3x${w.resolution}x${w.resolution} train step`, threads: 1, medianMs: r.medianMs, steps: r.steps, figure: 'img/s', value: (w.batch * 1000) / r.medianMs, engine }];
}

/** Run one workload in this process (used by the parent in a fresh child per workload). */
function runHere(id: string, threads: number, minSeconds: number): Row[] {
  setThreads(threads);
  const rows = id in MODEL_WORKLOADS ? modelWorkload(id, minSeconds, threads) : WORKLOADS[id](minSeconds).map((r) => ({ ...r, threads }));
  const peak = process.resourceUsage().maxRSS / 1024;
  return rows.map((r) => ({ ...r, peakRssMb: peak }));
}

async function main(): Promise<void> {
  const program = new Command()
    .name('bench')
    .option('--workloads <ids>', `comma-separated workload ids (${ALL_IDS.join(', ')})`, ALL_IDS.join(','))
    .option('--threads <list>', 'thread counts to measure, e.g. 1,2', '1,2')
    .option('--min-seconds <s>', 'minimum timed seconds per measurement (WORKLOADS.md: >= 5 steps or >= 10 s)', '2')
    .option('--json <path>', 'write the results as JSON to this file')
    .option('--compare <engines>', 'also run the workloads on tfjs (TensorFlow.js 4.22 CPU backend, one thread), jax (jax-js on its WebAssembly device: G1, T1, T2), torch (PyTorch from /usr/bin/python3, at each thread count) and/or js (ours with the TypeScript kernels only, MOBILENET_KERNELS=js), interleaved workload by workload: e.g. torch,jax,js')
    .option('--child <id:threads:engine>', 'internal: run one workload and print its rows as JSON')
    .parse(process.argv);
  const opts = program.opts<{ workloads: string; threads: string; minSeconds: string; json?: string; child?: string; compare?: string }>();
  if (opts.child) {
    const [id, threads, engine] = opts.child.split(':');
    const rows = engine === 'tfjs' ? await runTfjs(id, Number(opts.minSeconds)) : engine === 'jax' ? await runJax(id, Number(opts.minSeconds)) : runHere(id, Number(threads), Number(opts.minSeconds));
    const peak = process.resourceUsage().maxRSS / 1024;
    process.stdout.write(JSON.stringify(rows.map((r) => ({ ...r, peakRssMb: peak, engine: r.engine ?? (engine === 'js' ? JS_KERNELS_ENGINE : 'mobilenet-ts') }))) + '\n');
    process.exit(0);
  }
  const engines = opts.compare === undefined ? [] : opts.compare.split(',').map((s) => s.trim());
  if (engines.some((e) => e !== 'tfjs' && e !== 'jax' && e !== 'torch' && e !== 'js')) {
    process.stderr.write(`bench: --compare takes a comma-separated list of tfjs, jax, torch and js, got '${opts.compare}'\n`);
    process.exit(2);
  }
  let withTorch = engines.includes('torch');
  if (withTorch && spawnSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0) {
    process.stderr.write('bench: --compare torch needs /usr/bin/python3 with PyTorch (Debian package python3-torch, and libopenblas0-pthread for a fast BLAS); running without it\n');
    withTorch = false;
  }
  const withTfjs = engines.includes('tfjs');
  const withJax = engines.includes('jax');
  const withJs = engines.includes('js');
  const ids = opts.workloads.split(',').map((s) => s.trim().toUpperCase());
  const threadCounts = opts.threads.split(',').map((s) => decimalNumber(s.trim()));
  if (threadCounts.some((t) => !Number.isInteger(t) || t < 1 || t > MAX_THREADS)) {
    process.stderr.write(`bench: --threads takes a comma-separated list of integers in [1, ${MAX_THREADS}], got '${opts.threads}'\n`);
    process.exit(2);
  }
  if (!(decimalNumber(opts.minSeconds) > 0)) {
    process.stderr.write(`bench: --min-seconds takes a decimal number > 0, got '${opts.minSeconds}'\n`);
    process.exit(2);
  }
  const unknown = ids.filter((id) => !ALL_IDS.includes(id));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown workload(s) ${unknown.join(', ')}; known: ${ALL_IDS.join(', ')}\n`);
    process.exit(2);
  }
  const rows: Row[] = [];
  process.stdout.write(`machine: ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, node ${process.version}\n`);
  process.stdout.write(`${'workload'.padEnd(9)}${'engine'.padEnd(14)}${'what'.padEnd(40)}${'threads'.padStart(8)}${'median ms'.padStart(12)}${'steps'.padStart(7)}${'peak RSS'.padStart(10)}  figure${withTfjs ? '     speed-up vs tfjs' : ''}${withJax ? '     speed-up vs jax' : ''}${withTorch ? '     time ours / torch' : ''}${withJs ? '     speed-up vs js kernels' : ''}\n`);
  const self = fileURLToPath(import.meta.url);
  const runChild = (id: string, threads: number, engine: string): Row[] => {
    // Each workload in its own process: clean JIT state and a peak RSS of its own.
    // 'js': our engine with the TypeScript kernels only (MOBILENET_KERNELS=js), the WebAssembly kernels' twins.
    const env = { ...process.env, MOBILENET_KERNELS: engine === 'js' ? 'js' : process.env.MOBILENET_KERNELS };
    const child = spawnSync(process.execPath, [...process.execArgv, self, '--child', `${id}:${threads}:${engine}`, '--min-seconds', opts.minSeconds], { encoding: 'utf8', maxBuffer: 1 << 24, env });
    if (child.status !== 0) {
      process.stderr.write(`bench: ${id} on ${engine} with ${threads} threads failed:\n${child.stderr}\n`);
      process.exit(1);
    }
    return JSON.parse(child.stdout.trim().split('\n').pop()!) as Row[];
  };
  const runTorch = (id: string, threads: number): Row[] => {
    const child = spawnSync('/usr/bin/python3', [join(dirname(self), 'torch_bench.py'), '--workload', id, '--threads', String(threads), '--min-seconds', opts.minSeconds], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (child.status !== 0) {
      process.stderr.write(`bench: ${id} on PyTorch with ${threads} threads failed:\n${child.stderr}\n`);
      process.exit(1);
    }
    return JSON.parse(child.stdout.trim().split('\n').pop()!) as Row[];
  };
  const print = (row: Row, tfjs?: Row, torch?: Row, js?: Row, jax?: Row) => {
    const ours = row.engine === 'mobilenet-ts';
    const ratio = (ours && tfjs ? `     ${(tfjs.medianMs / row.medianMs).toFixed(1)}x` : '') + (ours && jax ? `     ${(jax.medianMs / row.medianMs).toFixed(2)}x` : '') + (ours && torch ? `     ${(row.medianMs / torch.medianMs).toFixed(2)}x` : '') + (ours && js ? `     ${(js.medianMs / row.medianMs).toFixed(2)}x` : '');
    process.stdout.write(`${row.workload.padEnd(9)}${(row.engine ?? '').padEnd(14)}${row.what.padEnd(40)}${String(row.threads).padStart(8)}${row.medianMs.toFixed(2).padStart(12)}${String(row.steps).padStart(7)}${`${(row.peakRssMb ?? 0).toFixed(0)} MB`.padStart(10)}  ${row.value.toFixed(2)} ${row.figure}${ratio}\n`);
  };
  for (const id of ids) {
    // Interleaved: for each workload TensorFlow.js and jax-js, then at each thread count
    // PyTorch and ours right after each other, so that both see the machine in the same state.
    const tfjs = withTfjs ? runChild(id, 1, 'tfjs') : [];
    for (const row of tfjs) {
      rows.push(row);
      print(row);
    }
    const jax = withJax ? runChild(id, 1, 'jax') : [];
    for (const row of jax) {
      rows.push(row);
      print(row);
    }
    for (const threads of threadCounts) {
      const torch = withTorch ? runTorch(id, threads) : [];
      for (const row of torch) {
        rows.push(row);
        print(row);
      }
      const js = withJs ? runChild(id, threads, 'js') : [];
      for (const row of js) {
        rows.push(row);
        print(row);
      }
      for (const row of runChild(id, threads, 'ours')) {
        rows.push(row);
        print(row, tfjs.find((r) => r.what === row.what), torch.find((r) => r.what === row.what), js.find((r) => r.what === row.what), threads === 1 ? jax.find((r) => r.what === row.what) : undefined);
      }
    }
  }
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, rows }, null, 2) + '\n');
}

void main();
