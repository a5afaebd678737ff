// Datasets held in memory as uint8 pixels: IDX (MNIST / Fashion-MNIST, raw or .gz), CIFAR-10
// binary batches, and image folders (one subfolder per class, decoded and resized with sharp).
// Every reader checks sizes against the real file before it allocates.

import { ConfigError } from './options.js';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as zlibConstants, gunzipSync } from 'node:zlib';
import { Rng } from '../tensor/rng.js';
import { firstFew } from '../tensor/text.js';

/** Images (N, C, H, W) as bytes 0..255, labels as class indices. */
export interface ImageDataset {
  name: string;
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
  channels: number;
  height: number;
  width: number;
  classNames: string[];
}

/** A dataset file that is missing, malformed or inconsistent. The message names the file. */
export class DatasetError extends Error {
  override name = 'DatasetError';
}

/**
 * The folder of the Fashion-MNIST subset that ships with the package (10,000 training and 2,000
 * test images, class-balanced), wherever the package is installed: use it as
 * `loadIdxDataset(bundledFashionMnistPath(), 'train')`.
 */
export function bundledFashionMnistPath(): string {
  // From src/train (tsx) or dist/src/train (built), up to the folder holding package.json.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'data', 'fashion-mnist-subset');
}

/** Fashion-MNIST's class names, in label order. */
export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
/** MNIST's class names (the digits), in label order. */
export const MNIST_CLASSES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
/** CIFAR-10's class names, in label order. */
export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/** Largest decompressed IDX file we accept (the full MNIST training images are 47 MB). */
export const MAX_IDX_BYTES = 1 << 30;

// =============================================================================================
// IDX
// =============================================================================================

const IDX_UBYTE = 0x08;

/**
 * Parse an IDX file: magic [0, 0, type, dims], then `dims` big-endian uint32 sizes, then data.
 * Only unsigned bytes (type 0x08) are supported, as MNIST and Fashion-MNIST use.
 */
export function parseIdx(bytes: Uint8Array, source: string): { dims: number[]; data: Uint8Array } {
  const fail = (msg: string): never => {
    throw new DatasetError(`${source}: ${msg}`);
  };
  if (bytes.length < 4) fail(`file is ${bytes.length} bytes, too short for an IDX header`);
  if (bytes[0] !== 0 || bytes[1] !== 0) fail(`wrong magic number 0x${Buffer.from(bytes.subarray(0, 4)).toString('hex')} (an IDX file starts with 0x0000)`);
  if (bytes[2] !== IDX_UBYTE) fail(`unsupported IDX element type 0x${bytes[2].toString(16).padStart(2, '0')} (only unsigned bytes, 0x08, are supported)`);
  const rank = bytes[3];
  if (rank < 1 || rank > 4) fail(`IDX rank ${rank} is not between 1 and 4`);
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) fail(`file is ${bytes.length} bytes, too short for a rank-${rank} IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(view.getUint32(4 + 4 * i, false));
  const expected = dims.reduce((p, d) => p * d, 1);
  if (expected !== bytes.length - headerBytes) {
    fail(`header says ${dims.join(' x ')} = ${expected} bytes of data but the file holds ${bytes.length - headerBytes}`);
  }
  return { dims, data: bytes.subarray(headerBytes) };
}

/** The size an IDX header declares (header + data bytes), from the file's first bytes. */
function declaredIdxBytes(head: Uint8Array, source: string): { bytes: number; dims: number[] } | null {
  if (head.length < 4) return null;
  const rank = head[3];
  if (head[0] !== 0 || head[1] !== 0 || rank < 1 || rank > 4) parseIdx(head, source); // throws the precise header error
  if (head.length < 4 + 4 * rank) return null;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  return { bytes: 4 + 4 * rank + dims.reduce((p, d) => p * d, 1), dims };
}

/**
 * Gunzip an IDX file without trusting it: first only the start of the stream is inflated (a
 * deflate stream expands at most ~1032x, so 4 kB of input gives at most ~4 MB) to read the IDX
 * header; then the whole file is inflated with its output capped at the size that header
 * declares. A gzip bomb (a few MB of compressed zeros that would expand to GBs) is refused as
 * soon as it passes the declared size, and the message says so.
 */
function gunzipIdx(raw: Uint8Array, path: string): Uint8Array {
  let declared: { bytes: number; dims: number[] } | null = null;
  for (const prefix of [256, 4096]) {
    let head: Uint8Array;
    try {
      head = gunzipSync(raw.subarray(0, prefix), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
    } catch (e) {
      throw new DatasetError(`${path}: not a valid gzip file (${(e as Error).message})`);
    }
    declared = declaredIdxBytes(head, path);
    if (declared !== null || prefix >= raw.length) break;
  }
  if (declared === null) throw new DatasetError(`${path}: the gzip stream is too short to hold an IDX header`);
  if (declared.bytes > MAX_IDX_BYTES) throw new DatasetError(`${path}: the IDX header declares ${declared.dims.join(' x ')} = ${declared.bytes} bytes, more than the ${MAX_IDX_BYTES} this reader accepts`);
  try {
    return gunzipSync(raw, { maxOutputLength: declared.bytes });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DatasetError(`${path}: decompresses to more than the ${declared.bytes} bytes its IDX header declares (${declared.dims.join(' x ')}): the file is corrupt or not an IDX file (a gzip bomb?)`);
    }
    throw new DatasetError(`${path}: not a valid gzip file (${(e as Error).message})`);
  }
}

/** Read an IDX file, gunzipping when it ends in .gz (output bounded by the declared size). */
export function readIdxFile(path: string): { dims: number[]; data: Uint8Array } {
  let raw: Uint8Array;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw new DatasetError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseIdx(path.endsWith('.gz') ? gunzipIdx(raw, path) : raw, path);
}

function findFile(dir: string, base: string): string | null {
  for (const name of [base, base + '.gz']) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

/**
 * MNIST-format dataset from a folder holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
 * `split` is 'train' or 'test'.
 */
export function loadIdxDataset(dir: string, split: 'train' | 'test', name = 'fashion-mnist', classNames = FASHION_MNIST_CLASSES): ImageDataset {
  const prefix = split === 'train' ? 'train' : 't10k';
  const imagesPath = findFile(dir, `${prefix}-images-idx3-ubyte`);
  const labelsPath = findFile(dir, `${prefix}-labels-idx1-ubyte`);
  if (imagesPath === null || labelsPath === null) {
    // Where this dataset's files come from: Debian packages Fashion-MNIST; MNIST is the user's download.
    const where = name === 'fashion-mnist'
      ? ' (Fashion-MNIST: install the Debian package dataset-fashion-mnist, which puts them in /usr/share/datasets/fashion-mnist)'
      : name === 'mnist' ? ' (MNIST: the four files of the MNIST database, e.g. train-images-idx3-ubyte.gz, in one folder)' : '';
    const missing = existsSync(dir) ? `no ${prefix}-images-idx3-ubyte[.gz] and ${prefix}-labels-idx1-ubyte[.gz] found` : 'no such folder';
    throw new DatasetError(`${dir}: ${missing}${where}`);
  }
  const images = readIdxFile(imagesPath);
  const labels = readIdxFile(labelsPath);
  if (images.dims.length !== 3) throw new DatasetError(`${imagesPath}: expected a rank-3 image file (count, rows, cols), got rank ${images.dims.length}`);
  if (labels.dims.length !== 1) throw new DatasetError(`${labelsPath}: expected a rank-1 label file, got rank ${labels.dims.length}`);
  if (images.dims[0] !== labels.dims[0]) {
    throw new DatasetError(`${labelsPath}: ${labels.dims[0]} labels for ${images.dims[0]} images in ${basename(imagesPath)}`);
  }
  const numClasses = classNames.length;
  for (let i = 0; i < labels.data.length; i++) {
    if (labels.data[i] >= numClasses) throw new DatasetError(`${labelsPath}: label ${labels.data[i]} at index ${i} is not a class (0..${numClasses - 1})`);
  }
  return { name, images: images.data, labels: labels.data, count: images.dims[0], channels: 1, height: images.dims[1], width: images.dims[2], classNames };
}

/** Serialise images or labels as IDX bytes (for the bundled subset and for tests). */
export function encodeIdx(dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = IDX_UBYTE;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

// =============================================================================================
// CIFAR-10 binary
// =============================================================================================

/** Bytes per record of the CIFAR-10 binary version (a label byte and 3 x 32 x 32 pixels). */
export const CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32;

/** CIFAR-10 binary version: `data_batch_1..5.bin` (train) or `test_batch.bin`, 3073-byte records. */
export function loadCifar10(dir: string, split: 'train' | 'test'): ImageDataset {
  const files = split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  const paths = files.map((f) => join(dir, f));
  const missing = paths.filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new DatasetError(`${dir}: missing ${missing.map((p) => basename(p)).join(', ')} (the "CIFAR-10 binary version": cifar-10-binary.tar.gz, extracted)`);
  }
  let total = 0;
  for (const p of paths) {
    const size = statSync(p).size;
    if (size === 0 || size % CIFAR_RECORD_BYTES !== 0) throw new DatasetError(`${p}: size ${size} is not a whole number of ${CIFAR_RECORD_BYTES}-byte records`);
    total += size / CIFAR_RECORD_BYTES;
  }
  const images = new Uint8Array(total * 3 * 1024);
  const labels = new Uint8Array(total);
  let n = 0;
  for (const p of paths) {
    const bytes = readFileSync(p);
    for (let r = 0; r < bytes.length / CIFAR_RECORD_BYTES; r++, n++) {
      const rec = r * CIFAR_RECORD_BYTES;
      if (bytes[rec] >= 10) throw new DatasetError(`${p}: record ${r} has label ${bytes[rec]}, not a CIFAR-10 class (0..9)`);
      labels[n] = bytes[rec];
      images.set(bytes.subarray(rec + 1, rec + CIFAR_RECORD_BYTES), n * 3072);
    }
  }
  return { name: 'cifar10', images, labels, count: total, channels: 3, height: 32, width: 32, classNames: CIFAR10_CLASSES };
}

// =============================================================================================
// Image folder (like torchvision's ImageFolder), decoded with sharp
// =============================================================================================

/**
 * The file extensions an image folder is read for: the raster formats sharp decodes, the same
 * that `predict` reads (a GIF's first frame). Other files are skipped with a warning.
 */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif'];

/** Options of loadImageFolder: size, channels, what to do with a corrupt image. */
export interface ImageFolderOptions {
  /** Every image is resized (stretched) to size x size. */
  size: number;
  /** 3 for RGB (default) or 1 for grayscale. */
  channels?: 1 | 3;
  /** 'skip' a file sharp cannot decode (with a warning through `onWarning`) or stop ('fail', default). */
  onCorrupt?: 'skip' | 'fail';
  onWarning?: (message: string) => void;
}

/** List class folders and image files, sorted (class index = position in sorted folder names). */
export function scanImageFolder(root: string, onWarning?: (message: string) => void): { classNames: string[]; files: { path: string; label: number }[] } {
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new DatasetError(`${root}: not a folder (expected one subfolder of images per class)`);
  const classNames = readdirSync(root, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  if (classNames.length === 0) throw new DatasetError(`${root}: no class subfolders (expected ${root}/<class>/<image>.jpg ...)`);
  const files: { path: string; label: number }[] = [];
  classNames.forEach((cls, label) => {
    const entries = readdirSync(join(root, cls));
    const images = entries.filter((f) => IMAGE_EXTENSIONS.some((e) => f.toLowerCase().endsWith(e))).sort();
    // Hidden files (.DS_Store, ._photo.jpg) are no one's images; anything else is named.
    const others = entries.filter((f) => !f.startsWith('.') && !images.includes(f));
    if (others.length > 0) onWarning?.(`${join(root, cls)}: skipping ${others.length} file${others.length > 1 ? 's' : ''} that ${others.length > 1 ? 'are' : 'is'} not ${IMAGE_EXTENSIONS.join(' ')} (${firstFew(others, 3)})`);
    if (images.length === 0) throw new DatasetError(`${join(root, cls)}: class folder '${cls}' has no images (${IMAGE_EXTENSIONS.join(', ')})`);
    for (const f of images) files.push({ path: join(root, cls, f), label });
  });
  return { classNames, files };
}

/** Decode one image with sharp to size x size x channels bytes (CHW order). */
export async function decodeImage(path: string, size: number, channels: 1 | 3): Promise<Uint8Array> {
  // sharp would say "Input file is missing" or "unsupported image format" for these.
  if (!existsSync(path)) throw new DatasetError(`${path}: no such file`);
  if (statSync(path).isDirectory()) throw new DatasetError(`${path}: a folder, not an image`);
  const { default: sharp } = await import('sharp');
  let pipeline = sharp(path, { failOn: 'error' }).removeAlpha().resize(size, size, { fit: 'fill' });
  pipeline = channels === 1 ? pipeline.grayscale() : pipeline.toColourspace('srgb');
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  // 16-bit inputs come out as 8-bit raw by default; guard the layout anyway.
  if (info.channels !== channels || info.width !== size || info.height !== size || data.length !== size * size * channels) {
    throw new DatasetError(`${path}: decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x${channels}`);
  }
  // HWC (sharp) -> CHW (NCHW tensors)
  const out = new Uint8Array(size * size * channels);
  for (let c = 0; c < channels; c++) for (let i = 0; i < size * size; i++) out[c * size * size + i] = data[i * channels + c];
  return out;
}

/** Images from class subfolders (sorted class names), decoded with sharp and resized to `size`. */
export async function loadImageFolder(root: string, options: ImageFolderOptions): Promise<ImageDataset> {
  const channels = options.channels ?? 3;
  const { classNames, files } = scanImageFolder(root, options.onWarning);
  const plane = options.size * options.size * channels;
  const images = new Uint8Array(files.length * plane);
  const labels = new Uint8Array(files.length);
  let n = 0;
  for (const f of files) {
    let pixels: Uint8Array;
    try {
      pixels = await decodeImage(f.path, options.size, channels);
    } catch (e) {
      const message = `${f.path}: cannot decode image (${(e as Error).message})`;
      if ((options.onCorrupt ?? 'fail') === 'fail') throw new DatasetError(message);
      options.onWarning?.(`skipping ${message}`);
      continue;
    }
    images.set(pixels, n * plane);
    labels[n++] = f.label;
  }
  if (n === 0) throw new DatasetError(`${root}: no image could be decoded`);
  return { name: basename(root), images: images.subarray(0, n * plane), labels: labels.subarray(0, n), count: n, channels, height: options.size, width: options.size, classNames };
}

/** A short fingerprint of the data (sha256 of shapes, labels and pixels), stored in checkpoints. */
export function datasetFingerprint(ds: ImageDataset): string {
  const h = createHash('sha256');
  h.update(`${ds.count}x${ds.channels}x${ds.height}x${ds.width}:${ds.classNames.join(',')}`);
  h.update(ds.labels);
  h.update(ds.images);
  return h.digest('hex').slice(0, 16);
}

/** The images at `indices`, in that order, as a dataset of their own. */
export function pickImages(ds: ImageDataset, indices: ArrayLike<number>, name = ds.name): ImageDataset {
  const plane = ds.channels * ds.height * ds.width;
  const images = new Uint8Array(indices.length * plane), labels = new Uint8Array(indices.length);
  for (let dst = 0; dst < indices.length; dst++) {
    const src = indices[dst];
    images.set(ds.images.subarray(src * plane, (src + 1) * plane), dst * plane);
    labels[dst] = ds.labels[src];
  }
  return { ...ds, name, images, labels, count: indices.length };
}

/**
 * Only the images of the named classes, relabelled 0..k-1 in the order given (as Keras's
 * `class_names` argument selects and orders classes). A class is named as in `ds.classNames` or
 * by its index there. A name the dataset does not have is a ConfigError about the `classes`
 * option.
 */
export function selectClasses(ds: ImageDataset, wanted: readonly string[]): ImageDataset {
  const indexOf = wanted.map((w) => {
    const byName = ds.classNames.indexOf(w);
    if (byName >= 0) return byName;
    if (/^\d+$/.test(w) && Number(w) < ds.classNames.length) return Number(w);
    throw new ConfigError(['classes'], `${ds.name} has no class '${w}' (its classes: ${ds.classNames.map((n, i) => `${i} ${n}`).join(', ')})`);
  });
  const repeated = indexOf.find((c, i) => indexOf.indexOf(c) !== i);
  if (repeated !== undefined) throw new ConfigError(['classes'], `class '${ds.classNames[repeated]}' is named twice`);
  const newLabel = new Int32Array(ds.classNames.length).fill(-1);
  indexOf.forEach((c, k) => (newLabel[c] = k));
  const kept: number[] = [];
  for (let i = 0; i < ds.count; i++) if (newLabel[ds.labels[i]] >= 0) kept.push(i);
  const picked = pickImages(ds, kept);
  for (let i = 0; i < picked.count; i++) picked.labels[i] = newLabel[picked.labels[i]];
  return { ...picked, classNames: indexOf.map((c) => ds.classNames[c]) };
}

/**
 * The dataset labelled as a model's classes: each of its classes is matched to the model's
 * class of the same name (exactly, else ignoring case), and its images take that class's index
 * in `modelClasses`. Evaluating a model on a folder whose classes are in another order, or only
 * some of them, is then right; classes the model does not know are refused (listing both
 * sets), or with `dropUnknown` (a model trained on some of a dataset's classes) left out and
 * reported through `onDropped`.
 */
export function alignClasses(ds: ImageDataset, modelClasses: readonly string[], options: { dropUnknown?: boolean; onDropped?: (names: string[], images: number) => void } = {}): ImageDataset {
  if (ds.classNames.length === modelClasses.length && ds.classNames.every((n, i) => n === modelClasses[i])) return ds;
  const lower = modelClasses.map((n) => n.toLowerCase());
  const modelIndex = ds.classNames.map((name) => {
    const exact = modelClasses.indexOf(name);
    if (exact >= 0) return exact;
    const folded = lower.indexOf(name.toLowerCase());
    return folded >= 0 && lower.lastIndexOf(name.toLowerCase()) === folded ? folded : -1;
  });
  const unknown = ds.classNames.filter((_, c) => modelIndex[c] < 0);
  const list = (names: readonly string[]) => names.map((n) => `'${n}'`).join(', ');
  if (unknown.length === ds.classNames.length || (unknown.length > 0 && !options.dropUnknown)) {
    const which = unknown.length === ds.classNames.length ? `none of its classes (${list(ds.classNames)}) is` : `its class${unknown.length > 1 ? 'es' : ''} ${list(unknown)} (of ${list(ds.classNames)}) ${unknown.length > 1 ? 'are' : 'is'} not`;
    throw new DatasetError(`${ds.name}: ${which} among the model's classes (${list(modelClasses)}); classes are matched by name: name the class folders as the model's classes`);
  }
  const kept: number[] = [];
  for (let i = 0; i < ds.count; i++) if (modelIndex[ds.labels[i]] >= 0) kept.push(i);
  if (unknown.length > 0) options.onDropped?.(unknown, ds.count - kept.length);
  const picked = pickImages(ds, kept);
  for (let i = 0; i < picked.count; i++) picked.labels[i] = modelIndex[picked.labels[i]];
  return { ...picked, classNames: [...modelClasses] };
}

/**
 * At most `perClass` images of each class, chosen with the seed (a seeded shuffle, then the
 * first of each class), kept in their original order: a small training set from a large one.
 */
export function takePerClass(ds: ImageDataset, perClass: number, seed: number): ImageDataset {
  const order = new Rng(seed).permutation(ds.count);
  const taken = new Int32Array(ds.classNames.length);
  const keep = new Uint8Array(ds.count);
  for (const i of order) if (taken[ds.labels[i]] < perClass) {
    taken[ds.labels[i]]++;
    keep[i] = 1;
  }
  const kept: number[] = [];
  for (let i = 0; i < ds.count; i++) if (keep[i]) kept.push(i);
  return pickImages(ds, kept);
}
