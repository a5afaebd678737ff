// A pickle *reader*: it interprets the opcodes of Python's pickle format as data and never
// executes anything. Python's own unpickler calls whatever callable a file names (GLOBAL then
// REDUCE is "import this, call it with these arguments": `os.system('...')` is three opcodes),
// which is why loading an untrusted `.pth` with `torch.load` runs code. Here a GLOBAL is looked
// up in an allowlist the caller gives; any name outside it is refused at once, naming it, before
// anything after it in the file is read.
//
// Values: None -> null, bool -> boolean, int -> number (bigint beyond 2^53), float -> number,
// str -> string, bytes -> Uint8Array, tuple and list -> arrays, dict -> Map. A persistent id
// (how torch.save refers to a tensor's storage, kept outside the pickle) is handed to the
// caller's `persistentLoad`.
//
// The opcodes are those of protocols 2 to 5 that plain data uses (Python's
// Lib/pickletools.py documents each one); the text opcodes of protocol 0 and the object-building
// ones beyond GLOBAL/REDUCE/BUILD are refused with their name.

/** A pickle this reader refuses or cannot parse. The message names the source. */
export class PickleError extends Error {
  override name = 'PickleError';
}

/** What an allowlisted global does when called by REDUCE, and (optionally) when BUILD gives it state. */
export interface PickleCallable {
  readonly qualifiedName: string;
  call(args: unknown[]): unknown;
}

/** The hooks of `readPickle`: the allowlist of globals and the handler of persistent ids. */
export interface PickleHooks {
  /** The callable for `module.name`, or undefined to refuse the file. */
  resolveGlobal(module: string, name: string): PickleCallable | undefined;
  /** The value a persistent id stands for (called with the id as unpickled). */
  persistentLoad?(id: unknown): unknown;
  /** Why a global was refused, for the message ("only ... are allowed"). */
  refusalHint?: string;
}

/** A pickled Python object on which BUILD set state: kept as data, never run. */
export interface PickleBuilt {
  readonly built: unknown;
  readonly state: unknown;
}

const MARK = Symbol('mark');

/** The result of `readPickle`: the value and the offset just after its STOP opcode. */
export interface PickleResult {
  value: unknown;
  end: number;
}

/**
 * Read one pickle from `bytes` at `offset` (a legacy `.pth` holds several in a row). `source`
 * names the file in errors.
 */
export function readPickle(bytes: Uint8Array, hooks: PickleHooks, source = '<buffer>', offset = 0): PickleResult {
  const fail = (message: string): never => {
    throw new PickleError(`${source}: ${message}`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let at = offset;
  const need = (n: number, what: string): number => {
    if (!(n >= 0) || at + n > bytes.length) fail(`${what} at offset ${at} needs ${n} bytes but the file ends at ${bytes.length} (truncated)`);
    const start = at;
    at += n;
    return start;
  };
  const u8 = () => bytes[need(1, 'an opcode argument')];
  const u16 = () => view.getUint16(need(2, 'a 2-byte argument'), true);
  const u32 = () => view.getUint32(need(4, 'a 4-byte argument'), true);
  const i32 = () => view.getInt32(need(4, 'a 4-byte argument'), true);
  const u64 = (): number => {
    const v = view.getBigUint64(need(8, 'an 8-byte argument'), true);
    return v > BigInt(bytes.length) ? bytes.length + 1 : Number(v);
  };
  const take = (n: number, what: string) => bytes.subarray(need(n, what), at);
  const text = (n: number) => {
    const raw = take(n, 'a string');
    try {
      return utf8.decode(raw);
    } catch {
      return fail(`a string at offset ${at - n} is not valid UTF-8`);
    }
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, at);
    if (end < 0) fail(`a line at offset ${at} has no end (truncated)`);
    const s = latin1.decode(bytes.subarray(at, end));
    at = end + 1;
    return s;
  };
  // Two's complement little-endian integer of n bytes (LONG1 / LONG4).
  const long = (n: number): number | bigint => {
    const b = take(n, 'a long integer');
    let v = 0n;
    for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(b[k]);
    if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const pop = (): unknown => {
    if (stack.length === 0 || (marks.length > 0 && stack.length === marks[marks.length - 1])) fail(`the stack is empty at offset ${at - 1}`);
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail(`the stack is empty at offset ${at - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) return fail(`no MARK before offset ${at - 1}`);
    return stack.splice(m);
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (!(target instanceof Map)) fail(`SETITEM(S) on a ${describe(target)}, not a dict, at offset ${at - 1}`);
    if (items.length % 2 !== 0) fail(`SETITEMS with an odd number of items at offset ${at - 1}`);
    for (let k = 0; k < items.length; k += 2) (target as Map<unknown, unknown>).set(items[k], items[k + 1]);
  };
  const append = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) fail(`APPEND(S) on a ${describe(target)}, not a list, at offset ${at - 1}`);
    (target as unknown[]).push(...items);
  };

  for (;;) {
    if (at >= bytes.length) fail(`no STOP opcode before the end of the file (truncated)`);
    const opcode = bytes[at++];
    switch (opcode) {
      case 0x80: // PROTO n
        if (u8() > 5) fail(`pickle protocol ${bytes[at - 1]} is newer than 5`);
        break;
      case 0x95: // FRAME n (protocol 4 framing: a length hint only)
        need(8, 'FRAME');
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length > 0) fail(`STOP with ${stack.length} values on the stack at offset ${at - 1}`);
        return { value: stack[0], end: at };
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT: int32
        stack.push(i32());
        break;
      case 0x4b: // BININT1: uint8
        stack.push(u8());
        break;
      case 0x4d: // BININT2: uint16
        stack.push(u16());
        break;
      case 0x8a: // LONG1: n (1 byte), then n bytes
        stack.push(long(u8()));
        break;
      case 0x8b: {
        // LONG4: n (4 bytes), then n bytes
        const n = i32();
        if (n < 0 || n > 1 << 16) fail(`LONG4 of ${n} bytes at offset ${at - 5}`);
        stack.push(long(n));
        break;
      }
      case 0x47: // BINFLOAT: big-endian float64
        stack.push(view.getFloat64(need(8, 'BINFLOAT'), false));
        break;
      case 0x58: // BINUNICODE: uint32 length, UTF-8
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(text(u64()));
        break;
      case 0x54: // BINSTRING (Python 2 str): int32 length, bytes read as Latin-1
        stack.push(latin1.decode(take(i32(), 'BINSTRING')));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(take(u8(), 'SHORT_BINSTRING')));
        break;
      case 0x42: // BINBYTES
        stack.push(new Uint8Array(take(u32(), 'BINBYTES')));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(new Uint8Array(take(u8(), 'SHORT_BINBYTES')));
        break;
      case 0x8e: // BINBYTES8
        stack.push(new Uint8Array(take(u64(), 'BINBYTES8')));
        break;
      case 0x29: // EMPTY_TUPLE
      case 0x5d: // EMPTY_LIST (tuples and lists are both arrays here)
        stack.push([]);
        break;
      case 0x74: // TUPLE: everything since MARK
      case 0x6c: // LIST: everything since MARK
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x61: {
        // APPEND
        const item = pop();
        append(top(), [item]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x64: {
        // DICT: key, value pairs since MARK
        const dict = new Map();
        setItems(dict, popMark());
        stack.push(dict);
        break;
      }
      case 0x73: {
        // SETITEM
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n": the allowlist decides, here, before anything else is read.
        const module = line();
        const name = line();
        stack.push(resolve(module, name));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL: module and name strings from the stack
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail(`STACK_GLOBAL without two strings at offset ${at - 1}`);
        stack.push(resolve(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE: callable(*args), only for allowlisted callables
        const args = pop();
        const callable = pop();
        if (!isCallable(callable)) return fail(`REDUCE calls a ${describe(callable)} at offset ${at - 1}: only allowlisted globals can be called`);
        if (!Array.isArray(args)) fail(`REDUCE with arguments that are a ${describe(args)}, not a tuple, at offset ${at - 1}`);
        stack.push(callable.call(args as unknown[]));
        break;
      }
      case 0x62: {
        // BUILD: set an object's state. A dict (OrderedDict) keeps its items and ignores
        // attributes (a state dict's `_metadata`); anything else keeps the state as data.
        const state = pop();
        const target = pop();
        stack.push(target instanceof Map ? target : ({ built: target, state } satisfies PickleBuilt));
        break;
      }
      case 0x51: {
        // BINPERSID: a reference to data kept outside the pickle
        const id = pop();
        if (hooks.persistentLoad === undefined) fail(`a persistent id at offset ${at - 1}, which this file type does not use`);
        stack.push(hooks.persistentLoad!(id));
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const index = opcode === 0x68 ? u8() : u32();
        if (!memo.has(index)) fail(`memo entry ${index} is read before it is written (offset ${at - 1})`);
        stack.push(memo.get(index));
        break;
      }
      default:
        fail(`pickle opcode 0x${opcode.toString(16).padStart(2, '0')} (${OPCODE_NAMES[opcode] ?? 'unknown'}) at offset ${at - 1} is not read by this loader (it reads the opcodes of plain data)`);
    }
  }

  function resolve(module: string, name: string): PickleCallable {
    const callable = hooks.resolveGlobal(module, name);
    if (callable === undefined) fail(`refused: the pickle names the global ${module}.${name}, which is not allowed${hooks.refusalHint ? ` (${hooks.refusalHint})` : ''}; nothing in the file was run`);
    return callable!;
  }
}

function isCallable(x: unknown): x is PickleCallable {
  return typeof x === 'object' && x !== null && typeof (x as PickleCallable).call === 'function' && typeof (x as PickleCallable).qualifiedName === 'string';
}

/** A short description of a value for messages. */
function describe(x: unknown): string {
  if (x === null) return 'None';
  if (Array.isArray(x)) return 'tuple or list';
  if (x instanceof Map) return 'dict';
  if (isCallable(x)) return x.qualifiedName;
  return typeof x;
}

/** Names of the opcodes refused, for the message (Lib/pickletools.py). */
const OPCODE_NAMES: Record<number, string> = {
  0x49: 'INT',
  0x4c: 'LONG',
  0x46: 'FLOAT',
  0x53: 'STRING',
  0x56: 'UNICODE',
  0x70: 'PUT',
  0x67: 'GET',
  0x69: 'INST',
  0x6f: 'OBJ',
  0x81: 'NEWOBJ',
  0x92: 'NEWOBJ_EX',
  0x50: 'PERSID',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};
