// Reliability: SIGKILL during training never costs the run, and every parser survives fuzzing.
// Knobs (environment): MOBILENET_KILLS (default 3) kills, MOBILENET_FUZZ (default 150) mutations
// per parser. By hand: MOBILENET_KILLS=50 MOBILENET_FUZZ=10000 npx vitest run test/reliability.test.ts
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { InvalidArgumentError } from 'commander';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { numberIn } from '../cli/common.js';
import { CLI_FROM_SOURCE, tinyFashionMnist, weightsDigest } from './helpers.js';
import { Rng } from '../src/tensor/rng.js';
import { parseSafetensors, SafetensorsError, serializeSafetensors } from '../src/tensor/safetensors.js';
import { CheckpointError, readCheckpoint, serializeCheckpoint } from '../src/train/checkpoint.js';
import { TRAIN_DEFAULTS } from '../src/train/options.js';
import { DatasetError, decodeImage, encodeIdx, loadCifar10, parseIdx, readIdxFile } from '../src/train/datasets.js';

const ROOT = resolve(import.meta.dirname, '..');
const KILLS = Number(process.env.MOBILENET_KILLS ?? 3);
const FUZZ = Number(process.env.MOBILENET_FUZZ ?? 150);
const CLI = [...CLI_FROM_SOURCE, '--threads', '1'];

describe('kill -9 during training', () => {
  it(`${KILLS} SIGKILLs at random moments, each followed by --resume, end with the same weights as an uninterrupted run`, async () => {
    const data = tinyFashionMnist(192, 32);
    // Enough steps that every kill lands mid-training (a kill comes 1-8 steps after the last).
    const epochs = Math.max(3, Math.ceil((KILLS * 5) / 12));
    const args = ['train', '--data-path', data, '--epochs', String(epochs), '--alpha', '0.25', '-b', '16', '--checkpoint-every', '1', '--log-interval', '0'];
    const straight = join(mkdtempSync(join(tmpdir(), 'straight-')), 'run');
    const s = spawnSync(process.execPath, [...CLI, ...args, '--output-dir', straight], { cwd: ROOT, encoding: 'utf8' });
    expect(s.status, s.stderr).toBe(0);
    const totalSteps = epochs * 12;

    const run = join(mkdtempSync(join(tmpdir(), 'killed-')), 'run');
    const rng = new Rng(2026);
    let resumed = false;
    for (let k = 0; k < KILLS; k++) {
      const child = spawn(process.execPath, [...CLI, ...(resumed ? ['train', '--data-path', data, '--resume', run, '--log-interval', '0'] : [...args, '--output-dir', run])], { cwd: ROOT, stdio: 'ignore' });
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      // Kill after a random number of further steps (counted in metrics.jsonl), 1..8.
      const log = join(run, 'metrics.jsonl');
      const count = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"batchEnd"')).length : 0);
      const target = count() + rng.int(1, 9);
      while (count() < Math.min(target, totalSteps - 1) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
      child.kill('SIGKILL');
      await exited;
      // At no moment is there no loadable checkpoint (once the first one was written).
      expect(() => readCheckpoint(join(run, 'last.safetensors'))).not.toThrow();
      resumed = true;
    }
    const finish = spawnSync(process.execPath, [...CLI, 'train', '--data-path', data, '--resume', run, '--log-interval', '0'], { cwd: ROOT, encoding: 'utf8' });
    expect(finish.status, finish.stderr).toBe(0);
    expect(weightsDigest(join(run, 'last.safetensors'))).toBe(weightsDigest(join(straight, 'last.safetensors')));
  }, 600_000);
});

/** Random mutations of valid bytes: flips, overwrites, truncation, extension, big numbers. */
function mutate(bytes: Uint8Array, rng: Rng): Uint8Array {
  let out = bytes.slice();
  const kind = rng.int(0, 5);
  if (kind === 0) for (let i = 0, n = rng.int(1, 8); i < n; i++) out[rng.int(0, out.length)] ^= 1 << rng.int(0, 8);
  else if (kind === 1) out = out.subarray(0, rng.int(0, out.length));
  else if (kind === 2) {
    const extra = Uint8Array.from({ length: rng.int(1, 64) }, () => rng.int(0, 256));
    out = Uint8Array.from([...out, ...extra]);
  } else if (kind === 3) {
    const at = rng.int(0, Math.max(1, Math.min(out.length, 40)));
    for (let i = at; i < Math.min(out.length, at + 4); i++) out[i] = 0xff; // huge sizes in headers
  } else for (let i = 0, n = rng.int(1, 4); i < n; i++) out[rng.int(0, out.length)] = rng.int(0, 256);
  return out;
}

/** Each outcome must be success or our typed error naming the source; nothing may take long. */
async function fuzz(name: string, valid: Uint8Array, attempt: (bytes: Uint8Array) => unknown | Promise<unknown>, errorTypes: (new (...a: never[]) => Error)[]) {
  const rng = new Rng(name.length * 7919);
  let failures = 0;
  for (let i = 0; i < FUZZ; i++) {
    const bytes = mutate(valid, rng);
    const start = performance.now();
    try {
      await attempt(bytes);
    } catch (e) {
      if (!errorTypes.some((t) => e instanceof t)) {
        failures++;
        if (failures < 3) console.error(`${name}: untyped error on case ${i}:`, e);
      }
    }
    expect(performance.now() - start, `${name} case ${i} took too long`).toBeLessThan(2000);
  }
  expect(failures, `${name}: ${failures} of ${FUZZ} mutations threw something other than our typed error`).toBe(0);
}

describe(`fuzzing (${FUZZ} mutations per parser)`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-'));
  it('IDX (raw and gzipped)', async () => {
    const valid = encodeIdx([4, 5, 5], Uint8Array.from({ length: 100 }, (_, i) => i));
    await fuzz('idx', valid, (b) => parseIdx(b, 'fuzz.idx'), [DatasetError]);
    await fuzz('idx.gz', gzipSync(valid), (b) => {
      writeFileSync(join(dir, 'f-images-idx3-ubyte.gz'), b);
      return readIdxFile(join(dir, 'f-images-idx3-ubyte.gz'));
    }, [DatasetError]);
  });
  it('CIFAR-10 binary', async () => {
    const record = Uint8Array.from({ length: 3073 * 2 }, (_, i) => (i % 3073 === 0 ? 3 : i & 255));
    await fuzz('cifar', record, (b) => {
      writeFileSync(join(dir, 'test_batch.bin'), b);
      return loadCifar10(dir, 'test');
    }, [DatasetError]);
  });
  it('safetensors and checkpoints', async () => {
    const valid = serializeSafetensors({ a: { shape: [2, 3], data: new Float32Array(6) }, b: { shape: [4], data: new Int32Array(4) } }, { note: 'x' });
    await fuzz('safetensors', valid, (b) => parseSafetensors(b, 'fuzz.safetensors'), [SafetensorsError]);
    const checkpoint = serializeCheckpoint({ model: new Map([['w', { shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) }]]), optimizer: new Map([['0.momentum_buffer', new Float32Array(4)]]), meta: { config: TRAIN_DEFAULTS, normalization: { mean: [0.5], std: [0.25] }, dataset: { name: 'fuzz', fingerprint: 'x', classNames: ['a', 'b'], channels: 1 }, model: { architecture: 'custom', typeName: 'Sequential' } } });
    await fuzz('checkpoint', checkpoint, (b) => {
      writeFileSync(join(dir, 'fuzz-ckpt.safetensors'), b);
      return readCheckpoint(join(dir, 'fuzz-ckpt.safetensors'));
    }, [SafetensorsError, CheckpointError]);
  });
  it('images through sharp (PNG, JPEG)', async () => {
    for (const format of ['png', 'jpeg'] as const) {
      const valid = await sharp({ create: { width: 16, height: 12, channels: 3, background: { r: 10, g: 200, b: 30 } } })[format]().toBuffer();
      await fuzz(`image.${format}`, valid, async (b) => {
        const path = join(dir, `fuzz.${format}`);
        writeFileSync(path, b);
        try {
          return await decodeImage(path, 8, 3);
        } catch (e) {
          // The loaders turn any decode failure into a DatasetError naming the file.
          throw e instanceof DatasetError ? e : new DatasetError(`${path}: cannot decode image (${(e as Error).message})`);
        }
      }, [DatasetError]);
    }
  });
  it("the CLI's numeric flags", async () => {
    const parse = numberIn('--alpha', 0, 4, { minExclusive: true });
    await fuzz('flags', new TextEncoder().encode('0.25'), (b) => parse(new TextDecoder().decode(b)), [InvalidArgumentError]);
  });
});

describe('compressed input is bounded by what its header declares', () => {
  // A gzip bomb: a valid IDX header for 10 images, then 64 MB of zeros that compress to ~64 kB.
  const bomb = () => {
    const header = encodeIdx([10, 28, 28], new Uint8Array(10 * 784)).subarray(0, 16);
    return gzipSync(Buffer.concat([header, Buffer.alloc(64 << 20)]), { level: 9 });
  };
  it('a gzip bomb is refused as soon as it passes the declared size, and named as such', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bomb-'));
    const path = join(dir, 'train-images-idx3-ubyte.gz');
    const bytes = bomb();
    expect(bytes.length).toBeLessThan(1 << 20);
    writeFileSync(path, bytes);
    expect(() => readIdxFile(path)).toThrow(new DatasetError(`${path}: decompresses to more than the 7856 bytes its IDX header declares (10 x 28 x 28): the file is corrupt or not an IDX file (a gzip bomb?)`));
  });
  it('a header declaring more than the reader accepts is refused before anything is inflated', () => {
    const dir = mkdtempSync(join(tmpdir(), 'huge-'));
    const path = join(dir, 'train-images-idx3-ubyte.gz');
    const header = Buffer.from([0, 0, 8, 3, 0, 0, 0xea, 0x60, 0, 0, 0x10, 0, 0, 0, 0x10, 0]); // 60000 x 4096 x 4096
    writeFileSync(path, gzipSync(header));
    expect(() => readIdxFile(path)).toThrow(/the IDX header declares 60000 x 4096 x 4096 = \d+ bytes, more than the 1073741824 this reader accepts/);
  });
});
