// The learner's page: its bundle uses no Node API; its session (the same code in Node and in
// the page's worker) walks and checks every node; and in a real Chromium (Debian's, driven by
// playwright-core) a learner can step through the tiny model and MobileNetV1 forward and
// backward, see maps that are drawn, pass the numerical checks (and see a broken backward fail),
// open a checkpoint, train and watch the loss fall, with the weights equal to Node's bit for bit.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveFolder } from '../cli/web.js';
import { buildWeb } from '../scripts/build-web.js';
import { createModel } from '../src/nn/mobilenet.js';
import { serializeCheckpoint } from '../src/train/checkpoint.js';
import { TRAIN_DEFAULTS } from '../src/train/options.js';
import { LearnerSession, type SampleImage } from '../web/session.js';
import { CLI_FROM_SOURCE, ROOT, runCli } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
let folder = '';

beforeAll(async () => {
  // A build of its own (the package test builds dist/web at the same time, for its tarball).
  folder = join(mkdtempSync(join(tmpdir(), 'web-build-')), 'web');
  await buildWeb(folder);
}, 120_000);

/** The bundled images the page offers (samples.json), as the page decodes them. */
function samples(): SampleImage[] {
  const data = JSON.parse(readFileSync(join(folder, 'samples.json'), 'utf8')) as { width: number; height: number; samples: { label: number; pixels: string }[] };
  return data.samples.map((s) => ({ pixels: new Uint8Array(Buffer.from(s.pixels, 'base64')), width: data.width, height: data.height, channels: 1, label: s.label }));
}

describe('the page\'s bundle and session', () => {
  it('the bundle imports no Node module (every node:* was pointed at the shim), and holds no CLI, sharp or file code', () => {
    const inputs = JSON.parse(readFileSync(join(folder, 'inputs.json'), 'utf8')) as string[];
    expect(inputs.filter((f) => !/^(src|web)\//.test(f))).toEqual([]);
    expect(inputs.filter((f) => /^src\/(train\/(datasets|checkpoint|trainer)|tensor\/(zip|pth|pickle))/.test(f))).toEqual([]);
    expect(inputs).toContain('web/node-shim.ts');
    for (const file of ['page.js', 'worker.js']) {
      const code = readFileSync(join(folder, file), 'utf8');
      expect(code, file).not.toMatch(/(from\s*|require\(\s*|import\(\s*)["']node:/);
      expect(code, file).not.toMatch(/(from\s*|require\(\s*)["'](fs|os|path|worker_threads|sharp|zlib|crypto|child_process)["']/);
    }
  });

  it('walks the tiny model forward then backward, every backward node passing its numerical check; a sabotaged one fails', () => {
    const session = new LearnerSession({ model: 'tiny', images: samples().slice(0, 8), seed: 0 });
    const graph = session.graph();
    expect(graph.map((n) => n.op)).toEqual(['conv2d', 'batchNorm2d+relu', 'depthwiseConv2d', 'batchNorm2d+relu', 'pointwiseConv2d', 'batchNorm2d+relu', 'globalAvgPool2d', 'reshape', 'linear', 'softmaxCrossEntropy']);
    const seen: string[] = [];
    for (let view = session.next(); view !== null; view = session.next()) {
      seen.push(`${view.phase} ${view.op}`);
      if (view.phase === 'backward') expect(session.check()!.every((c) => c.ok), view.op).toBe(true);
    }
    expect(seen).toHaveLength(2 * graph.length);
    expect(seen[graph.length]).toBe('backward softmaxCrossEntropy');
    // Back one and forward again: the same view, kept in the history.
    const atEnd = session.at;
    const before = session.previous()!;
    expect(session.at).toBe(atEnd - 1);
    expect(session.previous()).not.toBe(before);
    expect(session.next()).toBe(before);
    const broken = new LearnerSession({ model: 'tiny', images: samples().slice(0, 8), seed: 0 });
    broken.sabotage('pointwiseConv2d');
    broken.restart();
    const view = broken.continueTo('pointwiseConv2d')!;
    expect(view.phase).toBe('forward');
    expect(broken.continueTo('pointwiseConv2d')!.phase).toBe('backward');
    expect(broken.check()!.some((c) => !c.ok)).toBe(true);
  });

  it('training steps lower the loss; a checkpoint of another input size takes the images resized', () => {
    const session = new LearnerSession({ model: 'v1', alpha: 0.25, images: samples().slice(0, 16), seed: 0 });
    for (let k = 0; k < 5; k++) session.next();
    const before = session.currentView()!;
    const losses = session.train(10);
    expect(losses[9]).toBeLessThan(losses[0]);
    // The walk is back where it was, on the new weights: the same node, other maps.
    const after = session.currentView()!;
    expect([after.phase, after.node]).toEqual([before.phase, before.node]);
    expect(Array.from(after.output.data)).not.toEqual(Array.from(before.output.data));
    const model = createModel('v1', { alpha: 0.25, resolution: 32, numClasses: 3, inChannels: 1, seed: 2 });
    const tensors = new Map([...model.stateDict()].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
    const bytes = serializeCheckpoint({ model: tensors, optimizer: new Map(), meta: { config: { ...TRAIN_DEFAULTS, model: 'v1', alpha: 0.25, resolution: 32 }, normalization: { mean: [0.5], std: [0.25] }, dataset: { name: 'three', fingerprint: 'x', classNames: ['a', 'b', 'c'], channels: 1 }, model: model.info } });
    const fromCheckpoint = new LearnerSession({ model: 'tiny', checkpoint: bytes, images: samples().slice(0, 4) });
    expect(fromCheckpoint.input.shape).toEqual([4, 1, 32, 32]);
    expect(fromCheckpoint.classNames).toEqual(['a', 'b', 'c']);
    expect(() => new LearnerSession({ model: 'tiny', checkpoint: new TextEncoder().encode('not a checkpoint'), images: samples() })).toThrow(/not a checkpoint written by mobilenet train/);
  });
});

describe.skipIf(!existsSync(CHROMIUM))('the page in Chromium', () => {
  let browser: Browser;
  let server: Server;
  let url = '';
  beforeAll(async () => {
    server = await serveFolder(folder, 0);
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  async function open(query = ''): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url + query);
    await page.waitForSelector('body[data-ready=true]', { timeout: 60_000 });
    expect(errors).toEqual([]);
    return page;
  }
  const idle = (page: Page) => page.waitForSelector('body[data-busy=false]');
  async function press(page: Page, key: string) {
    await page.keyboard.press(key);
    await idle(page);
  }
  /** The variance of the pixels of every canvas in `selector` (a blank canvas has none). */
  const canvasVariances = (page: Page, selector: string) =>
    page.$$eval(`${selector} canvas`, (canvases) =>
      (canvases as HTMLCanvasElement[]).map((c) => {
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0;
        for (let i = 0; i < d.length; i += 4) (s += d[i] + d[i + 1] + d[i + 2]), (s2 += (d[i] + d[i + 1] + d[i + 2]) ** 2);
        const n = d.length / 4;
        return s2 / n - (s / n) ** 2;
      }),
    );

  it('steps the tiny model forward and backward: each panel names its op and shape, its maps are drawn, every check passes', async () => {
    const page = await open();
    const graph = new LearnerSession({ model: 'tiny', images: samples().slice(0, 8), seed: 0 }).graph();
    expect(await page.$$eval('#graph li', (items) => items.map((li) => li.textContent))).toEqual(graph.map((n) => `${String(n.index).padStart(2)} ${n.op} [${n.shape.join('x')}]`));
    for (let k = 0; k < 2 * graph.length; k++) {
      await press(page, 'n');
      const where = (await page.textContent('#where'))!;
      const phase = k < graph.length ? 'forward' : 'backward';
      const node = phase === 'forward' ? graph[k] : graph[graph.length - 1 - (k - graph.length)];
      expect(where).toContain(`${phase} ${(k % graph.length) + 1} / ${graph.length}: node ${node.index}, ${node.op}, output [${node.shape.join('x')}]`);
      expect(await page.$eval('#graph li.current', (li) => li.textContent)).toContain(node.op);
      // Feature maps with several pixels per channel show structure; a scalar shows one bar.
      if (node.shape.length === 4) expect(Math.max(...(await canvasVariances(page, '#output')))).toBeGreaterThan(0);
      if (phase === 'backward') {
        expect((await canvasVariances(page, '#gradient')).length).toBeGreaterThan(0);
        await press(page, 'k');
        expect(await page.getAttribute('#checks', 'data-result'), node.op).toBe('ok');
        if (k === graph.length + 4) await page.screenshot({ path: screenshot('learner-tiny.png') });
      }
    }
    await press(page, 'n');
    expect(await page.textContent('#where')).toContain('The end of the backward pass');
    await page.close();
  }, 120_000);

  it('a sabotaged backward (?sabotage=pointwiseConv2d) fails its check on the page', async () => {
    const page = await open('?sabotage=pointwiseConv2d');
    await page.selectOption('#op', 'pointwiseConv2d');
    await press(page, 'c'); // forward node
    await press(page, 'c'); // its backward
    expect(await page.getAttribute('#where', 'data-phase')).toBe('backward');
    await press(page, 'k');
    expect(await page.getAttribute('#checks', 'data-result')).toBe('failed');
    expect(await page.textContent('#checks')).toContain('FAILED');
    await page.close();
  }, 60_000);

  it('trains MobileNetV1 alpha 0.25 on 16 images and the loss falls; the weights equal Node\'s bit for bit; steps and training are timed', async () => {
    const page = await open();
    await page.selectOption('#model', 'v1');
    await idle(page);
    await page.selectOption('#batch', '16');
    await idle(page);
    // The whole walk, forward and backward, each panel naming its node.
    const nodes = new LearnerSession({ model: 'v1', alpha: 0.25, images: samples().slice(0, 16), seed: 0 }).graph().length;
    for (let k = 0; k < 2 * nodes; k++) {
      await press(page, 'n');
      expect(await page.getAttribute('#where', 'data-phase')).toBe(k < nodes ? 'forward' : 'backward');
    }
    // From the start again, on to the first depthwise node of the backward pass (past the 13 of
    // the forward pass): its panel shows the paper's cost comparison.
    await press(page, 'r');
    await page.selectOption('#op', 'depthwiseConv2d');
    for (let k = 0; k < 14; k++) await press(page, 'c');
    expect(await page.getAttribute('#where', 'data-phase')).toBe('backward');
    expect(await page.textContent('#cost')).toMatch(/Dk²·M·N·Df² = [\d,]+ mult-adds; depthwise \+ pointwise cost Dk²·M·Df² \+ M·N·Df² = [\d,]+, [\d.]+x fewer/);
    await page.click('#train');
    await idle(page);
    await page.click('#train');
    await idle(page);
    // Training re-walks to the node shown.
    expect(await page.getAttribute('#where', 'data-op')).toBe('depthwiseConv2d');
    const status = (await page.textContent('#train-status'))!;
    expect(status).toMatch(/^10 steps so far/);
    const learner = await page.evaluate(async () => {
      const l = (window as unknown as { learner: { timings: { stepMs: number[]; trainMsPerStep: number[]; losses: number[] }; digest: () => Promise<{ digest: string }> } }).learner;
      return { timings: l.timings, digest: (await l.digest()).digest };
    });
    // The same in Node: two rounds of 5 steps (each round ends with a new forward pass, which in
    // train mode moves BatchNorm's running statistics, as in PyTorch).
    const node = new LearnerSession({ model: 'v1', alpha: 0.25, images: samples().slice(0, 16), seed: 0 });
    node.restart(); // the page's restart (r): one more forward pass
    const losses = [...node.train(5), ...node.train(5)];
    expect(losses[9]).toBeLessThan(losses[0]);
    expect(learner.timings.losses).toEqual(losses); // the page's loss curve: the same numbers, falling
    expect(learner.digest).toBe(node.weightsDigest());
    const steps = learner.timings.stepMs.slice(1, 2 * nodes).sort((a, b) => a - b);
    // The figures for the note (performance is judged in npm run bench, not here).
    process.stdout.write(`page timings, MobileNetV1 alpha 0.25: median step shown in ${steps[steps.length >> 1].toFixed(0)} ms (slowest ${steps[steps.length - 1].toFixed(0)} ms, ${steps.length} steps), training step on 16 images ${Math.max(...learner.timings.trainMsPerStep).toFixed(0)} ms\n`);
    await page.screenshot({ path: screenshot('learner-v1.png') });
    await page.close();
  }, 180_000);

  it('runs the kernels on two Web Workers when the page is cross-origin isolated, with the same bits as one thread and as Node', async () => {
    const digests: Record<string, { digest: string; threads: number; jobsOnThreads: number }> = {};
    for (const threads of [1, 2]) {
      const page = await open(`?threads=${threads}`);
      await page.selectOption('#model', 'v1');
      await idle(page);
      await page.selectOption('#batch', '16');
      await idle(page);
      expect(await page.textContent('#threads')).toBe(threads === 1 ? 'the engine runs in a Web Worker, on one thread' : 'the engine runs in a Web Worker, on 2 threads');
      await page.click('#train');
      await idle(page);
      digests[threads] = await page.evaluate(() => (window as unknown as { learner: { digest: () => Promise<{ digest: string; threads: number; jobsOnThreads: number }> } }).learner.digest());
      await page.close();
    }
    expect(digests[2].threads).toBe(2);
    expect(digests[2].jobsOnThreads).toBeGreaterThan(0); // the kernels did run split over the workers
    expect(digests[1].jobsOnThreads).toBe(0);
    expect(digests[2].digest).toBe(digests[1].digest);
    const node = new LearnerSession({ model: 'v1', alpha: 0.25, images: samples().slice(0, 16), seed: 0 });
    // The page's walk: a session per model or batch change, each with its first forward pass; here the last.
    node.train(5);
    expect(digests[1].digest).toBe(node.weightsDigest());
  }, 120_000);

  it('works from a static host that sends no isolation headers (no SharedArrayBuffer there)', async () => {
    const plain = await serveFolder(folder, 0, { isolate: false });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${(plain.address() as { port: number }).port}/`);
      await page.waitForSelector('body[data-ready=true]', { timeout: 60_000 });
      expect(await page.evaluate(() => crossOriginIsolated)).toBe(false);
      expect(await page.textContent('#threads')).toContain('one thread (the page is not cross-origin isolated');
      for (let k = 0; k < 12; k++) await press(page, 'n');
      expect(await page.getAttribute('#where', 'data-phase')).toBe('backward');
      await page.click('#train');
      await idle(page);
      expect(await page.textContent('#train-status')).toMatch(/^5 steps so far/);
      expect(errors).toEqual([]);
      await page.close();
    } finally {
      plain.close();
    }
  }, 60_000);

  it('opens a checkpoint of another input size, and says what is wrong with a file that is neither image nor checkpoint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'web-'));
    const model = createModel('v1', { alpha: 0.25, resolution: 32, numClasses: 3, inChannels: 1, seed: 2 });
    const tensors = new Map([...model.stateDict()].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
    writeFileSync(join(dir, 'three.safetensors'), serializeCheckpoint({ model: tensors, optimizer: new Map(), meta: { config: { ...TRAIN_DEFAULTS, model: 'v1', alpha: 0.25, resolution: 32 }, normalization: { mean: [0.5], std: [0.25] }, dataset: { name: 'three', fingerprint: 'x', classNames: ['a', 'b', 'c'], channels: 1 }, model: model.info } }));
    writeFileSync(join(dir, 'notes.txt'), 'hello');
    const page = await open();
    await page.setInputFiles('#file', join(dir, 'three.safetensors'));
    await idle(page);
    expect(await page.isHidden('#message')).toBe(true);
    await press(page, 'n');
    expect(await page.textContent('#where')).toContain('output [8x8x16x16]'); // 32x32 in, stride 2
    // An image of the learner's own (colour, another size): resized to the model's 32x32 gray input.
    await page.setInputFiles('#file', join(ROOT, 'data/samples/dress.png'));
    await idle(page);
    expect(await page.isHidden('#message')).toBe(true);
    await press(page, 'n');
    expect(await page.textContent('#where')).toContain('output [1x8x16x16]');
    await page.setInputFiles('#file', join(dir, 'notes.txt'));
    await idle(page);
    expect(await page.textContent('#message')).toBe('notes.txt: not an image the browser can decode, nor a checkpoint (.safetensors written by mobilenet train)');
    await page.close();
  }, 60_000);
});

describe('mobilenet step --web', () => {
  it('serves the page on 127.0.0.1 with the isolation headers, stops on SIGTERM with status 0; a port in use is one line, exit 2', async () => {
    const child = spawn(process.execPath, [...CLI_FROM_SOURCE, 'step', '--web', '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const address = await new Promise<string>((done, fail) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d;
        const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
        if (m) done(m[0]);
      });
      child.once('exit', (code) => fail(new Error(`exited ${code}`)));
    });
    const response = await fetch(address);
    expect(response.status).toBe(200);
    expect(response.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect(response.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    expect(await response.text()).toContain('Backprop, one node at a time');
    expect((await fetch(address + '../package.json')).status).toBe(404);
    const exited = new Promise<number | null>((done) => child.once('exit', done));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const busy: Server = createServer();
    await new Promise<void>((done) => busy.listen(0, '127.0.0.1', done));
    const port = (busy.address() as { port: number }).port;
    const r = runCli(['step', '--web', '--port', String(port)]);
    busy.close();
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mobilenet: error: --port ${port}: the port is in use (another program listens on it; choose another, or 0 for any free one)\n`);
  }, 120_000);
});

/** Screenshots go to docs/ when UPDATE_SCREENSHOTS=1 (the README shows them), else to a temporary folder. */
let shots = '';
function mkdirScreenshots(): void {
  shots ||= process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs') : mkdtempSync(join(tmpdir(), 'shots-'));
}
function screenshot(name: string): string {
  mkdirScreenshots();
  return join(shots, name);
}
