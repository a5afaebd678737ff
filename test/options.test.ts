// The run options' table is the one declaration of every option: these tests check what is
// derived from it (defaults, the one validation and its messages, the command line's flags,
// the resume rules) and the one reader of a checkpoint's metadata.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addRunOptions, specFromCommand } from '../cli/options.js';
import { CheckpointError, readCheckpointMetadata } from '../src/train/metadata.js';
import { checkConfig, checkSpec, CONFIG_NAMES, ConfigError, flagOf, OPTION_NAMES, parseOption, RUN_OPTIONS, TRAIN_DEFAULTS, trainConfig, type OptionName } from '../src/train/options.js';
import { planRun } from '../src/train/run.js';
import { ROOT, runCli, tinyFashionMnist } from './helpers.js';

/** The ConfigError `f` throws (the test fails if it throws nothing or something else). */
function configErrorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

const numeric = OPTION_NAMES.filter((n) => RUN_OPTIONS[n].kind === 'integer' || RUN_OPTIONS[n].kind === 'number');

describe('the run options table', () => {
  it('gives the defaults: TRAIN_DEFAULTS holds every checkpointed option, each default passes the check', () => {
    expect(Object.keys(TRAIN_DEFAULTS).sort()).toEqual(OPTION_NAMES.filter((n) => RUN_OPTIONS[n].lands === 'checkpoint').sort());
    for (const name of CONFIG_NAMES) expect(TRAIN_DEFAULTS[name], name).toEqual(RUN_OPTIONS[name].default);
    expect(() => checkConfig(trainConfig())).not.toThrow();
    // A fresh config is a copy: changing its lists leaves the defaults alone.
    trainConfig().lrMilestones.push(3);
    expect(TRAIN_DEFAULTS.lrMilestones).toEqual([]);
  });

  it.each(numeric)('refuses %s just outside its range, naming the option and the range', (name) => {
    const o = RUN_OPTIONS[name] as { min: number; max: number; minExclusive?: boolean; maxExclusive?: boolean; kind: string };
    const below = o.minExclusive ? o.min : o.min - 1, above = o.maxExclusive ? o.max : o.max + 1;
    for (const value of [below, above, Number.NaN]) {
      const e = configErrorOf(() => checkSpec({ [name]: value }));
      expect(e.options).toEqual([name]);
      expect(e.value).toEqual(value);
      expect(e.describe(flagOf)).toMatch(new RegExp(`^${flagOf(name)} must be an? (integer|number) in [[(]${o.min}, ${o.max}[\\])], got ${value}`));
    }
    const inside = o.minExclusive ? o.min + (o.kind === 'integer' ? 1 : 1e-3) : o.min;
    expect(() => checkSpec({ [name]: inside })).not.toThrow();
  });

  it('parses the text of a flag as the CLI does, with one message per mistake', () => {
    expect(parseOption('lr', '0.05')).toBe(0.05);
    expect(parseOption('lrMilestones', '10,20')).toEqual([10, 20]);
    expect(parseOption('classes', 'Sandal, Sneaker')).toEqual(['Sandal', 'Sneaker']);
    expect(parseOption('hflip', 'false')).toBe(false);
    expect(configErrorOf(() => parseOption('batchSize', '12.5')).describe(flagOf)).toBe('--batch-size must be an integer in [1, 65536], got \'12.5\'');
    expect(configErrorOf(() => parseOption('lr', '1e')).describe(flagOf)).toMatch(/^--lr must be a number in \(0, 100\], got '1e'$/);
    expect(configErrorOf(() => parseOption('opt', 'sgdd')).describe(flagOf)).toMatch(/^--opt must be one of sgd, sgd_nesterov, rmsprop, adam, adamw, got 'sgdd'/);
  });

  it('makes one commander flag per option, with the table\'s default, and reads back only the flags given', () => {
    const command = addRunOptions(new Command().exitOverride(), OPTION_NAMES);
    const flags = command.options.map((o) => o.long);
    for (const name of OPTION_NAMES) {
      if (RUN_OPTIONS[name].flag === false) expect(flags, name).not.toContain(flagOf(name));
      else expect(flags, name).toContain(flagOf(name));
    }
    command.parse(['--lr', '0.2', '-b', '32', '--wd', '0.001', '--no-hflip', '--classes', '0,2'], { from: 'user' });
    expect(specFromCommand(command, OPTION_NAMES)).toEqual({ lr: 0.2, batchSize: 32, weightDecay: 0.001, hflip: false, classes: ['0', '2'] });
    expect(command.opts().momentum).toBe(TRAIN_DEFAULTS.momentum);
    expect(() => addRunOptions(new Command().exitOverride().configureOutput({ writeErr: () => {} }), ['lr']).parse(['--lr', '-1'], { from: 'user' })).toThrow(/argument '-1' is invalid\. --lr must be a number in \(0, 100\], got '-1'/);
  });

  it('every flag is named in the docs (docs/training.md or docs/cli.md)', () => {
    const docs = ['docs/training.md', 'docs/cli.md'].map((f) => readFileSync(new URL(`../${f}`, import.meta.url), 'utf8')).join('\n');
    const undocumented = OPTION_NAMES.filter((n) => RUN_OPTIONS[n].flag !== false && !docs.includes(flagOf(n))).map(flagOf);
    expect(undocumented).toEqual([]);
  });

  it('refuses on --resume every option the checkpoint keeps, naming them, before reading anything', () => {
    const kept = OPTION_NAMES.filter((n) => RUN_OPTIONS[n].resume === 'kept' && RUN_OPTIONS[n].flag !== false);
    const e = configErrorOf(() => planRun({ resume: '/no/such/run', lr: 0.2, model: 'v2' }));
    expect(e.options).toEqual(['resume', 'model', 'lr', 'epochs', 'dataPath', 'outputDir', 'init']);
    expect(e.describe(flagOf)).toMatch(/^--resume continues a run with the settings stored in its checkpoint; --model, --lr cannot change them/);
    expect(kept.length).toBeGreaterThan(30);
    for (const name of ['epochs', 'dataPath', 'outputDir'] as OptionName[]) expect(RUN_OPTIONS[name].resume).toBe('may change');
    // The options it may change pass on to the checkpoint check, which names the missing run.
    expect(configErrorOf(() => planRun({ resume: '/no/such/run', epochs: 9 })).describe(flagOf)).toBe('--resume /no/such/run: no such checkpoint or run folder');
  });

  it('--resume trains on the data the run was made on (its config.json), unless told other data', () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'resume-data-')), 'run');
    const data = join(ROOT, 'data/fashion-mnist-subset');
    const run = runCli(['train', '--data-path', data, '--per-class', '10', '--epochs', '1', '--eval-batch-size', '500', '--output-dir', dir]);
    expect(run.code, run.stderr).toBe(0);
    expect(planRun({ resume: dir }).dataPath).toBe(data);
    expect(planRun({ resume: dir, dataPath: '/moved/here' }).dataPath).toBe('/moved/here');
    // Other images there (fewer of them, so their fingerprint differs): a warning that names both fingerprints, and the run goes on.
    const changed = tinyFashionMnist(2000, 500);
    const resumed = runCli(['train', '--resume', dir, '--data-path', changed, '--epochs', '2']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/^warning: .*was made on dataset 'fashion-mnist' \(fingerprint \w+\); this run's data has fingerprint \w+$/m);
  }, 90_000);

  it('leaves rho to the dataset: a rho too small for 28-pixel images may suit 32-pixel ones, and both rho and resolution are refused at once', () => {
    expect(planRun({ data: 'cifar10', rho: 0.25 }).config.rho).toBe(0.25); // round(0.25 x 32) = 8 pixels
    expect(configErrorOf(() => planRun({ rho: 0.5, resolution: 32 })).describe(flagOf)).toBe('--rho and --resolution exclude each other: --rho scales the base size, --resolution sets the size');
  });

  it('checks settings against each other once, naming both', () => {
    const e = configErrorOf(() => checkConfig(trainConfig({ freeze: 'features', trainableBlocks: 2 })));
    expect(e.options.sort()).toEqual(['freeze', 'trainableBlocks']);
    expect(e.describe(flagOf)).toMatch(/--freeze .*--trainable-blocks|--trainable-blocks .*--freeze/);
  });
});

/** The metadata of a small, valid checkpoint (weights only: no training state). */
function metadata(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    config: { ...TRAIN_DEFAULTS },
    normalization: { mean: [0.28], std: [0.35] },
    dataset: { name: 'fashion-mnist', fingerprint: 'abc', classNames: ['a', 'b'], channels: 1 },
    model: { architecture: 'shallow' },
    ...overrides,
  };
}

describe('readCheckpointMetadata', () => {
  it('reads a valid checkpoint\'s metadata whole, and an older one\'s missing options as their defaults', () => {
    const meta = readCheckpointMetadata(metadata(), 'run/best.safetensors');
    expect(meta.config).toEqual(TRAIN_DEFAULTS);
    expect(meta.progress).toBeUndefined();
    const { modelEma: _, ...older } = TRAIN_DEFAULTS;
    expect(readCheckpointMetadata(metadata({ config: older }), 'old.safetensors').config.modelEma).toBe(false);
  });

  it('reads the augmentation settings older checkpoints grouped under augment', () => {
    const { hflip: _h, cropPadding: _c, randomErasing: _r, autoAugment: _a, ...rest } = TRAIN_DEFAULTS;
    const config = { ...rest, augment: { cropPadding: 4, horizontalFlip: false, randomErasing: 0.25, autoAugment: 'ta_wide' } };
    expect(readCheckpointMetadata(metadata({ config }), 'old.safetensors').config).toMatchObject({ cropPadding: 4, hflip: false, randomErasing: 0.25, autoAugment: 'ta_wide' });
  });

  it.each([
    ['a number out of range', { config: { ...TRAIN_DEFAULTS, lr: -1 } }, /^f\.safetensors: metadata config\.lr is -1, expected a value that is a number in \(0, 100\]$/],
    ['a wrong type', { config: { ...TRAIN_DEFAULTS, batchSize: '64' } }, /^f\.safetensors: metadata config\.batchSize is "64", expected a value that is an integer/],
    ['an unknown option', { config: { ...TRAIN_DEFAULTS, warpDrive: 9 } }, /^f\.safetensors: metadata config\.warpDrive is 9, expected no such field/],
    ['no config', { config: undefined }, /^f\.safetensors: metadata config is missing, expected an object$/],
    ['one mean for three channels', { dataset: { name: 'd', classNames: ['a'], channels: 3 } }, /^f\.safetensors: metadata normalization\.mean is \[0\.28\], expected 3 numbers \(one per input channel\)$/],
    ['a zero std', { normalization: { mean: [0.28], std: [0] } }, /^f\.safetensors: metadata normalization\.std is \[0\], expected 1 positive number/],
    ['no class names', { dataset: { name: 'd', classNames: [], channels: 1 } }, /^f\.safetensors: metadata dataset\.classNames is \[\], expected a non-empty list/],
    ['a broken progress', { progress: { epoch: -1 }, optimizer: {} }, /^f\.safetensors: metadata progress\.epoch is -1, expected an integer >= 0$/],
  ])('refuses %s, naming the file and the field', (_what, overrides, message) => {
    let error: unknown;
    try {
      readCheckpointMetadata(metadata(overrides), 'f.safetensors');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as Error).message).toMatch(message);
  });
});
