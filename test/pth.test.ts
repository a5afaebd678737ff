// PyTorch checkpoints in, with no Python in the path: the pickle reader (hand-made pickles, no
// PyTorch needed), then files written by torch.save itself (test/make-pth.py): torchvision's
// mobilenet_v2 in the zip and legacy layouts, wrapped, float16, DataParallel keys, and our own
// export re-saved by PyTorch; each imported and run, with PyTorch's logits to match. And what
// must be refused: a pickle that would run os.system, a storage type we do not read, a ResNet,
// a truncated file.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel as loadModelFromCheckpoint } from '../src/train/models.js';
import { saveWeights } from '../src/nn/interop.js';
import { createModel } from '../src/nn/mobilenet.js';
import { noGrad } from '../src/tensor/autograd.js';
import { PickleError, readPickle } from '../src/tensor/pickle.js';
import { halfToFloat, parsePth, PthError } from '../src/tensor/pth.js';
import { Rng } from '../src/tensor/rng.js';
import { rand, Tensor } from '../src/tensor/tensor.js';
import { crc32, openZip } from '../src/tensor/zip.js';
import { hasTorch, ROOT, runCli } from './helpers.js';

const torch = hasTorch();
const MAKE_PTH = join(ROOT, 'test/make-pth.py');

/** Pickle bytes from opcodes and their arguments, written as a byte string. */
const pickle = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
const noGlobals = { resolveGlobal: () => undefined };

describe('the pickle reader', () => {
  it('reads the opcodes of plain data: ints, longs, floats, strings, bytes, tuples, lists, dicts, the memo', () => {
    // {'a': (1, -2, 300, 2**40), 'b': [None, True, False, 1.5], 'c': b'xy', 'd': <memo of 'a''s value>}
    const bytes = pickle(
      '\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01(K\x01J\xfe\xff\xff\xffM,\x01\x8a\x06\x00\x00\x00\x00\x00\x01tq\x02' +
        'X\x01\x00\x00\x00b]q\x03(N\x88\x89G?\xf8\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00cC\x02xyX\x01\x00\x00\x00dh\x02u.',
    );
    const { value, end } = readPickle(bytes, noGlobals);
    expect(end).toBe(bytes.length);
    expect(value).toEqual(new Map<string, unknown>([['a', [1, -2, 300, 2 ** 40]], ['b', [null, true, false, 1.5]], ['c', Uint8Array.of(120, 121)], ['d', [1, -2, 300, 2 ** 40]]]));
  });

  it('refuses a global outside the allowlist by name, before calling anything; refuses unknown opcodes and truncation', () => {
    // cos\nsystem\n (X'echo hi',) R .  -- what `pickle.dumps` of a __reduce__ returning os.system gives
    const exploit = pickle('\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.');
    let called = false;
    const hooks = { resolveGlobal: (m: string, n: string) => (m === 'collections' && n === 'OrderedDict' ? { qualifiedName: 'x', call: () => ((called = true), new Map()) } : undefined) };
    expect(() => readPickle(exploit, hooks, 'evil.pth')).toThrow(/^evil\.pth: refused: the pickle names the global os\.system, which is not allowed/);
    expect(() => readPickle(pickle('\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.'), hooks)).toThrow(/builtins\.eval/);
    expect(called).toBe(false);
    // INST (protocol 0's way to build an object) and NEWOBJ are not data opcodes.
    expect(() => readPickle(pickle('\x80\x02\x81.'), hooks)).toThrow(/opcode 0x81 \(NEWOBJ\)/);
    expect(() => readPickle(pickle('\x80\x02X\x10\x00\x00\x00abc'), hooks)).toThrow(/needs 16 bytes but the file ends at 10 \(truncated\)/);
    expect(() => readPickle(pickle('\x80\x02K\x01'), hooks)).toThrow(/no STOP opcode/);
    // A callable that is not a global (a string) cannot be called by REDUCE.
    expect(() => readPickle(pickle('\x80\x02X\x01\x00\x00\x00a)R.'), hooks)).toThrow(PickleError);
  });

  it('converts float16 exactly (normal, subnormal, zero, infinity)', () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x0001)).toBe(2 ** -24);
    expect(halfToFloat(0x7bff)).toBe(65504);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0x0000)).toBe(0);
  });

  it('says what a file that is no checkpoint is', () => {
    expect(() => parsePth(new TextEncoder().encode('hello'), 'notes.pth')).toThrow(/^notes\.pth: not a PyTorch checkpoint: expected a ZIP archive .* the file starts with 68 65 6c 6c$/);
    expect(() => parsePth(pickle('PK\x03\x04 and then nothing'), 'cut.pth')).toThrow(/^cut\.pth: no ZIP end-of-central-directory record in its 21 bytes: the file is truncated or not a ZIP archive$/);
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926); // the CRC-32 check value
  });
});

/** Logits of a checkpoint (as eval would build it) on a float32 input file. */
function logitsOf(checkpoint: string, input: Float32Array, shape: number[]): Float32Array {
  const { model } = loadModelFromCheckpoint(checkpoint);
  return noGrad(() => model.forward(new Tensor(input, shape))).data;
}

/** |a - b| <= 1e-5 max |b| elementwise: equal up to float32 sums in another order. */
function expectClose(actual: Float32Array, expected: Float32Array) {
  expect(actual.length).toBe(expected.length);
  const scale = Math.max(...Array.from(expected, Math.abs));
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst / scale).toBeLessThanOrEqual(1e-5);
}

const f32 = (path: string) => new Float32Array(new Uint8Array(readFileSync(path)).buffer);

describe.skipIf(!torch)('.pth files written by torch.save, imported without Python', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'pth-'));
    execFileSync('/usr/bin/python3', [MAKE_PTH, 'torchvision', dir]);
    execFileSync('/usr/bin/python3', [MAKE_PTH, 'bad', dir]);
  }, 60_000);

  it.each([
    ['zip.pth', 'full', 'alpha 1, 3x64x64 input, 1000 classes'],
    ['legacy.pth', 'full', 'alpha 1, 3x64x64 input, 1000 classes'],
    ['wrapped.pth', 'narrow', 'alpha 0.35, 3x64x64 input, 10 classes'],
    ['dataparallel.pth', 'narrow', 'alpha 0.35, 3x64x64 input, 10 classes'],
    ['half.pth', 'half', 'alpha 0.35, 3x64x64 input, 10 classes'],
  ])('%s: import reads the architecture and width off the tensors, and the logits are PyTorch\'s', (file, expected, settings) => {
    const out = join(dir, `${file}.safetensors`);
    const r = runCli(['import', join(dir, file), out, '--resolution', '64']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`wrote checkpoint ${out} (MobileNet v2, ${settings}, ImageNet normalisation)\n`);
    expectClose(logitsOf(out, f32(join(dir, 'input.f32')), [2, 3, 64, 64]), f32(join(dir, `${expected}.f32`)));
  });

  it('eval, predict and train --init take a .pth directly: fine-tuning torchvision weights on a folder of images', async () => {
    const photos = join(dir, 'photos');
    for (const [name, background] of [['red', { r: 220, g: 20, b: 20 }], ['blue', { r: 20, g: 30, b: 220 }]] as const) {
      mkdirSync(join(photos, name), { recursive: true });
      for (let i = 0; i < 6; i++) await sharp({ create: { width: 40, height: 36, channels: 3, background: { ...background, g: background.g + 9 * i } } }).png().toFile(join(photos, name, `${i}.png`));
    }
    const run = join(dir, 'tuned');
    const t = runCli(['--threads', '1', 'train', '--data', photos, '--init', join(dir, 'wrapped.pth'), '--resolution', '32', '--epochs', '1', '-b', '6', '--log-interval', '0', '--output-dir', run]);
    expect(t.stderr).toBe('');
    expect(t.stdout).toContain(`replacing the classifier: ${join(dir, 'wrapped.pth')} has 10 classes, photos has 2`);
    expect(t.stdout).toMatch(/training MobileNet v2 alpha 0\.35 at 32x32/);
    const p = runCli(['--threads', '1', 'predict', run, join(photos, 'red', '0.png')]);
    expect(p.code).toBe(0);
    expect(p.stdout).toMatch(/% {2}(red|blue)/);
    const direct = runCli(['--threads', '1', 'predict', join(dir, 'wrapped.pth'), join(photos, 'red', '0.png')]);
    expect(direct.stderr).toBe('');
    expect(direct.stdout).toMatch(/% {2}class\d/);
  });

  it('our own export, loaded into PyTorch and saved by torch.save (zip and legacy), comes back bit for bit', () => {
    const model = createModel('v1', { alpha: 0.25, resolution: 28, numClasses: 4, inChannels: 1, seed: 3, stemStride: 1 });
    for (let i = 0; i < 2; i++) noGrad(() => model.train().forward(rand([4, 1, 28, 28], new Rng(i))));
    model.eval();
    // The weights `mobilenet export` writes (PyTorch's keys), without a run folder around them.
    const exported = join(dir, 'ours.safetensors');
    saveWeights(model, exported);
    execFileSync('/usr/bin/python3', [MAKE_PTH, 'resave', exported, join(dir, 'ours.pth')]);
    const x = rand([2, 1, 28, 28], new Rng(7));
    const expected = noGrad(() => model.forward(x)).data;
    for (const file of ['ours.pth', 'ours.pth.legacy']) {
      const out = join(dir, `${file}.safetensors`);
      // PyTorch keeps no settings: the stem stride and resolution are given, the rest is read off the tensors.
      const r = runCli(['import', join(dir, file), out, '--stem-stride', '1', '--resolution', '28']);
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('(MobileNet v1, alpha 0.25, 1x28x28 input, 4 classes');
      expect(Array.from(logitsOf(out, x.data, [2, 1, 28, 28]))).toEqual(Array.from(expected));
    }
  });

  it('refuses, in one line with exit status 2 and nothing written: a pickle that runs os.system, a complex storage, a ResNet, a truncated file', () => {
    const out = join(dir, 'refused.safetensors');
    const evil = runCli(['import', join(dir, 'evil.pth'), out]);
    expect(evil.code).toBe(2);
    expect(evil.stderr).toBe(`mobilenet: error: ${join(dir, 'evil.pth')}: evil/data.pkl: refused: the pickle names the global posix.system, which is not allowed (a state dict holds only tensors, OrderedDict and torch storages; save \`model.state_dict()\`, not the model); nothing in the file was run\n`);
    expect(existsSync(join(dir, 'exploited'))).toBe(false);
    const complex = runCli(['import', join(dir, 'complex.pth'), out]);
    expect(complex.code).toBe(2);
    expect(complex.stderr).toMatch(/^mobilenet: error: .*complex\.pth: storage type torch\.ComplexFloatStorage is not supported \(supported: FloatStorage, .*\)\n$/);
    const resnet = runCli(['import', join(dir, 'resnet18.pth'), out]);
    expect(resnet.code).toBe(2);
    expect(resnet.stderr).toMatch(/^mobilenet: error: .*resnet18\.pth: loadStateDict \(MobileNetV2\): 314 missing keys: features\.0\.0\.weight, .* 122 unexpected keys: conv1\.weight, bn1\.weight, .*probably another architecture or width\)\n$/);
    const whole = readFileSync(join(dir, 'zip.pth'));
    for (const [name, bytes] of [['cut-zip.pth', whole.subarray(0, whole.length >> 1)], ['cut-legacy.pth', readFileSync(join(dir, 'legacy.pth')).subarray(0, 5_000_000)]] as const) {
      writeFileSync(join(dir, name), bytes);
      const cut = runCli(['import', join(dir, name), out]);
      expect(cut.code, name).toBe(2);
      expect(cut.stderr.split('\n')).toHaveLength(2);
      expect(cut.stderr).toMatch(/truncated/);
    }
    expect(existsSync(out)).toBe(false);
  });

  it('reads every entry of torch.save\'s archive with its CRC-32 checked, and a flipped byte is caught', () => {
    const bytes = new Uint8Array(readFileSync(join(dir, 'wrapped.pth')));
    const archive = openZip(bytes, 'wrapped.pth');
    expect([...archive.entries.keys()]).toContain('wrapped/data.pkl');
    const entry = archive.entries.get('wrapped/data/0')!;
    bytes[entry.headerOffset + 30 + 'wrapped/data/0'.length + 70] ^= 1; // inside the first storage (its local extra field is 64 bytes of padding)
    expect(() => parsePth(bytes, 'flipped.pth')).toThrow(PthError);
    expect(() => parsePth(bytes, 'flipped.pth')).toThrow(/CRC-32 .* does not match/);
  });
});
