// Run one model workload's step in a loop, for a CPU profile:
//   node --import tsx/esm --cpu-prof --cpu-prof-dir=/tmp/prof bench/profile.ts v1 0.5 8 128 10 1 20 1
// arguments: arch alpha batch resolution classes train(1|0) steps threads [input channels, 3]
// (the default training step: shallow 0.35 64 28 10 1 20 1 1). REUSE=0 turns buffer
// reuse off (to compare); RSS_EVERY=50 prints the resident memory every 50 steps. Prints the median step time and peak RSS; `npm run bench` is the
// measurement of record, this is for looking inside a step (open the .cpuprofile in Chrome DevTools).
import { createModel } from '../src/nn/mobilenet.js';
import { softmaxCrossEntropy } from '../src/ops/loss.js';
import { setThreads } from '../src/ops/parallel.js';
import { noGrad } from '../src/tensor/autograd.js';
import { rand } from '../src/tensor/tensor.js';
import { Rng } from '../src/tensor/rng.js';
import { SGD } from '../src/train/optim.js';
import { reuseBuffers } from '../src/tensor/buffers.js';
const scoped = process.env.REUSE !== '0';
const run = (f: () => void) => (scoped ? reuseBuffers(f) : f());
const [arch, alpha, batch, res, classes, train, steps, threads, channels = '3'] = process.argv.slice(2);
setThreads(Number(threads ?? 1));
const rng = new Rng(3);
const model = createModel(arch as 'v1', { alpha: Number(alpha), numClasses: Number(classes), resolution: Number(res), inChannels: Number(channels), seed: 1 }).fuseActivations();
const x = rand([Number(batch), Number(channels), Number(res), Number(res)], rng);
const labels = Array.from({ length: Number(batch) }, () => rng.int(0, Number(classes)));
const opt = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
if (train === '1') model.train(); else model.eval();
const times: number[] = [];
for (let i = 0; i < Number(steps); i++) {
  const t0 = performance.now();
  run(() => { if (train === '1') { opt.zeroGrad(); softmaxCrossEntropy(model.forward(x), labels).backward(); opt.step(); opt.zeroGrad(); }
  else noGrad(() => model.forward(x)); });
  times.push(performance.now() - t0);
  if (process.env.RSS_EVERY && (i + 1) % Number(process.env.RSS_EVERY) === 0) console.log(`step ${i + 1}: rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB`);
}
times.sort((a, b) => a - b);
console.log('median ms', times[Math.floor(times.length / 2)].toFixed(1), 'rss MB', (process.resourceUsage().maxRSS / 1024).toFixed(0));
