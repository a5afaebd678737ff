// `npm run bench [-- --workloads G1,D1 --json out.json]`: the reference workloads of
// ../shared/WORKLOADS.md, timed as specified there: 2 warm-up steps, then at least 5 timed steps
// (and at least --min-seconds), median reported.

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Command } from 'commander';
import { convGeometry } from '../src/ops/conv2d.js';
import { depthwiseBackwardFilter, depthwiseBackwardInput, depthwiseForward } from '../src/ops/depthwise.js';
import { gemm } from '../src/ops/gemm.js';
import { Rng } from '../src/tensor/rng.js';
import { randn } from '../src/tensor/tensor.js';

export interface Timing {
  medianMs: number;
  minMs: number;
  steps: number;
}

/** Time `step`: 2 warm-ups, then >= minSteps steps and >= minSeconds; median in ms. */
export function timeSteps(step: () => void, minSteps = 5, minSeconds = 2): Timing {
  step();
  step();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minSteps || performance.now() - start < minSeconds * 1000) {
    const t0 = performance.now();
    step();
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
  /** D1: depthwise 3x3 s1 p1 on 1 x 128 x 56 x 56: forward, backward input, backward filter. */
  D1: (minSeconds) => {
    const rng = new Rng(2);
    const x = randn([1, 128, 56, 56], rng), w = randn([128, 1, 3, 3], rng);
    const g = convGeometry('depthwise', x, w, null, { stride: 1, padding: 1, groups: 128 });
    const y = new Float32Array(x.numel), dy = randn([1, 128, 56, 56], rng).data, dx = new Float32Array(x.numel), dw = new Float32Array(w.numel);
    const rows: Row[] = [];
    const parts: [string, () => void][] = [
      ['forward', () => depthwiseForward(x.data, w.data, g, y)],
      ['backward input', () => depthwiseBackwardInput(dy, w.data, g, dx)],
      ['backward filter', () => depthwiseBackwardFilter(dy, x.data, g, dw)],
    ];
    for (const [what, step] of parts) {
      const t = timeSteps(step, 5, minSeconds);
      rows.push({ workload: 'D1', what: `depthwise 3x3 ${what}`, threads: 1, medianMs: t.medianMs, steps: t.steps, figure: 'ms', value: t.medianMs });
    }
    return rows;
  },
};

function main(): void {
  const program = new Command()
    .name('bench')
    .option('--workloads <ids>', `comma-separated workload ids (${Object.keys(WORKLOADS).join(', ')})`, Object.keys(WORKLOADS).join(','))
    .option('--min-seconds <s>', 'minimum timed seconds per measurement', '2')
    .option('--json <path>', 'write the results as JSON to this file')
    .parse(process.argv);
  const opts = program.opts<{ workloads: string; minSeconds: string; json?: string }>();
  const ids = opts.workloads.split(',').map((s) => s.trim().toUpperCase());
  const unknown = ids.filter((id) => !(id in WORKLOADS));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown workload(s) ${unknown.join(', ')}; known: ${Object.keys(WORKLOADS).join(', ')}\n`);
    process.exit(2);
  }
  const rows: Row[] = [];
  process.stdout.write(`machine: ${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, node ${process.version}\n`);
  process.stdout.write(`${'workload'.padEnd(9)}${'what'.padEnd(34)}${'threads'.padStart(8)}${'median ms'.padStart(12)}${'steps'.padStart(7)}  figure\n`);
  for (const id of ids) {
    for (const row of WORKLOADS[id](Number(opts.minSeconds))) {
      rows.push(row);
      process.stdout.write(`${row.workload.padEnd(9)}${row.what.padEnd(34)}${String(row.threads).padStart(8)}${row.medianMs.toFixed(2).padStart(12)}${String(row.steps).padStart(7)}  ${row.value.toFixed(2)} ${row.figure}\n`);
    }
  }
  if (opts.json) writeFileSync(opts.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, rows }, null, 2) + '\n');
}

main();
