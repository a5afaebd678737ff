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
// Cached buffers live on SharedArrayBuffers, so that the worker threads of parallel.ts can work
// on them in place (no copy in and out); outside a scope, `alloc` is a plain `new Float32Array`.

/**
 * Shared memory where the JavaScript engine has it; a browser page that is not cross-origin
 * isolated has no SharedArrayBuffer, and there (one thread, nothing to share) plain memory does.
 */
const SharedMemory: new (bytes: number) => ArrayBufferLike = typeof SharedArrayBuffer === 'function' ? SharedArrayBuffer : ArrayBuffer;

/** Free buffers by exact length. */
const freeLists = new Map<number, Float32Array[]>();
/** Every buffer this cache made (in use or free), so that `isCached` can tell them apart. */
const cached = new WeakSet<ArrayBufferLike>();
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
    buffer = new Float32Array(new SharedMemory(length * 4));
    cached.add(buffer.buffer);
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

/** True for a buffer made by this cache (shared memory the worker threads may use in place). */
export function isCached(buffer: Float32Array): boolean {
  return cached.has(buffer.buffer) && buffer.byteOffset === 0 && buffer.length * 4 === buffer.buffer.byteLength;
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

/** Give the free buffers back (buffers in use by an open scope stay). */
export function emptyCache(): void {
  for (const list of freeLists.values()) {
    for (const buffer of list) {
      cachedBytes -= buffer.length * 4;
      for (const listener of dropListeners) listener(buffer);
    }
  }
  freeLists.clear();
}

/** parallel.ts registers here to learn which cached buffers are gone. */
export function onCacheDrop(listener: (buffer: Float32Array) => void): void {
  dropListeners.push(listener);
}
