// `mobilenet experiment <name>`: one of the papers' comparisons as a grid of `train` runs with one
// recipe, every configuration trained with several seeds. The recipe is train's optimizer and
// schedule without augmentation or label smoothing, fixed here rather than taken from train's
// defaults (which may change), and close to the paper's: it trains small models with little
// regularisation and augmentation, since they overfit little. Each run is a normal run folder; a
// finished run is skipped when the command is run again and a killed one resumes from its last
// checkpoint (bit-for-bit, as `train --resume` does), so a grid of hours survives interruptions.
// Results (markdown table, JSON, plots) are rewritten as runs finish.

import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { type Command } from 'commander';
import { numberIn, plural, UsageError } from './common.js';
import { addRunOptions } from './options.js';
import { scatterSvg, writeOutputFile, writePng } from './plots.js';
import { onStopRequest, type StopReason } from './signals.js';
import { formatDuration, train, type TrainOutcome } from './train.js';
import { LAST_CHECKPOINT } from '../src/train/checkpoint.js';
import { checkAlphaFor, type RunSpec } from '../src/train/options.js';
import { layerCosts } from '../src/nn/cost.js';
import { minOf } from '../src/tensor/arrays.js';
import { writeFileAtomic } from '../src/tensor/files.js';
import { defaultThreads } from '../src/ops/parallel.js';
import { createModel, MOBILENET_V2_EXPANSION, type Architecture } from '../src/nn/mobilenet.js';

/** One configuration of a grid (trained once per seed). */
export interface GridPoint {
  label: string;
  model: Architecture;
  alpha: number;
  rho: number;
  expansion: number;
  /** The paper's ImageNet top-1 for this row, where it gives one. */
  paper?: string;
}

export interface ExperimentOptions {
  alpha?: number;
  rho?: number;
}

interface Experiment {
  title: string;
  paper: string;
  /** The grid, from the free parameters (alpha, rho) the user may set. */
  grid(o: Required<ExperimentOptions>, native: number): GridPoint[];
}

const V1 = (alpha: number, rho: number, paper?: string, label = `V1 alpha ${alpha} rho ${round3(rho)}`): GridPoint => ({ label, model: 'v1', alpha, rho, expansion: MOBILENET_V2_EXPANSION, paper });

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Multiply-adds of a configuration at the resolution it trains at (the cost model). */
function costOf(p: GridPoint, native: number, channels = 1, classes = 10): { multAdds: number; params: number; resolution: number } {
  const resolution = Math.max(8, Math.round(p.rho * native));
  const model = createModel(p.model, { alpha: p.alpha, expansion: p.expansion, resolution, numClasses: classes, inChannels: channels });
  const report = layerCosts(model, [1, channels, resolution, resolution]);
  return { multAdds: report.totalMultAdds, params: report.totalParams, resolution };
}

export const EXPERIMENTS: Record<string, Experiment> = {
  'separable-vs-full': {
    title: 'Depthwise separable vs full convolutions',
    paper: 'MobileNet paper, Table 4 (ImageNet, alpha 1, 224)',
    grid: ({ alpha, rho }) => [
      { label: `Conv MobileNet (full convolutions) alpha ${alpha}`, model: 'baseline', alpha, rho, expansion: MOBILENET_V2_EXPANSION, paper: '71.7%' },
      V1(alpha, rho, '70.6%', `MobileNet (depthwise separable) alpha ${alpha}`),
    ],
  },
  'thin-vs-shallow': {
    title: 'Thinner or shallower',
    paper: 'MobileNet paper, Table 5 (ImageNet, 224)',
    grid: ({ rho }) => [V1(0.75, rho, '68.4%', '0.75 MobileNet (thinner)'), { label: 'Shallow MobileNet (alpha 1)', model: 'shallow', alpha: 1, rho, expansion: MOBILENET_V2_EXPANSION, paper: '65.3%' }],
  },
  width: {
    title: 'Width multiplier',
    paper: 'MobileNet paper, Table 6 (ImageNet, 224)',
    grid: ({ rho }) => [V1(1, rho, '70.6%'), V1(0.75, rho, '68.4%'), V1(0.5, rho, '63.7%'), V1(0.25, rho, '50.6%')],
  },
  resolution: {
    title: 'Resolution multiplier',
    paper: 'MobileNet paper, Table 7 (ImageNet, alpha 1; 224, 192, 160, 128)',
    grid: ({ alpha }) => [V1(alpha, 1, '70.6%'), V1(alpha, 6 / 7, '69.1%'), V1(alpha, 5 / 7, '67.2%'), V1(alpha, 4 / 7, '64.4%')],
  },
  tradeoff: {
    title: 'Accuracy against cost: 4 widths x 4 resolutions',
    paper: 'MobileNet paper, Figures 4 and 5 (ImageNet)',
    grid: () => [1, 0.75, 0.5, 0.25].flatMap((alpha) => [1, 6 / 7, 5 / 7, 4 / 7].map((rho) => V1(alpha, rho))),
  },
  'v1-vs-v2': {
    title: 'MobileNetV1 and MobileNetV2 at about equal mult-adds',
    paper: 'MobileNetV2 paper, Table 4 (ImageNet, 224: V1 70.6% at 575M, V2 72.0% at 300M)',
    grid: ({ alpha, rho }, native) => {
      // The V2 width whose cost at this resolution is closest to V1's.
      const v1 = V1(alpha, rho, '70.6% (alpha 1)');
      const target = costOf(v1, native).multAdds;
      const candidates = [0.35, 0.5, 0.75, 1, 1.3, 1.4].map((a) => ({ label: `V2 alpha ${a} rho ${round3(rho)}`, model: 'v2' as const, alpha: a, rho, expansion: MOBILENET_V2_EXPANSION, paper: '72.0% (alpha 1)' }));
      const distance = candidates.map((c) => Math.abs(Math.log(costOf(c, native).multAdds / target)));
      return [v1, candidates[distance.indexOf(minOf(distance))]];
    },
  },
  expansion: {
    title: 'MobileNetV2 expansion factor t (t < 1: the classic bottleneck that reduces channels)',
    paper: 'MobileNetV2 paper, section 6 (expansion factor 6; t < 1 reduces)',
    grid: ({ alpha, rho }) => [0.5, 1, 2, 4, 6].map((t) => ({ label: `V2 alpha ${alpha} t ${t}`, model: 'v2' as const, alpha, rho, expansion: t, paper: t === 6 ? '72.0% (alpha 1)' : undefined })),
  },
};

/** A run of the grid failed; the message has the run and the last lines its train process printed. */
export class ExperimentRunError extends Error {
  override name = 'ExperimentRunError';
}

interface ExperimentFlags {
  data: string;
  dataPath?: string;
  epochs: number;
  batchSize: number;
  lr: number;
  seeds: number;
  alpha?: number;
  rho?: number;
  jobs: number;
  outputDir?: string;
}

export function registerExperiment(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program
    .command('experiment')
    .description(`train the grid of one of the papers' comparisons and write results.md, results.json and plots: ${Object.keys(EXPERIMENTS).join(', ')}`)
    .argument('<name>', Object.keys(EXPERIMENTS).join(' | '));
  // train's flags, with the grids' own defaults.
  addRunOptions(command, ['data', 'dataPath', 'epochs', 'batchSize', 'lr', 'alpha', 'rho'], {
    epochs: { default: 12, help: "epochs per run (train's optimizer and schedule otherwise, without augmentation or label smoothing)" },
    batchSize: { default: 64, help: 'batch size of every run' },
    lr: { default: 0.1, help: "learning rate of every run (the one-cycle peak, as train's)" },
    alpha: { default: undefined, help: 'width multiplier where the grid leaves it free (default 0.25 for V1, 0.35 for V2)' },
    rho: { default: undefined, help: 'resolution multiplier where the grid leaves it free (default 1)' },
  });
  command
    .option('--seeds <k>', 'runs per configuration (mean and standard deviation over seeds)', numberIn('--seeds', 1, 100, { integer: true }), 3)
    .option('--jobs <n>', 'runs side by side, each on cores / jobs threads ; by default one per core with one thread each', numberIn('--jobs', 1, 64, { integer: true }), Math.min(64, defaultThreads()))
    .option('--output-dir <dir>', 'where the runs and results go (default experiments/<name>)')
    .action((name: string, flags: ExperimentFlags) => run(() => experiment(name, flags)));
}

/** The dataset's native image size: 28 for the IDX sets, 32 for CIFAR-10, the loaded size for a folder (28). */
function nativeSize(data: string): number {
  return data === 'cifar10' ? 32 : 28;
}

/** Input channels of the dataset's images: 1 for (Fashion-)MNIST, 3 for CIFAR-10 and image folders. */
function defaultChannels(data: string): number {
  return data === 'fashion-mnist' || data === 'mnist' ? 1 : 3;
}

/** What a finished run measured, kept in its folder's result.json. */
interface RunResult {
  top1: number;
  loss: number;
  secondsPerEpoch: number;
  imagesPerSecond: number;
  resolution: number;
  /** The model's input channels and classes (for the cost of its configuration). */
  inChannels: number;
  classes: number;
}

/** The mean of the values measured (a run that trained nothing in its last session has NaN speeds), or null. */
function meanOfMeasured(values: number[]): number | null {
  const measured = values.filter(Number.isFinite);
  return measured.length > 0 ? meanStd(measured).mean : null;
}

function meanStd(values: number[]): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = values.length > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (values.length - 1)) : 0;
  return { mean, std };
}

/** The train processes running now (with --jobs > 1, several), so that a failure or Ctrl-C can stop them all. */
const running = new Set<ChildProcess>();

/**
 * One run in a child process of its own (`mobilenet train-child`, on `threads` threads): the
 * run's specification goes to it as a message, and its result comes back as one. The run's
 * folder is the child's one argument, so that `ps` shows which run a process trains.
 */
function trainInChild(spec: RunSpec, threads: number): Promise<{ code: number | null; stderr: string; result: RunResult | null }> {
  return new Promise((resolve) => {
    const child = fork(process.argv[1], ['--threads', String(threads), 'train-child', spec.outputDir ?? spec.resume ?? ''], { execArgv: process.execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    running.add(child);
    let stderr = '';
    let result: RunResult | null = null;
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('message', (message: { result: RunResult }) => (result = message.result));
    child.send({ spec });
    child.on('close', (code) => {
      running.delete(child);
      resolve({ code, stderr, result });
    });
  });
}

/**
 * `mobilenet train-child RUN_DIR` (hidden): the grid's side of one run. It waits for the run's
 * specification, trains it as `train` would, and sends back what it measured: the last epoch's
 * top-1 and loss (not the best epoch's: choosing by the test score flatters), seconds per
 * epoch and the median images per second. If the grid is gone (its channel closes), the run
 * stops after the current batch with a checkpoint, as on SIGTERM.
 */
export function registerTrainChild(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  program
    .command('train-child', { hidden: true })
    .argument('<run-dir>', 'the run folder (for ps; the specification comes as a message)')
    .action(() => run(async () => {
      process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));
      const spec = await new Promise<RunSpec>((resolve) => process.once('message', (m: { spec: RunSpec }) => resolve(m.spec)));
      const outcome = await train(spec, { out: process.stdout, warn: (m) => process.stderr.write(`warning: ${m}\n`) });
      if (outcome.stopped !== null) return;
      process.send!({ result: resultOf(outcome) }, () => process.disconnect());
    }));
}

/** A run's result from what its session measured; a run that was already complete is evaluated again. */
function resultOf(outcome: TrainOutcome): RunResult {
  const last = outcome.epochs[outcome.epochs.length - 1];
  // A run killed after its last epoch but before its result was kept has trained nothing now.
  const val = last?.val ?? outcome.trainer.evaluate().summary();
  const seconds = outcome.epochs.map((e) => e.seconds);
  return { top1: val.top1, loss: val.loss, secondsPerEpoch: seconds.length > 0 ? meanStd(seconds).mean : NaN, imagesPerSecond: outcome.imagesPerSecond, resolution: outcome.resolution, inChannels: outcome.trainer.trainLoader.channels, classes: outcome.trainer.train.classNames.length };
}

/** One run of the grid: its configuration, seed and folder. */
interface GridRun {
  point: GridPoint;
  seed: number;
  dir: string;
}

/** A grid to train: its experiment, runs, and how they are spread over the cores. */
interface Grid {
  name: string;
  spec: Experiment;
  dir: string;
  points: GridPoint[];
  runs: GridRun[];
  native: number;
  threads: number;
  command: string;
  flags: ExperimentFlags;
}

function planGrid(name: string, flags: ExperimentFlags): Grid {
  const spec = EXPERIMENTS[name];
  if (spec === undefined) throw new UsageError(`experiment '${name}': no such experiment; the experiments are ${Object.keys(EXPERIMENTS).join(', ')}`);
  const dir = flags.outputDir ?? join('experiments', name);
  const native = nativeSize(flags.data);
  const free = { alpha: flags.alpha ?? (name === 'expansion' ? 0.35 : 0.25), rho: flags.rho ?? 1 };
  const points = spec.grid(free, native);
  for (const p of points) checkAlphaFor(p.model, p.alpha);
  const seeds = Array.from({ length: flags.seeds }, (_, s) => s);
  const runs = points.flatMap((point, index) => seeds.map((seed) => ({ point, seed, dir: join(dir, `${String(index).padStart(2, '0')}-${point.model}-a${point.alpha}-r${round3(point.rho)}-t${point.expansion}-seed${seed}`) })));
  const threads = Math.max(1, Math.floor(defaultThreads() / flags.jobs));
  const command = `mobilenet experiment ${name} ${process.argv.slice(process.argv.indexOf(name) + 1).join(' ')}`.trim();
  return { name, spec, dir, points, runs, native, threads, command, flags };
}

/**
 * A run's specification: train's optimizer and schedule with the grid's epochs, batch size and
 * learning rate, no flips and no label smoothing (the grid's recipe, fixed whatever train's
 * defaults); a killed run resumes from its checkpoint.
 */
function runSpec(r: GridRun, flags: ExperimentFlags): RunSpec {
  const data: RunSpec = { data: flags.data, dataPath: flags.dataPath ?? null, logInterval: 3600 };
  if (existsSync(join(r.dir, LAST_CHECKPOINT))) return { ...data, resume: r.dir };
  const { model, alpha, rho, expansion } = r.point;
  return { ...data, model, alpha, rho, expansion, epochs: flags.epochs, batchSize: flags.batchSize, lr: flags.lr, hflip: false, labelSmoothing: 0, seed: r.seed, outputDir: r.dir };
}

/**
 * A finished run's kept result, or null. A result.json that cannot be read as one (a file cut
 * short by a full disk, edited by hand) is renamed to result.json.damaged with a warning, and
 * the run counts as not done: running it again resumes its checkpoint and measures it again.
 */
function keptResult(run: GridRun): RunResult | null {
  const file = join(run.dir, 'result.json');
  if (!existsSync(file)) return null;
  let result: unknown;
  try {
    result = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    result = null;
  }
  // The speeds of a run that trained nothing in its last session are NaN, which JSON writes as null.
  const numbers: (keyof RunResult)[] = ['top1', 'loss', 'resolution', 'inChannels', 'classes'];
  const r = (typeof result === 'object' && result !== null ? result : {}) as Record<string, unknown>;
  const fits = numbers.every((k) => typeof r[k] === 'number') && [r.secondsPerEpoch, r.imagesPerSecond].every((v) => v === null || typeof v === 'number');
  if (fits) return { ...(r as unknown as RunResult), secondsPerEpoch: (r.secondsPerEpoch as number | null) ?? NaN, imagesPerSecond: (r.imagesPerSecond as number | null) ?? NaN };
  renameSync(file, `${file}.damaged`);
  process.stderr.write(`warning: ${file} is not a readable result (kept as result.json.damaged); the run is resumed to measure it again\n`);
  return null;
}

const isDone = (r: GridRun) => keptResult(r) !== null;

async function experiment(name: string, flags: ExperimentFlags): Promise<void> {
  const grid = planGrid(name, flags);
  const out = process.stdout;
  out.write(`${grid.spec.title}: ${grid.points.length} configurations x ${plural(flags.seeds, 'seed')} = ${grid.runs.length} runs of ${flags.epochs} epochs, ${flags.jobs} at a time on ${plural(grid.threads, 'thread')} each; output ${grid.dir}\n`);
  const { failure, stopReason } = await trainGrid(grid, out);
  if (failure !== null) throw failure;
  await summarise(grid);
  if (stopReason !== null) {
    process.exitCode = stopReason.exitCode;
    return;
  }
  const dir = grid.dir;
  out.write(`results: ${join(dir, 'results.md')}, ${join(dir, 'results.json')}, ${join(dir, 'accuracy-vs-mult-adds.png')}, ${join(dir, 'accuracy-vs-parameters.png')}\n`);
}

/**
 * Train the grid's runs, --jobs at a time, the results rewritten as runs finish. Ctrl-C,
 * SIGTERM, SIGHUP: no new run starts; the running ones stop after their current batch and
 * checkpoint (the terminal sends them a Ctrl-C's SIGINT too; a signal sent to this process alone
 * is passed on to them as SIGINT), and running the same command again resumes them. A failed
 * run stops the runs beside it the same way, and is reported once they have exited.
 */
async function trainGrid(grid: Grid, out: NodeJS.WritableStream): Promise<{ failure: ExperimentRunError | null; stopReason: StopReason | null }> {
  const state = { failure: null as ExperimentRunError | null, stopReason: null as StopReason | null, next: 0, finishedHere: 0, started: performance.now() };
  const stopping = () => state.failure !== null || state.stopReason !== null;
  const stopRunning = () => {
    for (const child of running) child.kill('SIGINT');
  };
  const onStop = (reason: StopReason) => {
    if (state.stopReason === null) process.stderr.write(`\nstopping (${reason.what}): the running trainings checkpoint after their current batch; run the same command again to continue\n`);
    state.stopReason ??= reason;
    stopRunning();
  };
  const removeStopHandlers = onStopRequest(onStop, onStop);
  const worker = async () => {
    for (let i = state.next++; i < grid.runs.length && !stopping(); i = state.next++) {
      const r = grid.runs[i];
      const what = `run ${i + 1}/${grid.runs.length}: ${r.point.label}, seed ${r.seed}`;
      if (isDone(r)) {
        out.write(`${what}: done earlier, skipped\n`);
        continue;
      }
      const runStart = performance.now();
      const spec = runSpec(r, grid.flags);
      out.write(`${what}: ${spec.resume ? 'resuming' : 'training'}...\n`);
      const child = await trainInChild(spec, grid.threads);
      if (stopping()) return; // a run beside this one failed, or Ctrl-C
      if (child.code !== 0 || child.result === null) {
        state.failure = new ExperimentRunError(`${what} failed (exit ${child.code}): ${child.stderr.trim().split('\n').slice(-3).join(' / ')}`);
        stopRunning();
        return;
      }
      // Written whole or not at all: a run is done once its result is.
      writeFileAtomic(join(r.dir, 'result.json'), JSON.stringify(child.result, null, 2) + '\n');
      state.finishedHere++;
      const left = grid.runs.filter((x) => !isDone(x)).length;
      const eta = ((performance.now() - state.started) / 1000 / state.finishedHere) * left; // runs per second so far, parallel jobs included
      out.write(`${what}: top-1 ${(100 * child.result.top1).toFixed(2)}% in ${formatDuration((performance.now() - runStart) / 1000)}; ${plural(left, 'run')} left, grid ETA ${formatDuration(left === 0 ? 0 : eta)}\n`);
      await summarise(grid);
    }
  };
  try {
    await Promise.all(Array.from({ length: grid.flags.jobs }, worker));
  } finally {
    removeStopHandlers();
  }
  return { failure: state.failure, stopReason: state.stopReason };
}

interface ResultRow {
  label: string;
  model: Architecture;
  alpha: number;
  rho: number;
  expansion: number;
  resolution: number;
  multAdds: number;
  params: number;
  seeds: number;
  top1: { mean: number; std: number; values: number[] } | null;
  secondsPerEpoch: number | null;
  imagesPerSecond: number | null;
  paper: string | null;
}

/** The results kept so far: each finished run's result.json. */
function finishedResults(grid: Grid): Map<GridRun, RunResult> {
  const results = new Map<GridRun, RunResult>();
  for (const r of grid.runs) {
    const result = keptResult(r);
    if (result !== null) results.set(r, result);
  }
  return results;
}

/** One row per configuration: its cost (at the input its runs had, else the dataset's usual one) and its seeds' top-1. */
function resultRows(grid: Grid, results: Map<GridRun, RunResult>): ResultRow[] {
  return grid.points.map((point) => {
    const done = grid.runs.filter((r) => r.point === point && results.has(r)).map((r) => results.get(r)!);
    const cost = costOf(point, grid.native, done[0]?.inChannels ?? defaultChannels(grid.flags.data), done[0]?.classes ?? 10);
    const top1 = done.map((d) => d.top1);
    return {
      label: point.label,
      model: point.model,
      alpha: point.alpha,
      rho: round3(point.rho),
      expansion: point.expansion,
      resolution: cost.resolution,
      multAdds: cost.multAdds,
      params: cost.params,
      seeds: done.length,
      top1: done.length > 0 ? { ...meanStd(top1), values: top1 } : null,
      secondsPerEpoch: meanOfMeasured(done.map((d) => d.secondsPerEpoch)),
      imagesPerSecond: meanOfMeasured(done.map((d) => d.imagesPerSecond)),
      paper: point.paper ?? null,
    };
  });
}

/** results.md: the command, the recipe and one table row per configuration. */
function resultsMarkdown(grid: Grid, rows: ResultRow[]): string {
  const { spec, flags, command } = grid;
  const pct = (x: number) => (100 * x).toFixed(2);
  const cells = (r: ResultRow) => [r.label, r.alpha, `${r.resolution} (rho ${r.rho})`, r.model === 'v2' ? r.expansion : '-', `${(r.multAdds / 1e6).toFixed(2)}M`, `${(r.params / 1e6).toFixed(3)}M`, r.top1 ? `${pct(r.top1.mean)} +- ${pct(r.top1.std)}` : 'not run yet', r.seeds, r.secondsPerEpoch?.toFixed(1) ?? '-', r.imagesPerSecond?.toFixed(0) ?? '-', r.paper ?? '-'];
  return [
    `## ${spec.title}`,
    '',
    `\`${command}\`: ${flags.data}${flags.dataPath ? ` (${flags.dataPath})` : ' (the bundled subset)'}, ${flags.epochs} epochs at peak lr ${flags.lr}, ${plural(flags.seeds, 'seed')}; top-1 on the test split at the last epoch, mean +- standard deviation over seeds. Cost at the trained resolution (cost model). Paper: ${spec.paper}.`,
    '',
    '| model | alpha | resolution | expansion | mult-adds | parameters | top-1 (%) | seeds | s / epoch | img/s (training) | paper (ImageNet) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${cells(r).join(' | ')} |`),
    '',
  ].join('\n');
}

/** results.json, results.md and the two plots, from the runs finished so far. */
async function summarise(grid: Grid): Promise<void> {
  const { dir, spec, flags } = grid;
  const results = finishedResults(grid);
  const rows = resultRows(grid, results);
  const json = { experiment: grid.name, title: spec.title, paper: spec.paper, command: grid.command, data: flags.data, dataPath: flags.dataPath ?? null, epochs: flags.epochs, lr: flags.lr, seeds: flags.seeds, accuracy: 'top-1 on the test split at the last epoch', rows };
  writeOutputFile(join(dir, 'results.json'), JSON.stringify(json, null, 2) + '\n');
  writeOutputFile(join(dir, 'results.md'), resultsMarkdown(grid, rows));
  const done = rows.filter((r) => r.top1 !== null);
  const costs = new Map(rows.map((r) => [r.label, r]));
  for (const [axis, file, value] of [['mult-adds', 'accuracy-vs-mult-adds.png', (r: { multAdds: number }) => r.multAdds], ['parameters', 'accuracy-vs-parameters.png', (r: { params: number }) => r.params]] as const) {
    await writePng(
      scatterSvg({
        title: `${spec.title}: top-1 against ${axis}`,
        xLabel: `${axis} (log scale)`,
        yLabel: 'top-1 (%)',
        runs: [...results].map(([r, result]) => ({ x: value(costs.get(r.point.label)!), y: 100 * result.top1 })),
        means: done.map((r) => ({ x: value(r), y: 100 * r.top1!.mean, label: r.label })),
      }),
      join(dir, file),
    );
  }
}
