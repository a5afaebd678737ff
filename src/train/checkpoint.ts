// Checkpoints: one safetensors file holding everything a run needs to continue bit-for-bit:
// model parameters and buffers (`model.*`), optimizer state (`optim.*`), and in __metadata__ the
// run's config, progress (epoch, batch, step, best metric), scheduler and RNG states, the
// dataset's fingerprint, and a sha256 of the tensor payload that is verified on load.
//
// Files in the output directory: `last.safetensors` (rewritten as training goes),
// `previous.safetensors` (the one before it) and `best.safetensors` (best validation top-1).
// Every write goes to a temporary file that is fsynced and renamed over the target, so at
// every moment each name holds either the old complete file or the new complete file.

import { createHash } from 'node:crypto';
import { existsSync, linkSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadSafetensors, serializeSafetensors, writeFileAtomic, type TensorToWrite } from '../tensor/safetensors.js';

/** The format tag in every checkpoint's metadata. */
export const CHECKPOINT_FORMAT = 'mobilenet-ts-checkpoint/1';

/** A checkpoint that cannot be read or used; the message names the file. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** What a checkpoint holds: model tensors, optimizer buffers and JSON metadata. */
export interface CheckpointContent {
  /** Model state dict (parameters and buffers). */
  model: Map<string, Float32Array | { shape: readonly number[]; data: Float32Array }>;
  optimizer: Map<string, Float32Array>;
  /** The model's exponential moving average (--model-ema), by state-dict key; absent without one. */
  ema?: Map<string, Float32Array>;
  /** JSON-serialisable sections stored in the metadata. */
  meta: Record<string, unknown>;
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

/** A checkpoint as safetensors bytes, with a sha256 of the payload in the metadata. */
export function serializeCheckpoint(content: CheckpointContent): Uint8Array {
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, v] of content.model) tensors.set(`model.${k}`, v instanceof Float32Array ? { shape: [v.length], data: v } : v);
  for (const [k, v] of content.optimizer) tensors.set(`optim.${k}`, { shape: [v.length], data: v });
  for (const [k, v] of content.ema ?? []) tensors.set(`ema.${k}`, { shape: [v.length], data: v });
  const metadata: Record<string, string> = { format: CHECKPOINT_FORMAT, payload_sha256: payloadDigest(tensors) };
  for (const [k, v] of Object.entries(content.meta)) metadata[k] = JSON.stringify(v);
  return serializeSafetensors(tensors, metadata);
}

/** A checkpoint read back: model tensors, optimizer buffers, metadata. */
export interface LoadedCheckpoint {
  model: Map<string, { shape: number[]; data: Float32Array }>;
  optimizer: Map<string, Float32Array>;
  ema: Map<string, Float32Array>;
  meta: Record<string, unknown>;
}

/** Read and verify a checkpoint (format, payload sha256); errors name the file. */
export function readCheckpoint(path: string): LoadedCheckpoint {
  const file = loadSafetensors(path);
  if (file.metadata.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(`${path}: not a mobilenet-ts checkpoint (format ${JSON.stringify(file.metadata.format ?? null)}, expected ${CHECKPOINT_FORMAT})`);
  }
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, t] of file.tensors) tensors.set(k, t);
  const digest = payloadDigest(tensors);
  if (digest !== file.metadata.payload_sha256) {
    throw new CheckpointError(`${path}: payload sha256 ${digest.slice(0, 12)}... does not match the recorded ${String(file.metadata.payload_sha256).slice(0, 12)}... (the file is corrupt)`);
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
    if (k === 'format' || k === 'payload_sha256') continue;
    try {
      meta[k] = JSON.parse(v);
    } catch {
      throw new CheckpointError(`${path}: metadata '${k}' is not valid JSON`);
    }
  }
  return { model, optimizer, ema, meta };
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
  writer.write(staged, bytes);
  if (existsSync(last)) {
    const prevTmp = join(dir, `.previous-${process.pid}.safetensors`);
    rmSync(prevTmp, { force: true });
    linkSync(last, prevTmp);
    renameSync(prevTmp, join(dir, PREVIOUS_CHECKPOINT));
  }
  renameSync(staged, last);
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
