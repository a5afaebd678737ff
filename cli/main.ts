#!/usr/bin/env node
// The `mobilenet` command line: a thin layer over the library. User mistakes are printed
// without a stack trace (add --verbose for one) and exit with status 2; other failures with 1.

import { ConfigError, flagOf } from '../src/train/options.js';
import { Command } from 'commander';
import { PACKAGE_VERSION, UsageError, numberIn } from './common.js';
import { registerEval } from './evaluate.js';
import { ExperimentRunError, registerExperiment, registerTrainChild } from './experiment.js';
import { registerInterop } from './interop.js';
import { registerPredict } from './predict.js';
import { registerStep } from './step.js';
import { registerSummary } from './summary.js';
import { registerTrain } from './train.js';
import { KERNELS_PROBLEM } from '../src/ops/gemm.js';
import { defaultThreads, MAX_THREADS, setThreads } from '../src/ops/parallel.js';
import { CheckpointError, RunFolderError } from '../src/train/checkpoint.js';
import { FileWriteError } from '../src/tensor/files.js';
import { DatasetError } from '../src/train/datasets.js';
import { TrainingStoppedError } from '../src/train/trainer.js';
import { SafetensorsError } from '../src/tensor/safetensors.js';
import { PthError } from '../src/tensor/pth.js';
import { ShapeError } from '../src/tensor/shape.js';
import { StateDictError } from '../src/nn/module.js';

// `mobilenet train ... | head`: when the reader of our output goes away (EPIPE), or the terminal
// does (EIO after SIGHUP), the command must not die with it, and above all not with status 0
// for work it did not finish: what would have been printed is dropped, and the command goes on
// (a training keeps training and logging to its files) and ends with the status its work earns.
function keepGoingWhenClosed(stream: NodeJS.WriteStream, name: string): void {
  let closed = false;
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'EIO') throw error;
    if (closed) return;
    closed = true;
    stream.write = (() => true) as typeof stream.write;
    if (name === 'stdout') process.stderr.write('mobilenet: warning: stdout was closed; the command goes on without printing\n');
  });
}
keepGoingWhenClosed(process.stdout, 'stdout');
keepGoingWhenClosed(process.stderr, 'stderr');

// `npm run mobilenet -- predict photo.jpg` from a subfolder: npm runs the script from the
// package's root and passes the folder the user typed the command in as INIT_CWD; relative
// paths are the user's, so that is where we work.
if (/cli[\\/]main\.[jt]s/.test(process.env.npm_lifecycle_script ?? '') && process.env.INIT_CWD && process.env.INIT_CWD !== process.cwd()) {
  process.chdir(process.env.INIT_CWD);
}

const program = new Command();
// Every error the CLI prints starts the same way, whether commander found it (an unknown
// option, a bad value) or a command did: "mobilenet: error: ...". Subcommands made after this
// call inherit it.
program.configureOutput({ outputError: (text, write) => write(`mobilenet: ${text}`) });
// A usage mistake commander catches (unknown option, bad value, missing argument) is a user
// error like ours: exit 2. Help and --version exit as commander decides. Subcommands made after
// this call inherit it.
program.exitOverride((error) => process.exit(error.exitCode === 0 || error.code.startsWith('commander.help') ? error.exitCode : 2));
program
  .name('mobilenet')
  .description('MobileNet V1/V2 on a pure-TypeScript CPU tensor engine with autograd')
  .version(PACKAGE_VERSION)
  .option('--threads <n>', 'threads for the kernels (default: all cores)', numberIn('--threads', 1, MAX_THREADS, { integer: true }))
  .option('--verbose', 'show stack traces on errors', false)
  .hook('preAction', () => {
    if (KERNELS_PROBLEM !== null) throw new UsageError(KERNELS_PROBLEM);
    const cores = defaultThreads();
    const threads = program.opts<{ threads?: number }>().threads ?? cores;
    // More threads than cores take turns on the same cores and wait for each other at every
    // kernel: measured 3x slower on 2 cores with 8 threads.
    if (threads > cores) process.stderr.write(`warning: --threads ${threads} is more than the ${cores} cores of this machine; the kernels will run slower, not faster\n`);
    setThreads(threads);
  });

/** Errors a user can act on: their message is the whole story. */
const USER_ERRORS = [UsageError, ExperimentRunError, DatasetError, CheckpointError, RunFolderError, FileWriteError, SafetensorsError, PthError, TrainingStoppedError, ShapeError, StateDictError, RangeError];

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
    // The library names its settings (ConfigError); the command line names them as its flags.
    const message = error instanceof ConfigError ? error.describe(flagOf) : error.message;
    process.stderr.write(`mobilenet: error: ${message}\n`);
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
registerTrainChild(program, run);

program.parseAsync(process.argv).then(
  () => process.exit(process.exitCode ?? 0), // worker threads must not keep a finished command alive
  (e: unknown) => {
    // Outside a command's run (a global option's hook): a usage mistake is exit 2, as in `run`.
    process.stderr.write(`mobilenet: error: ${(e as Error).message}\n`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
