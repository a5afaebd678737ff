import { mkdtempSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSafetensors, parseSafetensors, saveSafetensors, serializeSafetensors, SafetensorsError } from '../src/tensor/safetensors.js';

/** Build a file from a raw header object and a data section. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe('safetensors', () => {
  it('round-trips every supported dtype and the metadata', () => {
    const tensors = {
      f32: { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) },
      f64: { shape: [2], data: Float64Array.from([Math.PI, -1e300]) },
      i64: { shape: [3], data: BigInt64Array.from([1n, -2n, 1n << 40n]) },
      i32: { shape: [1, 2], data: Int32Array.from([7, -8]) },
      u8: { shape: [4], data: Uint8Array.from([0, 1, 254, 255]) },
      empty: { shape: [0, 3], data: new Float32Array(0) },
    };
    const parsed = parseSafetensors(serializeSafetensors(tensors, { epoch: '3' }));
    expect(parsed.metadata).toEqual({ epoch: '3' });
    for (const [name, t] of Object.entries(tensors)) {
      const back = parsed.tensors.get(name)!;
      expect(back.shape).toEqual(t.shape);
      expect(Array.from(back.data as ArrayLike<number | bigint>)).toEqual(Array.from(t.data as ArrayLike<number | bigint>));
    }
  });

  it('writes files atomically (no temporary file left) and loads them back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'st-'));
    const path = join(dir, 'w.safetensors');
    saveSafetensors(path, { w: { shape: [2], data: Float32Array.from([1, 2]) } });
    saveSafetensors(path, { w: { shape: [2], data: Float32Array.from([3, 4]) } });
    expect(readdirSync(dir)).toEqual(['w.safetensors']);
    expect(Array.from(loadSafetensors(path).tensors.get('w')!.data as Float32Array)).toEqual([3, 4]);
    expect(existsSync(path)).toBe(true);
    expect(readFileSync(path).length).toBeGreaterThan(8);
  });

  const good = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const eight = new Uint8Array(8);
  const malformed: [string, Uint8Array, RegExp][] = [
    ['shorter than the length field', new Uint8Array(5), /file is 5 bytes, too short/],
    ['header length beyond the file', rawFile(good, eight, 10_000n), /header length 10000 exceeds the \d+ bytes after the length field/],
    ['header length beyond the 100 MB bound', rawFile(good, eight, 1n << 40n), /exceeds the limit of 100000000 bytes/],
    ['header that is not JSON', rawFile('{"w": [', eight), /header is not valid UTF-8 JSON/],
    ['header that is a JSON array', rawFile([1, 2], eight), /header is not a JSON object/],
    ['unknown dtype', rawFile({ w: { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }, eight), /tensor 'w': unsupported dtype "BF16"/],
    ['negative dimension', rawFile({ w: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, eight), /tensor 'w': shape \[-2\] is not a list of integers/],
    ['shape x dtype size != byte range', rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight), /tensor 'w': shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] hold 8/],
    ['offsets past the end of the file', rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, eight), /tensor 'w': data_offsets \[0, 16\] run past the end of the data \(8 bytes\)/],
    ['begin after end', rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, eight), /begin after end/],
    ['overlapping tensors', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight), /tensors 'a' and 'b' overlap/],
    ['a header claiming 10^12 elements', rawFile({ w: { dtype: 'F32', shape: [1000000, 1000000], data_offsets: [0, 8] } }, eight), /needs 4000000000000 bytes/],
    ['non-string metadata', rawFile({ __metadata__: { epoch: 3 }, ...good }, eight), /__metadata__.epoch is not a string/],
    ['missing data_offsets', rawFile({ w: { dtype: 'F32', shape: [2] } }, eight), /data_offsets undefined is not a pair/],
  ];
  for (const [what, bytes, message] of malformed) {
    it(`rejects ${what} with a message naming the file`, () => {
      let error: unknown;
      try {
        parseSafetensors(bytes, 'bad.safetensors');
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(SafetensorsError);
      expect((error as Error).message).toMatch(/^bad\.safetensors: /);
      expect((error as Error).message).toMatch(message);
    });
  }
  it('names the file when it cannot be read', () => {
    expect(() => loadSafetensors('/nonexistent/x.safetensors')).toThrow('/nonexistent/x.safetensors: cannot read (ENOENT)');
  });
});
