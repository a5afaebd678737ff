// `mobilenet step` and the stepper library, driven as a learner would: in a real terminal (tmux).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import sharp from 'sharp';
import { CLI_FROM_SOURCE, torchvisionWeights } from './helpers.js';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TinyNet } from '../src/nn/tiny.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { topologicalOrder } from '../src/tensor/autograd.js';
import { checkStep, describeStep } from '../src/tensor/stepper.js';
import { Rng } from '../src/tensor/rng.js';
import { randn } from '../src/tensor/tensor.js';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = [process.execPath, ...CLI_FROM_SOURCE, '--threads', '1'];

function cli(args: string[]) {
  const r = spawnSync(CLI[0], [...CLI.slice(1), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('stepper library', () => {
  const setup = () => {
    const model = new TinyNet();
    const loss = softmaxCrossEntropy(model.forward(randn([2, 1, 12, 12], new Rng(3))), [1, 4]);
    return { model, loss, order: topologicalOrder(loss).reverse() };
  };
  it('describes every node: op, formula, shapes, gradient statistics, parameter names', () => {
    const { loss } = setup();
    const reports = [...loss.backwardSteps()].map(describeStep);
    expect(reports.map((r) => r.op)).toEqual(['softmaxCrossEntropy', 'linear', 'reshape', 'globalAvgPool2d', 'relu', 'batchNorm2d', 'pointwiseConv2d', 'relu', 'batchNorm2d', 'depthwiseConv2d', 'relu', 'batchNorm2d', 'conv2d']);
    const linear = reports[1];
    expect(linear.formula).toBe('y = x W^T + b  ->  dx = dy W, dW = dy^T x, db = sum_n dy');
    expect(linear.inputs.map((i) => i.name)).toEqual([null, 'head.2.weight', 'head.2.bias']);
    expect(linear.inputs[1].isParameter).toBe(true);
    expect(reports[4].formula).toBe('y = max(0, x)  ->  dx = dy * [x > 0]');
    expect(reports[4].inputs[0].gradStats!.zeroFraction).toBeGreaterThan(0.2);
  });
  it('checks every node numerically and catches a deliberately wrong backward', () => {
    const good = setup();
    for (const s of good.loss.backwardSteps()) for (const c of checkStep(good.loss, s, {}, good.order)) expect(c.ok, `${s.op} input ${c.inputIndex}: ${c.localError}`).toBe(true);
    // Swap in a wrong backward for the depthwise conv: its gradients come out 1.5x too large.
    const bad = setup();
    const node = bad.order.find((t) => t.node!.op === 'depthwiseConv2d')!.node!;
    const original = node.runBackward.bind(node);
    Object.assign(node, { runBackward: (g: Float32Array, r: boolean) => original(g, r).map((d) => d && d.map((v) => v * 1.5)) });
    const failed = [...bad.loss.backwardSteps()].flatMap((s) => checkStep(bad.loss, s, {}, bad.order).filter((c) => !c.ok).map(() => s.op));
    expect(failed).toEqual(['depthwiseConv2d', 'depthwiseConv2d']);
  });
});

describe('mobilenet step (non-interactive)', () => {
  it('--check passes on the tiny model and on MobileNetV1 alpha 0.25, with a graph picture', () => {
    const dir = mkdtempSync(join(tmpdir(), 'step-'));
    const r = cli(['step', '--no-interactive', '--check', '--graph', join(dir, 'g.png')]);
    expect(r.code).toBe(0);
    // The graph training runs: each BatchNorm and the ReLU after it are one fused node.
    expect(r.stdout).toMatch(/forward pass: 10 nodes, 1 image \(\S+\) at 1x28x28, train mode/);
    expect(r.stdout).toMatch(/\[5\/10\] batchNorm2d\+relu {2}output \[1, 16, 14, 14\]\n {2}y = max\(0, gamma \(x - mean\) \/ sqrt\(var \+ eps\) \+ beta\) {2}-> {2}g = dy \* \[y > 0\]; dx = gamma invStd/);
    expect(r.stdout).toMatch(/check: 10 nodes, 80 entries, worst relative error \S+ \(bound 0.05\): PASS/);
    expect(readFileSync(join(dir, 'g.png')).subarray(1, 4).toString()).toBe('PNG');
    expect(r.stdout).toContain(`graph of the tape written to ${join(dir, 'g.png')}`);
    const v1 = cli(['step', '--model', 'v1', '--alpha', '0.25', '--no-interactive', '--check', '--graph', join(dir, 'g.dot')]);
    expect(v1.code).toBe(0);
    expect(v1.stdout).toMatch(/check: 58 nodes, \d+ entries, worst relative error \S+ \(bound 0.05\): PASS/);
    expect(v1.stdout).toContain('parameter features.3.dw.weight');
    expect(readFileSync(join(dir, 'g.dot'), 'utf8')).toMatch(/^digraph tape \{/);
  });
  // Real models: V2's project BatchNorm shifts get a gradient that is zero in exact arithmetic
  // (the next layer is a train-mode BatchNorm after a linear 1x1 conv), judged against the
  // estimate's rounding floor; and tensors far too large to spread into Math.max's arguments.
  it.each([
    ['v1', '1', 58],
    ['v2', '0.35', 118],
    ['v2', '0.5', 118],
  ])('--check passes on MobileNet %s alpha %s (%i nodes)', (model, alpha, nodes) => {
    const r = cli(['step', '--model', model, '--alpha', alpha, '--no-interactive', '--check']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`check: ${nodes} nodes, \\d+ entries, worst relative error \\S+ \\(bound 0.05\\): PASS`));
  }, 180_000); // V1 alpha 1 takes ~20 s on a quiet machine, over a minute on a busy one
  it('--check on V2 still catches a broken backward of each kind of node', () => {
    for (const op of ['batchNorm2d+relu6', 'depthwiseConv2d']) {
      const r = cli(['step', '--model', 'v2', '--alpha', '0.35', '--no-interactive', '--check', '--sabotage', op]);
      expect(r.code, op).toBe(1);
      expect(r.stdout, op).toMatch(/worst relative error 3\.33e-1 \(bound 0.05\): FAIL/);
    }
  });
  it('--check fails loudly (exit 1) when a backward is deliberately broken', () => {
    const r = cli(['step', '--no-interactive', '--check', '--sabotage', 'pointwiseConv2d']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/check: 10 nodes, 80 entries, worst relative error 3\.33e-1 \(bound 0.05\): FAIL \(2 input gradients off\)/);
  });
  it('--graph with an unknown picture type is refused before anything runs (exit 2, nothing printed)', () => {
    const r = cli(['step', '--no-interactive', '--graph', 'g.jpg']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--graph g\.jpg: use a file name ending in \.png, \.svg, \.dot/);
  });
  it('--checkpoint feeds an imported colour checkpoint its own input size (bundled images resized, or --image)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'step-ckpt-'));
    // torchvision mobilenet_v2 weights (width 0.35, 100 classes, 3 channels) imported at 64x64.
    const ckpt = join(dir, 'ckpt.safetensors');
    expect(cli(['import', torchvisionWeights(dir), ckpt, '--alpha', '0.35', '--resolution', '64']).code).toBe(0);
    const r = cli(['step', '--checkpoint', ckpt, '--no-interactive', '--batch', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/forward pass: 118 nodes, 2 images \(class\d+, class\d+, labelled with the model's own top prediction\) at 3x64x64, train mode/);
    const image = join(dir, 'green.png');
    await sharp({ create: { width: 50, height: 40, channels: 3, background: { r: 30, g: 160, b: 90 } } }).png().toFile(image);
    const one = cli(['step', '--checkpoint', ckpt, '--image', image, '--no-interactive']);
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(/forward pass: \d+ nodes, 1 image \(class\d+, labelled with the model's own top prediction\) at 3x64x64, eval mode/);
    expect(one.stdout).toContain("backward done: every parameter's .grad holds dL/dparameter");
  });
  it('--json emits one object per step with the documented fields', () => {
    const r = cli(['step', '--json']);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(10);
    for (const [i, s] of lines.entries()) {
      expect(s).toMatchObject({ index: i, total: 10, op: expect.any(String), formula: expect.any(String), outputShape: expect.any(Array) });
      expect(Object.keys(s.gradOutputStats).sort()).toEqual(['l2', 'max', 'mean', 'min', 'nonFinite', 'std', 'zeroFraction']);
      for (const input of s.inputs) expect(Object.keys(input).sort()).toEqual(['gradStats', 'isParameter', 'name', 'producer', 'shape']);
    }
  });
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

describe.skipIf(!hasTmux)('mobilenet step (interactive, in a real terminal under tmux)', () => {
  const session = `step-${process.pid}`;
  const tmux = (...args: string[]) => execFileSync('tmux', args, { encoding: 'utf8' });
  const screen = () => tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', session);
  async function waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = screen();
      if (pattern.test(text)) return text;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; screen:\n${text}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  it('Enter steps, b OP breaks at the next OP, p prints the gradient, g writes the graph, c runs to the end, q quits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tty-step-'));
    const graph = join(dir, 'now.svg');
    tmux('new-session', '-d', '-s', session, '-x', '220', '-y', '50', `${CLI.join(' ')} step --graph ${graph}; echo EXITED $?; sleep 60`);
    try {
      await waitFor(/\[1\/10\] softmaxCrossEntropy[\s\S]*step> $/m);
      tmux('send-keys', '-t', session, 'Enter');
      await waitFor(/\[2\/10\] linear[\s\S]*step> $/m);
      tmux('send-keys', '-t', session, 'b nosuchop', 'Enter'); // a typo does not run to the end
      await waitFor(/no nosuchop node ahead in the backward pass; ops still ahead: .*batchNorm2d[\s\S]*step> $/m);
      tmux('send-keys', '-t', session, 'b batchNorm2d', 'Enter');
      let text = await waitFor(/\[5\/10\] batchNorm2d\+relu[\s\S]*step> $/m); // 'b batchNorm2d' stops at the fused nodes too
      expect(text).not.toMatch(/\[4\/10\]/); // skipped silently to the break
      tmux('send-keys', '-t', session, 'p', 'Enter');
      await waitFor(/dL\/d\(output\) of batchNorm2d\+relu:\ntensor\(\[\[\[\[/);
      tmux('send-keys', '-t', session, 'g', 'Enter');
      await waitFor(/graph written to .*now\.svg \(current node highlighted\)/);
      expect(readFileSync(graph, 'utf8')).toContain('#ffd54f');
      tmux('send-keys', '-t', session, 'c', 'Enter');
      text = await waitFor(/EXITED 0/);
      expect(text).toMatch(/\[10\/10\] conv2d/);
      expect(text).toContain("backward done: every parameter's .grad holds dL/dparameter");
    } finally {
      spawnSync('tmux', ['kill-session', '-t', session]);
    }
    // q quits at once.
    tmux('new-session', '-d', '-s', session, '-x', '200', '-y', '40', `${CLI.join(' ')} step; echo EXITED $?; sleep 60`);
    try {
      await waitFor(/step> $/m);
      tmux('send-keys', '-t', session, 'q', 'Enter');
      const text = await waitFor(/EXITED 0/);
      expect(text).not.toMatch(/\[2\/10\]/);
    } finally {
      spawnSync('tmux', ['kill-session', '-t', session]);
    }
    expect(existsSync(graph)).toBe(true);
  }, 120_000);
  it('Ctrl-D at the prompt quits with status 0 and Ctrl-C with 130, one line each and no stack trace', async () => {
    for (const [key, said, status] of [['C-d', 'end of input: quitting', 0], ['C-c', 'interrupted: quitting', 130]] as const) {
      tmux('new-session', '-d', '-s', session, '-x', '200', '-y', '40', `${CLI.join(' ')} step; echo EXITED $?; sleep 60`);
      try {
        await waitFor(/step> $/m);
        tmux('send-keys', '-t', session, key);
        const text = await waitFor(/EXITED \d+/);
        expect(text).toContain(said);
        expect(text).toContain(`EXITED ${status}`);
        expect(text).not.toMatch(/Aborted|    at /);
      } finally {
        spawnSync('tmux', ['kill-session', '-t', session]);
      }
    }
  }, 120_000);
});
