// Checkpoints: one safetensors file holding everything a run needs to continue bit-for-bit:
// model parameters and buffers (`model.*`), optimizer state (`optim.*`), and in __metadata__ the
// run's config, progress (epoch, batch, step, best metric), scheduler and RNG states, the
// dataset's fingerprint, and a sha256 of the whole content (every metadata entry and every
// tensor) that is verified on load: an edited learning rate is as corrupt as a flipped bit.
//
// Files in the output directory: `last.safetensors` (rewritten as training goes),
// `previous.safetensors` (the one before it) and `best.safetensors` (best validation top-1).
// Every write goes to a temporary file that is fsynced and renamed over the target, so at
// every moment each name holds either the old complete file or the new complete file.

import { createHash } from 'node:crypto';
import { closeSync, existsSync, linkSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { asFileWriteError, writeFileAtomic } from '../tensor/files.js';
import { loadSafetensors, serializeSafetensors, type TensorToWrite } from '../tensor/safetensors.js';
import { CheckpointError, readCheckpointMetadata, type CheckpointMetadata } from './metadata.js';

/** The format tag in every checkpoint's metadata. */
export const CHECKPOINT_FORMAT = 'mobilenet-ts-checkpoint/1';

export { CheckpointError };

/** What a checkpoint holds: model tensors, optimizer buffers and JSON metadata. */
export interface CheckpointContent {
  /** Model state dict (parameters and buffers). */
  model: Map<string, Float32Array | { shape: readonly number[]; data: Float32Array }>;
  optimizer: Map<string, Float32Array>;
  /** The model's exponential moving average (--model-ema), by state-dict key; absent without one. */
  ema?: Map<string, Float32Array>;
  /** The metadata: one JSON section per field. */
  meta: CheckpointMetadata;
}

/** sha256 over every tensor's name, shape and bytes, in order. */
export function payloadDigest(tensors: Map<string, TensorToWrite>): string {
  const h = createHash('sha256');
  for (const [name, t] of tensors) {
    h.update(`${name}:${t.shape.join('x')}:`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex');
}

/** The metadata key of the whole-content digest (`contentDigest`). */
const CONTENT_DIGEST = 'sha256';
/** The metadata key of the tensors-only digest that checkpoints before the whole-content one carried. */
const PAYLOAD_DIGEST = 'payload_sha256';

/**
 * sha256 over every metadata entry but the digest itself (sorted by key, each key and value
 * length-prefixed so that no two contents hash alike) and then the tensor payload.
 */
export function contentDigest(metadata: Record<string, string>, tensors: Map<string, TensorToWrite>): string {
  const h = createHash('sha256');
  for (const key of Object.keys(metadata).filter((k) => k !== CONTENT_DIGEST).sort()) h.update(`${key.length}:${key}=${metadata[key].length}:${metadata[key]};`);
  h.update(payloadDigest(tensors));
  return h.digest('hex');
}

/** A checkpoint as safetensors bytes, with a sha256 of its whole content in the metadata. */
export function serializeCheckpoint(content: CheckpointContent): Uint8Array {
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, v] of content.model) tensors.set(`model.${k}`, v instanceof Float32Array ? { shape: [v.length], data: v } : v);
  for (const [k, v] of content.optimizer) tensors.set(`optim.${k}`, { shape: [v.length], data: v });
  for (const [k, v] of content.ema ?? []) tensors.set(`ema.${k}`, { shape: [v.length], data: v });
  const metadata: Record<string, string> = { format: CHECKPOINT_FORMAT };
  for (const [k, v] of Object.entries(content.meta)) if (v !== undefined) metadata[k] = JSON.stringify(v);
  metadata[CONTENT_DIGEST] = contentDigest(metadata, tensors);
  return serializeSafetensors(tensors, metadata);
}

/** A checkpoint read back: model tensors, optimizer buffers, metadata. */
export interface LoadedCheckpoint {
  model: Map<string, { shape: number[]; data: Float32Array }>;
  optimizer: Map<string, Float32Array>;
  ema: Map<string, Float32Array>;
  /** The metadata, checked by readCheckpointMetadata. */
  meta: CheckpointMetadata;
}

/** Read and verify a checkpoint (format, sha256 of the whole content, then every metadata field); errors name the file. */
export function readCheckpoint(path: string): LoadedCheckpoint {
  const file = loadSafetensors(path);
  if (file.metadata.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${path}: not a mobilenet-ts checkpoint (format ${JSON.stringify(file.metadata.format ?? null)}, expected ${CHECKPOINT_FORMAT})`);
  }
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, t] of file.tensors) tensors.set(k, t);
  // Checkpoints written before the whole-content digest carry a digest of the tensors only;
  // they are still read (their metadata cannot be verified).
  const recorded = file.metadata[CONTENT_DIGEST] ?? file.metadata[PAYLOAD_DIGEST];
  const digest = file.metadata[CONTENT_DIGEST] !== undefined ? contentDigest(file.metadata, tensors) : payloadDigest(tensors);
  if (recorded === undefined) throw new CheckpointError(`${path}: no sha256 in its metadata (not written by mobilenet-ts, or cut short)`);
  if (digest !== recorded) {
    throw new CheckpointError(`${path}: its sha256 ${digest.slice(0, 12)}... does not match the recorded ${recorded.slice(0, 12)}...: the file is corrupt or was edited (its settings and progress are verified with its tensors; to train with other settings, start a new run with --init)`);
  }
  const model = new Map<string, { shape: number[]; data: Float32Array }>();
  const optimizer = new Map<string, Float32Array>();
  const ema = new Map<string, Float32Array>();
  for (const [k, t] of file.tensors) {
    if (!(t.data instanceof Float32Array)) throw new CheckpointError(`${path}: tensor '${k}' is ${t.dtype}, expected F32`);
    if (k.startsWith('model.')) model.set(k.slice(6), { shape: t.shape, data: t.data });
    else if (k.startsWith('optim.')) optimizer.set(k.slice(6), t.data);
    else if (k.startsWith('ema.')) ema.set(k.slice(4), t.data);
  }
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(file.metadata)) {
    if (k === 'format' || k === CONTENT_DIGEST || k === PAYLOAD_DIGEST) continue;
    try {
      meta[k] = JSON.parse(v);
    } catch {
      throw new CheckpointError(`${path}: metadata '${k}' is not valid JSON`);
    }
  }
  return { model, optimizer, ema, meta: readCheckpointMetadata(meta, path) };
}

/** File name of the latest checkpoint. */
export const LAST_CHECKPOINT = 'last.safetensors';
/** File name of the checkpoint before the latest (the fallback when `last` is corrupt). */
export const PREVIOUS_CHECKPOINT = 'previous.safetensors';
/** File name of the checkpoint with the best validation top-1. */
export const BEST_CHECKPOINT = 'best.safetensors';

/** Hook for tests: lets a test inject a write failure (a full disk) into checkpoint writes. */
export interface CheckpointWriter {
  write(path: string, bytes: Uint8Array): void;
}

/** Writes checkpoints atomically: a temporary file, fsynced, then renamed. */
export const atomicWriter: CheckpointWriter = { write: writeFileAtomic };

/**
 * Write `last`, keeping the file it replaces as `previous`. Order: the new file is written and
 * fsynced under a temporary name; the old `last` is hard-linked to `previous`; the new file is
 * renamed over `last`. A crash anywhere leaves a complete `last` (old or new).
 */
export function saveLastCheckpoint(dir: string, bytes: Uint8Array, writer: CheckpointWriter = atomicWriter): string {
  const last = join(dir, LAST_CHECKPOINT);
  const staged = join(dir, `.staged-${process.pid}.safetensors`);
  // A failure (a full disk) names `last`, the file the user knows, and leaves the old one in place.
  try {
    writer.write(staged, bytes);
    if (existsSync(last)) {
      const prevTmp = join(dir, `.previous-${process.pid}.safetensors`);
      rmSync(prevTmp, { force: true });
      linkSync(last, prevTmp);
      renameSync(prevTmp, join(dir, PREVIOUS_CHECKPOINT));
    }
    renameSync(staged, last);
  } catch (e) {
    rmSync(staged, { force: true });
    throw asFileWriteError(e, last);
  }
  return last;
}

/** Write `best.safetensors` atomically. */
export function saveBestCheckpoint(dir: string, bytes: Uint8Array, writer: CheckpointWriter = atomicWriter): string {
  const path = join(dir, BEST_CHECKPOINT);
  writer.write(path, bytes);
  return path;
}

/**
 * The checkpoint to resume from: `path` itself if it is a file, else `last` in that directory,
 * falling back to `previous` (with a warning) when `last` is corrupt.
 */
/** A checkpoint found for resuming, and the file it was read from. */
export interface ResumableCheckpoint {
  path: string;
  checkpoint: LoadedCheckpoint;
}

export function findResumableCheckpoint(path: string, warn: (message: string) => void): ResumableCheckpoint {
  const candidates = path.endsWith('.safetensors') ? [path] : [join(path, LAST_CHECKPOINT), join(path, PREVIOUS_CHECKPOINT)];
  const errors: string[] = [];
  for (const candidate of candidates) {
    if (!existsSync(candidate)) {
      errors.push(`${candidate}: not found`);
      continue;
    }
    try {
      const checkpoint = readCheckpoint(candidate);
      if (errors.length > 0) warn(`resuming from ${candidate} because ${errors.join('; ')}`);
      return { path: candidate, checkpoint };
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  throw new CheckpointError(`cannot resume: ${errors.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// The run folder belongs to one run
// ---------------------------------------------------------------------------------------------

/** The output folder holds another run, or another process is writing it; `dir` is the folder. */
export class RunFolderError extends Error {
  override name = 'RunFolderError';
  constructor(readonly dir: string, message: string) {
    super(message);
  }
}

/** The lock file's name in a run folder. */
export const RUN_LOCK = 'train.lock';

/** What a lock file says: who holds it. */
interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

/** A lock file without readable content younger than this may be one being written right now. */
const UNREADABLE_LOCK_GRACE_MS = 10_000;

/** Whether a process with this pid exists on this machine (EPERM: it exists, owned by another user). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A run folder's lock: `train.lock`, made with O_EXCL so that of two processes starting at once
 * exactly one gets it, holding the owner's pid. A lock left by a process that no longer exists
 * (killed with SIGKILL, a crash, a power cut) is stale and taken over; a lock this process
 * already holds is shared (the CLI locks before the trainer's `fit` does).
 */
export class RunLock {
  private released = false;

  private constructor(readonly path: string, private readonly owned: boolean) {}

  static acquire(dir: string): RunLock {
    const path = join(dir, RUN_LOCK);
    const me: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number;
      try {
        fd = openSync(path, 'wx');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw asFileWriteError(e, path);
        const owner = readLockOwner(path);
        if (owner !== null && owner.pid === me.pid && owner.host === me.host) return new RunLock(path, false);
        if (owner === null ? Date.now() - mtimeMs(path) < UNREADABLE_LOCK_GRACE_MS : owner.host !== me.host || processExists(owner.pid)) {
          const who = owner === null ? 'another process (it is starting)' : `another training (pid ${owner.pid}${owner.host !== me.host ? ` on ${owner.host}` : ''}, started ${owner.started})`;
          throw new RunFolderError(dir, `${dir} is being written by ${who}; wait for it to finish or stop it (if no such process runs, delete ${path})`);
        }
        rmSync(path, { force: true }); // stale: its process is gone
        continue;
      }
      try {
        writeSync(fd, JSON.stringify(me) + '\n');
      } catch (e) {
        closeSync(fd);
        rmSync(path, { force: true });
        throw asFileWriteError(e, path);
      }
      closeSync(fd);
      return new RunLock(path, true);
    }
    throw new RunFolderError(dir, `${dir}: could not take its lock ${path} (other processes keep taking it)`);
  }

  /** Remove the lock file if this handle made it (and it is still this process's). */
  release(): void {
    if (!this.owned || this.released) return;
    this.released = true;
    const owner = readLockOwner(this.path);
    if (owner !== null && owner.pid === process.pid) rmSync(this.path, { force: true });
  }
}

function readLockOwner(path: string): LockOwner | null {
  try {
    const owner = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockOwner>;
    return typeof owner.pid === 'number' && typeof owner.host === 'string' ? { pid: owner.pid, host: owner.host, started: String(owner.started) } : null;
  } catch {
    return null;
  }
}

function mtimeMs(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}
