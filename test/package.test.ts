// The package works as a user installs it: built to dist/, packed, installed, imported with types;
// and every TypeScript snippet in the README and docs/ runs verbatim against the installed package.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
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
  }, 180_000);

  it('installs and imports as mobilenet-ts (ESM), with type declarations and the CLI bin', () => {
    writeFileSync(join(app, 'main.mjs'), "import { fromArray, sum, mul } from 'mobilenet-ts';\nconst x = fromArray([1, 2, 3], undefined, { requiresGrad: true });\nsum(mul(x, x)).backward();\nconsole.log(JSON.stringify(Array.from(x.grad.data)));\n");
    expect(execFileSync('node', ['main.mjs'], { cwd: app }).toString().trim()).toBe('[2,4,6]');
    expect(readdirSync(join(app, 'node_modules/mobilenet-ts/dist/src'))).toContain('index.d.ts');
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
