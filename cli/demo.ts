// A forward/backward demo on the engine: least squares y = X w fitted by gradient descent.
import { matmul, mean, mul, noGrad, randn, Rng, sub, type Tensor } from '../src/index.js';

export function runDemo(options: { steps: number; seed: number }, print: (line: string) => void): number {
  const rng = new Rng(options.seed);
  const X = randn([64, 8], rng);
  const trueW = randn([8, 1], rng);
  const y = noGrad(() => matmul(X, trueW));
  const w = randn([8, 1], rng, 0, 0.1, { requiresGrad: true });
  const learningRate = 0.1;
  let loss: Tensor | null = null;
  for (let step = 0; step <= options.steps; step++) {
    const residual = sub(matmul(X, w), y);
    loss = mean(mul(residual, residual)); // L = mean((Xw - y)^2)
    w.grad = null;
    loss.backward();
    const g = w.grad!.data;
    for (let i = 0; i < w.data.length; i++) w.data[i] -= learningRate * g[i];
    if (step % 10 === 0) print(`step ${String(step).padStart(3)}  loss ${loss.item().toExponential(3)}`);
  }
  return loss!.item();
}
