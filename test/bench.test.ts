// The PyTorch side of `npm run bench -- --compare torch` must run on the threads it is given.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hasTorch, ROOT } from './helpers.js';

describe.skipIf(!hasTorch())('bench/torch_bench.py', () => {
  it('one thread keeps PyTorch on one core (OpenBLAS\'s own pool included)', () => {
    // Before the fix, OpenBLAS ran G1's GEMMs on every core whatever torch.set_num_threads said:
    // 1.8 cores busy on this 2-core machine.
    const r = spawnSync('/usr/bin/python3', [join(ROOT, 'bench/torch_bench.py'), '--workload', 'G1', '--threads', '1', '--min-seconds', '1'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const [row] = JSON.parse(r.stdout.trim().split('\n').pop()!) as { threads: number; coresUsed: number }[];
    expect(row.threads).toBe(1);
    expect(row.coresUsed).toBeLessThan(1.15);
  }, 180_000);
});
