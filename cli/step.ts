// `mobilenet step`: backprop through a real CNN, one graph node at a time, on the engine's own
// backward generator. Interactive on a terminal; `--no-interactive` prints every step; `--json`
// emits one JSON object per step; `--check` verifies every node numerically.

import { createInterface } from 'node:readline/promises';
import { Option, type Command } from 'commander';
import { BUNDLED_FASHION_MNIST, loadModelFromCheckpoint, numberIn, oneOf, UsageError } from './common.js';
import { writeGraph } from './graph.js';
import { createModel } from '../src/nn/mobilenet.js';
import { TinyNet } from '../src/nn/tiny.js';
import type { Module } from '../src/nn/module.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { topologicalOrder, type BackwardStep } from '../src/tensor/autograd.js';
import { checkStep, CHECK_DEFAULTS, describeStep, tensorStats, type InputCheck, type StepReport, type TensorStats } from '../src/tensor/stepper.js';
import { Tensor } from '../src/tensor/tensor.js';
import { loadIdxDataset } from '../src/train/datasets.js';

type StepMode = 'step' | 'continue' | { breakAt: string };

interface StepFlags {
  model: 'tiny' | 'v1' | 'v2';
  alpha: number;
  checkpoint?: string;
  dataPath?: string;
  index: number;
  batch?: number;
  eval: boolean;
  interactive: boolean;
  json: boolean;
  check: boolean;
  breakOnNan: boolean;
  graph?: string;
  sabotage?: string;
}

/** Fashion-MNIST statistics of the bundled subset (mean and std of pixel / 255). */
const FASHION_MEAN = 0.286;
const FASHION_STD = 0.353;

export function registerStep(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('step')
    .description('walk the backward pass of a CNN one node at a time (Enter = next, c = continue, b OP = break at OP, p = print gradient, k = check, g = graph, q = quit)')
    .option('--model <name>', 'tiny | v1 | v2 (untrained, or give --checkpoint)', oneOf('--model', ['tiny', 'v1', 'v2'] as const), 'tiny')
    .option('--alpha <a>', 'width multiplier for v1 / v2', numberIn('--alpha', 0, 4, { minExclusive: true }), 0.25)
    .option('--checkpoint <path>', 'use a trained checkpoint instead (a .safetensors file or a run folder)')
    .option('--data-path <dir>', 'Fashion-MNIST folder (default: the bundled subset)')
    .option('--index <n>', 'which test image to use (the first of the batch)', numberIn('--index', 0, 1e9, { integer: true }), 0)
    .option('--batch <n>', 'images in the batch (default 1 for tiny, 8 otherwise: train-mode BatchNorm needs several values per channel)', numberIn('--batch', 1, 256, { integer: true }))
    .option('--eval', 'BatchNorm with running statistics (eval mode) instead of batch statistics', false)
    .option('--no-interactive', 'print every step without waiting')
    .option('--json', 'one JSON object per step on stdout', false)
    .option('--check', 'check every node numerically and end with a pass/fail summary (exit 1 on failure)', false)
    .option('--break-on-nan', 'stop at the first node whose gradient has NaN or Inf', false)
    .option('--graph <file>', 'write the graph picture (.png, .svg or .dot)')
    .addOption(new Option('--sabotage <op>', 'for tests: scale the gradients the first node of this op sends by 1.5').hideHelp())
    .action((flags: StepFlags) => run(() => step(flags)));
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toFixed(4);
}

function statsLine(s: TensorStats): string {
  return `mean ${fmt(s.mean)}  std ${fmt(s.std)}  min ${fmt(s.min)}  max ${fmt(s.max)}  L2 ${fmt(s.l2)}  zeros ${(100 * s.zeroFraction).toFixed(1)}%${s.nonFinite > 0 ? `  NaN/Inf ${s.nonFinite}` : ''}`;
}

function shape(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

function formatReport(r: StepReport): string {
  const lines = [`[${r.index + 1}/${r.total}] ${r.op}  output ${shape(r.outputShape)}`, `  ${r.formula}`, `  dL/d(output): ${statsLine(r.gradOutputStats)}`];
  r.inputs.forEach((input, i) => {
    const who = input.isParameter ? `parameter ${input.name ?? '(unnamed)'}` : input.producer ? `from ${input.producer}` : 'input';
    lines.push(`  -> input ${i} ${shape(input.shape)} ${who}: ${input.gradStats ? statsLine(input.gradStats) : 'no gradient needed'}`);
  });
  return lines.join('\n');
}

function formatChecks(checks: InputCheck[]): string {
  if (checks.length === 0) return '  check: nothing to check (no input needs a gradient)';
  return checks
    .map((c) => `  check input ${c.inputIndex}${c.name ? ` (${c.name})` : ''}: ${c.checked} entries, worst relative error ${c.localError.toExponential(2)}${c.skippedKinks > 0 ? `, ${c.skippedKinks} skipped at kinks` : ''}; whole loss (random direction): ${c.wholeLossError === null ? 'below float32 resolution' : c.wholeLossError.toExponential(2)}  ${c.ok ? 'ok' : 'FAIL'}`)
    .join('\n');
}

async function step(flags: StepFlags): Promise<void> {
  const out = process.stdout;
  const interactive = flags.interactive && !flags.json && process.stdin.isTTY === true && process.stdout.isTTY === true;
  // The model and one batch of test images.
  let model: Module;
  let mean = [FASHION_MEAN], std = [FASHION_STD], inChannels = 1, resolution = 28;
  if (flags.checkpoint) {
    const m = loadModelFromCheckpoint(flags.checkpoint);
    model = m.model;
    ({ mean, std } = m.normalization);
    inChannels = m.channels;
    resolution = m.config.resolution;
    if (inChannels !== 1 || resolution !== 28) throw new UsageError(`step uses 28x28 grayscale Fashion-MNIST images; this checkpoint expects ${inChannels} channels at ${resolution}x${resolution}`);
  } else model = flags.model === 'tiny' ? new TinyNet() : createModel(flags.model, { alpha: flags.alpha, numClasses: 10, inChannels: 1, resolution: 28, dropout: 0 });
  model.train(!flags.eval);
  const ds = loadIdxDataset(flags.dataPath ?? BUNDLED_FASHION_MNIST(), 'test');
  const batch = flags.batch ?? (flags.model === 'tiny' && !flags.checkpoint ? 1 : 8);
  if (flags.index + batch > ds.count) throw new UsageError(`--index ${flags.index} with --batch ${batch} runs past the ${ds.count} test images`);
  const x = new Tensor(Float32Array.from(ds.images.subarray(flags.index * 784, (flags.index + batch) * 784), (v) => (v / 255 - mean[0]) / std[0]), [batch, 1, 28, 28]);
  const labels = Array.from(ds.labels.subarray(flags.index, flags.index + batch));
  const loss = softmaxCrossEntropy(model.forward(x), labels);
  const forward = topologicalOrder(loss).reverse();

  if (!flags.json) {
    out.write(`forward pass: ${forward.length} nodes, ${batch} image${batch > 1 ? 's' : ''} (${labels.map((l) => ds.classNames[l]).join(', ')}), ${model.training ? 'train' : 'eval'} mode\n`);
    forward.forEach((t, i) => out.write(`  ${String(i).padStart(3)} ${t.node!.op.padEnd(18)} ${shape(t.shape).padEnd(18)} ${statsLine(tensorStats(t.data))}\n`));
    out.write(`loss = ${loss.item().toFixed(6)}\n\nbackward pass, one node at a time${interactive ? ' (Enter = next, c = continue, b OP = break at OP, p = print gradient, k = check, g = graph, q = quit)' : ''}:\n`);
  }
  if (flags.sabotage) {
    const victim = forward.find((t) => t.node!.op === flags.sabotage);
    if (!victim) throw new UsageError(`--sabotage ${flags.sabotage}: no node of that op in this graph`);
    const node = victim.node!;
    const original = node.runBackward.bind(node);
    Object.assign(node, { runBackward: (g: Float32Array, release: boolean) => original(g, release).map((d) => (d === null ? null : d.map((v) => v * 1.5))) });
  }
  const graphPath = flags.graph ?? 'graph.svg';
  if (flags.graph) await writeGraph(flags.graph, loss, null);

  const rl = interactive ? createInterface({ input: process.stdin, output: process.stdout }) : null;
  // Widened on purpose: the prompt changes it through a callback, which narrowing cannot see.
  let mode = (interactive ? 'step' : 'continue') as StepMode;
  let failures = 0, checkedNodes = 0, checkedEntries = 0, worst = 0;
  let stoppedOnNan = false;
  let quitAt: number | null = null;
  try {
    for (const s of loss.backwardSteps()) {
      const report = describeStep(s);
      const checks = flags.check ? checkStep(loss, s, {}, forward) : null;
      if (checks) {
        checkedNodes++;
        for (const c of checks) {
          checkedEntries += c.checked;
          worst = Math.max(worst, c.localError);
          if (!c.ok) failures++;
        }
      }
      const nan = report.gradOutputStats.nonFinite > 0 || report.inputs.some((i) => (i.gradStats?.nonFinite ?? 0) > 0);
      if (typeof mode === 'object' && mode.breakAt === s.op) mode = 'step';
      if (flags.json) out.write(JSON.stringify({ ...report, check: checks ?? undefined }) + '\n');
      else if (typeof mode !== 'object') {
        out.write(formatReport(report) + '\n');
        if (checks) out.write(formatChecks(checks) + '\n');
      }
      if (nan && flags.breakOnNan) {
        out.write(`stopped: the gradient at node ${s.index + 1} (${s.op}) has NaN or Inf values\n`);
        stoppedOnNan = true;
        break;
      }
      if (rl && mode === 'step') {
        if (await prompt(rl, s, loss, graphPath, (m) => (mode = m))) {
          quitAt = s.index;
          break;
        }
      }
    }
  } finally {
    rl?.close();
  }
  if (!flags.json && quitAt !== null) out.write(`quit after node ${quitAt + 1}; the rest of the backward pass did not run\n`);
  else if (!flags.json && !stoppedOnNan) out.write(`backward done: every parameter's .grad holds dL/dparameter\n`);
  if (flags.check) {
    const verdict = failures === 0 ? 'PASS' : `FAIL (${failures} input gradient${failures > 1 ? 's' : ''} off)`;
    const summary = `check: ${checkedNodes} nodes, ${checkedEntries} entries, worst relative error ${worst.toExponential(2)} (bound ${CHECK_DEFAULTS.tolerance}): ${verdict}`;
    if (flags.json) out.write(JSON.stringify({ summary: { nodes: checkedNodes, entries: checkedEntries, worstRelativeError: worst, bound: CHECK_DEFAULTS.tolerance, pass: failures === 0 } }) + '\n');
    else out.write(summary + '\n');
    if (failures > 0) process.exitCode = 1;
  }
  if (stoppedOnNan) process.exitCode = 1;
}

/** Read commands until one moves on. Returns true to quit. */
async function prompt(rl: ReturnType<typeof createInterface>, s: BackwardStep, loss: Tensor, graphPath: string, setMode: (m: StepMode) => void): Promise<boolean> {
  for (;;) {
    const answer = (await rl.question('step> ')).trim();
    if (answer === '') return false;
    if (answer === 'q') return true;
    if (answer === 'c') {
      setMode('continue');
      return false;
    }
    if (answer.startsWith('b')) {
      const op = answer.slice(1).trim();
      if (op === '') {
        process.stdout.write('usage: b OP   (e.g. b batchNorm2d)\n');
        continue;
      }
      setMode({ breakAt: op });
      process.stdout.write(`continuing to the next ${op} node...\n`);
      return false;
    }
    if (answer === 'p') {
      process.stdout.write(`dL/d(output) of ${s.op}:\n${new Tensor(s.gradOutput, s.output.shape).toString()}\n`);
      continue;
    }
    if (answer === 'k') {
      process.stdout.write(formatChecks(checkStep(loss, s)) + '\n');
      continue;
    }
    if (answer === 'g') {
      await writeGraph(graphPath, loss, s.output);
      process.stdout.write(`graph written to ${graphPath} (current node highlighted)\n`);
      continue;
    }
    process.stdout.write('commands: Enter = next, c = continue, b OP = break at the next OP node, p = print gradient, k = check this node, g = write graph, q = quit\n');
  }
}
