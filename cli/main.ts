#!/usr/bin/env node
// The `mobilenet` command line: a thin layer over the library. User mistakes are printed
// without a stack trace (add --verbose for one) and exit with status 2; other failures with 1.

import { Command } from 'commander';
import { UsageError, numberIn } from './common.js';
import { registerEval } from './evaluate.js';
import { ExperimentRunError, registerExperiment } from './experiment.js';
import { registerInterop } from './interop.js';
import { registerPredict } from './predict.js';
import { registerStep } from './step.js';
import { registerSummary } from './summary.js';
import { registerTrain } from './train.js';
import { defaultThreads, MAX_THREADS, setThreads } from '../src/ops/parallel.js';
import { CheckpointError } from '../src/train/checkpoint.js';
import { DatasetError } from '../src/train/datasets.js';
import { TrainingStoppedError } from '../src/train/trainer.js';
import { SafetensorsError } from '../src/tensor/safetensors.js';
import { ShapeError } from '../src/tensor/shape.js';
import { StateDictError } from '../src/nn/module.js';

// `mobilenet eval run | head`: when the reader of our output goes away, stop quietly with
// status 0, as Unix tools do on SIGPIPE, instead of dying on an unhandled EPIPE error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const program = new Command();
// A usage mistake commander catches (unknown option, bad value, missing argument) is a user
// error like ours: exit 2. Help and --version exit as commander decides. Subcommands made after
// this call inherit it.
program.exitOverride((error) => process.exit(error.exitCode === 0 || error.code.startsWith('commander.help') ? error.exitCode : 2));
program
  .name('mobilenet')
  .description('MobileNet V1/V2 on a pure-TypeScript CPU tensor engine with autograd')
  .version('0.1.0')
  .option('--threads <n>', 'threads for the kernels (default: all cores)', numberIn('--threads', 1, MAX_THREADS, { integer: true }))
  .option('--verbose', 'show stack traces on errors', false)
  .hook('preAction', () => {
    const threads = program.opts<{ threads?: number }>().threads ?? defaultThreads();
    // More threads than cores take turns on the same cores and wait for each other at every
    // kernel: measured 3x slower on 2 cores with 8 threads.
    if (threads > defaultThreads()) process.stderr.write(`warning: --threads ${threads} is more than the ${defaultThreads()} cores of this machine; the kernels will run slower, not faster\n`);
    setThreads(threads);
  });

/** Errors a user can act on: their message is the whole story. */
const USER_ERRORS = [UsageError, ExperimentRunError, DatasetError, CheckpointError, SafetensorsError, TrainingStoppedError, ShapeError, StateDictError, RangeError];

/**
 * A file that cannot be read or written (no such file, no permission, a folder where a file
 * should be, a full disk): Node's message names the call and the path ("EACCES: permission
 * denied, open 'out/w.safetensors'"), which is what the user needs.
 */
function isFileSystemError(error: Error): boolean {
  const { code, path } = error as NodeJS.ErrnoException;
  return typeof code === 'string' && typeof path === 'string' && /^E[A-Z]+$/.test(code);
}

async function run(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const error = e as Error;
    const verbose = program.opts<{ verbose: boolean }>().verbose;
    const isUser = USER_ERRORS.some((cls) => error instanceof cls) || isFileSystemError(error);
    process.stderr.write(`mobilenet: error: ${error.message}\n`);
    if (verbose || !isUser) process.stderr.write(`${error.stack ?? ''}\n`);
    process.exitCode = isUser ? 2 : 1;
  }
}

registerTrain(program, run);
registerEval(program, run);
registerPredict(program, run);
registerSummary(program, run);
registerInterop(program, run);
registerStep(program, run);
registerExperiment(program, run);

program.parseAsync(process.argv).then(
  () => process.exit(process.exitCode ?? 0), // worker threads must not keep a finished command alive
  (e: unknown) => {
    process.stderr.write(`mobilenet: error: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
