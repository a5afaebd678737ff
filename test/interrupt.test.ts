// Ctrl-C as a user presses it: `npm run train` in a real terminal (tmux), interrupted at several
// moments of an epoch, each followed by `--resume`; the run ends bit-identical to one that was
// never interrupted. The terminal sends SIGINT to the whole foreground process group and `npm
// run` forwards its own copy, so one keypress reaches the trainer twice: it must still be one
// "stop after this batch", never "quit at once without a checkpoint".
// Knob: MOBILENET_INTERRUPTS (default 3) Ctrl-Cs.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/tensor/rng.js';
import { ROOT, runCli, tinyFashionMnist, weightsDigest } from './helpers.js';

const INTERRUPTS = Number(process.env.MOBILENET_INTERRUPTS ?? 3);
const hasTmux = spawnSync('tmux', ['-V']).status === 0;

describe.skipIf(!hasTmux)('Ctrl-C under npm run, in a real terminal', () => {
  it(`${INTERRUPTS} Ctrl-Cs at different moments, each followed by --resume, end with the weights of an uninterrupted run`, async () => {
    const data = tinyFashionMnist(640, 40);
    const epochs = 3;
    const batches = 10; // 640 images, batch 64
    const flags = ['--data-path', data, '--epochs', String(epochs), '--resolution', '40'];
    const straight = join(mkdtempSync(join(tmpdir(), 'straight-')), 'run');
    const s = runCli(['--threads', '1', 'train', ...flags, '--output-dir', straight, '--log-interval', '0']);
    expect(s.code, s.stderr).toBe(0);

    const run = join(mkdtempSync(join(tmpdir(), 'ctrl-c-')), 'run');
    const session = `ctrl-c-${process.pid}`;
    const tmux = (...args: string[]) => execFileSync('tmux', args, { encoding: 'utf8' });
    const screen = () => tmux('capture-pane', '-p', '-J', '-S', '-300', '-t', session);
    const log = join(run, 'metrics.jsonl');
    const steps = () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"batchEnd"')).length : 0);
    const waitFor = async (done: () => boolean, what: string, timeoutMs = 120_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!done()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; screen:\n${screen()}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    // An interactive shell, as a user has: Ctrl-C stops the foreground command, not the shell.
    tmux('new-session', '-d', '-s', session, '-x', '200', '-y', '50', 'env', 'PS1=$ ', 'bash', '--norc', '--noprofile');
    try {
      tmux('send-keys', '-t', session, `cd ${ROOT}`, 'Enter');
      const rng = new Rng(7);
      let finished = 0;
      for (let k = 0; k <= INTERRUPTS; k++) {
        const command = k === 0 ? `npm run train -- --threads 1 ${flags.join(' ')} --output-dir ${run}` : `npm run train -- --threads 1 --data-path ${data} --resume ${run}`;
        tmux('send-keys', '-t', session, command, 'Enter');
        // The shell's prompt back at the bottom: the command ended. Then ask for its status
        // (bash drops the rest of a command line after a Ctrl-C, so it is a command of its own).
        const status = async (what: string) => {
          await waitFor(() => screen().trimEnd().split('\n').at(-1) === '$', what);
          tmux('send-keys', '-t', session, `echo "EXIT-${k} $?"`, 'Enter');
          await waitFor(() => new RegExp(`EXIT-${k} \\d+`).test(screen()), `the status of run ${k}`);
          return new RegExp(`EXIT-${k} (\\d+)`).exec(screen())![1];
        };
        if (k === INTERRUPTS) {
          await waitFor(() => /done: \d+ epochs? in/.test(screen()), 'the last run to finish');
          expect(await status('the last run to finish')).toBe('0');
          break;
        }
        // Ctrl-C somewhere in the next 1..8 steps (early in an epoch, mid-epoch, near its end).
        const target = Math.min(steps() + rng.int(1, 9), epochs * batches - 2);
        await waitFor(() => steps() >= target, `step ${target}`);
        tmux('send-keys', '-t', session, 'C-c');
        const code = await status(`run ${k} to stop`);
        const text = screen();
        expect(text).toMatch(/stopping after this batch and saving a checkpoint/);
        expect(text).not.toMatch(/stopping now, without a checkpoint/);
        expect(text).toMatch(new RegExp(`resume with: mobilenet train --resume ${run}`));
        expect(code).toBe('130');
        finished = steps();
        tmux('send-keys', '-t', session, 'clear', 'Enter');
        await waitFor(() => !screen().includes(`EXIT-${k}`), 'the screen to clear');
      }
      expect(finished).toBeGreaterThan(0);
    } finally {
      spawnSync('tmux', ['kill-session', '-t', session]);
    }
    expect(weightsDigest(join(run, 'last.safetensors'))).toBe(weightsDigest(join(straight, 'last.safetensors')));
  }, 600_000);
});
