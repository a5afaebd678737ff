// What the browser bundle gets in place of Node's modules (scripts/build-web.ts points every
// `node:*` import here). The engine imports `node:os` and `node:worker_threads` for its thread
// pool, and its file helpers import `node:fs`; in the page the pool runs on one thread and no
// file is opened, so these are never called. If one were, it says so instead of failing quietly.

function unavailable(name: string): never {
  throw new Error(`${name} is not available in the browser`);
}

/** One core: the page's engine runs on its worker's thread. */
export const availableParallelism = (): number => 1;
export const cpus = (): unknown[] => [{}];
export class Worker {
  constructor() {
    unavailable('worker_threads.Worker');
  }
}
export const isMainThread = true;
export const parentPort = null;
export const workerData = null;
export const readFileSync = (): never => unavailable('fs.readFileSync');
export const writeFileSync = (): never => unavailable('fs.writeFileSync');
export const appendFileSync = (): never => unavailable('fs.appendFileSync');
export const openSync = (): never => unavailable('fs.openSync');
export const closeSync = (): never => unavailable('fs.closeSync');
export const fsyncSync = (): never => unavailable('fs.fsyncSync');
export const writeSync = (): never => unavailable('fs.writeSync');
export const renameSync = (): never => unavailable('fs.renameSync');
export const rmSync = (): never => unavailable('fs.rmSync');
export const mkdirSync = (): never => unavailable('fs.mkdirSync');
export const existsSync = (): boolean => false;
export const dirname = (p: string): string => p.replace(/\/[^/]*$/, '') || '.';
export const join = (...parts: string[]): string => parts.join('/');
export const createHash = (): never => unavailable('crypto.createHash');
export const inflateRawSync = (): never => unavailable('zlib.inflateRawSync');
export default {};
