// The package works as a user installs it: built to dist/, packed, installed, imported with types;
// and every TypeScript snippet in the README and docs/ runs verbatim against the installed package.
import { execFile, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFileSync, existsSync, mkdirSync, symlinkSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { TEST_TMP_PREFIX } from './global-setup.js';
import { ROOT } from './helpers.js';

/** Every ```ts block of the README and docs/*.md, with where it comes from. */
function snippets(): { where: string; code: string }[] {
  const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  return files.flatMap((file) => {
    const text = readFileSync(join(ROOT, file), 'utf8');
    return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => ({ where: `${file}:${text.slice(0, m.index).split('\n').length}`, code: m[1] }));
  });
}

// tsx runs the .ts files, as a user of the package would: the snippets with the ESM-only hook
// docs/library.md advises (`node --import tsx/esm snippet.ts`), the CommonJS project's main.ts
// with the full one (a .ts file in a CommonJS package needs tsx's CommonJS hook).
const TSX = import.meta.resolve('tsx');
const TSX_ESM = import.meta.resolve('tsx/esm');

/** Debian's Chromium (.ci/run installs it), for the snippets that run in a browser. */
const CHROMIUM = '/usr/bin/chromium';

describe('npm package', () => {
  let app: string;
  beforeAll(() => {
    const dir = mkdtempSync(join(tmpdir(), 'pkg-'));
    execFileSync('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, stdio: 'pipe' });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toMatch(/^mobilenet-ts-.*\.tgz$/);
    app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }));
    execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tarball)], { cwd: app, stdio: 'pipe' });
    // What the docs' deployment snippet starts from: `export runs/default weights/default.onnx`
    // of a (here one-epoch, few-image) default run, a sample image, and ONNX Runtime beside the
    // package (linked from this project's devDependencies, as `npm install onnxruntime-web` would put it).
    const cli = join(app, 'node_modules/.bin/mobilenet');
    execFileSync(cli, ['train', '--output-dir', 'runs/default', '--epochs', '1', '--per-class', '5', '-b', '10', '--log-interval', '0'], { cwd: app, stdio: 'pipe' });
    execFileSync(cli, ['export', 'runs/default', 'weights/default.onnx'], { cwd: app, stdio: 'pipe' });
    mkdirSync(join(app, 'data/samples'), { recursive: true });
    for (const f of readdirSync(join(ROOT, 'data/samples'))) copyFileSync(join(ROOT, 'data/samples', f), join(app, 'data/samples', f));
    symlinkSync(join(ROOT, 'node_modules/onnxruntime-web'), join(app, 'node_modules/onnxruntime-web'), 'dir');
  }, 240_000);

  it('installs and imports as mobilenet-ts (ESM), with type declarations and the CLI bin', () => {
    writeFileSync(join(app, 'main.mjs'), "import { fromArray, sum, mul } from 'mobilenet-ts';\nconst x = fromArray([1, 2, 3], undefined, { requiresGrad: true });\nsum(mul(x, x)).backward();\nconsole.log(JSON.stringify(Array.from(x.grad.data)));\n");
    expect(execFileSync('node', ['main.mjs'], { cwd: app }).toString().trim()).toBe('[2,4,6]');
    expect(readdirSync(join(app, 'node_modules/mobilenet-ts/dist/src'))).toContain('index.d.ts');
    // The learner's page, built, for `mobilenet step --web` from the installed package.
    expect(readdirSync(join(app, 'node_modules/mobilenet-ts/dist/web'))).toEqual(expect.arrayContaining(['index.html', 'page.js', 'worker.js', 'samples.json']));
    expect(execFileSync(join(app, 'node_modules/.bin/mobilenet'), ['--help'], { cwd: app }).toString()).toContain('Usage: mobilenet');
  });
  it('a CommonJS project can use it too (require of the ES module, Node >= 20.19)', () => {
    const cjs = join(app, 'cjs');
    mkdirSync(cjs, { recursive: true });
    writeFileSync(join(cjs, 'package.json'), JSON.stringify({ name: 'cjs-app', private: true }));
    writeFileSync(join(cjs, 'main.ts'), "import { fromArray, sum } from 'mobilenet-ts';\nconsole.log(sum(fromArray([1, 2, 3])).item());\n");
    writeFileSync(join(cjs, 'main.cjs'), "const { fromArray, sum } = require('mobilenet-ts');\nconsole.log(sum(fromArray([4, 5])).item());\n");
    expect(execFileSync('node', ['--import', TSX, 'main.ts'], { cwd: cjs, encoding: 'utf8' }).trim()).toBe('6');
    expect(execFileSync('node', ['main.cjs'], { cwd: cjs, encoding: 'utf8' }).trim()).toBe('9');
  });
  it.each(snippets())('the snippet at $where runs verbatim', ({ where, code }) => {
    const file = join(app, `snippet-${where.replace(/[^a-z0-9]+/gi, '-')}.ts`);
    writeFileSync(file, code);
    execFileSync('node', ['--import', TSX_ESM, file], { cwd: app, encoding: 'utf8', stdio: 'pipe', timeout: 300_000 });
  }, 300_000);
  it.skipIf(!existsSync(CHROMIUM))('the browser snippet of docs/cli.md classifies the image in Chromium', async () => {
    const text = readFileSync(join(ROOT, 'docs/cli.md'), 'utf8');
    const page = /^```html\n([\s\S]*?)^```$/m.exec(text)![1];
    // The folder the docs say to serve: the page, the model, the image, ONNX Runtime's two files.
    const site = join(app, 'site');
    mkdirSync(site);
    writeFileSync(join(site, 'index.html'), page);
    copyFileSync(join(app, 'weights/default.onnx'), join(site, 'default.onnx'));
    copyFileSync(join(ROOT, 'data/samples/dress.png'), join(site, 'dress.png'));
    for (const f of ['ort.wasm.bundle.min.mjs', 'ort-wasm-simd-threaded.wasm']) copyFileSync(join(ROOT, 'node_modules/onnxruntime-web/dist', f), join(site, f));
    const types: Record<string, string> = { '.html': 'text/html', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.png': 'image/png' };
    const server = createServer((request, response) => {
      const file = join(site, new URL(request.url ?? '/', 'http://x').pathname);
      if (!existsSync(file)) return void response.writeHead(404).end();
      response.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const { port } = server.address() as AddressInfo;
      const dom = await new Promise<string>((done, fail) =>
        execFile(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', `--user-data-dir=${join(app, 'chromium-profile')}`, '--virtual-time-budget=30000', '--dump-dom', `http://127.0.0.1:${port}/index.html`], { timeout: 120_000 }, (error, stdout) => (error ? fail(error) : done(stdout))),
      );
      expect(dom).toMatch(/<body>(T-shirt\/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot)<\/body>/);
    } finally {
      server.close();
    }
  }, 180_000);
  it("the installed README's and docs' relative links lead to files in the package", () => {
    const pkg = join(app, 'node_modules/mobilenet-ts');
    const pages = ['README.md', ...readdirSync(join(pkg, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    const broken: string[] = [];
    for (const page of pages) {
      const text = readFileSync(join(pkg, page), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
        if (!existsSync(join(pkg, dirname(page), target))) broken.push(`${page} -> ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
  it('a fresh install has no unreviewed install scripts (npm ci prints no warning)', () => {
    expect(execFileSync('npm', ['install-scripts', 'ls'], { cwd: ROOT, encoding: 'utf8' })).toContain('No packages with unreviewed install scripts');
  });
  it('the test run keeps its temporary files in one folder, removed at the end (not loose in /tmp)', () => {
    expect(tmpdir()).toContain(TEST_TMP_PREFIX);
  });
});
