// What broke when the CLI was tried again as a new user would, with the faults real machines
// have: each case failed before its fix. Real processes, real files, a real pipe, real signals.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { createModel, type Architecture } from '../src/nn/mobilenet.js';
import { parseSafetensors, serializeSafetensors } from '../src/tensor/safetensors.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { loadIdxDataset } from '../src/train/datasets.js';
import { CLI_FROM_SOURCE, ROOT, runCli, tinyFashionMnist } from './helpers.js';

let data: string;
const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), prefix));
const quick = (dir: string, ...more: string[]) => ['--threads', '1', 'train', '--data-path', data, '--model', 'v1', '--alpha', '0.25', '--epochs', '1', '-b', '32', '--output-dir', dir, '--log-interval', '0', ...more];

beforeAll(() => {
  data = tinyFashionMnist(96, 40);
});

describe('a run folder belongs to one run', () => {
  it('a second train into the same --output-dir is refused (naming --resume and --overwrite) and changes nothing; --overwrite starts over', () => {
    const dir = join(tmp('folder-'), 'run');
    expect(runCli(quick(dir)).code).toBe(0);
    const before = readFileSync(join(dir, 'best.safetensors'));
    const csv = readFileSync(join(dir, 'metrics.csv'), 'utf8');
    const again = runCli(quick(dir, '--seed', '1'));
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^mobilenet: error: --output-dir .* already holds a run .*--resume .*--overwrite/);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
    expect(readFileSync(join(dir, 'best.safetensors')).equals(before)).toBe(true);
    expect(readFileSync(join(dir, 'metrics.csv'), 'utf8')).toBe(csv);
    const over = runCli(quick(dir, '--seed', '1', '--overwrite'));
    expect(over.code, over.stderr).toBe(0);
    expect(readFileSync(join(dir, 'metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(2);
    expect((readCheckpoint(join(dir, 'last.safetensors')).meta.config as { seed: number }).seed).toBe(1);
  }, 120_000);
  it('two trainings started into one folder at once: one is refused, the folder is the other one\'s', async () => {
    const dir = join(tmp('race-'), 'run');
    const start = (seed: number) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [...CLI_FROM_SOURCE, ...quick(dir, '--seed', String(seed))], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    const [a, b] = await Promise.all([start(0), start(1)]);
    expect([a.code, b.code].sort()).toEqual([0, 2]);
    const loser = a.code === 2 ? a : b;
    expect(loser.stderr).toMatch(/is being written by another|already holds a run/);
    const winnerSeed = a.code === 0 ? 0 : 1;
    expect((readCheckpoint(join(dir, 'last.safetensors')).meta.config as { seed: number }).seed).toBe(winnerSeed);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).seed).toBe(winnerSeed);
    expect(readFileSync(join(dir, 'metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(2);
    expect(existsSync(join(dir, 'train.lock'))).toBe(false);
  }, 120_000);
  it('a lock left by a killed process (its pid gone) does not block the run', () => {
    const dir = join(tmp('stale-'), 'run');
    mkdirSync(dir, { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    writeFileSync(join(dir, 'train.lock'), JSON.stringify({ pid: Number(dead), host: hostname(), started: 'earlier' }));
    const r = runCli(quick(dir));
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);
});

describe('numbers are decimal', () => {
  it.each([['--batch-size', '0x10'], ['--alpha', '0x1'], ['--resolution', '0x20'], ['--lr', 'Infinity'], ['--epochs', ' 2'], ['--lr-milestones', '0x2,4']])('%s %s is refused with exit 2', (flag, value) => {
    const r = runCli(['train', flag, value]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^mobilenet: error: .*${flag}`));
  });
});

describe('smaller defects', () => {
  it('createModel of an unknown architecture throws a RangeError listing the architectures', () => {
    expect(() => createModel('v3' as Architecture)).toThrow(/unknown architecture "v3" \(known: v1, v2, baseline, shallow\)/);
  });
  it('a state dict of another architecture gives a short error with the counts', () => {
    let message = '';
    try {
      createModel('v1').loadStateDict(createModel('v2').stateDict());
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/\d+ missing keys: .* and \d+ more/);
    expect(message.length).toBeLessThan(1500);
  });
  it('every error line starts with "mobilenet: error:", commander\'s too', () => {
    expect(runCli(['train', '--bogus']).stderr).toMatch(/^mobilenet: error: unknown option '--bogus'/);
  });
  it('no option of any command prints two defaults in --help', () => {
    for (const command of ['train', 'eval', 'predict', 'summary', 'export', 'import', 'step', 'experiment']) {
      const help = runCli([command, '--help']).stdout;
      // An option's text runs from its flag to the next flag.
      for (const option of help.split(/\n(?= {2}-)/)) expect((option.match(/\(default:/g) ?? []).length, `${command}: ${option}`).toBeLessThanOrEqual(1);
    }
  });
  it('--data mnist with a missing folder does not send the user to the Fashion-MNIST package; the folder message lists mnist', () => {
    const r = runCli(['train', '--data', 'mnist', '--data-path', join(tmp('nomnist-'), 'absent')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no such folder \(MNIST/);
    expect(r.stderr).not.toMatch(/fashion/i);
    expect(runCli(['train', '--data', 'no-such-folder']).stderr).toMatch(/use fashion-mnist, mnist, cifar10/);
  });
  it('--resume of a finished run says it is complete; a small folder under onecycle names the flags', async () => {
    const dir = join(tmp('done-'), 'run');
    expect(runCli(quick(dir)).code).toBe(0);
    const r = runCli(['--threads', '1', 'train', '--data-path', data, '--resume', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/the run is complete \(1 epoch of 1 trained.*nothing to do; to train it longer, add --epochs N/);
    expect(r.stdout).not.toMatch(/resuming|done:/);
  }, 120_000);
  it('a folder of 31 images with one epoch: the onecycle message names --epochs and --batch-size', async () => {
    const folder = tmp('small-folder-');
    const ds = loadIdxDataset(join(ROOT, 'data/fashion-mnist-subset'), 'test');
    for (let i = 0; i < 31; i++) {
      const cls = join(folder, ds.classNames[ds.labels[i]].replace(/\W/g, ''));
      mkdirSync(cls, { recursive: true });
      await sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(join(cls, `${i}.png`));
    }
    const r = runCli(['--threads', '1', 'train', '--data', folder, '--epochs', '1', '--output-dir', join(tmp('small-run-'), 'run')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^mobilenet: error: --epochs, --batch-size, --lr-scheduler: the onecycle learning-rate schedule needs at least 2 training steps/);
    expect(r.stderr).not.toMatch(/OneCycleLR|totalSteps/);
  }, 120_000);
  it('a folder with GIF and TIFF images trains on them as predict reads them; other files are skipped with a warning naming them', async () => {
    const folder = tmp('gif-folder-');
    for (const [cls, value] of [['dark', 20], ['light', 230]] as const) {
      mkdirSync(join(folder, cls));
      for (let i = 0; i < 8; i++) {
        const image = sharp({ create: { width: 28, height: 28, channels: 3, background: { r: value, g: value + i, b: value } } });
        await (i % 2 === 0 ? image.gif() : image.tiff()).toFile(join(folder, cls, `${i}.${i % 2 === 0 ? 'gif' : 'tif'}`));
      }
      writeFileSync(join(folder, cls, 'notes.txt'), 'not an image');
    }
    const r = runCli(['--threads', '1', 'train', '--data', folder, '--epochs', '1', '-b', '4', '--log-interval', '0', '--output-dir', join(tmp('gif-run-'), 'run')]);
    expect(r.stderr).toContain(`${join(folder, 'dark')}: skipping 1 file that is not`);
    expect(r.stderr).toContain('(notes.txt)');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('14 train / 2 validation images'); // all 16 GIF and TIFF files
  }, 120_000);
  it('npm run mobilenet -- predict with a path relative to a subfolder reads it from that subfolder', () => {
    const checkpoint = join(tmp('npm-cwd-'), 'run');
    expect(runCli(quick(checkpoint)).code).toBe(0);
    const p = spawnSync('npm', ['run', '-s', 'mobilenet', '--', 'predict', checkpoint, '../data/samples/trouser.png'], { cwd: join(ROOT, 'docs'), encoding: 'utf8' });
    expect(p.stderr).toBe('');
    expect(p.status).toBe(0);
    expect(p.stdout).toContain('trouser.png');
  }, 120_000);
  it('edited checkpoint metadata is refused: the whole file is verified', () => {
    const dir = join(tmp('edit-'), 'run');
    expect(runCli(quick(dir)).code).toBe(0);
    const path = join(dir, 'last.safetensors');
    const file = parseSafetensors(readFileSync(path), path);
    const config = JSON.parse(file.metadata.config);
    config.lr = 0.5;
    writeFileSync(path, serializeSafetensors(file.tensors, { ...file.metadata, config: JSON.stringify(config) }));
    expect(() => readCheckpoint(path)).toThrow(/was edited/);
  }, 120_000);
});

/** Lines of a run's metrics.jsonl that are this event. */
const events = (dir: string, event: string) => (existsSync(join(dir, 'metrics.jsonl')) ? readFileSync(join(dir, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes(`"event":"${event}"`)) : []);
const until = async (done: () => boolean, what: string, ms = 120_000) => {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('training does not depend on its stdout, and stops cleanly however it is asked to', () => {
  it('a real pipe closed by its reader (| head -c 100): training goes on to the end and exits 0', () => {
    const dir = join(tmp('pipe-'), 'run');
    const command = [process.execPath, ...CLI_FROM_SOURCE, ...quick(dir, '--epochs', '2')].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('bash', ['-c', `${command} | head -c 100 >/dev/null; echo "status \${PIPESTATUS[0]}" >&2`], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toMatch(/status 0/);
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(events(dir, 'done')).toHaveLength(1);
    expect((readCheckpoint(join(dir, 'last.safetensors')).meta.progress as { epoch: number }).epoch).toBe(2);
  }, 120_000);
  for (const [signal, status] of [['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    it(`kill -${signal.slice(3)} of the node process checkpoints the batch it reached and exits ${status}, with the resume command`, async () => {
      const dir = join(tmp('term-'), 'run');
      const child = spawn(process.execPath, [...CLI_FROM_SOURCE, ...quick(dir, '--epochs', '50')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (d) => (stdout += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      await until(() => events(dir, 'batchEnd').length >= 2, 'two batches');
      child.kill(signal);
      expect(await exited).toBe(status);
      expect(stdout).toMatch(/resume with: mobilenet train --resume/);
      const progress = readCheckpoint(join(dir, 'last.safetensors')).meta.progress as { step: number };
      expect(progress.step).toBe(events(dir, 'batchEnd').length);
    }, 120_000);
  }
  it('kill -TERM of the npm process of `npm run mobilenet -- train`: the node process checkpoints and stops too, not an orphan training to the end', async () => {
    const dir = join(tmp('npm-term-'), 'run');
    const npm = spawn('npm', ['run', '-s', 'mobilenet', '--', ...quick(dir, '--epochs', '50')], { cwd: ROOT, stdio: 'ignore' });
    await until(() => events(dir, 'batchEnd').length >= 2, 'two batches');
    npm.kill('SIGTERM');
    await until(() => events(dir, 'stopped').length === 1, 'the node process to stop', 30_000);
    await until(() => !existsSync(join(dir, 'train.lock')), 'its lock to go', 30_000);
    expect(events(dir, 'done')).toHaveLength(0);
    expect((readCheckpoint(join(dir, 'last.safetensors')).meta.progress as { step: number }).step).toBeGreaterThan(0);
  }, 120_000);
});

const canMount = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d"']).status === 0;

describe.skipIf(!canMount)('a full disk (a small tmpfs)', () => {
  it('is one line naming the file, exit 2; the newest checkpoint is whole, and resuming once there is room completes the run', () => {
    const dir = tmp('full-');
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    try {
      const run = join(dir, 'run');
      const r = runCli(quick(run, '--epochs', '3'));
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^mobilenet: error: cannot write .*run\/\S+: no space left on device \(ENOSPC\); training stopped/);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(() => readCheckpoint(join(run, 'last.safetensors'))).not.toThrow();
      // Every best epoch the log reported is the one best.safetensors holds, or none was reported.
      const bests = events(run, 'checkpointSaved').filter((l) => l.includes('"kind":"best"'));
      if (bests.length > 0) expect(existsSync(join(run, 'best.safetensors'))).toBe(true);
      spawnSync('mount', ['-o', 'remount,size=64m', dir]);
      const resumed = runCli(['--threads', '1', 'train', '--data-path', data, '--resume', run, '--log-interval', '0']);
      expect(resumed.code, resumed.stderr).toBe(0);
      const best = readCheckpoint(join(run, 'best.safetensors')).meta.progress as { bestEpoch: number };
      const last = readCheckpoint(join(run, 'last.safetensors')).meta.progress as { bestEpoch: number; epoch: number };
      expect(last.epoch).toBe(3);
      expect(best.bestEpoch).toBe(last.bestEpoch);
    } finally {
      spawnSync('umount', [dir]);
    }
  }, 180_000);
});

describe('more that failed silently', () => {
  it('a step that cannot fit in memory is refused before training, naming the estimate and a batch size that fits', () => {
    const r = runCli(['--threads', '1', 'train', '--data-path', data, '--model', 'v1', '--alpha', '1', '--resolution', '224', '--batch-size', '4096', '--output-dir', join(tmp('memory-'), 'run')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^mobilenet: error: a training step of batch 4096 at 224x224 needs about [\d.]+ GB .* available: --batch-size \d+ would fit \(--ignore-memory-estimate to try anyway\)\n$/);
    const fits = Number(/--batch-size (\d+) would fit/.exec(r.stderr)![1]);
    expect(fits).toBeGreaterThan(0);
    expect(fits).toBeLessThan(4096);
  }, 120_000);
  it('eval of a folder whose classes the model does not have is refused listing both; classes in another order are matched by name', async () => {
    const dir = join(tmp('eval-classes-'), 'run');
    expect(runCli(quick(dir)).code).toBe(0);
    const ds = loadIdxDataset(join(ROOT, 'data/fashion-mnist-subset'), 'test');
    const write = async (root: string, folder: (label: number) => string | null) => {
      for (let i = 0; i < 200; i++) {
        const name = folder(ds.labels[i]);
        if (name === null) continue;
        mkdirSync(join(root, name), { recursive: true });
        await sharp(Buffer.from(ds.images.subarray(i * 784, (i + 1) * 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(join(root, name, `${i}.png`));
      }
    };
    const other = tmp('boot-shirt-');
    await write(other, (l) => (l === 9 ? 'boot' : l === 6 ? 'shirt' : null));
    const refused = runCli(['--threads', '1', 'eval', dir, '--data', other]);
    expect(refused.code).toBe(2);
    // 'shirt' is the model's 'Shirt' (case aside); 'boot' is none of its classes.
    expect(refused.stderr).toMatch(/its class 'boot' \(of 'boot', 'shirt'\) is not among the model's classes \('T-shirt\/top', 'Trouser'/);
    // Trousers (1) and bags (8) in folders that sort as 0 and 1: each row of the confusion matrix is its own class's.
    const named = tmp('trouser-bag-');
    await write(named, (l) => (l === 1 ? 'Trouser' : l === 8 ? 'Bag' : null));
    const r = runCli(['--threads', '1', 'eval', dir, '--data', named]);
    expect(r.code, r.stderr).toBe(0);
    const rowTotal = (k: number) => new RegExp(`^${k} \\S+.*$`, 'm').exec(r.stdout)![0].split(/\s+/).slice(-10).map(Number).reduce((a, b) => a + b, 0);
    // eval reads the folder's held-out tenth: every one of its images is in the Trouser or the Bag row.
    const images = Number(/: (\d+) images/.exec(r.stdout)![1]);
    expect(rowTotal(1) + rowTotal(8)).toBe(images);
    for (const k of [0, 2, 3, 4, 5, 6, 7, 9]) expect(rowTotal(k), `row ${k}`).toBe(0);
  }, 120_000);
  it('a NaN loss before any checkpoint does not claim one is kept; a NaN validation loss stops training too, and no NaN model is "best"', () => {
    // lr 100 on 96 images: the training loss is still finite after epoch 1 (about 2e4), but the
    // weights and BatchNorm's running statistics have overflowed, so the validation loss is NaN
    // (where it used to score a perfect 100% top-1, saved as the best checkpoint).
    const dir = join(tmp('nan-'), 'run');
    const r = runCli(quick(dir, '--lr', '100', '--epochs', '3'));
    expect(r.stderr).toMatch(/^mobilenet: error: training stopped: the (validation )?loss is NaN .*; no checkpoint was written yet\. Try a lower learning rate/);
    expect(r.code).toBe(2);
    expect(existsSync(join(dir, 'best.safetensors'))).toBe(false);
    expect(r.stdout).not.toContain('100.00%');
  }, 120_000);
  it('--resume after editing config.json says the checkpoint wins and the file is rewritten; "done" counts the whole run\'s time', () => {
    const dir = join(tmp('config-edit-'), 'run');
    expect(runCli(quick(dir, '--lr-scheduler', 'cosineannealinglr')).code).toBe(0);
    const path = join(dir, 'config.json');
    writeFileSync(path, readFileSync(path, 'utf8').replace('"lr": 0.1', '"lr": 0.5'));
    const r = runCli(['--threads', '1', 'train', '--data-path', data, '--resume', dir, '--epochs', '2', '--log-interval', '0']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/config\.json differed from the checkpoint's settings.*lr 0\.5 there, 0\.1 in the checkpoint.*rewritten/);
    // --epochs 2 extends the run: that is not an edit of the file, and the checkpoint has 1.
    expect(r.stderr).not.toMatch(/epochs 1 there/);
    expect(JSON.parse(readFileSync(path, 'utf8')).lr).toBe(0.1);
    // The cosine schedule ends at exactly 0, printed as 0 (not 0.00).
    expect(r.stdout).toMatch(/^epoch 2\/2 .* lr 0 {2}best/m);
  }, 120_000);
});
