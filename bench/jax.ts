// The G1 and T1 workloads on jax-js ("JAX in pure JavaScript", npm @jax-js/jax, a devDependency
// used by the bench only; the library never imports it), on its WebAssembly device: the
// peer that, like this engine, emits its CPU kernels as WebAssembly at run time. The train step
// is one jit-compiled function: forward with BatchNorm on batch statistics, cross-entropy,
// value-and-gradient, SGD with momentum 0.9, as WORKLOADS.md describes it.

import { readFileSync } from 'node:fs';
import { defaultDevice, init, jit, lax, nn, numpy as np, valueAndGrad } from '@jax-js/jax';

type Arr = np.Array;

/** Resolves once jax-js's WebAssembly device is the default. */
export async function initJax(): Promise<string> {
  await init('wasm');
  defaultDevice('wasm');
  const pkg = JSON.parse(readFileSync(new URL('../node_modules/@jax-js/jax/package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** A step of C = A B for two n x n float32 matrices, waiting for the result. */
export function jaxGemm(n: number): () => Promise<void> {
  const a = np.array(Float32Array.from({ length: n * n }, (_, k) => Math.sin(k))).reshape([n, n]);
  const b = np.array(Float32Array.from({ length: n * n }, (_, k) => Math.cos(k))).reshape([n, n]);
  const multiply = jit((x: Arr, y: Arr) => np.matmul(x, y));
  return async () => {
    const c = multiply(a.ref, b.ref);
    await c.blockUntilReady();
    c.dispose();
  };
}

const V1_BLOCKS: [number, number][] = [[64, 1], [128, 2], [128, 1], [256, 2], [256, 1], [512, 2], [512, 1], [512, 1], [512, 1], [512, 1], [512, 1], [1024, 2], [1024, 1]];

/** A convolution layer's parameters: the filter and its BatchNorm's gamma and beta. */
interface Layer { cout: number; cin: number; k: number; stride: number; groups: number }

/** MobileNetV1's layers at width alpha (the stem, then depthwise and pointwise per block). */
function v1Layers(alpha: number, inChannels: number): Layer[] {
  const layers: Layer[] = [];
  let c = Math.round(32 * alpha);
  layers.push({ cout: c, cin: inChannels, k: 3, stride: 2, groups: 1 });
  for (const [width, stride] of V1_BLOCKS) {
    const out = Math.floor(width * alpha);
    layers.push({ cout: c, cin: 1, k: 3, stride, groups: c });
    layers.push({ cout: out, cin: c, k: 1, stride: 1, groups: 1 });
    c = out;
  }
  return layers;
}

/** Random normal values, scaled (He init for filters). */
function normal(shape: number[], scale: number, seed: number): Arr {
  let s = seed >>> 0;
  const uniform = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, () => scale * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
  return np.array(data).reshape(shape);
}

/**
 * One training step of MobileNetV1 (train mode) on a fixed random batch, waiting for the loss.
 * Parameters: per layer [filter, gamma, beta], then the classifier's weight and bias.
 */
export function jaxV1TrainStep(alpha: number, batch: number, resolution: number, classes: number): () => Promise<void> {
  const layers = v1Layers(alpha, 3);
  const last = layers[layers.length - 1].cout;
  let params: Arr[] = [];
  layers.forEach((l, k) => params.push(normal([l.cout, l.cin, l.k, l.k], Math.sqrt(2 / (l.cin * l.k * l.k)), k + 1), np.ones([l.cout]), np.zeros([l.cout])));
  params.push(normal([last, classes], Math.sqrt(1 / last), 99), np.zeros([classes]));
  let velocity: Arr[] = params.map((p) => np.zerosLike(p.ref));
  const x = normal([batch, 3, resolution, resolution], 1, 7);
  const labels = new Float32Array(batch * classes);
  for (let n = 0; n < batch; n++) labels[n * classes + ((n * 7) % classes)] = 1;
  const oneHot = np.array(labels).reshape([batch, classes]);

  const loss = (p: Arr[], input: Arr, target: Arr): Arr => {
    let h = input;
    layers.forEach((l, k) => {
      const [w, gamma, beta] = [p[3 * k], p[3 * k + 1], p[3 * k + 2]];
      const pad = (l.k - 1) / 2;
      h = lax.convGeneralDilated(h, w, [l.stride, l.stride], [[pad, pad], [pad, pad]], { featureGroupCount: l.groups });
      // BatchNorm on the batch's statistics (biased variance, eps 1e-5), then ReLU.
      const mean = np.mean(h.ref, [0, 2, 3], { keepdims: true });
      const variance = np.var_(h.ref, [0, 2, 3], { keepdims: true });
      const normalised = h.sub(mean).div(np.sqrt(variance.add(1e-5)));
      h = nn.relu(normalised.mul(gamma.reshape([1, l.cout, 1, 1])).add(beta.reshape([1, l.cout, 1, 1])));
    });
    const pooled = np.mean(h, [2, 3]);
    const logits = np.matmul(pooled, p[3 * layers.length]).add(p[3 * layers.length + 1]);
    return np.mean(np.sum(nn.logSoftmax(logits, -1).mul(target), -1)).mul(-1);
  };
  const step = jit((p: Arr[], v: Arr[], input: Arr, target: Arr) => {
    const [value, grads] = valueAndGrad(loss)(p.map((pk) => pk.ref), input, target);
    const newV = v.map((vk, k) => vk.mul(0.9).add(grads[k]));
    const newP = p.map((pk, k) => pk.sub(newV[k].ref.mul(0.01)));
    return [newP, newV, value] as [Arr[], Arr[], Arr];
  });
  return async () => {
    const [p, v, value] = step(params, velocity, x.ref, oneHot.ref);
    params = p;
    velocity = v;
    await value.blockUntilReady();
    value.dispose();
  };
}
