// The CLI as a user runs it: real processes, real files, exit codes.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadIdxDataset, selectClasses, takePerClass } from '../src/train/datasets.js';
import { loadSafetensors } from '../src/tensor/safetensors.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { CLI_FROM_SOURCE, expectClose, runCli, tinyFashionMnist, torchvisionWeights, weightsDigest } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '..');
const BUNDLED = join(ROOT, 'data/fashion-mnist-subset');

const cli = runCli;

function isPng(path: string): boolean {
  return existsSync(path) && readFileSync(path).subarray(1, 4).toString() === 'PNG';
}

let data: string;
let run: string;
let trainResult: ReturnType<typeof cli>;

beforeAll(() => {
  data = tinyFashionMnist(96, 40);
  run = join(mkdtempSync(join(tmpdir(), 'cli-run-')), 'run');
  trainResult = cli(['--threads', '1', 'train', '--data-path', data, '--model', 'v1', '--epochs', '2', '--alpha', '0.25', '-b', '32', '--output-dir', run, '--log-interval', '0']);
}, 180_000);

describe('mobilenet train', () => {
  it('trains, prints plain progress lines and a summary per epoch when not on a terminal', () => {
    expect(trainResult.stderr).toBe('');
    expect(trainResult.code).toBe(0);
    expect(trainResult.stdout).toMatch(/training MobileNet v1 alpha 0.25 at 28x28 \(\d[\d,]* parameters\) on fashion-mnist: 96 train \/ 40 test \(also for validation\) images, 2 epochs of 3 batches/);
    expect(trainResult.stdout).toMatch(/epoch 1\/2 batch 3\/3 ETA 0:00 \d+ img\/s loss \d\.\d{4} acc \d+\.\d% lr /);
    expect(trainResult.stdout).toMatch(/epoch 2\/2 {2}train loss \d\.\d{4} top1 \d+\.\d\d% {2}\| {2}test loss \d\.\d{4} top1 \d+\.\d\d% top5 \d+\.\d\d%/);
    expect(trainResult.stdout).toMatch(/done: 2 epochs in \d:\d\d; best test top-1/);
    expect(trainResult.stdout).not.toContain('\r');
  });
  it('writes metrics.jsonl, metrics.csv, config.json, checkpoints and readable PNG plots', async () => {
    const events = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string });
    expect(events.filter((e) => e.event === 'batchEnd')).toHaveLength(6);
    expect(events.filter((e) => e.event === 'epochEnd')).toHaveLength(2);
    const csv = readFileSync(join(run, 'metrics.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('epoch,train_loss,train_top1,train_top5,test_loss,test_top1,test_top5,lr,seconds');
    expect(csv).toHaveLength(3);
    const config = JSON.parse(readFileSync(join(run, 'config.json'), 'utf8'));
    // The default recipe (docs/training.md) flips and smooths labels by 0.1.
    expect(config).toMatchObject({ model: 'v1', alpha: 0.25, epochs: 2, batchSize: 32, labelSmoothing: 0.1, hflip: true });
    for (const f of ['last.safetensors', 'best.safetensors', 'previous.safetensors']) expect(existsSync(join(run, f)), f).toBe(true);
    for (const f of ['loss.png', 'accuracy.png', 'confusion.png']) {
      expect(isPng(join(run, f)), f).toBe(true);
      const meta = await sharp(join(run, f)).metadata();
      expect(meta.width).toBeGreaterThan(400);
    }
  });
  it('resumes a finished run to more epochs with --resume --epochs; refuses flags that would change its settings', () => {
    const r = cli(['--threads', '1', 'train', '--data-path', data, '--resume', run, '--epochs', '3', '--log-interval', '0']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('resuming from');
    expect(r.stdout).toMatch(/^epoch 3\/3 {2}train loss/m);
    expect(r.stdout).toMatch(/^done: 3 epochs in/m);
    expect(r.stderr).toMatch(/the onecycle schedule is stretched over 3 epochs/);
    const changed = cli(['train', '--data-path', data, '--resume', run, '--lr', '0.5', '--alpha', '0.5']);
    expect(changed.code).toBe(2);
    expect(changed.stderr).toMatch(/--alpha, --lr cannot change them/);
    const shorter = cli(['train', '--data-path', data, '--resume', run, '--epochs', '1']);
    expect(shorter.code).toBe(2);
    expect(shorter.stderr).toMatch(/--epochs 1: the run at .* has already trained 3 epochs/);
  });
  it('--val-split holds out training images for choosing the best epoch; the test split is evaluated once at the end; resume splits the same', () => {
    const dir = mkdtempSync(join(tmpdir(), 'val-split-'));
    const args = ['--threads', '1', 'train', '--data-path', data, '--val-split', '0.25', '--epochs', '2', '-b', '24', '--lr-scheduler', 'constant', '--lr', '0.02', '--no-hflip', '--log-interval', '0'];
    const straight = cli([...args, '--output-dir', join(dir, 'straight')]);
    expect(straight.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'straight', 'config.json'), 'utf8')).hflip, '--no-hflip').toBe(false);
    expect(straight.stdout).toMatch(/on fashion-mnist: 72 train \/ 24 validation \/ 40 test images/);
    expect(straight.stdout).toMatch(/^epoch 2\/2 {2}train loss \S+ top1 \S+ {2}\| {2}val loss /m);
    expect(straight.stdout).toMatch(/^test \(40 images, held out until now; the last epoch's weights\): loss \d\.\d{4} {2}top1 \d+\.\d\d% {2}top5 \d+\.\d\d%$/m);
    expect(straight.stdout).toMatch(/best val top-1/);
    expect(readFileSync(join(dir, 'straight', 'metrics.csv'), 'utf8').split('\n')[0]).toBe('epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,seconds');
    // One epoch, then --resume to two: the same split, the same weights, the same test figures.
    expect(cli([...args.map((a) => (a === '2' ? '1' : a)), '--output-dir', join(dir, 'resumed')]).code).toBe(0);
    const resumed = cli(['--threads', '1', 'train', '--data-path', data, '--resume', join(dir, 'resumed'), '--epochs', '2', '--log-interval', '0']);
    expect(resumed.code).toBe(0);
    expect(weightsDigest(join(dir, 'resumed', 'last.safetensors'))).toBe(weightsDigest(join(dir, 'straight', 'last.safetensors')));
    const testLine = (r: ReturnType<typeof cli>) => r.stdout.split('\n').find((l) => l.startsWith('test ('));
    expect(testLine(resumed)).toBe(testLine(straight));
  });
  it('fine-tunes from a checkpoint\'s weights with --init, with a fresh optimizer and schedule (and its --model and --alpha when not given)', () => {
    // With a learning rate of 1e-12 training cannot move a weight by a float32 step, so the
    // fine-tuned run's convolution filters must be the checkpoint's, not a fresh initialisation
    // (which, same seed, is the source run's epoch-0 weights, far from its best after 2 epochs).
    const out = join(mkdtempSync(join(tmpdir(), 'init-')), 'run');
    const r = cli(['--threads', '1', 'train', '--data-path', data, '--init', run, '--epochs', '1', '-b', '32', '--lr', '1e-12', '--opt', 'sgd', '--momentum', '0', '--wd', '0', '--lr-scheduler', 'constant', '--output-dir', out, '--log-interval', '0']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`starting from the weights of ${run}`);
    expect(r.stdout).toContain('1 epoch of 3 batches');
    expect(r.stdout).toMatch(/^done: 1 epoch in/m);
    const source = readCheckpoint(join(run, 'best.safetensors')).model;
    const tuned = readCheckpoint(join(out, 'last.safetensors')).model;
    let filters = 0;
    for (const [key, t] of source) {
      if (t.shape.length !== 4) continue;
      filters++;
      expectClose(tuned.get(key)!.data, t.data, key, 0, 1e-6);
    }
    expect(filters).toBeGreaterThan(20);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).init).toBe(run);
  });
  it('--init refuses a checkpoint of another width, and refuses to be combined with --resume', () => {
    const wider = cli(['--threads', '1', 'train', '--data-path', data, '--init', run, '--model', 'v1', '--alpha', '0.5', '--epochs', '1']);
    expect(wider.code).toBe(2);
    expect(wider.stderr).toContain(`--init ${run}: the checkpoint holds MobileNet v1 alpha 0.25, this run builds v1 alpha 0.5`);
    const both = cli(['--threads', '1', 'train', '--data-path', data, '--init', run, '--resume', run]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--resume and --init exclude each other');
  });
  it('renders a live progress bar in a pseudo-terminal', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'tty-')), 'run');
    const cmd = [process.execPath, ...CLI_FROM_SOURCE, '--threads', '1', 'train', '--data-path', data, '--epochs', '1', '--alpha', '0.25', '-b', '32', '--output-dir', out].join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/\repoch 1\/1 \[#{8}\.{16}\] 1\/3 ETA /);
    expect(r.stdout).toMatch(/\repoch 1\/1 \[#{24}\] 3\/3 ETA 0:00/);
    expect(r.stdout).toContain('\x1b[K');
  });
});

describe("the paper's model variants through train, eval, predict, export and import", () => {
  it('--model v2 --expansion 0.5 --rho 0.571 trains at 16x16 (round(0.571 x 28)); eval, predict and the export round trip keep it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'variants-'));
    const out = join(dir, 'run');
    const r = cli(['--threads', '1', 'train', '--data-path', data, '--model', 'v2', '--alpha', '0.35', '--expansion', '0.5', '--rho', '0.571', '--epochs', '1', '-b', '32', '--output-dir', out, '--log-interval', '0']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/training MobileNet v2 alpha 0\.35 at 16x16/);
    expect(readCheckpoint(join(out, 'last.safetensors')).meta.config).toMatchObject({ model: 'v2', expansion: 0.5, rho: 0.571, resolution: 16 });
    const e = cli(['--threads', '1', 'eval', out, '--data-path', data, '--confusion', join(dir, 'c.png')]);
    expect(e.code).toBe(0);
    const image = join(dir, 'x.png');
    await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 90, g: 90, b: 90 } } }).png().toFile(image);
    expect(cli(['--threads', '1', 'predict', out, image]).code).toBe(0);
    expect(cli(['export', out, join(dir, 'w.safetensors')]).code).toBe(0);
    expect(cli(['import', join(dir, 'w.safetensors'), join(dir, 'back.safetensors')]).stdout).toContain('1x16x16 input');
    const back = cli(['--threads', '1', 'eval', join(dir, 'back.safetensors'), '--data', 'fashion-mnist', '--data-path', data, '--confusion', join(dir, 'd.png')]);
    expect(back.stdout.split('\n').find((l) => l.startsWith('loss '))).toBe(e.stdout.split('\n').find((l) => l.startsWith('loss ')));
  });
  it('the default model is Shallow MobileNet alpha 0.35; bad --rho / --expansion values and --rho with --resolution name the flag', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'shallow-')), 'run');
    const r = cli(['--threads', '1', 'train', '--data-path', data, '--epochs', '1', '-b', '32', '--output-dir', out, '--log-interval', '0']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/training MobileNet shallow alpha 0\.35 at 28x28/);
    for (const [args, message] of [
      [['--rho', '0'], /--rho must be a number in \(0, 1\], got '0'/],
      [['--rho', '1.5'], /--rho must be a number in \(0, 1\], got '1\.5'/],
      [['--expansion', '0'], /--expansion must be a number in \(0, 16\], got '0'/],
      [['--rho', '0.5', '--resolution', '32'], /--rho and --resolution exclude each other/],
    ] as const) {
      const bad = cli(['train', '--data-path', data, ...args]);
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.stderr).toMatch(message);
    }
    // --stem-stride 1: the first convolution keeps 28x28 (4x the mult-adds); eval rebuilds it from the checkpoint.
    const strided = join(mkdtempSync(join(tmpdir(), 'stem-')), 'run');
    expect(cli(['--threads', '1', 'train', '--data-path', data, '--stem-stride', '1', '--epochs', '1', '-b', '32', '--output-dir', strided, '--log-interval', '0']).code).toBe(0);
    expect(readCheckpoint(join(strided, 'last.safetensors')).meta.config).toMatchObject({ stemStride: 1 });
    expect(readCheckpoint(join(strided, 'last.safetensors')).meta.model).toMatchObject({ stemStride: 1 });
    expect(cli(['--threads', '1', 'eval', strided, '--data-path', data, '--confusion', join(strided, 'c.png')]).code).toBe(0);
    expect(cli(['summary', '--alpha', '0.25', '--resolution', '28', '--in-channels', '1', '--num-classes', '10', '--stem-stride', '1']).stdout).toContain('total mult-adds: 2,895,136');
    const summary = cli(['summary', '--model', 'shallow', '--alpha', '1', '--resolution', '224']);
    expect(summary.stdout).toMatch(/total params: 2,887,976 {3}total mult-adds: 307,323,392 \(307\.3M\)/);
  });
});

describe('transfer learning: --init on other classes, --freeze, --trainable-blocks', () => {
  it('fine-tunes imported torchvision weights on a folder of 3 classes, frozen and unfrozen, and predicts with the result', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'transfer-'));
    // torchvision mobilenet_v2 (width 0.35, 100 classes, 3 channels) imported as a checkpoint.
    const pretrained = join(dir, 'pretrained.safetensors');
    expect(cli(['import', torchvisionWeights(dir), pretrained, '--alpha', '0.35', '--resolution', '64']).code).toBe(0);
    const photos = join(dir, 'photos');
    const colours = { red: { r: 220, g: 20, b: 20 }, green: { r: 20, g: 200, b: 40 }, blue: { r: 20, g: 30, b: 220 } };
    for (const [name, c] of Object.entries(colours)) {
      mkdirSync(join(photos, name), { recursive: true });
      for (let i = 0; i < 10; i++) await sharp({ create: { width: 30 + i, height: 28, channels: 3, background: { ...c, g: Math.min(255, c.g + 5 * i) } } }).png().toFile(join(photos, name, `${i}.png`));
    }
    const frozen = join(dir, 'frozen');
    const common = ['--threads', '1', 'train', '--data', photos, '--model', 'v2', '--alpha', '0.35', '--init', pretrained, '--resolution', '32', '--epochs', '1', '-b', '9', '--log-interval', '0'];
    const r = cli([...common, '--freeze', 'features', '--output-dir', frozen]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`replacing the classifier: ${pretrained} has 100 classes, photos has 3`);
    expect(r.stdout).toMatch(/\(\d[\d,]* parameters, 3,843 trainable\)/); // 1280 x 3 + 3: the new classifier only
    // The frozen features are the pretrained ones to the bit, BatchNorm statistics included; the
    // normalisation is ImageNet's, which the features were learned with.
    const before = readCheckpoint(pretrained), after = readCheckpoint(join(frozen, 'last.safetensors'));
    for (const [key, t] of before.model) if (key.startsWith('features.')) expect(Array.from(after.model.get(key)!.data), key).toEqual(Array.from(t.data));
    expect(after.meta.normalization).toEqual(before.meta.normalization);
    expect(after.model.get('classifier.1.weight')!.shape).toEqual([3, 1280]);
    const tuned = join(dir, 'tuned');
    const u = cli([...common, '--trainable-blocks', '2', '--output-dir', tuned]);
    expect(u.code).toBe(0);
    const partly = readCheckpoint(join(tuned, 'last.safetensors'));
    expect(Array.from(partly.model.get('features.17.conv.2.weight')!.data)).not.toEqual(Array.from(before.model.get('features.17.conv.2.weight')!.data));
    expect(Array.from(partly.model.get('features.16.conv.2.weight')!.data)).toEqual(Array.from(before.model.get('features.16.conv.2.weight')!.data));
    const p = cli(['--threads', '1', 'predict', tuned, join(photos, 'red', '0.png')]);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/% {2}(red|green|blue)/);
    // As the README writes it, with no --model, --alpha or --resolution: all three are the checkpoint's.
    const plain = cli(['--threads', '1', 'train', '--data', photos, '--init', pretrained, '--freeze', 'features', '--epochs', '1', '-b', '9', '--log-interval', '0', '--output-dir', join(dir, 'plain')]);
    expect(plain.stderr).toBe('');
    expect(plain.stdout).toMatch(/training MobileNet v2 alpha 0\.35 at 64x64/);
    // Bad input names the flag and what is allowed.
    const part = cli([...common, '--freeze', 'head']);
    expect(part.code).toBe(2);
    expect(part.stderr).toMatch(/--freeze must be one of none, features, got 'head'/);
    const blocks = cli([...common, '--trainable-blocks', '30']);
    expect(blocks.code).toBe(2);
    expect(blocks.stderr).toContain('--trainable-blocks 30: this model has 19 blocks in its features');
  });
});

describe('--classes and --per-class: a few images of some classes', () => {
  it('trains on the chosen classes, relabelled in the order given, with at most n images each; resume and eval keep the selection', () => {
    const data = tinyFashionMnist(300, 100);
    const out = join(mkdtempSync(join(tmpdir(), 'classes-')), 'run');
    const args = ['--threads', '1', 'train', '--data-path', data, '--classes', 'Sneaker,1,Ankle boot', '--per-class', '4', '--epochs', '2', '-b', '4', '--log-interval', '0', '--output-dir', out];
    const r = cli(args);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // 3 classes x 4 images; the test split keeps all of its images of those 3 classes.
    const ds = loadIdxDataset(data, 'test');
    const testCount = Array.from(ds.labels).filter((l) => [7, 1, 9].includes(l)).length;
    expect(r.stdout).toContain(`on fashion-mnist: 12 train / ${testCount} test`);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.classNames).toEqual(['Sneaker', 'Trouser', 'Ankle boot']);
    expect(readCheckpoint(join(out, 'last.safetensors')).model.get('classifier.1.weight')!.shape[0]).toBe(3);
    // A resumed run selects the same images (bit-exact with a straight run: its own test elsewhere);
    // eval evaluates on the checkpoint's classes.
    expect(cli(['--threads', '1', 'train', '--resume', out, '--epochs', '3', '--log-interval', '0', '--data-path', data]).stdout).toContain('12 train');
    const e = cli(['--threads', '1', 'eval', out, '--data-path', data]);
    expect(e.code).toBe(0);
    expect(e.stdout).toContain(`${testCount} images`);
    expect(e.stdout).toMatch(/2 Ankle boot/);
    // Bad input: an unknown class lists the classes; an empty name is refused.
    const bad = cli([...args.slice(0, 5), '--classes', 'Sneaker,Jacket']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--classes: fashion-mnist has no class 'Jacket' (its classes: 0 T-shirt/top, 1 Trouser,");
    expect(cli([...args.slice(0, 5), '--classes', 'Sneaker,,Bag']).stderr).toContain('--classes must be a comma-separated list of class names or indices');
    expect(cli([...args.slice(0, 5), '--classes', '7,Sneaker']).stderr).toContain("--classes: class 'Sneaker' is named twice");
  });

  it('takePerClass is seeded and keeps the original order; selectClasses relabels', () => {
    const ds = loadIdxDataset(join(ROOT, 'data/fashion-mnist-subset'), 'test');
    const a = takePerClass(ds, 3, 5), b = takePerClass(ds, 3, 5), c = takePerClass(ds, 3, 6);
    expect(a.count).toBe(30);
    expect(Array.from(a.labels)).toEqual(Array.from(b.labels));
    expect(Buffer.from(a.images).equals(Buffer.from(b.images))).toBe(true);
    expect(Buffer.from(a.images).equals(Buffer.from(c.images))).toBe(false);
    const picked = selectClasses(ds, ['Bag', '0']);
    expect(picked.classNames).toEqual(['Bag', 'T-shirt/top']);
    expect(picked.count).toBe(400);
    // Image i of the selection is the i-th image of class Bag or T-shirt in the original order.
    const originals = Array.from(ds.labels).flatMap((l, i) => (l === 8 || l === 0 ? [i] : []));
    expect(Array.from(picked.labels)).toEqual(originals.map((i) => (ds.labels[i] === 8 ? 0 : 1)));
    expect(Buffer.from(picked.images.subarray(784, 1568)).equals(Buffer.from(ds.images.subarray(originals[1] * 784, originals[1] * 784 + 784)))).toBe(true);
  });
});

describe('mobilenet train on an image folder', () => {
  it('trains on class subfolders (10% held out by seed), and eval asks for the folder again', async () => {
    const root = mkdtempSync(join(tmpdir(), 'folder-'));
    const colours = { red: { r: 220, g: 20, b: 20 }, green: { r: 20, g: 200, b: 40 }, blue: { r: 20, g: 30, b: 220 } };
    for (const [name, c] of Object.entries(colours)) {
      mkdirSync(join(root, name));
      for (let i = 0; i < 8; i++) await sharp({ create: { width: 20 + i, height: 18, channels: 3, background: { ...c, r: Math.min(255, c.r + 4 * i) } } }).png().toFile(join(root, name, `${i}.png`));
    }
    const out = join(mkdtempSync(join(tmpdir(), 'folder-run-')), 'run');
    const r = cli(['--threads', '1', 'train', '--data', root, '--resolution', '16', '--epochs', '1', '-b', '8', '--output-dir', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/on folder-\w+: 22 train \/ 2 validation images/);
    const noData = cli(['eval', out]);
    expect(noData.code).toBe(2);
    expect(noData.stderr).toMatch(/this checkpoint was trained on 'folder-\w+', an image folder: give --data <folder> to evaluate it \(or --data fashion-mnist\|mnist\|cifar10 with --data-path <dir>\)/);
    const ok = cli(['--threads', '1', 'eval', out, '--data', root]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/folder-\w+-val: 2 images in/);
    // Three classes: every prediction is in the top 5, so the figure is not given.
    expect(ok.stdout).toMatch(/top-1 \d+\.\d\d% {3}top-5 n\/a/);
    expect(r.stdout).toMatch(/top5 n\/a/);
  });
});

describe('mobilenet eval / predict / export / summary', () => {
  it('eval prints loss, top-1, top-5, the per-class table and writes the confusion PNG', () => {
    const png = join(run, 'eval-confusion.png');
    const r = cli(['--threads', '1', 'eval', run, '--data-path', data, '--confusion', png]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/fashion-mnist: 40 images in/);
    expect(r.stdout).toMatch(/loss \d\.\d{4} {3}top-1 \d+\.\d\d% {3}top-5 \d+\.\d\d%/);
    expect(r.stdout).toMatch(/9 Ankle boot +(\d+\.\d\d|NaN)%/);
    expect(isPng(png)).toBe(true);
  });
  it('eval --tta-flip averages each image with its mirror image and reports the same metrics', () => {
    const r = cli(['--threads', '1', 'eval', run, '--data-path', data, '--tta-flip', '--confusion', join(run, 'tta.png')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/fashion-mnist: 40 images, each averaged with its mirror image in/);
    expect(r.stdout).toMatch(/loss \d\.\d{4} {3}top-1 \d+\.\d\d% {3}top-5 \d+\.\d\d%/);
  });
  it('goes on and exits 0 when the reader of its output goes away (| head), with no EPIPE error', async () => {
    const child = spawn(process.execPath, [...CLI_FROM_SOURCE, '--threads', '1', 'eval', run, '--data-path', data, '--confusion', join(run, 'pipe.png')], { cwd: ROOT });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((done) => child.on('close', done));
    expect(stderr).not.toMatch(/EPIPE/);
    expect(code).toBe(0);
  }, 60_000);
  it('predict shows top-k probabilities and --explain writes a Grad-CAM PNG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'predict-'));
    const ds = loadIdxDataset(BUNDLED, 'test');
    const image = join(dir, 'boot.png');
    await sharp(Buffer.from(ds.images.subarray(0, 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(image);
    const r = cli(['--threads', '1', 'predict', run, image, '-k', '2', '--explain', '--output-dir', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter((l) => /^ +\d+\.\d\d% {2}\S/.test(l))).toHaveLength(2);
    expect(r.stdout).toContain('Grad-CAM for');
    expect(isPng(join(dir, 'boot.gradcam.png'))).toBe(true);
    expect((await sharp(join(dir, 'boot.gradcam.png')).metadata()).width).toBe(224);
  });
  it('outputs into folders that do not exist yet: the folders are made (predict --explain, eval --confusion, export, step --graph)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outputs-'));
    const ds = loadIdxDataset(BUNDLED, 'test');
    const image = join(dir, 'shirt.png');
    await sharp(Buffer.from(ds.images.subarray(784, 2 * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(image);
    const results = [
      cli(['--threads', '1', 'predict', run, image, '--explain', '--output-dir', join(dir, 'cams') + '/']),
      cli(['--threads', '1', 'eval', run, '--data-path', data, '--confusion', join(dir, 'eval', 'confusion.png')]),
      cli(['export', run, join(dir, 'exported', 'w.safetensors')]),
      cli(['--threads', '1', 'step', '--no-interactive', '--graph', join(dir, 'graphs', 'g.svg')]),
    ];
    for (const r of results) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    expect(isPng(join(dir, 'cams', 'shirt.gradcam.png'))).toBe(true);
    expect(isPng(join(dir, 'eval', 'confusion.png'))).toBe(true);
    expect(existsSync(join(dir, 'exported', 'w.safetensors'))).toBe(true);
    expect(readFileSync(join(dir, 'graphs', 'g.svg'), 'utf8')).toMatch(/^<svg/);
    // A path that cannot be a folder (a file is in the way): one line naming it, exit 2.
    const blocked = cli(['export', run, join(image, 'w.safetensors')]);
    expect(blocked.code).toBe(2);
    expect(blocked.stderr.trim().split('\n')).toHaveLength(1);
    expect(blocked.stderr).toContain(image);
  });
  it('export writes PyTorch-named weights', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'export-')), 'w.safetensors');
    const r = cli(['export', run, out]);
    expect(r.code).toBe(0);
    const keys = [...loadSafetensors(out).tensors.keys()];
    expect(keys).toContain('features.1.dw.weight');
    expect(keys).toContain('classifier.1.bias');
  });
  it('export then import gives a checkpoint that evaluates to the same figures as the trained run', () => {
    const dir = mkdtempSync(join(tmpdir(), 'roundtrip-cli-'));
    expect(cli(['export', run, join(dir, 'w.safetensors')]).code).toBe(0);
    expect(cli(['import', join(dir, 'w.safetensors'), join(dir, 'ckpt.safetensors')]).code).toBe(0);
    const figures = (r: ReturnType<typeof cli>) => r.stdout.split('\n').find((l) => l.startsWith('loss '));
    const original = cli(['--threads', '1', 'eval', run, '--data-path', data, '--confusion', join(dir, 'a.png')]);
    const imported = cli(['--threads', '1', 'eval', join(dir, 'ckpt.safetensors'), '--data', 'fashion-mnist', '--data-path', data, '--confusion', join(dir, 'b.png')]);
    expect(original.code).toBe(0);
    expect(imported.stderr).toBe('');
    expect(figures(imported)).toBe(figures(original));
    expect(figures(original)).toMatch(/^loss \d\.\d{4} {3}top-1 \d+\.\d\d% {3}top-5/);
  });
  it('import turns torchvision weights into a checkpoint that eval and predict can use', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'import-'));
    // torchvision mobilenet_v2 weights (width 0.35, 100 classes) as scripts/export-torchvision.py writes them.
    const weightsPath = torchvisionWeights(dir);
    const ckpt = join(dir, 'tv.safetensors');
    const r = cli(['import', weightsPath, ckpt, '--model', 'v2', '--alpha', '0.35', '--num-classes', '100', '--resolution', '64']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const image = join(dir, 'img.png');
    await sharp({ create: { width: 80, height: 60, channels: 3, background: { r: 30, g: 160, b: 90 } } }).png().toFile(image);
    const p = cli(['--threads', '1', 'predict', ckpt, image]);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/% {2}class\d+/);
    // An imported checkpoint names no dataset: eval says how to give one (it said "an image folder").
    const noData = cli(['eval', ckpt, '--data-path', join(ROOT, 'data/fashion-mnist-subset')]);
    expect(noData.code).toBe(2);
    expect(noData.stderr).toBe("mobilenet: error: this checkpoint was imported and names no dataset: give --data <folder>, or --data fashion-mnist|mnist|cifar10 with --data-path <dir>\n");
    // Strict loading: extra tensors in the weights file are named.
    const bad = cli(['import', join(ROOT, 'test/fixtures/torchvision_v2.safetensors'), ckpt, '--model', 'v2', '--alpha', '0.35', '--num-classes', '100']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unexpected keys: @input, @logits_eval, @logits_train/);
  });
  it('summary prints the per-layer table and --compare-baseline the paper\'s Table 4 comparison', () => {
    const r = cli(['summary', '--alpha', '0.25', '--resolution', '128']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/features\.13\.pw +PointwiseConv2d +\[1, 256, 4, 4\]/);
    const c = cli(['summary', '--compare-baseline']);
    expect(c.stdout).toMatch(/Conv MobileNet \(baseline\) +4867\.3M +29\.3M/);
    expect(c.stdout).toMatch(/MobileNet \(V1\) +568\.7M +4\.2M/);
    expect(c.stdout).toMatch(/Conv 1x1 +94\.86% of mult-adds/);
  });
  it('summary --explain sets each separable block against the standard convolution it replaces: the ratio is 1/N + 1/Dk^2', () => {
    const r = cli(['summary', '--explain']);
    expect(r.code).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^features\.\d+ /.test(l));
    expect(rows).toHaveLength(13);
    for (const row of rows) {
      const cells = row.trim().split(/\s+/);
      expect(cells.at(-1), row).toBe(cells.at(-2)); // measured ratio = 1/N + 1/Dk^2
    }
    expect(rows[0]).toMatch(/^features\.1 +3 +32 +64 +112 +231,211,008 +3,612,672 \+ 25,690,112 +0\.1267 +0\.1267$/);
    expect(r.stdout).toMatch(/^total +4,855,431,168 +556,878,336 +0\.1147 +8\.7x fewer$/m);
    expect(cli(['summary', '--explain', '--model', 'v2']).code).toBe(2);
  });
});

describe('CLI errors: one clear line, non-zero exit, no stack trace', () => {
  it('a missing dataset says what was looked for and how to get it', () => {
    const r = cli(['train', '--data-path', '/nonexistent/fmnist']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\/nonexistent\/fmnist: no such folder .*dataset-fashion-mnist/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
  it('--verbose adds the stack trace', () => {
    const r = cli(['--verbose', 'train', '--data-path', '/nonexistent/fmnist']);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
  for (const [flag, value, message] of [
    ['--alpha', '0', /--alpha must be a number in \(0, 4\], got '0'/],
    ['--resolution', '7', /--resolution must be an integer in \[8, 1024\], got '7'/],
    ['--batch-size', '0', /--batch-size must be an integer in \[1, 65536\], got '0'/],
    ['--opt', 'lbfgs', /--opt must be one of sgd, sgd_nesterov, rmsprop, adam, adamw, got 'lbfgs'/],
    ['--lr', 'fast', /--lr must be a number in \(0, 100\], got 'fast'/],
    ['--mixup-alpha', '-1', /--mixup-alpha must be a number in \[0, 100\], got '-1'/],
    ['--cutmix-alpha', '-0.5', /--cutmix-alpha must be a number in \[0, 100\], got '-0.5'/],
    ['--val-split', '1', /--val-split must be a number in \[0, 1\), got '1'/],
    ['--val-split', '-0.1', /--val-split must be a number in \[0, 1\), got '-0.1'/],
  ] as const) {
    it(`${flag} ${value} names the flag and the allowed values`, () => {
      const r = cli(['train', flag, value]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
    });
  }
  it('values that pass the flag parser but cannot work are refused up front, naming the flag', () => {
    const threads = cli(['--threads', '64', 'summary']);
    expect(threads.code).toBe(2);
    expect(threads.stderr).toMatch(/--threads must be an integer in \[1, 32\], got '64'/);
    const tiny = cli(['train', '--model', 'v1', '--alpha', '1e-9']);
    expect(tiny.code).toBe(2);
    expect(tiny.stderr).toContain('--alpha 1e-9: MobileNet v1 needs alpha >= 0.015625');
    const mnist = cli(['train', '--data', 'mnist']);
    expect(mnist.code).toBe(2);
    expect(mnist.stderr).toContain('--data mnist needs --data-path DIR');
    const unknown = cli(['train', '--bogus']);
    expect(unknown.code).toBe(2);
  });
  it('more threads than cores: a warning says it will be slower', () => {
    const r = cli(['--threads', String(Math.min(32, availableParallelism() + 1)), 'summary', '--alpha', '0.25']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: --threads \d+ is more than the \d+ cores of this machine/);
  });
  it('--resume of an imported, weights-only checkpoint says it has no training state', () => {
    const dir = mkdtempSync(join(tmpdir(), 'resume-imported-'));
    expect(cli(['export', run, join(dir, 'w.safetensors')]).code).toBe(0);
    expect(cli(['import', join(dir, 'w.safetensors'), join(dir, 'ckpt.safetensors')]).code).toBe(0);
    const r = cli(['train', '--data-path', data, '--resume', join(dir, 'ckpt.safetensors')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ckpt\.safetensors: a weights-only checkpoint \(imported weights\) has no training state to resume/);
  });
  it('a corrupt image is named, with a non-zero exit', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bad-'));
    writeFileSync(join(dir, 'broken.jpg'), 'definitely not a JPEG');
    const r = cli(['--threads', '1', 'predict', run, join(dir, 'broken.jpg')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/broken\.jpg: cannot decode image/);
    // A mistyped path or a folder is said as such (sharp said "cannot decode image (Input file is missing ...)").
    const missing = cli(['--threads', '1', 'predict', run, join(dir, 'nope.png'), dir]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(`mobilenet: error: ${join(dir, 'nope.png')}: no such file\nmobilenet: error: ${dir}: a folder, not an image\nmobilenet: error: 2 of 2 images could not be read\n`);
    const step = cli(['step', '--checkpoint', run, '--image', join(dir, 'nope.png'), '--no-interactive']);
    expect(step.code).toBe(2);
    expect(step.stderr).toBe(`mobilenet: error: --image ${join(dir, 'nope.png')}: no such file\n`);
  });
  it('a checkpoint that does not exist is named', () => {
    const r = cli(['eval', '/nonexistent/run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/checkpoint \/nonexistent\/run not found \(give a \.safetensors checkpoint or a run folder/);
  });
});

describe('started as `npm run` starts it', () => {
  // V8 compiles typed-array loops without a check for a detached buffer as long as no
  // ArrayBuffer of the thread has ever been detached (its "ArrayBufferDetaching protector");
  // after the first detach, every kernel in the process runs 12-18% slower. tsx's CommonJS hook
  // detaches one when it reads a large CommonJS package such as commander or sharp (it grows
  // its WebAssembly lexer's memory); its ESM-only entry, tsx/esm, leaves the CommonJS packages to
  // Node. The trace flag prints one line per invalidation, on any thread: the loader's own
  // thread accounts for the baseline, so the CLI must not add one.
  it("the CLI never detaches an ArrayBuffer on its main thread, so V8's fast typed-array access stays on", () => {
    const script: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.mobilenet;
    const [program, ...args] = script.split(' ');
    expect(program).toBe('node');
    const loaderFlags = args.slice(0, -1), entry = args[args.length - 1];
    const empty = join(mkdtempSync(join(tmpdir(), 'protector-')), 'empty.mjs');
    writeFileSync(empty, '');
    const invalidations = (argv: string[]) => {
      const r = spawnSync(process.execPath, ['--trace-protector-invalidation', ...argv], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      return (r.stdout.match(/Invalidating protector cell ArrayBufferDetaching/g) ?? []).length;
    };
    const baseline = invalidations([...loaderFlags, empty]);
    expect(invalidations([...loaderFlags, entry, '--threads', '2', 'summary', '--alpha', '0.25'])).toBe(baseline);
    // A step at 224x224, whose 112x112 depthwise planes grow the depthwise module's memory (a
    // shared memory, which growing does not detach).
    expect(invalidations([...loaderFlags, join(ROOT, 'bench', 'profile.ts'), 'v1', '0.25', '1', '224', '10', '1', '1', '1'])).toBe(baseline);
  });
});
