// `npm run build:web`: the learner's page as a static folder (default dist/web/) that any static
// file host serves. esbuild bundles web/page.ts (the page) and web/worker.ts (the engine, in a
// Web Worker) for the browser; every `node:*` import is pointed at web/node-shim.ts, so the
// bundle contains no Node API (test/web.test.ts checks). The bundled Fashion-MNIST test images
// the page offers are written beside it as samples.json.
//
//   node --import tsx/esm scripts/build-web.ts [OUT_DIR]

import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { loadIdxDataset } from '../src/train/datasets.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** How many test images of the bundled subset the page offers (the first of each class). */
const SAMPLES_PER_CLASS = 2;

/** Every `node:` module becomes the shim: the engine's Node-only paths are never taken in the page. */
const nodeShim: Plugin = {
  name: 'node-shim',
  setup(b) {
    b.onResolve({ filter: /^node:/ }, () => ({ path: join(ROOT, 'web/node-shim.ts') }));
  },
};

/** Build the page into `out`; returns the files written and the source files bundled (relative to the project). */
export async function buildWeb(target = join(ROOT, 'dist/web')): Promise<{ files: string[]; inputs: string[] }> {
  // Built beside the target and moved into place whole, so that a server reading the old folder
  // (a test, `step --web`) never sees half a build.
  const out = `${target}.building-${process.pid}`;
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const result = await build({
    metafile: true,
    entryPoints: { page: join(ROOT, 'web/page.ts'), worker: join(ROOT, 'web/worker.ts') },
    outdir: out,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: false,
    sourcemap: false,
    plugins: [nodeShim],
    logLevel: 'warning',
    legalComments: 'none',
  });
  for (const f of ['index.html', 'style.css']) copyFileSync(join(ROOT, 'web', f), join(out, f));
  const test = loadIdxDataset(join(ROOT, 'data/fashion-mnist-subset'), 'test');
  const samples: { label: number; pixels: string }[] = [];
  for (let c = 0; c < test.classNames.length; c++) {
    let found = 0;
    for (let i = 0; i < test.count && found < SAMPLES_PER_CLASS; i++) {
      if (test.labels[i] !== c) continue;
      samples.push({ label: c, pixels: Buffer.from(test.images.subarray(i * 784, (i + 1) * 784)).toString('base64') });
      found++;
    }
  }
  writeFileSync(join(out, 'samples.json'), JSON.stringify({ width: 28, height: 28, classNames: test.classNames, samples }));
  // What went into the bundle, for the test that keeps Node-only code (cli/, sharp, fs) out.
  const inputs = Object.keys(result.metafile.inputs);
  writeFileSync(join(out, 'inputs.json'), JSON.stringify(inputs, null, 1));
  const old = `${target}.old-${process.pid}`;
  if (existsSync(target)) renameSync(target, old);
  renameSync(out, target);
  rmSync(old, { recursive: true, force: true });
  return { files: ['index.html', 'style.css', 'page.js', 'worker.js', 'samples.json', 'inputs.json'].map((f) => join(target, f)), inputs };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { files } = await buildWeb(process.argv[2] ? resolve(process.argv[2]) : undefined);
  process.stdout.write(`wrote ${dirname(files[0])}: ${files.map((f) => f.slice(dirname(f).length + 1)).join(', ')}\n`);
}
