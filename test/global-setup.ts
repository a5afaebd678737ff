// One temporary folder for the whole test run, removed at the end. Tests (and the CLI processes
// they start, and npm and tsx inside those) make their folders with os.tmpdir(), which reads
// TMPDIR: pointing it here keeps /tmp clean however many folders the tests create.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TEST_TMP_PREFIX = 'mobilenet-ts-test-';

export default function setup(): () => void {
  const root = mkdtempSync(join(tmpdir(), TEST_TMP_PREFIX));
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = root;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(root, { recursive: true, force: true });
  };
}
