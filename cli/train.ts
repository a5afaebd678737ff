// `mobilenet train`: render the trainer's events as a progress bar (TTY) or plain lines (pipes),
// and write metrics.jsonl, metrics.csv, config.json, plots and checkpoints to the output folder.

import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { type Command } from 'commander';
import { MAX_RESOLUTION } from './limits.js';
import { confusionSvg, lineChartSvg, writeOutputFile, writePng } from './plots.js';
import { addModelOptions, checkAlpha, integerList, nameList, loadRunData, resolutionFrom, rhoOption, percent, plural, loadModelFromCheckpoint, numberIn, oneOf, UsageError, type LoadedModel, type RunData } from './common.js';
import { onStopRequest, type StopReason } from './signals.js';
import { ARCHITECTURES, ImageClassifier } from '../src/nn/mobilenet.js';
import { appendToFile, FileWriteError } from '../src/tensor/files.js';
import { Rng } from '../src/tensor/rng.js';
import { firstFew } from '../src/tensor/text.js';
import { BEST_CHECKPOINT, findResumableCheckpoint, LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, RunLock, type ResumableCheckpoint } from '../src/train/checkpoint.js';
import { availableMemoryBytes, estimateTrainingMemory, formatBytes, largestBatchThatFits, MEMORY_HEADROOM } from '../src/train/memory.js';
import { ConfigError, OPTIMIZERS, SCHEDULERS, TRAIN_DEFAULTS, Trainer, TrainingStoppedError, type TrainConfig, type TrainerEvents, type TrainerParts } from '../src/train/trainer.js';

interface TrainFlags {
  model: TrainConfig['model'];
  alpha: number;
  resolution: number;
  rho?: number;
  expansion: number;
  stemStride: 1 | 2;
  freeze?: 'features';
  trainableBlocks?: number;
  valSplit: number;
  classes?: string[];
  perClass: number;
  clipGradNorm: number;
  mixupAlpha: number;
  cutmixAlpha: number;
  modelEma: boolean;
  modelEmaSteps: number;
  modelEmaDecay: number;
  data: string;
  dataPath?: string;
  epochs: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  opt: TrainConfig['opt'];
  lrScheduler: TrainConfig['lrScheduler'];
  lrStepSize: number;
  lrGamma: number;
  lrMilestones: number[];
  lrWarmupEpochs: number;
  labelSmoothing: number;
  dropout: number;
  cropPadding: number;
  hflip: boolean;
  randomErasing: number;
  autoAugment?: 'ta_wide';
  outputDir?: string;
  overwrite: boolean;
  ignoreMemoryEstimate: boolean;
  resume?: string;
  init?: string;
  seed: number;
  patience: number;
  checkpointEvery: number;
  logInterval: number;
}

const D = TRAIN_DEFAULTS;

export function registerTrain(program: Command, run: (fn: () => Promise<void>) => Promise<void>): void {
  const command = program.command('train').description('train a MobileNet; with no flags, on the bundled Fashion-MNIST subset with a recipe that reaches ~87%');
  addModelOptions(command, ARCHITECTURES, D, " (baseline: the paper's full-convolution MobileNet; shallow: Table 5's Shallow MobileNet)")
    .option('--resolution <r>', `input resolution in pixels, 8..${MAX_RESOLUTION}: every image is resized to r x r (28 is Fashion-MNIST's own size)`, numberIn('--resolution', 8, MAX_RESOLUTION, { integer: true }), D.resolution)
    .option(...rhoOption("the dataset's native size"))
    .option('--data <name>', 'fashion-mnist | mnist | cifar10 | a folder of class subfolders', 'fashion-mnist')
    .option('--data-path <dir>', 'where the dataset files are (default for fashion-mnist: the subset bundled in this repo)')
    .option('--epochs <n>', 'epochs', numberIn('--epochs', 1, 100000, { integer: true }), D.epochs)
    .option('-b, --batch-size <n>', 'batch size', numberIn('--batch-size', 1, 65536, { integer: true }), D.batchSize)
    .option('--lr <x>', 'learning rate (the peak lr for onecycle)', numberIn('--lr', 0, 100, { minExclusive: true }), D.lr)
    .option('--momentum <x>', 'momentum (SGD, RMSprop)', numberIn('--momentum', 0, 1), D.momentum)
    .option('--wd, --weight-decay <x>', 'weight decay (not applied to BatchNorm, biases and depthwise filters)', numberIn('--weight-decay', 0, 1), D.weightDecay)
    .option('--opt <name>', OPTIMIZERS.join(' | '), oneOf('--opt', OPTIMIZERS), D.opt)
    .option('--lr-scheduler <name>', SCHEDULERS.join(' | '), oneOf('--lr-scheduler', SCHEDULERS), D.lrScheduler)
    .option('--lr-step-size <n>', 'epochs between decays (steplr)', numberIn('--lr-step-size', 1, 100000, { integer: true }), D.lrStepSize)
    .option('--lr-gamma <x>', 'decay factor (steplr, multisteplr, exponentiallr, plateau)', numberIn('--lr-gamma', 0, 1, { minExclusive: true }), D.lrGamma)
    .option('--lr-milestones <list>', 'epochs at which multisteplr decays, e.g. 10,20', integerList('--lr-milestones'), D.lrMilestones)
    .option('--lr-warmup-epochs <n>', 'linear warmup epochs before the schedule', numberIn('--lr-warmup-epochs', 0, 100000, { integer: true }), D.lrWarmupEpochs)
    .option('--label-smoothing <x>', 'label smoothing, in [0, 1)', numberIn('--label-smoothing', 0, 0.999), D.labelSmoothing)
    .option('--dropout <p>', 'dropout before the classifier, in [0, 1)', numberIn('--dropout', 0, 0.999), D.dropout)
    .option('--crop-padding <n>', 'random crop with this much zero padding (0 = off)', numberIn('--crop-padding', 0, 64, { integer: true }), D.augment.cropPadding)
    .option('--hflip', 'random horizontal flips', D.augment.horizontalFlip)
    .option('--no-hflip', 'no flips (for images whose mirror image means something else: digits, text)')
    .option('--auto-augment <policy>', 'ta_wide: TrivialAugmentWide on each training image (gray or colour)', oneOf('--auto-augment', ['ta_wide'] as const))
    .option('--random-erasing <p>', 'probability of random erasing (0 = off)', numberIn('--random-erasing', 0, 1), D.augment.randomErasing)
    .option('--output-dir <dir>', 'where checkpoints, logs and plots go (default runs/<date>-<model>); a folder holds one run')
    .option('--overwrite', 'start a new run in an --output-dir that holds one, deleting its checkpoints, logs and plots', false)
    .option('--resume <path>', 'continue from a checkpoint or a run folder (uses its last.safetensors)')
    .option('--freeze <part>', 'transfer learning: freeze this part (features: everything below the classifier; its BatchNorms keep their statistics)', oneOf('--freeze', ['features'] as const))
    .option('--trainable-blocks <n>', 'transfer learning: only the last n blocks of the features and the classifier train', numberIn('--trainable-blocks', 0, 1000, { integer: true }))
    .option('--init <checkpoint>', 'start from a checkpoint\'s weights (a .safetensors file or a run folder\'s best) with a fresh optimizer and schedule: fine-tuning')
    .option('--seed <n>', 'random seed', numberIn('--seed', 0, 2 ** 31, { integer: true }), D.seed)
    .option('--model-ema', 'evaluate (and keep as best) an exponential moving average of the weights', D.modelEma)
    .option('--model-ema-steps <n>', 'batches between moving-average updates', numberIn('--model-ema-steps', 1, 1e9, { integer: true }), D.modelEmaSteps)
    .option('--model-ema-decay <d>', 'moving-average decay before the reference script\'s adjustment, in (0, 1)', numberIn('--model-ema-decay', 0, 1, { minExclusive: true, maxExclusive: true }), D.modelEmaDecay)
    .option('--mixup-alpha <a>', 'MixUp with lambda ~ Beta(a, a) (0 = off)', numberIn('--mixup-alpha', 0, 100), D.mixupAlpha)
    .option('--cutmix-alpha <a>', 'CutMix with lambda ~ Beta(a, a) (0 = off; with --mixup-alpha, one of the two per batch)', numberIn('--cutmix-alpha', 0, 100), D.cutmixAlpha)
    .option('--clip-grad-norm <x>', 'clip the gradients\' global L2 norm to this before each step (0 = off)', numberIn('--clip-grad-norm', 0, 1e6), D.clipGradNorm)
    .option('--val-split <f>', 'hold out this fraction of the training images (seeded) to choose the best epoch, stop early and drive plateau schedules; the test split is then evaluated once at the end (default 0: the test split does all of it)', numberIn('--val-split', 0, 1, { maxExclusive: true }), D.valSplit)
    .option('--classes <list>', 'train on these classes only, relabelled in this order: names or indices, comma-separated (e.g. 0,2,3 or "Sandal,Sneaker,Ankle boot")', nameList('--classes'))
    .option('--per-class <n>', 'at most n training images per class, chosen with the seed (0 = all): few-shot transfer learning', numberIn('--per-class', 0, 1e9, { integer: true }), D.perClass)
    .option('--patience <n>', 'stop after this many epochs without a better validation top-1 (0 = off)', numberIn('--patience', 0, 100000, { integer: true }), D.patience)
    .option('--checkpoint-every <n>', 'also checkpoint every n batches (0 = at epoch ends only)', numberIn('--checkpoint-every', 0, 1e9, { integer: true }), D.checkpointEvery)
    .option('--ignore-memory-estimate', 'start even when the estimated memory of a training step is more than the machine has available', false)
    .option('--log-interval <s>', 'seconds between progress lines when not on a terminal', numberIn('--log-interval', 0, 3600), 10)
    .action((flags: TrainFlags, command: Command) => run(() => train(flags, (name) => command.getOptionValueSource(name) === 'cli')));
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

/**
 * The run's configuration from the flags: the flags are named as TrainConfig's fields (as
 * torchvision's reference script names them), so they map one to one; the augmentation switches
 * are grouped, and the flags about files and output are not part of a run's configuration.
 */
function configFromFlags(flags: TrainFlags): TrainConfig {
  const { data: _data, dataPath: _dataPath, outputDir: _outputDir, overwrite: _overwrite, ignoreMemoryEstimate: _ignoreMemoryEstimate, resume: _resume, init: _init, logInterval: _logInterval, cropPadding, hflip, randomErasing, autoAugment, ...settings } = flags;
  return { ...TRAIN_DEFAULTS, ...settings, rho: settings.rho ?? null, classes: settings.classes ?? null, freeze: settings.freeze ?? 'none', trainableBlocks: settings.trainableBlocks ?? null, augment: { cropPadding, horizontalFlip: hflip, randomErasing, autoAugment: autoAugment ?? 'none' } };
}

/** Flags that may come with --resume: where the data is, where output goes, how long to train. */
const RESUME_FLAGS = new Set(['resume', 'data', 'dataPath', 'outputDir', 'overwrite', 'epochs', 'logInterval', 'ignoreMemoryEstimate']);

/** The files a run writes into its folder: a folder holding any of them holds a run. */
const RUN_FILES = [LAST_CHECKPOINT, PREVIOUS_CHECKPOINT, BEST_CHECKPOINT, 'metrics.jsonl', 'metrics.csv', 'config.json', 'loss.png', 'accuracy.png', 'confusion.png'];

/** `--flagName` for a TrainConfig field or a flag's camelCase name. */
function flagName(option: string): string {
  return `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The run folder of a resumed run: the folder given, or the one holding the checkpoint given. */
function runFolderOf(resume: string): string {
  return resume.endsWith('.safetensors') ? dirname(resume) : resume;
}

/**
 * A new run's folder must not hold another run: refuse, naming --resume and --overwrite; with
 * --overwrite, delete the other run's files (only those: a user's own files in the folder stay).
 */
function claimForNewRun(outputDir: string, overwrite: boolean, out: NodeJS.WritableStream): void {
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
function runConfigJson(trainer: Trainer, flags: TrainFlags, classNames: string[]): string {
  return JSON.stringify({ ...trainer.config, data: flags.data, dataPath: flags.dataPath ?? null, init: flags.init ?? null, classNames, normalization: trainer.normalization }, null, 2) + '\n';
}

/** The settings where an existing config.json differs from the checkpoint's (a hand edit that --resume does not use). */
function editedSettings(path: string, config: TrainConfig): string[] {
  if (!existsSync(path)) return [];
  let written: Record<string, unknown>;
  try {
    written = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return ['(it is not valid JSON)'];
  }
  return (Object.keys(config) as (keyof TrainConfig)[])
    .filter((k) => k in written && JSON.stringify(written[k]) !== JSON.stringify(config[k]))
    .map((k) => `${k} ${JSON.stringify(written[k])} there, ${JSON.stringify(config[k])} in the checkpoint`);
}

async function train(flags: TrainFlags, given: (flag: string) => boolean): Promise<void> {
  const out = process.stdout;
  const warn = (m: string) => process.stderr.write(`warning: ${m}\n`);
  if (flags.resume && flags.init) throw new UsageError('--resume and --init exclude each other: --resume continues a run where it stopped, --init starts a new run from its weights');
  if (flags.resume) {
    // A resumed run continues with the settings stored in its checkpoint; a flag that would
    // change them is refused rather than silently ignored. --epochs extends (or shortens) it.
    const refused = Object.keys(flags).filter((name) => given(name) && !RESUME_FLAGS.has(name));
    if (refused.length > 0) {
      throw new UsageError(`--resume continues a run with the settings stored in its checkpoint; ${refused.map(flagName).join(', ')} cannot change them (--epochs, --data-path and --output-dir can). To train with other settings from its weights, use --init`);
    }
    if (!existsSync(flags.resume)) throw new UsageError(`--resume ${flags.resume}: no such checkpoint or run folder`);
  }
  checkAlpha(flags.model, flags.alpha);
  if (flags.freeze !== undefined && flags.trainableBlocks !== undefined) throw new UsageError('--freeze and --trainable-blocks exclude each other (--freeze features is --trainable-blocks 0)');
  // --init: the starting weights. Their model, alpha and resolution are the run's unless given,
  // as loading a saved model is (an ImageNet model learned its features at 224, not at a
  // folder's default 28); given ones that differ are refused below.
  const start = flags.init && !flags.resume ? loadModelFromCheckpoint(flags.init) : null;
  if (start !== null) {
    if (!given('model')) flags.model = start.config.model;
    if (!given('alpha')) flags.alpha = start.config.alpha;
    if (!given('resolution') && !given('rho')) flags.resolution = start.config.resolution;
  }

  // The run folder first: it belongs to this run alone (a lock while we write it, and a new run
  // never replaces another one without --overwrite), before any work is spent.
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const outputDir = flags.outputDir ?? (flags.resume ? runFolderOf(flags.resume) : join('runs', `${stamp}-${flags.model}-a${flags.alpha}`));
  mkdirSync(outputDir, { recursive: true });
  const lock = RunLock.acquire(outputDir);
  try {
    const continuing = flags.resume !== undefined && resolve(outputDir) === resolve(runFolderOf(flags.resume));
    if (!continuing) claimForNewRun(outputDir, flags.overwrite, out);
    else if (flags.overwrite) throw new UsageError(`--overwrite deletes a run and --resume ${flags.resume} continues it: give one of them`);
    await trainInFolder(flags, given, outputDir, start, out, warn);
  } finally {
    lock.release();
  }
}

async function trainInFolder(flags: TrainFlags, given: (flag: string) => boolean, outputDir: string, start: LoadedModel | null, out: NodeJS.WriteStream, warn: (m: string) => void): Promise<void> {
  // A resumed run splits its validation images off exactly as it did the first time.
  // Read once: its config chooses the data split, then the trainer is built from it.
  const found = flags.resume ? findResumableCheckpoint(flags.resume, warn) : null;
  const stored = found ? (found.checkpoint.meta.config as Partial<TrainConfig>) : null;
  const valSplit = stored ? (stored.valSplit ?? 0) : flags.valSplit;
  const seed = stored?.seed ?? flags.seed;
  const classes = stored ? (stored.classes ?? null) : (flags.classes ?? null);
  const perClass = stored ? (stored.perClass ?? 0) : flags.perClass;
  // An image folder is read at the run's resolution, as the first time (with --rho, at the
  // default size that rho then scaled).
  const readSize = stored ? (stored.rho == null ? (stored.resolution ?? flags.resolution) : TRAIN_DEFAULTS.resolution) : flags.resolution;
  const data = await loadRunData({ data: flags.data, dataPath: flags.dataPath, resolution: readSize, seed, onWarning: warn, classes }, valSplit, perClass);
  const valName = data.valName;
  // --rho scales the images' native size (an image folder's: the size its images were read at).
  flags.resolution = resolutionFrom(flags, given, data.train.height);
  let trainer: Trainer;
  try {
    trainer = found ? resumeTrainer(found, flags, given, data, warn) : newTrainer(flags, data, start, out);
  } catch (e) {
    // The library names its settings; the command line names the flags.
    if (e instanceof ConfigError) throw new UsageError(`${e.options.map(flagName).join(', ')}${e.value !== undefined ? ` ${e.value}` : ''}: ${e.detail}`);
    throw e;
  }
  const c = trainer.config;
  if (found !== null) {
    if (trainer.progress.epoch >= c.epochs) {
      const best = trainer.progress.bestEpoch >= 0 ? `; best ${valName} top-1 ${percent(trainer.progress.bestTop1)} (epoch ${trainer.progress.bestEpoch + 1})` : '';
      out.write(`${found.path}: the run is complete (${plural(c.epochs, 'epoch')} of ${c.epochs} trained${best}), nothing to do; to train it longer, add --epochs N with N > ${c.epochs}\n`);
      return;
    }
    out.write(`resuming from ${found.path}: epoch ${trainer.progress.epoch + 1}, batch ${trainer.progress.batch + 1}\n`);
  }
  const memory = checkMemory(trainer, c, data.train.count, flags.ignoreMemoryEstimate, warn);
  const configPath = join(outputDir, 'config.json');
  const edited = found ? editedSettings(configPath, c) : [];
  if (edited.length > 0) warn(`${configPath} differed from the checkpoint's settings, which a resumed run uses (${edited.join('; ')}); it is rewritten from the checkpoint`);
  writeOutputFile(configPath, runConfigJson(trainer, flags, data.train.classNames));
  out.write(
    `training MobileNet ${c.model} alpha ${c.alpha} at ${c.resolution}x${c.resolution} (${trainer.model.parameterCount().toLocaleString('en-US')} parameters${trainableNote(trainer)}) on ${data.train.name}: ` +
      `${data.train.count} train / ${data.val.count} ${valName === 'test' ? 'test (also for validation)' : 'validation'}${data.test ? ` / ${data.test.count} test` : ''} images, ${plural(c.epochs, 'epoch')} of ${plural(trainer.trainLoader.batchesPerEpoch, 'batch', 'batches')}\n` +
      `output: ${outputDir}${memory ? `; ${memory}` : ''}\n`,
  );

  const renderer = new ProgressRenderer(process.stdout, flags.logInterval);
  const logPath = join(outputDir, 'metrics.jsonl');
  const csvPath = join(outputDir, 'metrics.csv');
  if (!existsSync(csvPath)) writeOutputFile(csvPath, `epoch,train_loss,train_top1,train_top5,${valName}_loss,${valName}_top1,${valName}_top5,lr,seconds\n`);
  const log = <K extends keyof TrainerEvents>(event: K, payload: TrainerEvents[K]) => appendToFile(logPath, JSON.stringify({ event, time: new Date().toISOString(), ...payload }) + '\n');
  const history: TrainerEvents['epochEnd'][] = [];
  let lastConfusion: number[][] | null = null;
  // The newest checkpoint on disk, for the message when writing fails.
  let lastSaved: TrainerEvents['checkpointSaved'] | null = found === null ? null : { path: found.path, kind: 'last', epoch: trainer.progress.epoch, batch: trainer.progress.batch };

  trainer.on('epochStart', (e) => {
    log('epochStart', e);
    renderer.epochStart(e);
  });
  trainer.on('batchEnd', (e) => {
    log('batchEnd', e);
    renderer.batch(e);
  });
  trainer.on('evalEnd', (e) => {
    log('evalEnd', e);
    lastConfusion = e.confusion;
  });
  trainer.on('checkpointSaved', (e) => {
    if (e.kind === 'last') lastSaved = e;
    log('checkpointSaved', e);
  });
  trainer.on('warning', (e) => warn(e.message));
  trainer.on('nanLoss', (e) => log('nanLoss', e));
  trainer.on('earlyStop', (e) => {
    log('earlyStop', e);
    out.write(`early stop: no better ${valName} top-1 for ${e.patience} epochs (best ${(100 * e.bestTop1).toFixed(2)}% at epoch ${e.bestEpoch + 1})\n`);
  });
  const pending: Promise<void>[] = [];
  trainer.on('epochEnd', (e) => {
    log('epochEnd', e);
    history.push(e);
    renderer.epochEnd(e, c.epochs, valName);
    // A figure that does not exist (top-5 with 5 classes or fewer) is an empty cell.
    const cells = [e.epoch + 1, e.train.loss, e.train.top1, e.train.top5, e.val.loss, e.val.top1, e.val.top5, e.lr, e.seconds.toFixed(2)];
    appendToFile(csvPath, cells.map((v) => (typeof v === 'number' && Number.isNaN(v) ? '' : v)).join(',') + '\n');
    pending.push(writePlots(outputDir, history, lastConfusion, data.train.classNames, valName));
  });

  // Ctrl-C, SIGTERM, SIGHUP, or npm gone: the first stops after the current batch and saves a
  // checkpoint; a second, later, quits at once.
  const controller = new AbortController();
  let stopReason: StopReason | null = null;
  const removeStopHandlers = onStopRequest(
    (reason) => {
      stopReason = reason;
      renderer.clear();
      process.stderr.write(`\n${reason.what}: stopping after this batch and saving a checkpoint (${reason.what === 'Ctrl-C' ? 'Ctrl-C' : 'the same'} again to quit at once)...\n`);
      controller.abort();
    },
    (reason) => {
      process.stderr.write(`\n${reason.what} again: stopping now, without a checkpoint of this epoch\n`);
      process.exit(reason.exitCode);
    },
  );
  if (underTsxLauncher()) {
    warn("started by tsx's launcher (npx tsx), which kills a process that does not answer a Ctrl-C within 60 ms: a training step takes longer, so Ctrl-C will lose this epoch. Start training with 'npm run mobilenet -- train' or 'node --import tsx/esm cli/main.ts train' to stop it cleanly");
  }
  trainer.on('stopped', (e) => {
    log('stopped', e);
    renderer.clear();
    out.write(`stopped at epoch ${e.epoch + 1}, batch ${e.batch}; checkpoint: ${e.checkpoint}\nresume with: mobilenet train --resume ${outputDir}\n`);
  });
  trainer.on('testEnd', (e) => {
    log('testEnd', e);
    out.write(`test (${e.count} images, held out until now; the last epoch's weights): loss ${e.loss.toFixed(4)}  top1 ${percent(e.top1)}  top5 ${percent(e.top5)}\n`);
  });
  trainer.on('done', (e) => {
    log('done', e);
    const session = Math.abs(e.sessionSeconds - e.seconds) > 0.5 ? ` (${formatDuration(e.sessionSeconds)} of it in this session)` : '';
    out.write(`done: ${plural(e.epochs, 'epoch')} in ${formatDuration(e.seconds)}${session}; best ${valName} top-1 ${(100 * e.bestTop1).toFixed(2)}% (epoch ${e.bestEpoch + 1}); checkpoints and plots in ${outputDir}\n`);
  });
  try {
    await trainer.fit({ outputDir, signal: controller.signal });
    await Promise.all(pending);
  } catch (e) {
    // The library's message names no flag; the command line's names the one to change.
    if (e instanceof TrainingStoppedError && e.advice) throw new TrainingStoppedError(`${e.what}. ${e.advice.text} (${flagName(e.advice.option)}, ${c[e.advice.option]} in this run).`);
    if (e instanceof FileWriteError) {
      const kept = lastSaved === null ? 'no checkpoint of this run was written' : `the newest complete checkpoint is ${lastSaved.path} (${lastSaved.batch === 0 ? `after epoch ${lastSaved.epoch}` : `epoch ${lastSaved.epoch + 1}, batch ${lastSaved.batch}`}); make room, then resume with: mobilenet train --resume ${outputDir}`;
      throw new UsageError(`${e.message}; training stopped, and ${kept}`);
    }
    throw e;
  } finally {
    removeStopHandlers();
    renderer.clear();
    await Promise.allSettled(pending);
  }
  if (stopReason !== null) process.exitCode = (stopReason as StopReason).exitCode;
}

/** A new run from the flags (with --init, from a checkpoint's weights). */
function newTrainer(flags: TrainFlags, data: RunData, start: LoadedModel | null, out: NodeJS.WriteStream): Trainer {
  const config = configFromFlags(flags);
  let parts: TrainerParts = data.test ? { test: data.test } : {};
  if (start !== null) {
    // Fine-tuning and transfer learning: the weights, BatchNorm statistics and input
    // normalisation come from the checkpoint (the features were learned with it); the
    // optimizer state, schedule, epoch counter and RNG start fresh from this run's flags.
    if (start.config.model !== config.model || start.config.alpha !== config.alpha) {
      throw new UsageError(`--init ${flags.init}: the checkpoint holds MobileNet ${start.config.model} alpha ${start.config.alpha}, this run builds ${config.model} alpha ${config.alpha} (leave out --model and --alpha to use the checkpoint's)`);
    }
    const classes = data.train.classNames.length;
    if (start.classNames.length !== classes) {
      start.model.replaceClassifier(classes, new Rng(config.seed));
      out.write(`replacing the classifier: ${flags.init} has ${start.classNames.length} classes, ${data.train.name} has ${classes}; every other tensor is loaded, the new classifier starts from a fresh initialisation\n`);
    }
    config.inChannels = start.channels;
    config.expansion = start.model.info.expansion ?? config.expansion;
    config.stemStride = (start.model.info.stemStride ?? 2) === 1 ? 1 : 2;
    start.model.train();
    parts = { ...parts, model: start.model, normalization: start.normalization };
    out.write(`starting from the weights of ${flags.init}\n`);
  }
  return new Trainer(config, data.train, data.val, parts);
}

/** A run continued from its checkpoint, with --epochs if given. */
function resumeTrainer(found: ResumableCheckpoint, flags: TrainFlags, given: (flag: string) => boolean, data: RunData, warn: (m: string) => void): Trainer {
  const overrides = given('epochs') ? { epochs: flags.epochs } : {};
  const { trainer } = Trainer.resume(found, data.train, data.val, warn, overrides, data.test ? { test: data.test } : {});
  if (given('epochs') && ['onecycle', 'cosineannealinglr'].includes(trainer.config.lrScheduler)) {
    warn(`--epochs ${flags.epochs}: the ${trainer.config.lrScheduler} schedule is stretched over ${plural(flags.epochs, 'epoch')} from where the run is (its learning rate jumps to that curve)`);
  }
  return trainer;
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
