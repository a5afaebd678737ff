// `mobilenet experiment`: every grid at a tiny size, its results checked row by row; and a grid
// killed mid-run finishes, when run again, with the results of an uninterrupted one.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { EXPERIMENTS } from '../cli/experiment.js';
import { CLI_FROM_SOURCE, ROOT, runCli, tinyFashionMnist } from './helpers.js';

interface Results {
  experiment: string;
  epochs: number;
  seeds: number;
  rows: { label: string; model: string; alpha: number; rho: number; expansion: number; resolution: number; multAdds: number; params: number; seeds: number; top1: { mean: number; std: number; values: number[] } | null; secondsPerEpoch: number | null; imagesPerSecond: number | null; paper: string | null }[];
}

let data: string;
beforeAll(() => {
  data = tinyFashionMnist(48, 24);
});

const tiny = (name: string, out: string, extra: string[] = []) => runCli(['--threads', '1', 'experiment', name, '--data-path', data, '--epochs', '1', '--seeds', '1', '-b', '16', '--output-dir', out, ...extra], { timeoutMs: 300_000 });
const read = (out: string) => JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;

describe('mobilenet experiment, every grid at a tiny size', () => {
  const expectedRows: Record<string, number> = { 'separable-vs-full': 2, 'thin-vs-shallow': 2, width: 4, resolution: 4, tradeoff: 16, 'v1-vs-v2': 2, expansion: 5 };
  it('knows the seven experiments of the issue', () => {
    expect(Object.keys(EXPERIMENTS).sort()).toEqual(Object.keys(expectedRows).sort());
  });
  it.each(Object.keys(expectedRows))('%s: every configuration trained, every column filled, results.md and the plots written', (name) => {
    const out = join(mkdtempSync(join(tmpdir(), `exp-${name}-`)), 'grid');
    const r = tiny(name, out);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const results = read(out);
    expect(results).toMatchObject({ experiment: name, epochs: 1, seeds: 1 });
    expect(results.rows).toHaveLength(expectedRows[name]);
    for (const row of results.rows) {
      expect(row.seeds, row.label).toBe(1);
      expect(row.top1!.values).toHaveLength(1);
      expect(row.top1!.mean).toBeGreaterThanOrEqual(0);
      for (const v of [row.multAdds, row.params, row.resolution, row.secondsPerEpoch!, row.imagesPerSecond!]) expect(v, row.label).toBeGreaterThan(0);
    }
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    const tableRows = md.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| model') && !l.startsWith('|---'));
    expect(tableRows).toHaveLength(expectedRows[name]);
    for (const line of tableRows) expect(line.split(' | ')).toHaveLength(11);
    expect(md).not.toContain('not run yet');
    for (const png of ['accuracy-vs-mult-adds.png', 'accuracy-vs-parameters.png']) expect(readFileSync(join(out, png)).subarray(1, 4).toString()).toBe('PNG');
  }, 300_000);
  it("the paper's figures stand in their own column (Table 5 for thin-vs-shallow)", () => {
    const out = join(mkdtempSync(join(tmpdir(), 'exp-paper-')), 'grid');
    expect(tiny('thin-vs-shallow', out, ['--lr', '0.05']).code).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')).lr).toBe(0.05);
    const configs = readdirSync(out).filter((d) => d.startsWith('00-')).map((d) => JSON.parse(readFileSync(join(out, d, 'config.json'), 'utf8')));
    expect(configs.map((c) => c.lr)).toEqual([0.05]);
    // The grids' recipe is fixed, whatever train's defaults: no flips, no label smoothing.
    expect(configs.map((c) => [c.hflip, c.labelSmoothing])).toEqual([[false, 0]]);
    expect(read(out).rows.map((r) => r.paper)).toEqual(['68.4%', '65.3%']);
    expect(read(out).rows.map((r) => r.model)).toEqual(['v1', 'shallow']);
  }, 300_000);
  it('an unknown experiment lists the names; a run that fails is one line, exit 2', () => {
    const r = runCli(['experiment', 'depth']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("experiment 'depth': no such experiment; the experiments are separable-vs-full, thin-vs-shallow, width, resolution, tradeoff, v1-vs-v2, expansion");
    const failing = runCli(['--threads', '1', 'experiment', 'resolution', '--data-path', data, '--epochs', '1', '--seeds', '1', '-b', '48', '--jobs', '1', '--output-dir', join(mkdtempSync(join(tmpdir(), 'exp-fail-')), 'grid')]);
    expect(failing.code).toBe(2);
    expect(failing.stderr.trim().split('\n')).toHaveLength(1);
    expect(failing.stderr).toMatch(/run 1\/4: V1 alpha 0\.25 rho 1, seed 0 failed \(exit 2\)/);
    // Two at a time: run 2 fails at once (its checkpoint is garbage) while run 1 trains for long.
    // The failure stops run 1 as Ctrl-C would (it checkpoints, so running the command again
    // resumes it) and is reported once run 1 has exited: no training is left running.
    const grid = join(mkdtempSync(join(tmpdir(), 'exp-fail-')), 'grid');
    mkdirSync(join(grid, '01-v1-a0.25-r0.857-t6-seed0'), { recursive: true });
    writeFileSync(join(grid, '01-v1-a0.25-r0.857-t6-seed0', 'last.safetensors'), 'garbage');
    const beside = runCli(['--threads', '1', 'experiment', 'resolution', '--data-path', data, '--epochs', '200', '--seeds', '1', '-b', '16', '--jobs', '2', '--output-dir', grid]);
    expect(beside.code).toBe(2);
    expect(beside.stderr.trim().split('\n')).toHaveLength(1);
    expect(beside.stderr).toContain('run 2/4: V1 alpha 0.25 rho 0.857, seed 0 failed (exit 2)');
    expect(spawnSync('pgrep', ['-f', grid]).status).toBe(1);
  });
});

describe('Ctrl-C on a grid', () => {
  it('stops starting runs, lets the running ones checkpoint, says how to continue and exits 130; the same command resumes, and SIGTERM stops it the same way (143)', async () => {
    const grid = join(mkdtempSync(join(tmpdir(), 'exp-int-')), 'grid');
    const args = [...CLI_FROM_SOURCE, '--threads', '1', 'experiment', 'resolution', '--data-path', data, '--epochs', '200', '--seeds', '1', '-b', '16', '--jobs', '2', '--output-dir', grid];
    const start = () => {
      const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      const output = { stdout: '', stderr: '' };
      child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      return { child, output, exited };
    };
    // Both runs under way (each has written its first checkpoint), then SIGINT to the grid alone.
    const first = start();
    const runDirs = () => (existsSync(grid) ? readdirSync(grid).filter((d) => /^0[01]-/.test(d)) : []);
    while (!(runDirs().length === 2 && runDirs().every((d) => existsSync(join(grid, d, 'last.safetensors'))))) await new Promise((r) => setTimeout(r, 20));
    first.child.kill('SIGINT');
    expect(await first.exited).toBe(130);
    expect(first.output.stderr).toContain('stopping (Ctrl-C): the running trainings checkpoint after their current batch; run the same command again to continue');
    expect(spawnSync('pgrep', ['-f', grid]).status).toBe(1);
    // The same command resumes both runs (then is stopped by a SIGTERM, as a service manager would).
    const second = start();
    while (!second.output.stdout.includes('run 2/4') && second.child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(143);
    expect(second.output.stderr).toContain('stopping (SIGTERM): the running trainings checkpoint');
    expect(second.output.stdout).toContain('run 1/4: V1 alpha 0.25 rho 1, seed 0: resuming...');
    expect(second.output.stdout).toContain('run 2/4: V1 alpha 0.25 rho 0.857, seed 0: resuming...');
    expect(spawnSync('pgrep', ['-f', grid]).status).toBe(1);
  }, 120_000);
});

describe('a killed grid', () => {
  it('run again, skips the finished runs, resumes the killed one and ends with the results of an uninterrupted grid', async () => {
    const straight = join(mkdtempSync(join(tmpdir(), 'exp-straight-')), 'grid');
    expect(tiny('resolution', straight, ['--epochs', '2', '--jobs', '1']).code).toBe(0);
    const killed = join(mkdtempSync(join(tmpdir(), 'exp-killed-')), 'grid');
    const args = [...CLI_FROM_SOURCE, '--threads', '1', 'experiment', 'resolution', '--data-path', data, '--epochs', '2', '--seeds', '1', '-b', '16', '--jobs', '1', '--output-dir', killed];
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    // Kill once the second run has a checkpoint of its first epoch (the first run is finished).
    const secondRun = () => readdirSync(killed).filter((d) => d.startsWith('01-')).map((d) => join(killed, d))[0];
    while (!(existsSync(killed) && secondRun() !== undefined && existsSync(join(secondRun(), 'last.safetensors')))) await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGKILL');
    await exited;
    expect(existsSync(join(secondRun(), 'result.json'))).toBe(false);
    const again = tiny('resolution', killed, ['--epochs', '2', '--jobs', '1']);
    expect(again.code).toBe(0);
    expect(again.stderr).toBe('');
    expect(again.stdout).toMatch(/run 1\/4: V1 alpha 0\.25 rho 1, seed 0: done earlier, skipped/);
    expect(again.stdout).toMatch(/run 2\/4: V1 alpha 0\.25 rho 0\.857, seed 0: resuming\.\.\./);
    expect(read(killed).rows.map((r) => r.top1!.values)).toEqual(read(straight).rows.map((r) => r.top1!.values));
    // A result cut short (a full disk, say) is set aside and measured again from the run's checkpoint.
    const firstRun = readdirSync(killed).filter((d) => d.startsWith('00-')).map((d) => join(killed, d))[0];
    writeFileSync(join(firstRun, 'result.json'), '{"top1": 0.5, "lo');
    const third = tiny('resolution', killed, ['--epochs', '2', '--jobs', '1']);
    expect(third.code).toBe(0);
    expect(third.stderr).toContain(`warning: ${join(firstRun, 'result.json')} is not a readable result (kept as result.json.damaged); the run is resumed to measure it again`);
    expect(third.stdout).toMatch(/run 1\/4: V1 alpha 0\.25 rho 1, seed 0: resuming\.\.\./);
    expect(third.stdout).toMatch(/run 2\/4: .*done earlier, skipped/);
    expect(existsSync(join(firstRun, 'result.json.damaged'))).toBe(true);
    expect(read(killed).rows.map((r) => r.top1!.values)).toEqual(read(straight).rows.map((r) => r.top1!.values));
  }, 300_000);
});
