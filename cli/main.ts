#!/usr/bin/env node
// The `mobilenet` command line: a thin layer over the library.
import { Command } from 'commander';
import { runDemo } from './demo.js';

const program = new Command();
program
  .name('mobilenet')
  .description('MobileNet on a pure-TypeScript CPU tensor engine with autograd')
  .version('0.1.0');

program
  .command('demo')
  .description('fit a tiny linear model with the autograd engine and print the loss as it falls')
  .option('--steps <n>', 'gradient-descent steps', '60')
  .option('--seed <n>', 'random seed', '0')
  .action((opts: { steps: string; seed: string }) => {
    runDemo({ steps: Number(opts.steps), seed: Number(opts.seed) }, (line) => process.stdout.write(line + '\n'));
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`mobilenet: ${(e as Error).message}\n`);
  process.exit(1);
});
