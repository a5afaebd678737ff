// The learner's page: the DOM side. The engine runs in a Web Worker (web/worker.ts); this file
// sends it commands and draws what comes back: the graph, the current node's formula, its
// output maps and the gradient maps arriving at it (one tile per channel), what it sends to each
// input, the statistics `mobilenet step` prints, the numerical check, and the loss curve.

import type { GraphNode, Maps, SampleImage, SessionSetup, StepView } from './session.js';
import type { InputCheck } from '../src/tensor/stepper.js';
import type { Command } from './worker.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The channels drawn per map: enough to see what a layer does, few enough to draw in a blink. */
const MAX_TILES = 32;

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let nextId = 0;
const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
worker.onmessage = (event: MessageEvent<{ id: number; ok: boolean; result?: unknown; error?: string }>) => {
  const { id, ok, result, error } = event.data;
  const w = waiting.get(id);
  waiting.delete(id);
  if (!w) return;
  if (ok) w.resolve(result);
  else w.reject(new Error(error));
};

function send<T>(command: Command): Promise<T> {
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
    worker.postMessage({ id, command });
  });
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

interface WalkState {
  view: StepView | null;
  at: number;
  length: number;
  loss: number;
  losses: number[];
}

let graph: GraphNode[] = [];
let classNames: string[] = [];
let samples: SampleImage[] = [];
let chosen = 0;
let checkpoint: Uint8Array | undefined;
let dropped: SampleImage | null = null;
let current: StepView | null = null;
let busy = false;
/** Figures the browser test reads: ms per shown step, per training step. */
const timings = { stepMs: [] as number[], trainMsPerStep: [] as number[], losses: [] as number[] };
(window as unknown as { learner: unknown }).learner = { timings, digest: () => send<{ digest: string; threads: number; jobsOnThreads: number }>({ type: 'digest' }), state: () => ({ at: current, graph }) };

function message(text: string | null): void {
  const box = $('message');
  box.hidden = text === null;
  box.textContent = text ?? '';
}

async function guarded(fn: () => Promise<void>): Promise<void> {
  if (busy) return;
  busy = true;
  document.body.dataset.busy = 'true';
  try {
    message(null);
    await fn();
  } catch (e) {
    message((e as Error).message);
  } finally {
    busy = false;
    document.body.dataset.busy = 'false';
  }
}

// ---------------------------------------------------------------------------------------------
// Colour maps
// ---------------------------------------------------------------------------------------------

/** Activations: dark (low) to light (high), a perceptual ramp through blue and yellow. */
function sequential(t: number): [number, number, number] {
  const stops: [number, number, number][] = [[20, 20, 60], [40, 90, 160], [60, 160, 150], [190, 210, 80], [250, 240, 180]];
  const x = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1);
  const i = Math.floor(x), f = x - i;
  return stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v))) as [number, number, number];
}

/** Gradients: blue (negative), white (zero), red (positive); symmetric about zero. */
function diverging(t: number): [number, number, number] {
  const x = Math.max(-1, Math.min(1, t));
  return x < 0 ? [Math.round(255 * (1 + x)), Math.round(255 * (1 + x)), 255] : [255, Math.round(255 * (1 - x)), Math.round(255 * (1 - x))];
}

/** Draw an h x w plane (values `data[offset ...]`) on a new canvas. */
function planeCanvas(data: Float32Array, offset: number, h: number, w: number, colour: (v: number) => [number, number, number]): HTMLCanvasElement {
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext('2d')!;
  const image = context.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = colour(data[offset + i]);
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

/**
 * A tensor as pictures: channel planes (C x H x W) or kernels (A x B x k x k) as tiles, a matrix
 * as one picture, a vector as bars. Gradients get the diverging map with its scale +-max|g|.
 */
function drawMaps(into: HTMLElement, maps: Maps | null, kind: 'activation' | 'gradient'): void {
  into.replaceChildren();
  if (maps === null) return;
  const { shape, data, stats } = maps;
  const maxAbs = Math.max(Math.abs(stats.min), Math.abs(stats.max)) || 1;
  const colour = kind === 'gradient' ? (v: number) => diverging(v / maxAbs) : (v: number) => sequential((v - stats.min) / (stats.max - stats.min || 1));
  let planes = 0, h = 0, w = 0;
  if (shape.length === 3 && shape[1] * shape[2] > 1) [planes, h, w] = shape;
  else if (shape.length === 4 && shape[2] * shape[3] > 1) [planes, h, w] = [shape[0] * shape[1], shape[2], shape[3]];
  if (planes > 0) {
    for (let c = 0; c < Math.min(planes, MAX_TILES); c++) into.append(planeCanvas(data, c * h * w, h, w, colour));
  } else if (shape.length === 2 && shape[0] > 1 && shape[1] > 1) {
    const canvas = planeCanvas(data, 0, shape[0], shape[1], colour);
    canvas.className = 'wide';
    into.append(canvas);
  } else {
    // A vector (logits, a pooled feature, a bias): one bar per entry, zero in the middle.
    const n = data.length;
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(40, Math.min(512, 4 * n));
    canvas.height = 60;
    canvas.className = 'bars';
    const context = canvas.getContext('2d')!;
    context.fillStyle = '#fff';
    context.fillRect(0, 0, canvas.width, 60);
    const bar = canvas.width / n;
    for (let i = 0; i < n; i++) {
      const [r, g, b] = kind === 'gradient' ? diverging(data[i] / maxAbs) : sequential(0.3 + (0.7 * Math.abs(data[i])) / maxAbs);
      context.fillStyle = `rgb(${r},${g},${b})`;
      const height = (28 * data[i]) / maxAbs;
      context.fillRect(i * bar, 30 - Math.max(0, height), Math.max(1, bar - 1), Math.abs(height) || 1);
    }
    into.append(canvas);
  }
  const scale = document.createElement('div');
  scale.className = 'scale';
  const count = planes > MAX_TILES ? `first ${MAX_TILES} of ${planes} channels; ` : '';
  scale.textContent = kind === 'gradient' ? `${count}blue -${fmt(maxAbs)} ... white 0 ... red +${fmt(maxAbs)}` : `${count}dark ${fmt(stats.min)} ... light ${fmt(stats.max)}`;
  into.append(scale);
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? v.toPrecision(4) : v.toExponential(2);
}

// ---------------------------------------------------------------------------------------------
// What am I looking at
// ---------------------------------------------------------------------------------------------

/** The lesson per op kind, for someone who knows the forward pass and is learning the backward one. */
const EXPLAIN: Record<string, string> = {
  conv2d: 'A full convolution: every output channel sums a k x k window over every input channel. Backward, the gradient for the input is the arriving gradient correlated with the flipped filters (a "transposed convolution"), and the filters\' gradient is the correlation of the input with the arriving gradient: each weight collects input x gradient over every position it touched.',
  depthwiseConv2d: 'A depthwise convolution: one k x k filter per channel, no mixing across channels. Backward stays per channel too: channel c\'s input gradient comes only from channel c\'s arriving gradient, and its filter gradient sums input x gradient over the positions of that channel alone.',
  pointwiseConv2d: 'A pointwise (1x1) convolution: at every pixel, a matrix multiply that mixes channels. Backward is two matrix products: the input gradient is W^T times the arriving gradient at each pixel, and W\'s gradient sums gradient x input over all pixels and images.',
  batchNorm2d: 'BatchNorm: each channel is standardised with the batch\'s mean and variance, then scaled by gamma and shifted by beta. In train mode the mean and variance depend on every image of the batch, so backward subtracts the gradient\'s mean and its projection on the normalised values: a channel\'s input gradients sum to zero.',
  relu: 'ReLU: max(0, x). Backward passes the gradient where the input was positive and blocks it (zero) elsewhere: compare the gradient maps with the output maps, the dark regions send nothing back.',
  relu6: 'ReLU6: min(max(0, x), 6), MobileNetV2\'s activation. Backward passes the gradient only where 0 < x < 6.',
  globalAvgPool2d: 'Global average pooling: each channel\'s plane becomes its mean. Backward spreads each channel\'s gradient evenly over its H x W positions: every pixel gets dL/dy / (H W).',
  reshape: 'Flatten: the same numbers in another shape. Backward reshapes the gradient back; nothing is computed.',
  linear: 'The classifier, y = x W^T + b. Backward: the input gradient is dL/dy W, W\'s gradient is dL/dy^T x (an outer product summed over the batch), b\'s is dL/dy summed over the batch.',
  softmaxCrossEntropy: 'Softmax cross-entropy, the loss: the mean over the batch of -log softmax(logits)[label]. Its gradient is (softmax(logits) - onehot(label)) / N: the start of the backward pass, pushing the right class up and the others down.',
  add: 'An addition: the residual connection of an inverted residual block. Backward copies the arriving gradient to both inputs unchanged: the gradient takes the shortcut as well as the path through the block.',
  maxPool2d: 'Max pooling: the largest value of each window. Backward routes each gradient to the position that was the maximum; the others get zero.',
  avgPool2d: 'Average pooling: the mean of each window. Backward spreads each gradient evenly over its window.',
  dropout: 'Dropout: zeros a random fraction p of the values and scales the rest by 1/(1-p); backward applies the same mask and scale.',
};

function explanation(op: string): string {
  const base = op.split('+')[0];
  const fused = op.includes('+') ? ` This node also applies the ${op.split('+')[1]} after it (one fused pass, as training runs it); backward first masks the gradient as that activation does.` : '';
  return (EXPLAIN[base] ?? `The op ${op}.`) + fused;
}

/** The paper's cost comparison for a depthwise or pointwise node: Dk^2 M N Df^2 against Dk^2 M Df^2 + M N Df^2. */
function separableCost(node: GraphNode): string {
  const op = node.op.split('+')[0];
  if (op !== 'depthwiseConv2d' && op !== 'pointwiseConv2d') return '';
  // The pair: a depthwise node and the pointwise node that follows it.
  const dw = op === 'depthwiseConv2d' ? node : [...graph.slice(0, node.index)].reverse().find((n) => n.op.startsWith('depthwiseConv2d'));
  const pw = op === 'pointwiseConv2d' ? node : graph.slice(node.index + 1).find((n) => n.op.startsWith('pointwiseConv2d'));
  if (!dw || !pw) return '';
  const dk = dw.inputs[1]?.shape[2] ?? 3;
  const m = dw.shape[1], df = dw.shape[2], n = pw.shape[1];
  const standard = dk * dk * m * n * df * df;
  const separable = dk * dk * m * df * df + m * n * df * df;
  return `Cost (paper, eq. 5 against 4): a standard ${dk}x${dk} convolution from ${m} to ${n} channels at ${df}x${df} costs Dk²·M·N·Df² = ${standard.toLocaleString('en')} mult-adds; depthwise + pointwise cost Dk²·M·Df² + M·N·Df² = ${separable.toLocaleString('en')}, ${(standard / separable).toFixed(1)}x fewer (1/N + 1/Dk² = ${(1 / n + 1 / (dk * dk)).toFixed(3)}).`;
}

// ---------------------------------------------------------------------------------------------
// Drawing the state
// ---------------------------------------------------------------------------------------------

function drawGraph(): void {
  const list = $('graph');
  list.replaceChildren(
    ...graph.map((n) => {
      const li = document.createElement('li');
      li.textContent = `${String(n.index).padStart(2)} ${n.op} [${n.shape.join('x')}]`;
      const params = n.inputs.filter((i) => i.isParameter);
      if (params.length > 0) {
        li.classList.add('param');
        li.title = params.map((p) => p.name ?? 'a parameter').join(', ');
      }
      li.dataset.index = String(n.index);
      return li;
    }),
  );
  const ops = [...new Set(graph.map((n) => n.op.split('+')[0]))];
  $<HTMLSelectElement>('op').replaceChildren(...ops.map((op) => new Option(op, op)));
}

function statsRow(label: string, s: Maps['stats']): HTMLTableRowElement {
  const row = document.createElement('tr');
  for (const v of [label, fmt(s.mean), fmt(s.std), fmt(s.min), fmt(s.max), fmt(s.l2), `${(100 * s.zeroFraction).toFixed(1)}%`, String(s.nonFinite)]) {
    const td = document.createElement('td');
    td.textContent = v;
    row.append(td);
  }
  return row;
}

function drawView(view: StepView | null, state: WalkState): void {
  current = view;
  for (const li of $('graph').children) {
    const i = Number((li as HTMLElement).dataset.index);
    li.classList.toggle('current', view !== null && i === view.node);
  }
  $('checks').replaceChildren();
  if (view === null) {
    $('where').textContent = state.at < 0 ? 'Press next (n) to run the forward pass node by node.' : 'The end of the backward pass: every parameter has its gradient. Train a few steps, or restart.';
    return;
  }
  const node = graph[view.node];
  $('where').textContent = `${view.phase} ${view.index + 1} / ${view.total}: node ${view.node}, ${view.op}, output [${node.shape.join('x')}]${view.phase === 'backward' ? '' : ''}  (loss ${fmt(view.loss)})`;
  $('where').dataset.op = view.op;
  $('where').dataset.phase = view.phase;
  $('formula').textContent = view.formula;
  $('explain').textContent = explanation(view.op);
  $('cost').textContent = separableCost(node);
  $('output-title').textContent = `output [${view.output.shape.join('x')}] (first image)`;
  drawMaps($('output'), view.output, 'activation');
  $('gradient-title').textContent = view.gradient ? `gradient arriving, dL/dy [${view.gradient.shape.join('x')}]` : 'gradient arriving (after the forward pass)';
  drawMaps($('gradient'), view.gradient, 'gradient');
  const sent = $('sent');
  sent.replaceChildren();
  const table = $<HTMLTableElement>('stats');
  table.replaceChildren();
  const head = document.createElement('tr');
  for (const h of ['', 'mean', 'std', 'min', 'max', 'L2', 'zeros', 'NaN/Inf']) head.append(Object.assign(document.createElement('th'), { textContent: h }));
  table.append(head, statsRow('output', view.output.stats));
  if (view.gradient) table.append(statsRow('dL/dy', view.gradient.stats));
  view.sent.forEach((maps, i) => {
    if (maps === null) return;
    const input = node.inputs[i];
    const who = input.isParameter ? `parameter ${input.name ?? i}` : input.from !== null ? `node ${input.from} (${graph[input.from].op})` : `input ${i}`;
    table.append(statsRow(`sent to ${who}`, maps.stats));
    const box = document.createElement('div');
    box.append(Object.assign(document.createElement('h3'), { textContent: `sent to ${who} [${maps.shape.join('x')}]` }));
    const tiles = document.createElement('div');
    tiles.className = 'tiles';
    drawMaps(tiles, maps, 'gradient');
    box.append(tiles);
    sent.append(box);
  });
}

function drawLosses(losses: number[]): void {
  const canvas = $<HTMLCanvasElement>('losses');
  const context = canvas.getContext('2d')!;
  context.fillStyle = '#fff';
  context.fillRect(0, 0, canvas.width, canvas.height);
  if (losses.length === 0) return;
  const max = Math.max(...losses), min = Math.min(0, ...losses);
  context.strokeStyle = '#d33';
  context.lineWidth = 2;
  context.beginPath();
  losses.forEach((l, i) => {
    const x = 10 + ((canvas.width - 20) * i) / Math.max(1, losses.length - 1);
    const y = canvas.height - 10 - ((canvas.height - 20) * (l - min)) / (max - min || 1);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
  context.fillStyle = '#333';
  context.fillText(`loss ${fmt(losses[0])} -> ${fmt(losses[losses.length - 1])} over ${losses.length} steps`, 10, 14);
}

function drawInput(pixels: Float32Array, resolution: number): void {
  const canvas = $<HTMLCanvasElement>('input');
  canvas.width = canvas.height = resolution;
  let min = Infinity, max = -Infinity;
  for (let i = 0; i < resolution * resolution; i++) (min = Math.min(min, pixels[i])), (max = Math.max(max, pixels[i]));
  const image = canvas.getContext('2d')!.createImageData(resolution, resolution);
  for (let i = 0; i < resolution * resolution; i++) {
    const v = Math.round((255 * (pixels[i] - min)) / (max - min || 1));
    image.data.set([v, v, v, 255], 4 * i);
  }
  canvas.getContext('2d')!.putImageData(image, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/** Threads for the engine: ?threads=N, else every core (one where the page cannot share memory). */
function threadCount(): number {
  const asked = Number(new URLSearchParams(location.search).get('threads'));
  const wanted = Number.isInteger(asked) && asked >= 1 ? asked : navigator.hardwareConcurrency || 1;
  return crossOriginIsolated ? Math.min(wanted, 16) : 1;
}

function batchImages(): SampleImage[] {
  if (dropped) return [dropped];
  const size = Number($<HTMLSelectElement>('batch').value);
  return Array.from({ length: size }, (_, k) => samples[(chosen + k) % samples.length]);
}

async function setup(): Promise<void> {
  const model = $<HTMLSelectElement>('model').value as SessionSetup['model'];
  const images = batchImages();
  const result = await send<WalkState & { graph: GraphNode[]; classNames: string[]; input: Float32Array; resolution: number }>({ type: 'setup', setup: { model, alpha: model === 'v2' ? 0.35 : 0.25, checkpoint, images, seed: 0 }, threads: threadCount() });
  const { threads } = await send<{ threads: number }>({ type: 'digest' });
  $('threads').textContent = threads > 1 ? `the engine runs in a Web Worker, on ${threads} threads` : crossOriginIsolated ? 'the engine runs in a Web Worker, on one thread' : 'the engine runs in a Web Worker, on one thread (the page is not cross-origin isolated, so it has no shared memory for more)';
  graph = result.graph;
  classNames = result.classNames;
  drawGraph();
  drawInput(result.input, result.resolution);
  drawView(null, result);
  drawLosses(result.losses);
  const sabotage = new URLSearchParams(location.search).get('sabotage');
  if (sabotage) drawView(null, await send<WalkState>({ type: 'sabotage', op: sabotage }));
  document.body.dataset.ready = 'true';
}

async function walk(command: Command): Promise<void> {
  const started = performance.now();
  const state = await send<WalkState>(command);
  for (const li of $('graph').children) li.classList.remove('done');
  drawView(state.view, state);
  // The time from the command to the panel drawn: what the learner waits for.
  await new Promise(requestAnimationFrame);
  timings.stepMs.push(performance.now() - started);
}

function drawChecks(checks: InputCheck[] | null): void {
  const box = $('checks');
  box.replaceChildren();
  if (checks === null) {
    box.textContent = 'The numerical check runs on the current backward node (step to one first; a node already passed has freed what it needs).';
    return;
  }
  for (const c of checks) {
    const p = document.createElement('p');
    const input = current ? graph[current.node].inputs[c.inputIndex] : null;
    const who = input?.isParameter ? `parameter ${c.name ?? c.inputIndex}` : `input ${c.inputIndex}`;
    const verdict = document.createElement('span');
    verdict.className = c.ok ? 'ok' : 'fail';
    verdict.textContent = c.ok ? 'ok' : 'FAILED';
    p.append(verdict, ` ${who}: ${c.checked} entries against central differences, worst relative error ${fmt(c.localError)}${c.skippedKinks ? ` (${c.skippedKinks} at a kink skipped)` : ''}${c.wholeLossError !== null ? `; whole loss along a random direction: ${fmt(c.wholeLossError)}` : ''}`);
    box.append(p);
  }
  box.dataset.result = checks.every((c) => c.ok) ? 'ok' : 'failed';
}

async function train(): Promise<void> {
  const result = await send<WalkState & { msPerStep: number; graph: GraphNode[] }>({ type: 'train', count: 5 });
  timings.trainMsPerStep.push(result.msPerStep);
  timings.losses = result.losses;
  graph = result.graph;
  drawGraph();
  drawLosses(result.losses);
  $('train-status').textContent = `${result.losses.length} steps so far, ${result.msPerStep.toFixed(0)} ms per step; loss now ${fmt(result.loss)}`;
  drawView(result.view, result);
}

/** A dropped or opened file: a checkpoint (.safetensors) or an image the browser can decode. */
async function openFile(file: File): Promise<void> {
  if (file.name.endsWith('.safetensors')) {
    checkpoint = new Uint8Array(await file.arrayBuffer());
    try {
      await setup();
    } catch (e) {
      checkpoint = undefined;
      throw e;
    }
    return;
  }
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name}: not an image the browser can decode, nor a checkpoint (.safetensors written by mobilenet train)`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d')!;
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const plane = bitmap.width * bitmap.height;
  const pixels = new Uint8Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) pixels[c * plane + i] = rgba[4 * i + c];
  dropped = { pixels, width: bitmap.width, height: bitmap.height, channels: 3, label: null };
  await setup();
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function start(): Promise<void> {
  const response = await fetch('samples.json');
  const data = (await response.json()) as { width: number; height: number; classNames: string[]; samples: { label: number; pixels: string }[] };
  samples = data.samples.map((s) => ({ pixels: Uint8Array.from(atob(s.pixels), (ch) => ch.charCodeAt(0)), width: data.width, height: data.height, channels: 1, label: s.label }));
  const strip = $('samples');
  samples.forEach((s, i) => {
    const canvas = planeCanvas(Float32Array.from(s.pixels), 0, 28, 28, (v) => [v, v, v]);
    canvas.title = `${data.classNames[s.label!]} (test image)`;
    canvas.onclick = () =>
      guarded(async () => {
        chosen = i;
        dropped = null;
        for (const c of strip.children) c.classList.toggle('chosen', c === canvas);
        await setup();
      });
    if (i === 0) canvas.classList.add('chosen');
    strip.append(canvas);
  });
  const on = (id: string, fn: () => Promise<void>) => ($(id).onclick = () => guarded(fn));
  on('next', () => walk({ type: 'next' }));
  on('prev', () => walk({ type: 'previous' }));
  on('continue', () => walk({ type: 'continue', op: $<HTMLSelectElement>('op').value }));
  on('end', () => walk({ type: 'continue', op: null }));
  on('restart', () => walk({ type: 'restart' }));
  on('check', async () => drawChecks((await send<{ checks: InputCheck[] | null }>({ type: 'check' })).checks));
  on('train', train);
  $('model').onchange = () => guarded(async () => ((checkpoint = undefined), await setup()));
  $('batch').onchange = () => guarded(setup);
  $<HTMLInputElement>('file').onchange = (e) => {
    const file = (e.target as HTMLInputElement).files?.[0];
    if (file) void guarded(() => openFile(file));
  };
  document.addEventListener('dragover', (e) => e.preventDefault());
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    const file = e.dataTransfer?.files[0];
    if (file) void guarded(() => openFile(file));
  });
  const keys: Record<string, string> = { n: 'next', Enter: 'next', ArrowRight: 'next', p: 'prev', ArrowLeft: 'prev', c: 'continue', e: 'end', k: 'check', r: 'restart', t: 'train' };
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLSelectElement || e.target instanceof HTMLInputElement) return;
    const id = keys[e.key];
    if (id) {
      e.preventDefault();
      $(id).click();
    }
  });
  await guarded(setup);
}

void start();
