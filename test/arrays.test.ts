// Array reductions that do not spread their input into call arguments.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxAbsOf, maxOf, minOf } from '../src/tensor/arrays.js';

const ROOT = resolve(import.meta.dirname, '..');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

describe('array reductions', () => {
  it('maxOf / minOf / maxAbsOf agree with a sort on 1M values (far past what spreading survives)', () => {
    const values = Float32Array.from({ length: 1_000_000 }, (_, i) => Math.sin(i * 0.37) * (i % 1000));
    const sorted = Float32Array.from(values).sort();
    expect(maxOf(values)).toBe(sorted[sorted.length - 1]);
    expect(minOf(values)).toBe(sorted[0]);
    expect(maxAbsOf(values)).toBe(Math.max(Math.abs(sorted[0]), Math.abs(sorted[sorted.length - 1])));
    expect(maxOf([])).toBe(-Infinity);
    expect(minOf([])).toBe(Infinity);
  });
  it('no library or CLI code spreads an array into Math.max / Math.min arguments', () => {
    const offenders = [...sourceFiles(join(ROOT, 'src')), ...sourceFiles(join(ROOT, 'cli'))].flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .map((line, i) => ({ line, where: `${file.slice(ROOT.length + 1)}:${i + 1}` }))
        .filter(({ line }) => /Math\.(max|min)\([^)]*\.\.\./.test(line))
        .map(({ where, line }) => `${where}: ${line.trim()}`),
    );
    expect(offenders).toEqual([]);
  });
});
