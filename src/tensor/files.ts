// Writing files so that nothing is lost: a file is written whole or not at all (a temporary
// file, fsynced, renamed over the target), and a failure (a full disk, no permission, a
// read-only folder) is one typed error that names the file the user knows, not Node's
// `write` call and a stack.

import { appendFileSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** A file that could not be written; `path` is the file meant, `code` Node's (ENOSPC, EACCES, ...). */
export class FileWriteError extends Error {
  override name = 'FileWriteError';
  constructor(readonly path: string, readonly code: string, readonly reason: string) {
    super(`cannot write ${path}: ${reason} (${code})`);
  }
}

/** `error` as a FileWriteError naming `path` ("no space left on device" out of "ENOSPC: no space left on device, write"). */
export function asFileWriteError(error: unknown, path: string): FileWriteError | unknown {
  if (error instanceof FileWriteError) return new FileWriteError(path, error.code, error.reason);
  const { code, message } = error as NodeJS.ErrnoException;
  if (typeof code !== 'string' || !/^E[A-Z]+$/.test(code)) return error;
  const reason = /^E[A-Z]+: ([^,]+)/.exec(message)?.[1] ?? message;
  return new FileWriteError(path, code, reason);
}

/** Run a write; a file-system error becomes a FileWriteError naming `path`. */
export function writing<T>(path: string, write: () => T): T {
  try {
    return write();
  } catch (e) {
    throw asFileWriteError(e, path);
  }
}

/**
 * Write `bytes` to `path` atomically: a temporary file beside it, fsynced, then renamed over
 * it, so `path` holds either its old content or the new, never a part. The folder is made on
 * demand (as `torch.save` users expect of an output folder). On failure the temporary file is
 * removed (a full disk gets its space back) and a FileWriteError names `path`.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  const tmp = `${path}.tmp-${process.pid}`;
  writing(path, () => {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(tmp, 'w');
    try {
      let written = 0;
      while (written < data.length) written += writeSync(fd, data, written, data.length - written);
      fsyncSync(fd);
    } catch (e) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw e;
    }
    closeSync(fd);
    renameSync(tmp, path);
  });
  try {
    const dirFd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch {
    // Some filesystems cannot fsync a directory; the rename itself is still atomic.
  }
}

/** Append `text` to `path` (a log); a failure is a FileWriteError naming it. */
export function appendToFile(path: string, text: string): void {
  writing(path, () => appendFileSync(path, text));
}
