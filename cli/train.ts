// `mobilenet train`: turn the flags into a run specification, hand it to the library
// (src/train/run.ts prepares the run), and render the trainer's events: a progress bar (TTY) or
// plain lines (pipes), and metrics.jsonl, metrics.csv, config.json, plots and checkpoints in
// the output folder.

import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type Command } from 'commander';
import { confusionSvg, lineChartSvg, writeOutputFile, writePng } from './plots.js';
import { addRunOptions, specFromCommand } from './options.js';
import { percent, plural, UsageError } from './common.js';
import { onStopRequest, type StopReason } from './signals.js';
import { ImageClassifier } from '../src/nn/mobilenet.js';
import { appendToFile, FileWriteError } from '../src/tensor/files.js';
import { firstFew } from '../src/tensor/text.js';
import { BEST_CHECKPOINT, LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, RunLock } from '../src/train/checkpoint.js';
import { availableMemoryBytes, estimateTrainingMemory, formatBytes, largestBatchThatFits, MEMORY_HEADROOM } from '../src/train/memory.js';
import { flagOf, OPTION_NAMES, RUN_OPTIONS, type ConfigJsonOption, type OptionName, type RunSpec, type TrainConfig } from '../src/train/options.js';
import { planRun, readRunConfigJson, startRun, type PreparedRun } from '../src/train/run.js';
import { Trainer, TrainingStoppedError, type TrainerEvents } from '../src/train/trainer.js';

/** Every run option that has a flag is a flag of `train`. */
const TRAIN_FLAGS = OPTION_NAMES.filter((k) => RUN_OPTIONS[k].flag !== false);

export function registerTrain(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program.command('train').description('train a MobileNet; with no flags, on the bundled Fashion-MNIST subset with a recipe that reaches ~87%');
  addRunOptions(command, TRAIN_FLAGS).action((_flags: unknown, cmd: Command) => run(async () => {
    await train(specFromCommand(cmd, TRAIN_FLAGS), { out: process.stdout, warn: (m) => process.stderr.write(`warning: ${m}\n`) });
  }));
}

/** Where a training session writes: its lines, its warnings, and whether it draws progress. */
export interface TrainOutput {
  out: NodeJS.WriteStream | NodeJS.WritableStream;
  warn: (message: string) => void;
}

/** What a finished session measured, as data (the experiment grid reads it). */
export interface TrainOutcome {
  /** The epochs trained in this session, in order (empty when the run was already complete). */
  epochs: TrainerEvents['epochEnd'][];
  /** The median of this session's per-batch training speeds. */
  imagesPerSecond: number;
  resolution: number;
  /** Why the session stopped before the end (Ctrl-C, a signal), or null. */
  stopped: StopReason | null;
  /** The run's trainer (to evaluate a run that was already complete). */
  trainer: Trainer;
}

/**
 * `npx tsx cli/main.ts` runs us as the child of tsx's launcher, recognisable by the preflight
 * script it preloads; that launcher relays Ctrl-C and sends SIGKILL if the child's event loop
 * does not acknowledge within ~60 ms.
 */
function underTsxLauncher(): boolean {
  return process.execArgv.some((arg) => /tsx[\\/]dist[\\/]preflight\.cjs$/.test(arg));
}

/** ", 1,234 trainable" when part of the model is frozen. */
function trainableNote(trainer: Trainer): string {
  let trainable = 0;
  for (const p of trainer.model.parameters()) if (p.requiresGrad) trainable += p.numel;
  return trainable === trainer.model.parameterCount() ? '' : `, ${trainable.toLocaleString('en-US')} trainable`;
}

/** The files a run writes into its folder: a folder holding any of them holds a run. */
const RUN_FILES = [LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, BEST_CHECKPOINT, 'metrics.jsonl', 'metrics.csv', 'config.json', 'loss.png', 'accuracy.png', 'confusion.png'];

/** The run folder of a resumed run: the folder given, or the one holding the checkpoint given. */
function runFolderOf(resume: string): string {
  return resume.endsWith('.safetensors') ? dirname(resume) : resume;
}

/**
 * A new run's folder must not hold another run: refuse, naming --resume and --overwrite; with
 * --overwrite, delete the other run's files (only those: a user's own files in the folder stay).
 */
function claimForNewRun(outputDir: string, overwrite: boolean, out: TrainOutput['out']): void {
  const present = RUN_FILES.filter((f) => existsSync(join(outputDir, f)));
  if (present.length === 0) return;
  if (!overwrite) {
    const resumable = existsSync(join(outputDir, LAST_CHECKPOINT)) || existsSync(join(outputDir, PREVIOUS_CHECKPOINT));
    const named = firstFew(present, 3);
    throw new UsageError(`--output-dir ${outputDir} already holds a run (${named}): ${resumable ? `continue it with --resume ${outputDir}, ` : ''}choose another --output-dir, or add --overwrite to delete it and start over`);
  }
  for (const f of present) rmSync(join(outputDir, f), { force: true });
  out.write(`--overwrite: deleted the earlier run's ${present.join(', ')} in ${outputDir}\n`);
}

/** Estimated memory of one training step, the machine's, and whether the run may start. */
function checkMemory(trainer: Trainer, c: TrainConfig, images: number, allowed: boolean, warn: (m: string) => void): string {
  if (!(trainer.model instanceof ImageClassifier)) return '';
  const estimate = estimateTrainingMemory(trainer.model, { batchSize: c.batchSize, resolution: c.resolution, images, optimizer: c.opt, ema: c.modelEma });
  const available = availableMemoryBytes();
  const note = `estimated peak memory ${formatBytes(estimate.peakBytes)} of ${formatBytes(available)} available`;
  if (estimate.peakBytes > available * MEMORY_HEADROOM) {
    const fits = largestBatchThatFits(estimate, available * MEMORY_HEADROOM);
    const advice = fits >= 1 ? `--batch-size ${fits} would fit` : 'even batches of 1 would not fit: use a smaller --resolution or --alpha';
    const text = `a training step of batch ${c.batchSize} at ${c.resolution}x${c.resolution} needs about ${formatBytes(estimate.peakBytes)} (${formatBytes(estimate.perImageBytes)} an image, ${formatBytes(estimate.fixedBytes)} for the weights, optimizer and data), and this machine has ${formatBytes(available)} available: ${advice}`;
    if (!allowed) throw new UsageError(`${text} (--ignore-memory-estimate to try anyway)`);
    warn(`${text}; going on because of --ignore-memory-estimate`);
  }
  return note;
}

/** A run's config.json: its settings (the checkpoint's, on resume), its data and where it started. */
function runConfigJson(run: PreparedRun): string {
  // The options kept in config.json only (an option declared so later is a type error here until it is written).
  const configJsonOnly: Record<ConfigJsonOption, unknown> = { data: run.data, dataPath: run.dataPath, init: run.init?.path ?? null };
  return JSON.stringify({ ...run.trainer.config, ...configJsonOnly, classNames: run.images.train.classNames, normalization: run.trainer.normalization }, null, 2) + '\n';
}

/**
 * The settings where an existing config.json differs from the checkpoint's (a hand edit that
 * --resume does not use). Those given on this command (--epochs extending the run) are not
 * edits: they are meant to differ.
 */
function editedSettings(path: string, config: TrainConfig, spec: RunSpec): string[] {
  const written = readRunConfigJson(path);
  if (written === 'missing') return [];
  if (written === 'invalid') return ['(it is not valid JSON)'];
  return (Object.keys(config) as (keyof TrainConfig)[])
    .filter((k) => spec[k as keyof RunSpec] === undefined && k in written && JSON.stringify(written[k]) !== JSON.stringify(config[k]))
    .map((k) => `${k} ${JSON.stringify(written[k])} there, ${JSON.stringify(config[k])} in the checkpoint`);
}

/**
 * Train a run from its specification, as `mobilenet train` does: settle the plan (the
 * checkpoint's settings for --resume, the weights for --init), claim the run folder (a lock
 * while we write it, and a new run never replaces another one without --overwrite) before any
 * work is spent, then prepare and train the run there.
 */
export async function train(spec: RunSpec, io: TrainOutput): Promise<TrainOutcome> {
  const plan = planRun(spec, io.warn);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const outputDir = spec.outputDir ?? (spec.resume ? runFolderOf(spec.resume) : join('runs', `${stamp}-${plan.config.model}-a${plan.config.alpha}`));
  mkdirSync(outputDir, { recursive: true });
  const lock = RunLock.acquire(outputDir);
  try {
    const continuing = spec.resume != null && resolve(outputDir) === resolve(runFolderOf(spec.resume));
    if (!continuing) claimForNewRun(outputDir, spec.overwrite ?? false, io.out);
    else if (spec.overwrite) throw new UsageError(`--overwrite deletes a run and --resume ${spec.resume} continues it: give one of them`);
    const run = await startRun(plan, io.warn);
    for (const note of run.notes) io.out.write(`${note}\n`);
    return await trainInFolder(run, spec, outputDir, io);
  } finally {
    lock.release();
  }
}

/** The lines before the first batch: what is trained on what, and where it goes. */
function announce(run: PreparedRun, spec: RunSpec, outputDir: string, io: TrainOutput): void {
  const { trainer, images } = run;
  const c = trainer.config;
  if (run.resumed !== null) io.out.write(`resuming from ${run.resumed.path}: epoch ${trainer.progress.epoch + 1}, batch ${trainer.progress.batch + 1}\n`);
  const memory = checkMemory(trainer, c, images.train.count, spec.ignoreMemoryEstimate ?? false, io.warn);
  const configPath = join(outputDir, 'config.json');
  const edited = run.resumed !== null ? editedSettings(configPath, c, spec) : [];
  if (edited.length > 0) io.warn(`${configPath} differed from the checkpoint's settings, which a resumed run uses (${edited.join('; ')}); it is rewritten from the checkpoint`);
  writeOutputFile(configPath, runConfigJson(run));
  const split = `${images.train.count} train / ${images.val.count} ${images.valName === 'test' ? 'test (also for validation)' : 'validation'}${images.test ? ` / ${images.test.count} test` : ''} images`;
  io.out.write(
    `training MobileNet ${c.model} alpha ${c.alpha} at ${c.resolution}x${c.resolution} (${trainer.model.parameterCount().toLocaleString('en-US')} parameters${trainableNote(trainer)}) on ${images.train.name}: ` +
      `${split}, ${plural(c.epochs, 'epoch')} of ${plural(trainer.trainLoader.batchesPerEpoch, 'batch', 'batches')}\n` +
      `output: ${outputDir}${memory ? `; ${memory}` : ''}\n`,
  );
}

/** The run, prepared, trained in its folder: the events rendered, Ctrl-C and signals handled. */
async function trainInFolder(run: PreparedRun, spec: RunSpec, outputDir: string, io: TrainOutput): Promise<TrainOutcome> {
  const { trainer } = run;
  const c = trainer.config;
  const outcome: TrainOutcome = { epochs: [], imagesPerSecond: NaN, resolution: c.resolution, stopped: null, trainer };
  if (run.complete) {
    const best = trainer.progress.bestEpoch >= 0 ? `; best ${run.images.valName} top-1 ${percent(trainer.progress.bestTop1)} (epoch ${trainer.progress.bestEpoch + 1})` : '';
    io.out.write(`${run.resumed!.path}: the run is complete (${plural(c.epochs, 'epoch')} of ${c.epochs} trained${best}), nothing to do; to train it longer, add --epochs N with N > ${c.epochs}\n`);
    return outcome;
  }
  announce(run, spec, outputDir, io);
  const session = new RunLog(run, outputDir, io, spec.logInterval ?? RUN_OPTIONS.logInterval.default);
  const controller = new AbortController();
  const removeStopHandlers = handleStopRequests(controller, session, outcome);
  if (underTsxLauncher()) {
    io.warn("started by tsx's launcher (npx tsx), which kills a process that does not answer a Ctrl-C within 60 ms: a training step takes longer, so Ctrl-C will lose this epoch. Start training with 'npm run mobilenet -- train' or 'node --import tsx/esm cli/main.ts train' to stop it cleanly");
  }
  try {
    await trainer.fit({ outputDir, signal: controller.signal });
    await session.finished();
  } catch (e) {
    throw session.explain(e);
  } finally {
    removeStopHandlers();
    session.renderer.clear();
    await session.settled();
  }
  outcome.epochs = session.history;
  outcome.imagesPerSecond = session.medianSpeed();
  if (outcome.stopped !== null) process.exitCode = outcome.stopped.exitCode;
  return outcome;
}

/**
 * Ctrl-C, SIGTERM, SIGHUP, or npm gone: the first stops after the current batch and saves a
 * checkpoint; a second, later, quits at once.
 */
function handleStopRequests(controller: AbortController, session: RunLog, outcome: TrainOutcome): () => void {
  return onStopRequest(
    (reason) => {
      outcome.stopped = reason;
      session.renderer.clear();
      process.stderr.write(`\n${reason.what}: stopping after this batch and saving a checkpoint (${reason.what === 'Ctrl-C' ? 'Ctrl-C' : 'the same'} again to quit at once)...\n`);
      controller.abort();
    },
    (reason) => {
      process.stderr.write(`\n${reason.what} again: stopping now, without a checkpoint of this epoch\n`);
      process.exit(reason.exitCode);
    },
  );
}

/**
 * One session's rendering of the trainer's events: the progress renderer, metrics.jsonl and
 * metrics.csv, the plots after each epoch, and the lines for early stops, stops, the test and
 * the end.
 */
class RunLog {
  readonly renderer: ProgressRenderer;
  readonly history: TrainerEvents['epochEnd'][] = [];
  private readonly speeds: number[] = [];
  private readonly pending: Promise<void>[] = [];
  private lastConfusion: number[][] | null = null;
  /** The newest checkpoint on disk, for the message when writing fails. */
  private lastSaved: TrainerEvents['checkpointSaved'] | null;
  private readonly logPath: string;
  private readonly csvPath: string;

  constructor(private readonly run: PreparedRun, private readonly outputDir: string, private readonly io: TrainOutput, logInterval: number) {
    this.renderer = new ProgressRenderer(io.out as NodeJS.WriteStream, logInterval);
    this.logPath = join(outputDir, 'metrics.jsonl');
    this.csvPath = join(outputDir, 'metrics.csv');
    const valName = run.images.valName;
    if (!existsSync(this.csvPath)) writeOutputFile(this.csvPath, `epoch,train_loss,train_top1,train_top5,${valName}_loss,${valName}_top1,${valName}_top5,lr,seconds\n`);
    const progress = run.trainer.progress;
    this.lastSaved = run.resumed === null ? null : { path: run.resumed.path, kind: 'last', epoch: progress.epoch, batch: progress.batch };
    this.subscribe(run.trainer);
  }

  private log<K extends keyof TrainerEvents>(event: K, payload: TrainerEvents[K]): void {
    appendToFile(this.logPath, JSON.stringify({ event, time: new Date().toISOString(), ...payload }) + '\n');
  }

  private subscribe(trainer: Trainer): void {
    const { out } = this.io, valName = this.run.images.valName, epochs = trainer.config.epochs;
    trainer.on('epochStart', (e) => (this.log('epochStart', e), this.renderer.epochStart(e)));
    trainer.on('batchEnd', (e) => (this.log('batchEnd', e), this.speeds.push(e.imagesPerSecond), this.renderer.batch(e)));
    trainer.on('evalEnd', (e) => (this.log('evalEnd', e), (this.lastConfusion = e.confusion)));
    trainer.on('checkpointSaved', (e) => {
      if (e.kind === 'last') this.lastSaved = e;
      this.log('checkpointSaved', e);
    });
    trainer.on('warning', (e) => this.io.warn(e.message));
    trainer.on('nanLoss', (e) => this.log('nanLoss', e));
    trainer.on('earlyStop', (e) => {
      this.log('earlyStop', e);
      out.write(`early stop: no better ${valName} top-1 for ${e.patience} epochs (best ${(100 * e.bestTop1).toFixed(2)}% at epoch ${e.bestEpoch + 1})\n`);
    });
    trainer.on('epochEnd', (e) => this.epochEnd(e, epochs));
    trainer.on('stopped', (e) => {
      this.log('stopped', e);
      this.renderer.clear();
      out.write(`stopped at epoch ${e.epoch + 1}, batch ${e.batch}; checkpoint: ${e.checkpoint}\nresume with: mobilenet train --resume ${this.outputDir}\n`);
    });
    trainer.on('testEnd', (e) => {
      this.log('testEnd', e);
      out.write(`test (${e.count} images, held out until now; the last epoch's weights): loss ${e.loss.toFixed(4)}  top1 ${percent(e.top1)}  top5 ${percent(e.top5)}\n`);
    });
    trainer.on('done', (e) => {
      this.log('done', e);
      const session = Math.abs(e.sessionSeconds - e.seconds) > 0.5 ? ` (${formatDuration(e.sessionSeconds)} of it in this session)` : '';
      out.write(`done: ${plural(e.epochs, 'epoch')} in ${formatDuration(e.seconds)}${session}; best ${valName} top-1 ${(100 * e.bestTop1).toFixed(2)}% (epoch ${e.bestEpoch + 1}); checkpoints and plots in ${this.outputDir}\n`);
    });
  }

  private epochEnd(e: TrainerEvents['epochEnd'], epochs: number): void {
    const valName = this.run.images.valName;
    this.log('epochEnd', e);
    this.history.push(e);
    this.renderer.epochEnd(e, epochs, valName);
    // A figure that does not exist (top-5 with 5 classes or fewer) is an empty cell.
    const cells = [e.epoch + 1, e.train.loss, e.train.top1, e.train.top5, e.val.loss, e.val.top1, e.val.top5, e.lr, e.seconds.toFixed(2)];
    appendToFile(this.csvPath, cells.map((v) => (typeof v === 'number' && Number.isNaN(v) ? '' : v)).join(',') + '\n');
    this.pending.push(writePlots(this.outputDir, this.history, this.lastConfusion, this.run.images.train.classNames, valName));
  }

  /** The plots written after the last epoch. */
  async finished(): Promise<void> {
    await Promise.all(this.pending);
  }

  /** Every plot write ended, written or failed (after an error, so that none is left running). */
  async settled(): Promise<void> {
    await Promise.allSettled(this.pending);
  }

  medianSpeed(): number {
    const sorted = [...this.speeds].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)] ?? NaN;
  }

  /**
   * A training error as the command line says it: the library's NaN-loss advice names a
   * setting, which becomes its flag; a failed write names the newest whole checkpoint and how
   * to resume from it.
   */
  explain(e: unknown): unknown {
    const c = this.run.trainer.config;
    if (e instanceof TrainingStoppedError && e.advice) return new TrainingStoppedError(`${e.what}. ${e.advice.text} (${flagOf(e.advice.option)}, ${c[e.advice.option]} in this run).`);
    if (e instanceof FileWriteError) {
      const s = this.lastSaved;
      const kept = s === null ? 'no checkpoint of this run was written' : `the newest complete checkpoint is ${s.path} (${s.batch === 0 ? `after epoch ${s.epoch}` : `epoch ${s.epoch + 1}, batch ${s.batch}`}); make room, then resume with: mobilenet train --resume ${this.outputDir}`;
      return new UsageError(`${e.message}; training stopped, and ${kept}`);
    }
    return e;
  }
}

async function writePlots(dir: string, history: TrainerEvents['epochEnd'][], confusion: number[][] | null, classNames: string[], valName: string): Promise<void> {
  const x = (e: TrainerEvents['epochEnd']) => e.epoch + 1;
  await writePng(
    lineChartSvg({
      title: 'Loss',
      xLabel: 'epoch',
      yLabel: 'cross-entropy loss',
      series: [
        { name: 'train', color: '#1f77b4', points: history.map((e) => [x(e), e.train.loss]) },
        { name: valName, color: '#d62728', points: history.map((e) => [x(e), e.val.loss]) },
      ],
    }),
    join(dir, 'loss.png'),
  );
  await writePng(
    lineChartSvg({
      title: 'Accuracy',
      xLabel: 'epoch',
      yLabel: 'top-1 accuracy (%)',
      series: [
        { name: 'train', color: '#1f77b4', points: history.map((e) => [x(e), 100 * e.train.top1]) },
        { name: valName, color: '#d62728', points: history.map((e) => [x(e), 100 * e.val.top1]) },
      ],
    }),
    join(dir, 'accuracy.png'),
  );
  if (confusion) await writePng(confusionSvg(confusion, classNames, `Confusion matrix (${valName})`), join(dir, 'confusion.png'));
}

/** A learning rate with three significant digits ("0.0139", "4.00e-7"); zero as "0", not "0.00". */
export function formatLr(lr: number): string {
  return lr === 0 ? '0' : lr.toPrecision(3);
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}` : `${m}:${String(r).padStart(2, '0')}`;
}

/**
 * On a terminal: one line redrawn in place (carriage return) with a bar, ETA, images/s, running
 * loss and accuracy, lr. Elsewhere (CI, pipes): a plain line every `interval` seconds.
 */
export class ProgressRenderer {
  private readonly tty: boolean;
  private epochStarted = 0;
  private lastLine = 0;
  private drawn = false;
  private epochs = 0;

  constructor(private readonly stream: NodeJS.WriteStream, private readonly interval: number) {
    this.tty = stream.isTTY === true;
  }

  epochStart(e: TrainerEvents['epochStart']): void {
    this.epochStarted = performance.now();
    this.lastLine = performance.now();
    this.epochs = e.epochs;
  }

  batch(e: TrainerEvents['batchEnd']): void {
    const done = e.batch + 1;
    const elapsed = (performance.now() - this.epochStarted) / 1000;
    const eta = (elapsed / done) * (e.batches - done);
    const stats = `${done}/${e.batches} ETA ${formatDuration(eta)} ${e.imagesPerSecond.toFixed(0)} img/s loss ${e.runningLoss.toFixed(4)} acc ${(100 * e.runningAccuracy).toFixed(1)}% lr ${formatLr(e.lr)}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round((width * done) / e.batches);
      const line = `epoch ${e.epoch + 1}/${this.epochs} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${stats}`;
      const columns = this.stream.columns ?? 120;
      this.stream.write(`\r${line.slice(0, columns - 1)}\x1b[K`);
      this.drawn = true;
    } else if (performance.now() - this.lastLine >= this.interval * 1000 || done === e.batches) {
      this.lastLine = performance.now();
      this.stream.write(`epoch ${e.epoch + 1}/${this.epochs} batch ${stats}\n`);
    }
  }

  epochEnd(e: TrainerEvents['epochEnd'], epochs: number, valName = 'val'): void {
    this.clear();
    const pct = percent;
    this.stream.write(
      `epoch ${e.epoch + 1}/${epochs}  train loss ${e.train.loss.toFixed(4)} top1 ${pct(e.train.top1)}  |  ${valName} loss ${e.val.loss.toFixed(4)} top1 ${pct(e.val.top1)} top5 ${pct(e.val.top5)}  |  ${e.seconds.toFixed(1)}s  lr ${formatLr(e.lr)}  best ${pct(e.bestTop1)} (epoch ${e.bestEpoch + 1})\n`,
    );
  }

  clear(): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[K');
    this.drawn = false;
  }
}
