// export -> import round trips for every kind of model `train` makes (V1, V2, the baseline; gray
// and colour; several resolutions), and PyTorch loading what we export.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { loadModel as loadModelFromCheckpoint } from '../src/train/models.js';
import { createModel, type Architecture } from '../src/nn/mobilenet.js';
import { noGrad } from '../src/tensor/autograd.js';
import { Rng } from '../src/tensor/rng.js';
import { serializeSafetensors } from '../src/tensor/safetensors.js';
import { rand, Tensor } from '../src/tensor/tensor.js';
import { serializeCheckpoint } from '../src/train/checkpoint.js';
import { TRAIN_DEFAULTS } from '../src/train/options.js';
import { hasTorch, ROOT, runCli } from './helpers.js';

const torch = hasTorch();

/** A checkpoint as `train` writes it (weights-only), with BatchNorm statistics that are not the init's. */
function makeCheckpoint(dir: string, architecture: Architecture, channels: number, resolution: number, variant: { expansion?: number; stemStride?: 1 | 2 } = {}, classNames = ['ant', 'bee', 'cat', 'dog']) {
  const model = createModel(architecture, { alpha: 0.25, resolution, numClasses: classNames.length, inChannels: channels, seed: 5, ...variant });
  // A few train-mode passes move the running statistics away from (0, 1).
  for (let i = 0; i < 3; i++) noGrad(() => model.train().forward(rand([4, channels, resolution, resolution], new Rng(i))));
  model.eval();
  const normalization = { mean: Array.from({ length: channels }, (_, c) => 0.2 + 0.1 * c), std: Array.from({ length: channels }, (_, c) => 0.3 + 0.05 * c) };
  const tensors = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const [k, t] of model.stateDict()) tensors.set(k, { shape: t.shape, data: t.data });
  const meta = { config: { ...TRAIN_DEFAULTS, model: architecture, alpha: 0.25, resolution, expansion: variant.expansion ?? 6, stemStride: variant.stemStride ?? 2 }, normalization, dataset: { name: 'pets', fingerprint: 'x', classNames, channels }, model: model.info };
  const path = join(dir, `${architecture}-${channels}-${resolution}-${variant.expansion ?? 6}-${variant.stemStride ?? 2}.safetensors`);
  writeFileSync(path, serializeCheckpoint({ model: tensors, optimizer: new Map(), meta }));
  return { path, model, classNames, normalization };
}

describe('export -> import round trip', () => {
  it.each<[Architecture, number, number, { expansion?: number; stemStride?: 1 | 2 }]>([
    ['v1', 1, 28, {}],
    ['v1', 3, 32, {}],
    ['v2', 1, 28, {}],
    ['v2', 3, 48, {}],
    ['baseline', 1, 28, {}],
    ['shallow', 1, 28, {}],
    ['v2', 1, 28, { expansion: 0.5 }],
    ['v1', 1, 28, { stemStride: 1 }],
    ['v2', 3, 32, { stemStride: 1, expansion: 2 }],
  ])('%s with %i channel(s) at %i %j: import rebuilds the model, its input and its normalisation; PyTorch loads the export', (architecture, channels, resolution, variant) => {
    const dir = mkdtempSync(join(tmpdir(), 'roundtrip-'));
    const original = makeCheckpoint(dir, architecture, channels, resolution, variant);
    const exported = join(dir, 'new-folder', 'weights.safetensors'); // export creates the folder
    const e = runCli(['export', original.path, exported]);
    expect(e.stderr).toBe('');
    expect(e.stdout).toContain(`(MobileNet ${architecture}, alpha 0.25, ${channels}x${resolution}x${resolution} input, 4 classes)`);
    const imported = join(dir, 'imported.safetensors');
    const i = runCli(['import', exported, imported]); // no flags: everything comes from the file
    expect(i.stderr).toBe('');
    expect(i.stdout).toContain(`${channels}x${resolution}x${resolution} input, 4 classes, its own normalisation`);
    const back = loadModelFromCheckpoint(imported);
    expect(back.channels).toBe(channels);
    expect(back.config.resolution).toBe(resolution);
    expect(back.classNames).toEqual(original.classNames);
    expect(back.normalization).toEqual(original.normalization);
    const x = rand([2, channels, resolution, resolution], new Rng(9));
    const expected = noGrad(() => original.model.forward(x));
    const actual = noGrad(() => back.model.forward(x));
    expect(Array.from(actual.data)).toEqual(Array.from(expected.data));
    if (torch) {
      const reference = join(dir, 'reference.safetensors');
      writeFileSync(reference, serializeSafetensors({ '@input': { shape: [...x.shape], data: x.data }, '@logits_eval': { shape: [...expected.shape], data: expected.data } }));
      const report = execFileSync('/usr/bin/python3', [join(ROOT, 'scripts/export-torchvision.py'), '--check', exported, '--against', reference], { encoding: 'utf8' });
      expect(report).toMatch(/-> OK/);
    }
  });
});

describe('scripts/train-ddp.py: training an exported model further in PyTorch, on several processes', () => {
  it.skipIf(!torch)('trains with two processes, writes a file import reads, and our eval of it gives PyTorch\'s accuracy', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ddp-'));
    const classNames = Array.from({ length: 10 }, (_, i) => `class${i}`);
    const original = makeCheckpoint(dir, 'shallow', 1, 28, {}, classNames);
    const exported = join(dir, 'exported.safetensors');
    expect(runCli(['export', original.path, exported]).stderr).toBe('');
    const trained = join(dir, 'ddp.safetensors');
    const data = join(ROOT, 'data/fashion-mnist-subset');
    const port = String(20000 + Math.floor(Math.random() * 20000));
    const report = execFileSync('/usr/bin/python3', [join(ROOT, 'scripts/train-ddp.py'), '--weights', exported, '--data-path', data, '--epochs', '1', '--max-steps', '3', '--nproc-per-node', '2', '--master-port', port, '--out', trained], { encoding: 'utf8' });
    const torchTop1 = Number(/test top1 ([\d.]+)%/.exec(report)?.[1]);
    expect(report).toContain('2 process(es) x 64 images');
    const imported = join(dir, 'imported.safetensors');
    expect(runCli(['import', trained, imported]).stderr).toBe('');
    // Three steps moved the weights: the import is not the original.
    const back = loadModelFromCheckpoint(imported);
    expect(Array.from(back.model.stateDict().get('classifier.1.weight')!.data)).not.toEqual(Array.from(original.model.stateDict().get('classifier.1.weight')!.data));
    const evaluated = runCli(['eval', imported, '--data', 'fashion-mnist', '--data-path', data]);
    const ourTop1 = Number(/top-1 ([\d.]+)%/.exec(evaluated.stdout)?.[1]);
    expect(Number.isFinite(torchTop1) && Number.isFinite(ourTop1)).toBe(true);
    // The same weights and images; float32 sums in another order may flip a borderline image.
    expect(Math.abs(ourTop1 - torchTop1)).toBeLessThanOrEqual(0.1);
    // Bad input: one line, exit status 2, before any process starts.
    const bad = spawnSync('/usr/bin/python3', [join(ROOT, 'scripts/train-ddp.py'), '--weights', exported, '--data-path', dir, '--out', trained], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe(`train-ddp.py: error: ${join(dir, 'train-images-idx3-ubyte')}(.gz): no such file (--data-path must hold the four IDX files of Fashion-MNIST or MNIST)\n`);
  }, 120_000);
});

describe('scripts/train-torch.py and scripts/plot-curves.ts: our recipe in PyTorch, side by side', () => {
  it.skipIf(!torch)('trains the same model (the same parameter count), writes its curve, and the plot reads it beside a run of ours', () => {
    const dir = mkdtempSync(join(tmpdir(), 'torch-recipe-'));
    const curve = join(dir, 'torch.csv');
    const report = execFileSync('/usr/bin/python3', [join(ROOT, 'scripts/train-torch.py'), '--epochs', '2', '--max-steps', '3', '--threads', '1', '--crop-padding', '2', '--random-erasing', '0.5', '--csv', curve], { encoding: 'utf8' });
    const ours = createModel('shallow', { alpha: TRAIN_DEFAULTS.alpha, numClasses: 10, resolution: 28, inChannels: 1 }).parameterCount();
    expect(report).toContain(`shallow alpha 0.35 stem stride 2 (${ours.toLocaleString('en-US')} parameters, mobilenet-ts init), 10000 train / 2000 test images, 2 epochs of 3 batches`);
    const rows = readFileSync(curve, 'utf8').trim().split(/\r?\n/);
    expect(rows[0]).toBe('epoch,seconds,train_loss,train_top1,test_loss,test_top1');
    expect(rows.length).toBe(3);
    // Ours: a metrics.csv as `train` writes it (seconds per epoch, top-1 as a fraction; the
    // columns say val with --val-split, else test).
    writeFileSync(join(dir, 'metrics.csv'), 'epoch,train_loss,train_top1,train_top5,test_loss,test_top1,test_top5,lr,seconds\n1,1,0.5,0.9,1,0.6,0.95,0.1,30\n2,1,0.6,0.9,1,0.7,0.95,0.1,30\n');
    writeFileSync(join(dir, 'val.csv'), 'epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,seconds\n1,1,0.5,0.9,1,0.6,0.95,0.1,90\n');
    const png = join(dir, 'curves.png');
    const plot = spawnSync(process.execPath, ['--import', 'tsx/esm', join(ROOT, 'scripts/plot-curves.ts'), png, `ours=${dir}`, `split=${join(dir, 'val.csv')}`, `torch=${curve}`], { encoding: 'utf8', cwd: ROOT });
    expect(plot.stderr).toBe('');
    expect(plot.stdout).toContain('ours: 2 epochs, 70.00% after 1.0 min');
    expect(plot.stdout).toContain('split: 1 epochs, 60.00% after 1.5 min');
    expect(plot.stdout).toMatch(/torch: 2 epochs, [\d.]+% after 0\.\d min/);
    expect(readFileSync(png).subarray(1, 4).toString()).toBe('PNG');
    // Bad input: one line, exit status 2.
    const bad = spawnSync('/usr/bin/python3', [join(ROOT, 'scripts/train-torch.py'), '--data-path', dir], { encoding: 'utf8' });
    expect([bad.status, bad.stderr]).toEqual([2, `train-torch.py: error: ${join(dir, 'train-images-idx3-ubyte')}(.gz): no such file (--data-path must hold the four IDX files of Fashion-MNIST or MNIST)\n`]);
    const badFlag = spawnSync('/usr/bin/python3', [join(ROOT, 'scripts/train-torch.py'), '--epochs', '0'], { encoding: 'utf8' });
    expect([badFlag.status, badFlag.stderr]).toEqual([2, 'train-torch.py: error: --epochs must be an integer >= 1, got 0\n']);
    const badPlot = spawnSync(process.execPath, ['--import', 'tsx/esm', join(ROOT, 'scripts/plot-curves.ts'), png, `ours=${join(dir, 'none')}`], { encoding: 'utf8', cwd: ROOT });
    expect([badPlot.status, badPlot.stderr]).toEqual([2, `plot-curves: error: ${join(dir, 'none')}: no such file (expected a run folder, its metrics.csv or a train-torch.py --csv file)\n`]);
  }, 120_000);
});

/** Real images as a float32 batch (N, C, r, r) of pixels in [0, 1]: the bundled samples, resized. */
async function sampleImages(channels: number, resolution: number): Promise<Float32Array> {
  const files = ['dress.png', 'trouser.png'].map((f) => join(ROOT, 'data/samples', f));
  const out = new Float32Array(files.length * channels * resolution * resolution);
  for (const [n, file] of files.entries()) {
    // A colour image for a colour model: the gray sample tinted, so the three planes differ.
    let image = sharp(file).resize(resolution, resolution, { fit: 'fill' });
    image = channels === 3 ? image.removeAlpha().tint({ r: 255, g: 160, b: 60 }).toColourspace('srgb') : image.greyscale();
    const { data, info } = await image.raw().toBuffer({ resolveWithObject: true });
    const planes = resolution * resolution;
    for (let p = 0; p < planes; p++) for (let c = 0; c < channels; c++) out[(n * channels + c) * planes + p] = data[p * info.channels + c] / 255;
  }
  return out;
}

describe('export to ONNX, run by ONNX Runtime', () => {
  ort.env.wasm.numThreads = 1; // no worker threads inside the test process
  it.each<[Architecture, number, number, { expansion?: number; stemStride?: 1 | 2 }, number, 'graph' | 'metadata']>([
    ['v1', 1, 28, {}, 13, 'graph'],
    ['v1', 3, 32, { stemStride: 1 }, 11, 'graph'],
    ['v2', 1, 28, { expansion: 0.5 }, 17, 'graph'],
    ['v2', 3, 48, {}, 21, 'metadata'],
    ['baseline', 3, 32, {}, 13, 'graph'],
    ['shallow', 1, 28, { stemStride: 1 }, 15, 'graph'],
  ])('%s, %i channel(s) at %i %j, opset %i, normalisation in the %s: the logits equal ours on real images', async (architecture, channels, resolution, variant, opset, normalization) => {
    const dir = mkdtempSync(join(tmpdir(), 'onnx-'));
    const original = makeCheckpoint(dir, architecture, channels, resolution, variant);
    const output = join(dir, 'model.onnx');
    const e = runCli(['export', original.path, output, '--opset', String(opset), '--normalization', normalization]);
    expect(e.stderr).toBe('');
    expect(e.stdout).toMatch(new RegExp(`^wrote ${output}: ONNX opset ${opset}, [\\d.]+ MB \\(MobileNet ${architecture}, alpha 0.25, ${channels}x${resolution}x${resolution} input, 4 classes; `));
    const pixels = await sampleImages(channels, resolution);
    const shape = [2, channels, resolution, resolution];
    // Ours: the checkpoint's model on normalised pixels, as eval and predict feed it.
    const planes = resolution * resolution;
    const normalised = pixels.map((v, i) => {
      const c = Math.floor(i / planes) % channels;
      return (v - original.normalization.mean[c]) / original.normalization.std[c];
    });
    const ours = noGrad(() => original.model.forward(new Tensor(normalised, shape))).data;
    const session = await ort.InferenceSession.create(new Uint8Array(readFileSync(output)));
    expect(session.inputNames).toEqual(['input']);
    expect(session.outputNames).toEqual(['logits']);
    const fed = normalization === 'graph' ? pixels : normalised;
    const theirs = (await session.run({ input: new ort.Tensor('float32', fed, shape) })).logits;
    expect(theirs.dims).toEqual([2, 4]);
    const scale = Math.max(...Array.from(ours, Math.abs));
    const worst = Math.max(...Array.from(ours, (v, i) => Math.abs(v - (theirs.data as Float32Array)[i])));
    expect(worst / scale).toBeLessThanOrEqual(1e-5);
    // The metadata says what the model needs: class names, normalisation, and where it is applied.
    const metadata = onnxMetadata(readFileSync(output));
    expect(JSON.parse(metadata.class_names)).toEqual(original.classNames);
    expect(JSON.parse(metadata.normalization)).toEqual(original.normalization);
    expect(metadata.normalization_in_graph).toBe(String(normalization === 'graph'));
  });

  it('a batch of another size runs too (the batch dimension is free), and bad flags are one line, exit 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'onnx-'));
    const original = makeCheckpoint(dir, 'v2', 1, 28, {});
    const output = join(dir, 'm.onnx');
    expect(runCli(['export', original.path, output]).code).toBe(0);
    const session = await ort.InferenceSession.create(new Uint8Array(readFileSync(output)));
    const x = rand([5, 1, 28, 28], new Rng(4));
    expect((await session.run({ input: new ort.Tensor('float32', x.data, [5, 1, 28, 28]) })).logits.dims).toEqual([5, 4]);
    for (const [args, message] of [
      [['--opset', '10'], "--opset must be an integer in [11, 21], got '10'"],
      [['--normalization', 'inside'], "--normalization must be one of graph, metadata, got 'inside'"],
    ] as const) {
      const r = runCli(['export', original.path, output, ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(message);
    }
    const wrong = runCli(['export', original.path, join(dir, 'model.tflite')]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toBe(`mobilenet: error: ${join(dir, 'model.tflite')}: the format is chosen by the extension, .onnx or .safetensors\n`);
  });
});

/**
 * metadata_props of an ONNX file, read with the protobuf wire format by hand (field 14 of
 * ModelProto, each a message of key = 1, value = 2), independently of the exporter's encoder.
 */
function onnxMetadata(bytes: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const varint = (b: Uint8Array, at: { i: number }) => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = b[at.i++];
      v += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return v;
    }
  };
  const fields = (b: Uint8Array) => {
    const list: [number, Uint8Array | number][] = [];
    for (const at = { i: 0 }; at.i < b.length; ) {
      const tag = varint(b, at);
      const wire = tag & 7;
      if (wire === 0) list.push([tag >>> 3, varint(b, at)]);
      else if (wire === 2) {
        const n = varint(b, at);
        list.push([tag >>> 3, b.subarray(at.i, at.i + n)]);
        at.i += n;
      } else if (wire === 5) at.i += 4;
      else if (wire === 1) at.i += 8;
    }
    return list;
  };
  const text = new TextDecoder();
  for (const [id, value] of fields(bytes)) {
    if (id !== 14 || typeof value === 'number') continue;
    const entry = Object.fromEntries(fields(value).map(([k, v]) => [k, text.decode(v as Uint8Array)]));
    out[entry[1]] = entry[2];
  }
  return out;
}
