// `mobilenet step`: backprop through a real CNN, one graph node at a time, on the engine's own
// backward generator. Interactive on a terminal; `--no-interactive` prints every step; `--json`
// emits one JSON object per step; `--check` verifies every node numerically.

import { createInterface } from 'node:readline/promises';
import { Option, type Command } from 'commander';
import { BUNDLED_FASHION_MNIST, numberIn, oneOf, UsageError } from './common.js';
import { addRunOptions } from './options.js';
import { loadModel } from '../src/train/models.js';
import { checkAlphaFor, modelFromSpec, trainConfig } from '../src/train/options.js';
import { GRAPH_EXTENSIONS, writeGraph } from './graph.js';
import { serveFolder, webFolder } from './web.js';
import type { AddressInfo } from 'node:net';
import { TinyNet } from '../src/nn/tiny.js';
import type { Module } from '../src/nn/module.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { topologicalOrder, type BackwardStep } from '../src/tensor/autograd.js';
import { checkStep, CHECK_DEFAULTS, describeStep, matchesOp, sabotageBackward, tensorStats, topPredictions, type InputCheck, type StepReport, type TensorStats } from '../src/tensor/stepper.js';
import { Tensor } from '../src/tensor/tensor.js';
import { DatasetError, decodeImage, loadIdxDataset } from '../src/train/datasets.js';
import { normalizePixels, resizeBilinear } from '../src/train/loader.js';

type StepMode = 'step' | 'continue' | { breakAt: string };

interface StepFlags {
  model: 'tiny' | 'v1' | 'v2';
  alpha: number;
  expansion: number;
  stemStride: 1 | 2;
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
  image?: string;
  sabotage?: string;
  web: boolean;
  port: number;
}

/** `step --web`: the page, served until Ctrl-C or SIGTERM. */
async function stepWeb(port: number): Promise<void> {
  const server = await serveFolder(await webFolder(), port);
  const { port: actual } = server.address() as AddressInfo;
  process.stdout.write(`the learner's page: http://127.0.0.1:${actual}/ (Ctrl-C stops)\n`);
  await new Promise<void>((done) => {
    // Stopping the server is how this command ends: exit status 0, as a static server's.
    const stop = () => {
      server.close();
      server.closeAllConnections();
      process.stdout.write('stopped\n');
      done();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** Fashion-MNIST statistics of the bundled subset (mean and std of pixel / 255). */
const FASHION_MEAN = 0.286;
const FASHION_STD = 0.353;

export function registerStep(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program
    .command('step')
    .description('walk the backward pass of a CNN one node at a time (Enter = next, c = continue, b OP = break at OP, p = print gradient, k = check, g = graph, q = quit)');
  command.option('--model <name>', 'tiny | v1 | v2 (untrained, or give --checkpoint)', oneOf('--model', ['tiny', 'v1', 'v2'] as const), 'tiny');
  addRunOptions(command, ['alpha', 'stemStride', 'expansion'], { alpha: { default: 0.25 } })
    .option('--checkpoint <path>', 'use a trained checkpoint instead (a .safetensors file or a run folder)')
    .option('--data-path <dir>', 'Fashion-MNIST folder (default: the bundled subset)')
    .option('--image <file>', 'step through one image of yours instead (JPEG, PNG, WebP), resized to the model\'s input')
    .option('--index <n>', 'which test image to use (the first of the batch)', numberIn('--index', 0, 1e9, { integer: true }), 0)
    .option('--batch <n>', 'images in the batch (default 1 for tiny, 8 otherwise: train-mode BatchNorm needs several values per channel)', numberIn('--batch', 1, 256, { integer: true }))
    .option('--eval', 'BatchNorm with running statistics (eval mode) instead of batch statistics', false)
    .option('--no-interactive', 'print every step without waiting')
    .option('--json', 'one JSON object per step on stdout', false)
    .option('--check', 'check every node numerically and end with a pass/fail summary (exit 1 on failure)', false)
    .option('--break-on-nan', 'stop at the first node whose gradient has NaN or Inf', false)
    .option('--graph <file>', 'write the graph picture (.png, .svg or .dot)')
    .addOption(new Option('--sabotage <op>', 'for tests: scale the gradients the first node of this op sends by 1.5').hideHelp())
    .option('--web', 'open the learner\'s page instead: serves it on 127.0.0.1 and prints its address (Ctrl-C stops)', false)
    .option('--port <n>', 'with --web: the port (0 = any free one)', numberIn('--port', 0, 65535, { integer: true }), 8080)
    .action((flags: StepFlags) => run(() => (flags.web ? stepWeb(flags.port) : step(flags))));
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

interface StepInput {
  /** uint8 pixels, (count, channels, resolution, resolution). */
  pixels: Uint8Array;
  count: number;
  labels: number[] | null;
  classNames: string[];
}

/** Bundled (or --data-path) Fashion-MNIST test images, resized and repeated to the model's input. */
function fashionMnistBatch(dir: string, index: number, batch: number, channels: number, resolution: number): StepInput {
  const ds = loadIdxDataset(dir, 'test');
  if (index + batch > ds.count) throw new UsageError(`--index ${index} with --batch ${batch} runs past the ${ds.count} test images`);
  const plane = resolution * resolution;
  const pixels = new Uint8Array(batch * channels * plane);
  for (let n = 0; n < batch; n++) {
    const source = Float32Array.from(ds.images.subarray((index + n) * 784, (index + n + 1) * 784));
    const resized = resolution === 28 ? source : resizeBilinear(source, 28, 28, resolution, resolution);
    for (let c = 0; c < channels; c++) for (let i = 0; i < plane; i++) pixels[(n * channels + c) * plane + i] = Math.min(255, Math.max(0, Math.round(resized[i])));
  }
  return { pixels, count: batch, labels: Array.from(ds.labels.subarray(index, index + batch)), classNames: ds.classNames };
}

async function userImage(path: string, channels: number, resolution: number): Promise<StepInput> {
  if (channels !== 1 && channels !== 3) throw new UsageError(`--image: this model takes ${channels} input channels; images give 1 or 3`);
  try {
    return { pixels: await decodeImage(path, resolution, channels), count: 1, labels: null, classNames: [] };
  } catch (e) {
    if (e instanceof DatasetError) throw new UsageError(`--image ${e.message}`);
    throw new UsageError(`--image ${path}: cannot decode image (${(e as Error).message})`);
  }
}

function sameClasses(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((name, i) => name === b[i]);
}

/** The model a step runs, and the input it expects: channels, resolution and normalisation. */
interface StepModel {
  model: Module;
  normalization: { mean: number[]; std: number[] };
  inChannels: number;
  resolution: number;
  /** The checkpoint's class names, or null for a fresh model (Fashion-MNIST's ten). */
  classNames: string[] | null;
}

function stepModel(flags: StepFlags): StepModel {
  if (flags.checkpoint) {
    const m = loadModel(flags.checkpoint);
    return { model: m.model, normalization: m.normalization, inChannels: m.channels, resolution: m.config.resolution, classNames: m.classNames };
  }
  if (flags.model !== 'tiny') checkAlphaFor(flags.model, flags.alpha);
  const model = flags.model === 'tiny' ? new TinyNet() : modelFromSpec(trainConfig({ model: flags.model, alpha: flags.alpha, expansion: flags.expansion, stemStride: flags.stemStride, resolution: 28, dropout: 0 }), { numClasses: 10, inChannels: 1 });
  return { model, normalization: { mean: [FASHION_MEAN], std: [FASHION_STD] }, inChannels: 1, resolution: 28, classNames: null };
}

/** What the backward walk found, for the closing lines. */
interface WalkResult {
  failures: number;
  checkedNodes: number;
  checkedEntries: number;
  worst: number;
  stoppedOnNan: boolean;
  /** The node after which the learner quit, or null. */
  quitAt: number | null;
}

async function step(flags: StepFlags): Promise<void> {
  const out = process.stdout;
  const interactive = flags.interactive && !flags.json && process.stdin.isTTY === true && process.stdout.isTTY === true;
  // Refuse a bad picture name before the pass prints anything.
  if (flags.graph && !GRAPH_EXTENSIONS.some((ext) => flags.graph!.endsWith(ext))) throw new UsageError(`--graph ${flags.graph}: use a file name ending in ${GRAPH_EXTENSIONS.join(', ')}`);
  const { model, normalization, inChannels, resolution, classNames } = stepModel(flags);
  // The graph training runs: each BatchNorm + ReLU pair is one fused node.
  model.fuseActivations();
  // One image has no batch statistics: a single --image runs BatchNorm in eval mode.
  model.train(!flags.eval && !flags.image);
  const input = flags.image
    ? await userImage(flags.image, inChannels, resolution)
    : fashionMnistBatch(flags.dataPath ?? BUNDLED_FASHION_MNIST(), flags.index, flags.batch ?? (flags.model === 'tiny' && !flags.checkpoint ? 1 : 8), inChannels, resolution);
  // Each plane of each image is one channel: normalised per channel as the loader does.
  const x = new Tensor(normalizePixels(input.pixels, inChannels, resolution * resolution, normalization), [input.count, inChannels, resolution, resolution]);
  const logits = model.forward(x);
  // The labels of the bundled images name Fashion-MNIST classes; for a model of other classes
  // (or a user's image) the loss is taken against the model's own top prediction: the step
  // then shows what pushes the network towards the class it chose.
  const fashionLabels = input.labels !== null && (classNames === null || sameClasses(classNames, input.classNames));
  const labels = fashionLabels ? input.labels! : topPredictions(logits);
  const labelNames = labels.map((l) => (fashionLabels ? input.classNames[l] : classNames?.[l] ?? `class ${l}`));
  const loss = softmaxCrossEntropy(logits, labels);
  const forward = topologicalOrder(loss).reverse();

  if (!flags.json) {
    const labelled = fashionLabels ? '' : ', labelled with the model\'s own top prediction';
    out.write(`forward pass: ${forward.length} nodes, ${input.count} image${input.count > 1 ? 's' : ''} (${labelNames.join(', ')}${labelled}) at ${inChannels}x${resolution}x${resolution}, ${model.training ? 'train' : 'eval'} mode\n`);
    forward.forEach((t, i) => out.write(`  ${String(i).padStart(3)} ${t.node!.op.padEnd(18)} ${shape(t.shape).padEnd(18)} ${statsLine(tensorStats(t.data))}\n`));
    out.write(`loss = ${loss.item().toFixed(6)}\n\nbackward pass, one node at a time${interactive ? ' (Enter = next, c = continue, b OP = break at OP, p = print gradient, k = check, g = graph, q = quit)' : ''}:\n`);
  }
  if (flags.sabotage && !sabotageBackward(forward, flags.sabotage)) throw new UsageError(`--sabotage ${flags.sabotage}: no node of that op in this graph`);
  if (flags.graph) {
    await writeGraph(flags.graph, loss, null);
    // With --json, stdout holds JSON lines only: the note goes to stderr.
    (flags.json ? process.stderr : out).write(`graph of the tape written to ${flags.graph}\n`);
  }
  reportWalk(flags, await walkBackward(flags, loss, forward, interactive));
}

/** The backward pass, one node at a time: each node's report, its check, the prompt. */
async function walkBackward(flags: StepFlags, loss: Tensor, forward: Tensor[], interactive: boolean): Promise<WalkResult> {
  const out = process.stdout;
  const graphPath = flags.graph ?? 'graph.svg';
  const result: WalkResult = { failures: 0, checkedNodes: 0, checkedEntries: 0, worst: 0, stoppedOnNan: false, quitAt: null };
  const rl = interactive ? createInterface({ input: process.stdin, output: process.stdout }) : null;
  // Widened on purpose: the prompt changes it through a callback, which narrowing cannot see.
  let mode = (interactive ? 'step' : 'continue') as StepMode;
  // How many nodes of each op the backward pass has still to visit (for `b OP`).
  const opsAhead = new Map<string, number>();
  for (const t of forward) opsAhead.set(t.node!.op, (opsAhead.get(t.node!.op) ?? 0) + 1);
  try {
    for (const s of loss.backwardSteps()) {
      opsAhead.set(s.op, (opsAhead.get(s.op) ?? 1) - 1);
      const report = describeStep(s);
      const checks = flags.check ? checkStep(loss, s, {}, forward) : null;
      if (checks) {
        result.checkedNodes++;
        for (const c of checks) {
          result.checkedEntries += c.checked;
          result.worst = Math.max(result.worst, c.localError);
          if (!c.ok) result.failures++;
        }
      }
      const nan = report.gradOutputStats.nonFinite > 0 || report.inputs.some((i) => (i.gradStats?.nonFinite ?? 0) > 0);
      if (typeof mode === 'object' && matchesOp(s.op, mode.breakAt)) mode = 'step';
      if (flags.json) out.write(JSON.stringify({ ...report, check: checks ?? undefined }) + '\n');
      else if (typeof mode !== 'object') {
        out.write(formatReport(report) + '\n');
        if (checks) out.write(formatChecks(checks) + '\n');
      }
      if (nan && flags.breakOnNan) {
        out.write(`stopped: the gradient at node ${s.index + 1} (${s.op}) has NaN or Inf values\n`);
        result.stoppedOnNan = true;
        break;
      }
      if (rl && mode === 'step' && (await prompt(rl, s, loss, graphPath, opsAhead, (m) => (mode = m)))) {
        result.quitAt = s.index;
        break;
      }
    }
  } finally {
    rl?.close();
  }
  return result;
}

/** The closing lines: how the walk ended, and the check's verdict (exit status 1 on a failure or a NaN). */
function reportWalk(flags: StepFlags, walk: WalkResult): void {
  const out = process.stdout;
  if (!flags.json && walk.quitAt !== null) out.write(`quit after node ${walk.quitAt + 1}; the rest of the backward pass did not run\n`);
  else if (!flags.json && !walk.stoppedOnNan) out.write(`backward done: every parameter's .grad holds dL/dparameter\n`);
  if (flags.check) {
    const { failures, checkedNodes, checkedEntries, worst } = walk;
    const verdict = failures === 0 ? 'PASS' : `FAIL (${failures} input gradient${failures > 1 ? 's' : ''} off)`;
    const summary = `check: ${checkedNodes} nodes, ${checkedEntries} entries, worst relative error ${worst.toExponential(2)} (bound ${CHECK_DEFAULTS.tolerance}): ${verdict}`;
    if (flags.json) out.write(JSON.stringify({ summary: { nodes: checkedNodes, entries: checkedEntries, worstRelativeError: worst, bound: CHECK_DEFAULTS.tolerance, pass: failures === 0 } }) + '\n');
    else out.write(summary + '\n');
    if (failures > 0) process.exitCode = 1;
  }
  if (walk.stoppedOnNan) process.exitCode = 1;
}

/** Read commands until one moves on. Returns true to quit. */
async function prompt(rl: ReturnType<typeof createInterface>, s: BackwardStep, loss: Tensor, graphPath: string, opsAhead: Map<string, number>, setMode: (m: StepMode) => void): Promise<boolean> {
  for (;;) {
    let answer: string;
    // Ctrl-C at the prompt reaches readline, not the process: it quits as Ctrl-C does (status 130).
    let interrupted = false;
    const abort = new AbortController();
    const onInterrupt = () => {
      interrupted = true;
      abort.abort();
    };
    rl.once('SIGINT', onInterrupt);
    try {
      answer = (await rl.question('step> ', { signal: abort.signal })).trim();
    } catch (e) {
      // Ctrl-D, the end of piped input, or Ctrl-C: readline rejects the question. That is a quit.
      if ((e as NodeJS.ErrnoException).code !== 'ABORT_ERR') throw e;
      process.stdout.write(interrupted ? '\ninterrupted: quitting\n' : '\nend of input: quitting\n');
      if (interrupted) process.exitCode = 130;
      return true;
    } finally {
      rl.off('SIGINT', onInterrupt);
    }
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
      if (![...opsAhead].some(([name, n]) => n > 0 && matchesOp(name, op))) {
        const ahead = [...opsAhead].filter(([, n]) => n > 0).map(([name]) => name);
        process.stdout.write(`no ${op} node ahead in the backward pass; ops still ahead: ${ahead.length > 0 ? ahead.join(', ') : 'none'}\n`);
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
