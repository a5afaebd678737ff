// Buffer reuse: a caching allocator for the float buffers that ops create.
//
// A training step allocates the same buffers every time: each activation, each saved mask,
// each gradient, with the same sizes in the same order. Allocating them afresh costs a zero
// fill by the OS, page faults, and garbage collection of the previous step's buffers. Inside
// `reuseBuffers(fn)`, ops take their buffers from free lists kept per exact length, and when
// `fn` returns every buffer it took goes back on its free list for the next call. After the
// first (warm-up) step, a step allocates nothing new (test/buffers.test.ts measures RSS).
//
// Like PyTorch's caching allocator, the cache keeps the peak of what a step needed; `emptyCache()`
// gives it back. Like TensorFlow.js's `tidy`, tensors made inside the scope must not be used
// after it: their memory is handed to the next step. Leaf gradients (`.grad`) made inside count
// too, so a training step puts zeroGrad, forward, backward and the optimizer step in one scope.
//
// Cached buffers live in shared memory, so that the worker threads of parallel.ts can work on
// them in place (no copy in and out); outside a scope, `alloc` is a plain `new Float32Array`.
// Where the engine has shared WebAssembly memory, that is one arena, a WebAssembly.Memory that
// the WebAssembly kernels of every thread import: they read and write the tensors where they
// are, by address. The arena only grows (a WebAssembly memory cannot shrink); its buffers are
// handed out from free lists and, for new lengths, from its end, 64-byte aligned (a cache line:
// two threads writing neighbouring buffers never share one). Past its maximum, and where there
// is no shared WebAssembly memory, each buffer is a SharedArrayBuffer of its own.

/**
 * Shared memory where the JavaScript engine has it; a browser page that is not cross-origin
 * isolated has no SharedArrayBuffer, and there (one thread, nothing to share) plain memory does.
 */
const SharedMemory: new (bytes: number) => ArrayBufferLike = typeof SharedArrayBuffer === 'function' ? SharedArrayBuffer : ArrayBuffer;

/** The arena's largest size, in 64 KiB pages: 2 GiB, so that every address fits a WebAssembly i32 as a positive number. */
export const ARENA_MAX_PAGES = 32768;
const PAGE_BYTES = 65536;
/** Alignment of the arena's buffers, in bytes. */
const ARENA_ALIGN = 64;

/** The arena, or null where shared WebAssembly memory cannot be made (no SharedArrayBuffer: a page that is not cross-origin isolated). */
const arena: WebAssembly.Memory | null = makeArena();
/** The arena's first free byte, and the highest byte ever handed out (below it, memory may hold old values). */
let arenaEnd = 0;
let arenaDirtyEnd = 0;
/** Arena buffers handed out and not dropped (emptyCache resets the arena when this is 0). */
let arenaBuffersLive = 0;

function makeArena(): WebAssembly.Memory | null {
  if (typeof SharedArrayBuffer !== 'function' || typeof WebAssembly !== 'object') return null;
  try {
    return new WebAssembly.Memory({ initial: 0, maximum: ARENA_MAX_PAGES, shared: true });
  } catch {
    return null;
  }
}

/** A new buffer of `length` floats from the arena's end, or null when the arena is missing or full. */
function arenaAlloc(length: number): Float32Array | null {
  if (arena === null) return null;
  const start = arenaEnd, end = start + Math.ceil((length * 4) / ARENA_ALIGN) * ARENA_ALIGN;
  if (end > ARENA_MAX_PAGES * PAGE_BYTES) return null;
  const have = arena.buffer.byteLength;
  if (end > have) {
    // Grow by at least a quarter, so that a growing working set costs few grow calls.
    const pages = Math.min(ARENA_MAX_PAGES, Math.max(Math.ceil(end / PAGE_BYTES), Math.ceil((have * 1.25) / PAGE_BYTES)));
    try {
      arena.grow(pages - have / PAGE_BYTES);
    } catch {
      return null; // the system would not give the memory: a buffer of its own instead
    }
  }
  arenaEnd = end;
  const buffer = new Float32Array(arena.buffer, start, length);
  if (start < arenaDirtyEnd) buffer.fill(0); // grown memory is zero; reused memory after a reset is not
  arenaDirtyEnd = Math.max(arenaDirtyEnd, end);
  arenaViews.add(buffer);
  arenaBuffersLive++;
  return buffer;
}

/** The arena (a shared WebAssembly.Memory the kernels import), or null. */
export function arenaMemory(): WebAssembly.Memory | null {
  return arena;
}

/** Where a buffer starts in the arena, in floats, if it is one the cache made there (exactly that view); else -1. */
export function arenaOffset(buffer: Float32Array): number {
  return arenaViews.has(buffer) ? buffer.byteOffset / 4 : -1;
}

/** Free buffers by exact length. */
const freeLists = new Map<number, Float32Array[]>();
/** Every buffer of its own this cache made (in use or free), so that `isCached` can tell them apart. */
const cached = new WeakSet<ArrayBufferLike>();
/** Every buffer this cache made in the arena (the views themselves). */
const arenaViews = new WeakSet<Float32Array>();
/** Buffers taken in each open scope (innermost last). */
const scopes: Set<Float32Array>[] = [];
/** Called with every buffer the cache drops (emptyCache), so worker threads can forget it. */
const dropListeners: ((buffer: Float32Array) => void)[] = [];
let cachedBytes = 0;

/**
 * A zero-filled float32 buffer of `length` elements: from the cache inside `reuseBuffers`, else
 * freshly allocated. `zero: false` skips the fill for buffers the caller overwrites completely.
 */
export function alloc(length: number, zero = true): Float32Array {
  const scope = scopes[scopes.length - 1];
  if (scope === undefined) return new Float32Array(length);
  let buffer = freeLists.get(length)?.pop();
  if (buffer === undefined) {
    const fromArena = arenaAlloc(length);
    if (fromArena !== null) buffer = fromArena;
    else {
      buffer = new Float32Array(new SharedMemory(length * 4));
      cached.add(buffer.buffer);
    }
    cachedBytes += length * 4;
  } else if (zero) {
    buffer.fill(0);
  }
  scope.add(buffer);
  return buffer;
}

/** True inside `reuseBuffers` (where `alloc` hands out shared, reusable memory). */
export function inReuseScope(): boolean {
  return scopes.length > 0;
}

/** True for a buffer made by this cache (shared memory the worker threads may use in place), the very view it handed out. */
export function isCached(buffer: Float32Array): boolean {
  return arenaViews.has(buffer) || (cached.has(buffer.buffer) && buffer.byteOffset === 0 && buffer.length * 4 === buffer.buffer.byteLength);
}

/**
 * Run `fn` with buffer reuse: the buffers ops take inside come from the cache and return to it
 * when `fn` returns or throws. Return plain values (numbers, copies), not tensors made inside.
 */
export function reuseBuffers<T>(fn: () => T): T {
  const taken = new Set<Float32Array>();
  scopes.push(taken);
  try {
    return fn();
  } finally {
    scopes.pop();
    for (const buffer of taken) putBack(buffer);
  }
}

function putBack(buffer: Float32Array): void {
  let list = freeLists.get(buffer.length);
  if (list === undefined) freeLists.set(buffer.length, (list = []));
  list.push(buffer);
}

/**
 * Hand a buffer back before the scope ends, when the caller knows nothing refers to it any more
 * (an op's scratch space, a gradient already consumed by backward): a later op of the same step
 * can then reuse it, which keeps a step's peak memory near that of garbage collection.
 * Buffers not taken in the innermost scope are left alone.
 */
export function release(buffer: Float32Array): void {
  const scope = scopes[scopes.length - 1];
  if (scope !== undefined && scope.delete(buffer)) putBack(buffer);
}

/** Bytes held by the cache (in use and free). */
export function cacheBytes(): number {
  return cachedBytes;
}

/**
 * Give the free buffers back (buffers in use by an open scope stay). Buffers of their own go to
 * the garbage collector. The arena cannot shrink: when none of its buffers is in use it is
 * emptied, to be handed out again from its start; else its free buffers stay on their lists.
 */
export function emptyCache(): void {
  const arenaInUse = arenaBuffersLive - [...freeLists.values()].reduce((n, list) => n + list.filter((b) => arenaViews.has(b)).length, 0) > 0;
  for (const [length, list] of freeLists) {
    const keep = (buffer: Float32Array) => arenaInUse && arenaViews.has(buffer);
    const kept = list.filter(keep);
    for (const buffer of list) {
      if (keep(buffer)) continue;
      cachedBytes -= buffer.length * 4;
      if (arenaViews.has(buffer)) {
        arenaViews.delete(buffer);
        arenaBuffersLive--;
      }
      for (const listener of dropListeners) listener(buffer);
    }
    if (kept.length > 0) freeLists.set(length, kept);
    else freeLists.delete(length);
  }
  if (arenaBuffersLive === 0) arenaEnd = 0;
}

/** parallel.ts registers here to learn which cached buffers are gone. */
export function onCacheDrop(listener: (buffer: Float32Array) => void): void {
  dropListeners.push(listener);
}
