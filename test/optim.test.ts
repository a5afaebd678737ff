import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { linear } from '../src/ops/linear.js';
import { mean, } from '../src/ops/reduce.js';
import { mul, sub } from '../src/ops/elementwise.js';
import { loadSafetensors } from '../src/tensor/safetensors.js';
import { Tensor } from '../src/tensor/tensor.js';
import { Adam, AdamW, RMSprop, SGD, type Optimizer, type ParamGroupInput } from '../src/train/optim.js';
import { ConstantLR, CosineAnnealingLR, ExponentialLR, MultiStepLR, OneCycleLR, ReduceLROnPlateau, StepLR, WarmupLR, type LRScheduler } from '../src/train/schedule.js';
import { tensorsFromFile } from '../src/nn/interop.js';
import { expectClose, FIXTURE_DIR } from './helpers.js';

const file = loadSafetensors(FIXTURE_DIR + 'optimizers.safetensors');
const t = tensorsFromFile(file);
const cases = JSON.parse(file.metadata.cases) as { name: string; type: string; options: Record<string, number | boolean | number[]> }[];

function makeOptimizer(type: string, groups: ParamGroupInput[], o: Record<string, number | boolean | number[]>): Optimizer {
  const wd = o.weight_decay as number | undefined;
  switch (type) {
    case 'SGD':
      return new SGD(groups, { lr: o.lr as number, momentum: o.momentum as number, dampening: o.dampening as number, nesterov: o.nesterov as boolean, weightDecay: wd });
    case 'RMSprop':
      return new RMSprop(groups, { lr: o.lr as number, alpha: o.alpha as number, eps: o.eps as number, momentum: o.momentum as number, centered: o.centered as boolean, weightDecay: wd });
    case 'Adam':
      return new Adam(groups, { lr: o.lr as number, weightDecay: wd, betas: o.betas as [number, number] | undefined });
    case 'AdamW':
      return new AdamW(groups, { lr: o.lr as number, weightDecay: wd, betas: o.betas as [number, number] | undefined });
  }
  throw new Error(type);
}

describe('optimizers match PyTorch 1.13 over 20 steps (two parameter groups, bias without decay)', () => {
  for (const c of cases) {
    it(`${c.name} ${JSON.stringify(c.options)}`, () => {
      const w = new Tensor(t.get('w0')!.data.slice(), [4, 3], true);
      const b = new Tensor(t.get('b0')!.data.slice(), [4], true);
      const opt = makeOptimizer(c.type, [{ params: [w] }, { params: [b], weightDecay: 0 }], c.options);
      const expectedW = t.get(`${c.name}/w`)!.data, expectedB = t.get(`${c.name}/b`)!.data;
      for (let step = 0; step < 20; step++) {
        opt.zeroGrad();
        const r = sub(linear(t.get('x')!, w, b), t.get('y')!);
        mean(mul(r, r)).backward();
        opt.step();
        expectClose(w.data, expectedW.subarray(step * 12, (step + 1) * 12), `${c.name} w after step ${step + 1}`, 2e-4, 2e-6);
        expectClose(b.data, expectedB.subarray(step * 4, (step + 1) * 4), `${c.name} b after step ${step + 1}`, 2e-4, 2e-6);
      }
    });
  }
  it('state dicts round-trip: a restored optimizer continues identically', () => {
    const run = (restoreAt: number | null) => {
      const w = new Tensor(t.get('w0')!.data.slice(), [4, 3], true);
      let opt: Optimizer = new Adam([w], { lr: 0.01 });
      for (let step = 0; step < 10; step++) {
        if (step === restoreAt) {
          const saved = opt.stateDict();
          opt = new Adam([w], { lr: 0.01 });
          opt.loadStateDict({ buffers: new Map([...saved.buffers].map(([k, v]) => [k, v.slice()])), scalars: JSON.parse(JSON.stringify(saved.scalars)) });
        }
        opt.zeroGrad();
        const r = sub(linear(t.get('x')!, w), t.get('y')!);
        mean(mul(r, r)).backward();
        opt.step();
      }
      return Array.from(w.data);
    };
    expect(run(5)).toEqual(run(null));
  });
});

const schedules = JSON.parse(readFileSync(FIXTURE_DIR + 'schedules.json', 'utf8')) as Record<string, { lr: number[]; momentum: number[]; metrics?: number[] }>;

describe('LR schedules match PyTorch 1.13', () => {
  const make = (name: string, opt: Optimizer): LRScheduler => {
    switch (name) {
      case 'steplr': return new StepLR(opt, 7, 0.5);
      case 'multisteplr': return new MultiStepLR(opt, [5, 12, 20], 0.3);
      case 'exponentiallr': return new ExponentialLR(opt, 0.9);
      case 'cosineannealinglr': return new CosineAnnealingLR(opt, 20, 0.001);
      case 'warmup_cosine': return new WarmupLR(new CosineAnnealingLR(opt, 25), 5, 0.01);
      case 'onecycle': return new OneCycleLR(opt, { maxLr: 0.4, totalSteps: 30 });
      case 'plateau': return new ReduceLROnPlateau(opt, { factor: 0.5, patience: 2 });
    }
    throw new Error(name);
  };
  for (const [name, expected] of Object.entries(schedules)) {
    it(name, () => {
      const opt = new SGD([new Tensor(new Float32Array(1), [1], true)], { lr: 0.1, momentum: 0.9 });
      const s = make(name, opt);
      s.apply();
      for (let step = 0; step < expected.lr.length; step++) {
        expect(opt.groups[0].lr, `${name} lr at step ${step}`).toBeCloseTo(expected.lr[step], 10);
        if (name === 'onecycle') expect(opt.groups[0].momentum, `momentum at step ${step}`).toBeCloseTo(expected.momentum[step], 10);
        s.step(expected.metrics?.[step]);
      }
    });
  }
  it('scheduler state round-trips (warmup + cosine, plateau)', () => {
    const opt = new SGD([new Tensor(new Float32Array(1), [1], true)], { lr: 0.1 });
    const a = new WarmupLR(new CosineAnnealingLR(opt, 25), 5);
    for (let i = 0; i < 8; i++) a.step();
    const lr = opt.groups[0].lr;
    const opt2 = new SGD([new Tensor(new Float32Array(1), [1], true)], { lr: 0.1 });
    const b = new WarmupLR(new CosineAnnealingLR(opt2, 25), 5);
    b.loadStateDict(JSON.parse(JSON.stringify(a.stateDict())));
    expect(opt2.groups[0].lr).toBe(lr);
    a.step();
    b.step();
    expect(opt2.groups[0].lr).toBe(opt.groups[0].lr);
    const p = new ReduceLROnPlateau(opt, { patience: 0 });
    p.step(1);
    p.step(2);
    const q = new ReduceLROnPlateau(opt2, { patience: 0 });
    q.loadStateDict(JSON.parse(JSON.stringify(p.stateDict())));
    expect(opt2.groups[0].lr).toBeCloseTo(opt.groups[0].lr, 12);
    expect(new ConstantLR(opt, false).perStep).toBe(false);
  });
});
