// A reader for ZIP archives, as far as PyTorch's checkpoints need one: `torch.save` (PyTorch >=
// 1.6) writes a ZIP whose entries are stored uncompressed, with ZIP64 records at the end.
//
// Layout read here (PKWARE APPNOTE): at the end of the file an "end of central directory"
// record (signature PK\5\6) gives the number of entries and where the central directory starts;
// when a field is saturated (0xFFFF / 0xFFFFFFFF) the ZIP64 record just before it (PK\6\6,
// found through its locator PK\6\7) holds the 64-bit value. Each central directory entry (PK\1\2)
// gives an entry's name, compression method, sizes, CRC-32 and the offset of its local header
// (PK\3\4), after which, past the name and an extra field of its own lengths, the data begins.
//
// Everything the directory claims is checked against the file's real size before a byte is
// copied, and an entry is inflated only up to the size the directory declares: a truncated or
// hostile archive is refused with a message that names the file, not read past its end.

import { inflateRawSync } from 'node:zlib';

/** A malformed or truncated ZIP archive. The message names the file. */
export class ZipError extends Error {
  override name = 'ZipError';
}

/** One entry of the central directory. */
export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate (the only two read). */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the entry's local header in the archive. */
  headerOffset: number;
}

/** An opened archive: its entries by name, and `read` to get one entry's bytes, checked. */
export interface ZipArchive {
  entries: Map<string, ZipEntry>;
  read(name: string): Uint8Array;
}

const END_OF_DIRECTORY = 0x06054b50;
const ZIP64_END_OF_DIRECTORY = 0x06064b50;
const ZIP64_LOCATOR = 0x07064b50;
const DIRECTORY_ENTRY = 0x02014b50;
const LOCAL_HEADER = 0x04034b50;

/** True when `bytes` start like a ZIP archive (a local header, or an empty archive's end record). */
export function looksLikeZip(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  const signature = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  return signature === LOCAL_HEADER || signature === END_OF_DIRECTORY;
}

/** CRC-32 (the ZIP polynomial 0xEDB88320, reflected), table-driven. */
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** The CRC-32 of `bytes`, as ZIP records it. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Open the archive held in `bytes`; `source` names it in errors. Reads only the directory. */
export function openZip(bytes: Uint8Array, source = '<buffer>'): ZipArchive {
  const fail = (message: string): never => {
    throw new ZipError(`${source}: ${message}`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (at: number) => view.getUint16(at, true);
  const u32 = (at: number) => view.getUint32(at, true);
  const u64 = (at: number): number => {
    const v = view.getBigUint64(at, true);
    if (v > BigInt(bytes.length)) fail(`a ZIP64 field claims ${v}, more than the file's ${bytes.length} bytes (truncated or corrupt)`);
    return Number(v);
  };

  // The end record is 22 bytes plus a comment of at most 65535 bytes: search that tail backwards.
  let end = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 0xffff); at--) {
    if (u32(at) === END_OF_DIRECTORY) {
      end = at;
      break;
    }
  }
  if (end < 0) fail(`no ZIP end-of-central-directory record in its ${bytes.length} bytes: the file is truncated or not a ZIP archive`);
  let count = u16(end + 10);
  let directorySize = u32(end + 12);
  let directoryOffset = u32(end + 16);
  if (count === 0xffff || directorySize === 0xffffffff || directoryOffset === 0xffffffff) {
    const locator = end - 20;
    if (locator < 0 || u32(locator) !== ZIP64_LOCATOR) fail('the end record says ZIP64 but there is no ZIP64 locator before it');
    const record = u64(locator + 8);
    if (record + 56 > bytes.length || u32(record) !== ZIP64_END_OF_DIRECTORY) fail(`no ZIP64 end record at offset ${record}`);
    count = u64(record + 32);
    directorySize = u64(record + 40);
    directoryOffset = u64(record + 48);
  }
  if (directoryOffset + directorySize > end) fail(`the central directory (offset ${directoryOffset}, ${directorySize} bytes) runs past the end record at ${end}: truncated or corrupt`);
  // Each directory entry is at least 46 bytes, which bounds the count before anything is allocated.
  if (count * 46 > directorySize) fail(`the directory claims ${count} entries in ${directorySize} bytes`);

  const entries = new Map<string, ZipEntry>();
  const names = new TextDecoder('utf-8');
  let at = directoryOffset;
  for (let i = 0; i < count; i++) {
    if (at + 46 > directoryOffset + directorySize || u32(at) !== DIRECTORY_ENTRY) fail(`central directory entry ${i} is damaged (offset ${at})`);
    const method = u16(at + 10);
    const crc = u32(at + 16);
    let compressedSize = u32(at + 20);
    let size = u32(at + 24);
    const nameLength = u16(at + 28);
    const extraLength = u16(at + 30);
    const commentLength = u16(at + 32);
    let headerOffset = u32(at + 42);
    if (at + 46 + nameLength + extraLength + commentLength > directoryOffset + directorySize) fail(`central directory entry ${i} runs past the directory`);
    const name = names.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    // ZIP64 extended information (header id 1): the saturated fields, in this order.
    for (let x = at + 46 + nameLength; x + 4 <= at + 46 + nameLength + extraLength; ) {
      const id = u16(x);
      const length = u16(x + 2);
      let field = x + 4;
      if (id === 1) {
        if (size === 0xffffffff) (size = u64(field)), (field += 8);
        if (compressedSize === 0xffffffff) (compressedSize = u64(field)), (field += 8);
        if (headerOffset === 0xffffffff) headerOffset = u64(field);
      }
      x += 4 + length;
    }
    if (headerOffset + 30 > directoryOffset) fail(`entry ${name}: its header offset ${headerOffset} is past the entries' data`);
    entries.set(name, { name, method, compressedSize, size, crc32: crc, headerOffset });
    at += 46 + nameLength + extraLength + commentLength;
  }

  const read = (name: string): Uint8Array => {
    const entry = entries.get(name);
    if (entry === undefined) return fail(`no entry ${name}`);
    const h = entry.headerOffset;
    if (u32(h) !== LOCAL_HEADER) fail(`entry ${name}: no local header at offset ${h}`);
    const start = h + 30 + u16(h + 26) + u16(h + 28);
    if (start + entry.compressedSize > directoryOffset) fail(`entry ${name}: its ${entry.compressedSize} bytes at offset ${start} run past the entries' data (truncated or corrupt)`);
    const stored = bytes.subarray(start, start + entry.compressedSize);
    let data: Uint8Array;
    if (entry.method === 0) {
      if (entry.compressedSize !== entry.size) fail(`entry ${name} is stored but its sizes differ (${entry.compressedSize} and ${entry.size})`);
      data = stored;
    } else if (entry.method === 8) {
      try {
        // Inflate no further than the declared size: a "zip bomb" stops there.
        data = inflateRawSync(stored, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        return fail(`entry ${name}: cannot inflate (${(e as Error).message})`);
      }
      if (data.length !== entry.size) fail(`entry ${name}: inflates to ${data.length} bytes, the directory says ${entry.size}`);
    } else {
      return fail(`entry ${name}: compression method ${entry.method} is not supported (stored and deflate are)`);
    }
    const actual = crc32(data);
    if (actual !== entry.crc32) fail(`entry ${name}: CRC-32 ${actual.toString(16)} does not match the recorded ${entry.crc32.toString(16)} (the file is corrupt)`);
    return data;
  };
  return { entries, read };
}
