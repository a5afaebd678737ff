// The package works as a user installs it: built to dist/, packed, installed, imported with types.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TEST_TMP_PREFIX } from './global-setup.js';

const ROOT = resolve(import.meta.dirname, '..');

describe('npm package', () => {
  it('a fresh install has no unreviewed install scripts (npm ci prints no warning)', () => {
    expect(execFileSync('npm', ['install-scripts', 'ls'], { cwd: ROOT, encoding: 'utf8' })).toContain('No packages with unreviewed install scripts');
  });
  it('the test run keeps its temporary files in one folder, removed at the end (not loose in /tmp)', () => {
    expect(tmpdir()).toContain(TEST_TMP_PREFIX);
  });
  it('builds, packs, installs and imports as mobilenet-ts (with the CLI bin)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pkg-'));
    execFileSync('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, stdio: 'pipe' });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    expect(tarball).toMatch(/^mobilenet-ts-.*\.tgz$/);
    const app = join(dir, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }));
    execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tarball)], { cwd: app, stdio: 'pipe' });
    writeFileSync(join(app, 'main.mjs'), "import { fromArray, sum, mul } from 'mobilenet-ts';\nconst x = fromArray([1, 2, 3], undefined, { requiresGrad: true });\nsum(mul(x, x)).backward();\nconsole.log(JSON.stringify(Array.from(x.grad.data)));\n");
    expect(execFileSync('node', ['main.mjs'], { cwd: app }).toString().trim()).toBe('[2,4,6]');
    // The type declarations ship too.
    expect(readdirSync(join(app, 'node_modules/mobilenet-ts/dist/src'))).toContain('index.d.ts');
    expect(execFileSync(join(app, 'node_modules/.bin/mobilenet'), ['--help'], { cwd: app }).toString()).toContain('Usage: mobilenet');
  }, 180_000);
});
