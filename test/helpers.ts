// Shared test helpers: PyTorch fixtures and closeness checks.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { encodeIdx, loadIdxDataset } from '../src/train/datasets.js';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { parseSafetensors, serializeSafetensors, type StoredTensor } from '../src/tensor/safetensors.js';
import { Tensor } from '../src/tensor/tensor.js';

export const FIXTURE_DIR = fileURLToPath(new URL('./fixtures/', import.meta.url));

export interface FixtureCase {
  name: string;
  config: Record<string, unknown>;
}

export class Fixture {
  readonly cases: FixtureCase[];
  private readonly tensors: Map<string, StoredTensor>;

  constructor(readonly file: string) {
    const parsed = parseSafetensors(readFileSync(FIXTURE_DIR + file + '.safetensors'), file);
    this.tensors = parsed.tensors;
    this.cases = JSON.parse(parsed.metadata.cases) as FixtureCase[];
  }

  has(caseName: string, key: string): boolean {
    return this.tensors.has(`${caseName}/${key}`);
  }

  /** A float tensor of a case: in0, in1, gy, out, grad0, ... */
  tensor(caseName: string, key: string, requiresGrad = false): Tensor {
    const t = this.tensors.get(`${caseName}/${key}`);
    if (t === undefined) throw new Error(`fixture ${this.file}: no tensor '${caseName}/${key}'`);
    if (!(t.data instanceof Float32Array)) throw new Error(`fixture ${this.file}: '${caseName}/${key}' is ${t.dtype}, not F32`);
    return new Tensor(t.data.slice(), t.shape, requiresGrad);
  }

  /** An integer tensor (labels) as plain numbers. */
  ints(caseName: string, key: string): Int32Array {
    const t = this.tensors.get(`${caseName}/${key}`);
    if (t === undefined) throw new Error(`fixture ${this.file}: no tensor '${caseName}/${key}'`);
    if (t.data instanceof BigInt64Array) return Int32Array.from(t.data, (v) => Number(v));
    if (t.data instanceof Int32Array) return t.data;
    throw new Error(`fixture ${this.file}: '${caseName}/${key}' is ${t.dtype}, not an integer type`);
  }

  case(name: string): FixtureCase {
    const c = this.cases.find((x) => x.name === name);
    if (!c) throw new Error(`fixture ${this.file}: no case '${name}'`);
    return c;
  }
}

/** Element-wise |a - b| <= atol + rtol * |b|, with a message naming the worst element. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 1e-4, atol = 1e-5): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

/**
 * Run `fn` on a fixture case's inputs (in0..inK, gradients where the fixture has them), back-
 * propagate the case's gy, and compare the output and every input gradient with PyTorch's.
 */
export function checkFixtureCase(fixture: Fixture, caseName: string, fn: (...inputs: Tensor[]) => Tensor, tol: { rtol?: number; atol?: number } = {}): Tensor[] {
  const inputs: Tensor[] = [];
  for (let i = 0; fixture.has(caseName, `in${i}`); i++) {
    inputs.push(fixture.tensor(caseName, `in${i}`, fixture.has(caseName, `grad${i}`)));
  }
  const y = fn(...inputs);
  const out = fixture.tensor(caseName, 'out');
  expect([...y.shape], `${caseName}: output shape`).toEqual([...out.shape]);
  expectClose(y.data, out.data, `${caseName}: output`, tol.rtol, tol.atol);
  if (inputs.some((x) => x.requiresGrad)) {
    y.backward(fixture.tensor(caseName, 'gy'));
    inputs.forEach((x, i) => {
      if (!x.requiresGrad) return;
      const expected = fixture.tensor(caseName, `grad${i}`);
      expect(x.grad, `${caseName}: grad of input ${i} missing`).not.toBeNull();
      expect([...x.grad!.shape]).toEqual([...expected.shape]);
      expectClose(x.grad!.data, expected.data, `${caseName}: grad of input ${i}`, tol.rtol, tol.atol);
    });
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// The CLI as a user runs it
// ---------------------------------------------------------------------------------------------

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Node's arguments that start the CLI from source as `npm run mobilenet` does (package.json's
 * script, the entry made absolute). Every test that starts the CLI uses them: with another tsx
 * hook every kernel runs 12-18% slower (see the protector test in cli.test.ts).
 */
export const CLI_FROM_SOURCE = ['--import', 'tsx/esm', join(ROOT, 'cli/main.ts')];

/** Run `mobilenet ARGS` from source in a child process (CLI_FROM_SOURCE). */
export function runCli(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...CLI_FROM_SOURCE, ...args], { cwd: options.cwd ?? ROOT, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' }, timeout: options.timeoutMs ?? 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Whether /usr/bin/python3 has PyTorch and torchvision (Debian python3-torch, python3-torchvision). */
export function hasTorch(): boolean {
  return spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0;
}

/** A small Fashion-MNIST in the real IDX format: the first n train / m test images of the bundled subset. */
export function tinyFashionMnist(n: number, m: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'tiny-fmnist-'));
  for (const [split, prefix, count] of [['train', 'train', n], ['test', 't10k', m]] as const) {
    const ds = loadIdxDataset(join(ROOT, 'data/fashion-mnist-subset'), split);
    writeFileSync(join(dir, `${prefix}-images-idx3-ubyte.gz`), gzipSync(encodeIdx([count, 28, 28], ds.images.subarray(0, count * 784))));
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte.gz`), gzipSync(encodeIdx([count], ds.labels.subarray(0, count))));
  }
  return dir;
}

/** sha256 over a checkpoint's model tensors (names and bytes): equal digests, bit-identical weights. */
export function weightsDigest(checkpoint: string): string {
  const ckpt = readCheckpoint(checkpoint);
  const h = createHash('sha256');
  for (const [k, v] of ckpt.model) {
    h.update(k);
    h.update(new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength));
  }
  return h.digest('hex');
}

/**
 * The committed torchvision mobilenet_v2 fixture (width 0.35, 100 classes, 3 channels) as
 * scripts/export-torchvision.py writes weights: its reference tensors (`@...`) left out.
 * Returns the path of the weights file written into `dir`.
 */
export function torchvisionWeights(dir: string): string {
  const fixture = parseSafetensors(readFileSync(join(FIXTURE_DIR, 'torchvision_v2.safetensors')), 'torchvision_v2');
  const path = join(dir, 'mobilenet_v2.safetensors');
  writeFileSync(path, serializeSafetensors(new Map([...fixture.tensors].filter(([k]) => !k.startsWith('@')))));
  return path;
}
