// Build the bundled Fashion-MNIST subset from the Debian package dataset-fashion-mnist:
//   npx tsx scripts/make-subset.ts [/usr/share/datasets/fashion-mnist] [data/fashion-mnist-subset]
// 1,000 training and 200 test images per class (10,000 / 2,000), chosen with a fixed seed,
// written as gzipped IDX. Deterministic: running it again writes identical files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeIdx, loadIdxDataset, type ImageDataset } from '../src/train/datasets.js';
import { Rng } from '../src/tensor/rng.js';

const source = process.argv[2] ?? '/usr/share/datasets/fashion-mnist';
const target = process.argv[3] ?? 'data/fashion-mnist-subset';
const SEED = 2017;

function balancedSubset(ds: ImageDataset, perClass: number, rng: Rng): { images: Uint8Array; labels: Uint8Array } {
  const order = rng.permutation(ds.count);
  const taken = new Array<number>(ds.classNames.length).fill(0);
  const chosen: number[] = [];
  for (const i of order) {
    const label = ds.labels[i];
    if (taken[label] < perClass) {
      taken[label]++;
      chosen.push(i);
    }
  }
  chosen.sort((a, b) => a - b); // keep the original order: the subset reads like the source
  const plane = ds.height * ds.width;
  const images = new Uint8Array(chosen.length * plane);
  const labels = new Uint8Array(chosen.length);
  chosen.forEach((src, dst) => {
    images.set(ds.images.subarray(src * plane, (src + 1) * plane), dst * plane);
    labels[dst] = ds.labels[src];
  });
  return { images, labels };
}

mkdirSync(target, { recursive: true });
const rng = new Rng(SEED);
for (const [split, prefix, perClass] of [['train', 'train', 1000], ['test', 't10k', 200]] as const) {
  const ds = loadIdxDataset(source, split);
  const { images, labels } = balancedSubset(ds, perClass, rng);
  writeFileSync(join(target, `${prefix}-images-idx3-ubyte.gz`), gzipSync(encodeIdx([labels.length, ds.height, ds.width], images), { level: 9 }));
  writeFileSync(join(target, `${prefix}-labels-idx1-ubyte.gz`), gzipSync(encodeIdx([labels.length], labels), { level: 9 }));
  process.stdout.write(`${split}: ${labels.length} images (${perClass} per class) -> ${target}\n`);
}
