/**
 * A small, safe Python unpickler (protocols 0-5, the opcodes that torch.save and pickle.dump of
 * plain containers emit). "Safe" because no Python code exists here: GLOBAL names resolve only
 * through the caller's `findClass`, so a pickle can build nothing the caller did not allow.
 *
 * Mapping: dict → Map (insertion order kept), list and tuple → Array, set/frozenset → Set,
 * str → string, int → number (bigint beyond 2^53), float → number, bool → boolean,
 * None → null, bytes/bytearray → Uint8Array.
 */
import { SuperglobalError } from "../errors.ts";

export interface UnpickleOptions {
  /** Resolves GLOBAL module.name to a callable used by REDUCE/NEWOBJ; unknown globals are an error naming them. */
  findClass?: (module: string, name: string) => ((...args: unknown[]) => unknown) | undefined;
  /** Resolves BINPERSID ids (torch storages). */
  persistentLoad?: (pid: unknown) => unknown;
  /** Names the file in errors. */
  source?: string;
}

/**
 * Thrown when the data ends before STOP. A subclass so that readers holding only a prefix of a
 * file (legacy torch checkpoints) can tell "read more" from "corrupt".
 */
export class PickleEndError extends SuperglobalError {
  constructor(message: string, source: string) {
    super("BAD_FILE", message, { input: source });
    this.name = "PickleEndError";
  }
}

export function unpickle(bytes: Uint8Array, options?: UnpickleOptions): unknown {
  return unpickleAt(bytes, 0, options).value;
}

/** Like unpickle but starting at `offset`; returns the value and the offset after STOP (legacy torch files hold several pickles back to back). */
export function unpickleAt(
  bytes: Uint8Array,
  offset: number,
  options?: UnpickleOptions,
): { value: unknown; end: number } {
  return new Unpickler(bytes, offset, options ?? {}).run();
}

/** Opcode byte → name, for error messages (the pickletools names). */
const OPCODE_NAMES: Record<number, string> = {
  40: "MARK",
  46: "STOP",
  48: "POP",
  49: "POP_MARK",
  50: "DUP",
  70: "FLOAT",
  73: "INT",
  74: "BININT",
  75: "BININT1",
  76: "LONG",
  77: "BININT2",
  78: "NONE",
  80: "PERSID",
  81: "BINPERSID",
  82: "REDUCE",
  83: "STRING",
  84: "BINSTRING",
  85: "SHORT_BINSTRING",
  86: "UNICODE",
  88: "BINUNICODE",
  97: "APPEND",
  98: "BUILD",
  99: "GLOBAL",
  100: "DICT",
  125: "EMPTY_DICT",
  101: "APPENDS",
  103: "GET",
  104: "BINGET",
  105: "INST",
  106: "LONG_BINGET",
  108: "LIST",
  93: "EMPTY_LIST",
  111: "OBJ",
  112: "PUT",
  113: "BINPUT",
  114: "LONG_BINPUT",
  115: "SETITEM",
  116: "TUPLE",
  41: "EMPTY_TUPLE",
  117: "SETITEMS",
  71: "BINFLOAT",
  128: "PROTO",
  129: "NEWOBJ",
  130: "EXT1",
  131: "EXT2",
  132: "EXT4",
  133: "TUPLE1",
  134: "TUPLE2",
  135: "TUPLE3",
  136: "NEWTRUE",
  137: "NEWFALSE",
  138: "LONG1",
  139: "LONG4",
  66: "BINBYTES",
  67: "SHORT_BINBYTES",
  140: "SHORT_BINUNICODE",
  141: "BINUNICODE8",
  142: "BINBYTES8",
  143: "EMPTY_SET",
  144: "ADDITEMS",
  145: "FROZENSET",
  146: "NEWOBJ_EX",
  147: "STACK_GLOBAL",
  148: "MEMOIZE",
  149: "FRAME",
  150: "BYTEARRAY8",
  151: "NEXT_BUFFER",
  152: "READONLY_BUFFER",
};

const utf8 = new TextDecoder("utf-8");
const latin1 = new TextDecoder("latin1");

/**
 * Globals that run code, touch the system or reach other objects' attributes when Python calls
 * them (the classic `os.system` / `builtins.eval` / `subprocess.Popen` / `operator.attrgetter`
 * payloads). Nothing here ever calls a Python name, but a file that names one is hostile or not
 * what it claims to be: it is refused at once, before the caller's `findClass` is asked, so no
 * permissive reader can let one through.
 */
const CODE_MODULES = new Set([
  "os",
  "posix",
  "nt",
  "subprocess",
  "_posixsubprocess",
  "sys",
  "shutil",
  "socket",
  "importlib",
  "runpy",
  "pickle",
  "_pickle",
  "cPickle",
  "marshal",
  "code",
  "codeop",
  "ctypes",
  "pty",
  "commands",
  "popen2",
  "webbrowser",
  "multiprocessing",
  "threading",
  "_thread",
  "thread",
  "signal",
  "asyncio",
  "functools",
  "operator",
  "_operator",
  "types",
  "inspect",
  "io",
  "_io",
  "tempfile",
  "glob",
  "timeit",
  "pdb",
  "bdb",
  "platform",
  "http",
  "urllib",
  "urllib2",
  "ftplib",
  "smtplib",
  "telnetlib",
  "requests",
  "sqlite3",
  "shelve",
  "dbm",
  "ssl",
  "mmap",
  "resource",
  "gc",
  "cffi",
]);

/** Builtins that build plain data; every other builtin (eval, exec, getattr, open, ...) is code. */
const DATA_BUILTINS = new Set([
  "set",
  "frozenset",
  "bytearray",
  "bytes",
  "slice",
  "range",
  "complex",
  "int",
  "float",
  "str",
  "bool",
  "list",
  "dict",
  "tuple",
  "object",
]);

/** Names outside those modules that run code or load other pickles. */
const CODE_NAMES = new Set([
  "numpy.testing._private.utils.runstring",
  "numpy.load",
  "numpy.lib.npyio.load",
  "torch.load",
  "torch.serialization.load",
  "torch.hub.load",
  "torch.jit.load",
  "torch._C._jit_script_compile",
]);

/** Whether GLOBAL module.name names code rather than data (see CODE_MODULES). */
export function isCodeGlobal(module: string, name: string): boolean {
  const root = module.split(".")[0]!;
  if (root === "builtins" || root === "__builtin__") return !DATA_BUILTINS.has(name);
  return CODE_MODULES.has(root) || CODE_NAMES.has(`${module}.${name}`);
}

/** Globals every pickle may use: they build plain data, never run anything. */
function builtinGlobal(
  module: string,
  name: string,
): ((...args: unknown[]) => unknown) | undefined {
  const key = `${module}.${name}`;
  switch (key) {
    case "collections.OrderedDict":
      return (items?: unknown) => {
        const map = new Map<unknown, unknown>();
        if (Array.isArray(items)) for (const [k, v] of items as [unknown, unknown][]) map.set(k, v);
        return map;
      };
    case "builtins.set":
    case "__builtin__.set":
    case "builtins.frozenset":
    case "__builtin__.frozenset":
      return (items?: unknown) => new Set(Array.isArray(items) ? items : []);
    case "builtins.bytearray":
    case "__builtin__.bytearray":
    case "builtins.bytes":
      return (data?: unknown, encoding?: unknown) => toBytes(data, encoding);
    // Python 3 pickles bytes at protocol 2 as _codecs.encode(text, "latin1").
    case "_codecs.encode":
      return (data?: unknown, encoding?: unknown) => toBytes(data, encoding);
    default:
      return undefined;
  }
}

function toBytes(data: unknown, encoding: unknown): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  if (data instanceof Uint8Array) return data.slice();
  if (Array.isArray(data)) return Uint8Array.from(data as number[]);
  if (typeof data === "string") {
    if (encoding === "latin1" || encoding === "latin-1" || encoding === "iso-8859-1") {
      return Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
    }
    return new TextEncoder().encode(data);
  }
  throw new TypeError(`cannot make bytes from ${typeof data}`);
}

class Unpickler {
  private readonly view: DataView;
  private pos: number;
  private stack: unknown[] = [];
  private readonly metastack: unknown[][] = [];
  private readonly memo = new Map<number, unknown>();
  private readonly source: string;
  /** Offset of the opcode being executed, for error messages. */
  private opStart = 0;

  constructor(
    private readonly bytes: Uint8Array,
    offset: number,
    private readonly options: UnpickleOptions,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = offset;
    this.source = options.source ?? "pickle";
  }

  run(): { value: unknown; end: number } {
    if (!Number.isInteger(this.pos) || this.pos < 0 || this.pos > this.bytes.length) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${this.source}: pickle offset ${this.pos} is outside the ${this.bytes.length} bytes`,
        { input: this.source },
      );
    }
    try {
      for (;;) {
        this.opStart = this.pos;
        const op = this.u8();
        if (op === 0x2e) {
          const value = this.pop();
          return { value, end: this.pos };
        }
        this.step(op);
      }
    } catch (err) {
      if (err instanceof SuperglobalError) throw err;
      // Anything else (a callable given bad arguments, a value of the wrong kind) means the
      // pickle is not what it claims to be; never let a raw TypeError/RangeError out.
      throw this.fail(err instanceof Error ? err.message : String(err), err);
    }
  }

  private fail(what: string, cause?: unknown): SuperglobalError {
    const op = this.bytes[this.opStart];
    const name = op === undefined ? "" : ` (${OPCODE_NAMES[op] ?? `0x${op.toString(16)}`})`;
    return new SuperglobalError(
      "BAD_FILE",
      `${this.source}: bad pickle at byte ${this.opStart}${name}: ${what}`,
      { input: this.source, cause },
    );
  }

  private need(n: number, what: string): void {
    if (n < 0 || this.pos + n > this.bytes.length) {
      throw new PickleEndError(
        `${this.source}: pickle data ends at byte ${this.bytes.length} while reading ${what} ` +
          `(${n} bytes at byte ${this.pos}); the file is truncated or not a pickle`,
        this.source,
      );
    }
  }

  private u8(): number {
    this.need(1, "an opcode");
    return this.bytes[this.pos++]!;
  }

  private u16(): number {
    this.need(2, "a 2-byte argument");
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  private u32(): number {
    this.need(4, "a 4-byte argument");
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private i32(): number {
    this.need(4, "a 4-byte argument");
    const v = this.view.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }

  private u64(): number {
    this.need(8, "an 8-byte argument");
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`length ${v} is too large`);
    return Number(v);
  }

  private take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A newline-terminated argument of the text opcodes (GLOBAL, INT, ...), without the newline. */
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) {
      throw new PickleEndError(
        `${this.source}: pickle data ends at byte ${this.bytes.length} inside a text argument ` +
          `starting at byte ${this.pos}; the file is truncated or not a pickle`,
        this.source,
      );
    }
    const text = latin1.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return text;
  }

  private push(value: unknown): void {
    this.stack.push(value);
  }

  private pop(): unknown {
    if (this.stack.length === 0) throw this.fail("the stack is empty");
    return this.stack.pop();
  }

  private top(): unknown {
    if (this.stack.length === 0) throw this.fail("the stack is empty");
    return this.stack[this.stack.length - 1];
  }

  /** The values pushed since the last MARK; restores the stack below it. */
  private popMark(): unknown[] {
    const items = this.stack;
    const below = this.metastack.pop();
    if (below === undefined) throw this.fail("no MARK to pop to");
    this.stack = below;
    return items;
  }

  private memoGet(index: number): unknown {
    if (!this.memo.has(index)) throw this.fail(`memo entry ${index} was never stored`);
    return this.memo.get(index);
  }

  private resolveGlobal(module: string, name: string): (...args: unknown[]) => unknown {
    if (isCodeGlobal(module, name)) {
      throw this.fail(
        `refuses global ${module}.${name}: it names code, not data (the file is hostile or not what it claims to be)`,
      );
    }
    // The plain-data builtins come first so a permissive findClass cannot shadow them.
    const fn = builtinGlobal(module, name) ?? this.options.findClass?.(module, name);
    if (fn === undefined) {
      throw this.fail(`unknown global ${module}.${name} (not allowed by the reader)`);
    }
    return fn;
  }

  private call(callable: unknown, args: unknown): unknown {
    if (typeof callable !== "function") throw this.fail("REDUCE/NEWOBJ target is not callable");
    if (!Array.isArray(args)) throw this.fail("REDUCE/NEWOBJ arguments are not a tuple");
    return callable(...args);
  }

  private persistent(pid: unknown): unknown {
    const load = this.options.persistentLoad;
    if (load === undefined) throw this.fail("persistent id found but no persistentLoad given");
    return load(pid);
  }

  private setItems(target: unknown, items: unknown[]): void {
    if (items.length % 2 !== 0) throw this.fail("SETITEMS needs key/value pairs");
    if (target instanceof Map) {
      for (let i = 0; i < items.length; i += 2) target.set(items[i], items[i + 1]);
    } else if (target !== null && typeof target === "object" && !Array.isArray(target)) {
      for (let i = 0; i < items.length; i += 2) setAttribute(target, items[i], items[i + 1]);
    } else {
      throw this.fail("SETITEM target is not a dict");
    }
  }

  private append(target: unknown, items: unknown[]): void {
    if (Array.isArray(target)) {
      for (const item of items) target.push(item);
    } else if (target instanceof Set) {
      for (const item of items) target.add(item);
    } else if (target !== null && typeof target === "object" && inherited(target, "append")) {
      const add = (target as { append: unknown }).append;
      if (typeof add !== "function") throw this.fail("APPEND target is not a list");
      for (const item of items) add.call(target, item);
    } else {
      throw this.fail("APPEND target is not a list");
    }
  }

  /**
   * Python's BUILD: `__setstate__(state)` when the object has one, else the state is
   * `dict` or `(dict, slots)` of attributes. On a Map (an OrderedDict subclass instance, e.g. a
   * state_dict with its `_metadata`) the attributes become properties of the Map object, so they
   * never mix with its keys.
   */
  private build(obj: unknown, state: unknown): void {
    // Not a function either: those are globals (classes), shared by every use of the name.
    if (obj === null || typeof obj !== "object") {
      throw this.fail("BUILD target is not an object");
    }
    // Only a reader's own class method: an attribute an earlier BUILD set is never called.
    const setstate = inherited(obj, "__setstate__")
      ? (obj as { __setstate__?: unknown }).__setstate__
      : undefined;
    if (typeof setstate === "function") {
      setstate.call(obj, state);
      return;
    }
    if (state === null) return;
    const parts =
      Array.isArray(state) && state.length === 2 ? (state as unknown[]) : ([state] as unknown[]);
    for (const part of parts) {
      if (part === null) continue;
      if (!(part instanceof Map)) throw this.fail("BUILD state is not a dict");
      for (const [k, v] of part) setAttribute(obj, k, v);
    }
  }

  private step(op: number): void {
    switch (op) {
      case 0x80: {
        // PROTO
        const proto = this.u8();
        if (proto > 5) throw this.fail(`unsupported pickle protocol ${proto}`);
        return;
      }
      case 0x95: // FRAME: a length hint only; the data follow inline.
        this.u64();
        return;
      case 0x28: // MARK
        this.metastack.push(this.stack);
        this.stack = [];
        return;
      case 0x30: // POP: with nothing above the last MARK, Python pops the mark itself.
        if (this.stack.length > 0) this.stack.pop();
        else this.popMark();
        return;
      case 0x31: // POP_MARK
        this.popMark();
        return;
      case 0x32: // DUP
        this.push(this.top());
        return;

      // Constants and numbers
      case 0x4e: // NONE
        this.push(null);
        return;
      case 0x88: // NEWTRUE
        this.push(true);
        return;
      case 0x89: // NEWFALSE
        this.push(false);
        return;
      case 0x4a: // BININT
        this.push(this.i32());
        return;
      case 0x4b: // BININT1
        this.push(this.u8());
        return;
      case 0x4d: // BININT2
        this.push(this.u16());
        return;
      case 0x8a: // LONG1
        this.push(this.long(this.u8()));
        return;
      case 0x8b: {
        // LONG4
        const n = this.i32();
        if (n < 0) throw this.fail("negative LONG4 length");
        this.push(this.long(n));
        return;
      }
      case 0x47: {
        // BINFLOAT: big-endian IEEE double, unlike every other binary argument.
        this.need(8, "a float");
        this.push(this.view.getFloat64(this.pos, false));
        this.pos += 8;
        return;
      }
      case 0x49: {
        // INT (protocol 0): "01"/"00" are True/False
        const text = this.line();
        if (text === "01") this.push(true);
        else if (text === "00") this.push(false);
        else this.push(this.parseInt(text));
        return;
      }
      case 0x4c: // LONG (protocol 0): digits with an optional trailing L
        this.push(this.parseInt(this.line().replace(/L$/, "")));
        return;
      case 0x46: {
        // FLOAT (protocol 0)
        const text = this.line();
        const value = Number(text);
        if (Number.isNaN(value) && !/^[-+]?nan$/i.test(text)) throw this.fail(`bad float ${text}`);
        this.push(value);
        return;
      }

      // Strings and bytes
      case 0x58: // BINUNICODE
        this.push(utf8.decode(this.take(this.u32(), "a string")));
        return;
      case 0x8c: // SHORT_BINUNICODE
        this.push(utf8.decode(this.take(this.u8(), "a string")));
        return;
      case 0x8d: // BINUNICODE8
        this.push(utf8.decode(this.take(this.u64(), "a string")));
        return;
      case 0x54: {
        // BINSTRING (Python 2 str): decoded as UTF-8, as torch.load does by default.
        const n = this.i32();
        if (n < 0) throw this.fail("negative BINSTRING length");
        this.push(utf8.decode(this.take(n, "a string")));
        return;
      }
      case 0x55: // SHORT_BINSTRING
        this.push(utf8.decode(this.take(this.u8(), "a string")));
        return;
      case 0x42: // BINBYTES
        this.push(this.take(this.u32(), "bytes").slice());
        return;
      case 0x43: // SHORT_BINBYTES
        this.push(this.take(this.u8(), "bytes").slice());
        return;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        this.push(this.take(this.u64(), "bytes").slice());
        return;

      // Containers
      case 0x7d: // EMPTY_DICT
        this.push(new Map());
        return;
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        this.push([]);
        return;
      case 0x8f: // EMPTY_SET
        this.push(new Set());
        return;
      case 0x74: // TUPLE
      case 0x6c: // LIST
        this.push(this.popMark());
        return;
      case 0x91: // FROZENSET
        this.push(new Set(this.popMark()));
        return;
      case 0x85: // TUPLE1
        this.push([this.pop()]);
        return;
      case 0x86: {
        // TUPLE2
        const b = this.pop();
        const a = this.pop();
        this.push([a, b]);
        return;
      }
      case 0x87: {
        // TUPLE3
        const c = this.pop();
        const b = this.pop();
        const a = this.pop();
        this.push([a, b, c]);
        return;
      }
      case 0x64: {
        // DICT
        const map = new Map();
        this.setItems(map, this.popMark());
        this.push(map);
        return;
      }
      case 0x61: {
        // APPEND
        const item = this.pop();
        this.append(this.top(), [item]);
        return;
      }
      case 0x65: {
        // APPENDS
        const items = this.popMark();
        this.append(this.top(), items);
        return;
      }
      case 0x90: {
        // ADDITEMS
        const items = this.popMark();
        const target = this.top();
        if (!(target instanceof Set)) throw this.fail("ADDITEMS target is not a set");
        for (const item of items) target.add(item);
        return;
      }
      case 0x73: {
        // SETITEM
        const value = this.pop();
        const key = this.pop();
        this.setItems(this.top(), [key, value]);
        return;
      }
      case 0x75: {
        // SETITEMS
        const items = this.popMark();
        this.setItems(this.top(), items);
        return;
      }

      // Memo
      case 0x71: // BINPUT
        this.memo.set(this.u8(), this.top());
        return;
      case 0x72: // LONG_BINPUT
        this.memo.set(this.u32(), this.top());
        return;
      case 0x70: // PUT
        this.memo.set(this.parseIndex(this.line()), this.top());
        return;
      case 0x94: // MEMOIZE
        this.memo.set(this.memo.size, this.top());
        return;
      case 0x68: // BINGET
        this.push(this.memoGet(this.u8()));
        return;
      case 0x6a: // LONG_BINGET
        this.push(this.memoGet(this.u32()));
        return;
      case 0x67: // GET
        this.push(this.memoGet(this.parseIndex(this.line())));
        return;

      // Objects
      case 0x63: {
        // GLOBAL
        const module = this.line();
        const name = this.line();
        this.push(this.resolveGlobal(module, name));
        return;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = this.pop();
        const module = this.pop();
        if (typeof module !== "string" || typeof name !== "string") {
          throw this.fail("STACK_GLOBAL needs two strings");
        }
        this.push(this.resolveGlobal(module, name));
        return;
      }
      case 0x52: {
        // REDUCE
        const args = this.pop();
        const callable = this.pop();
        this.push(this.call(callable, args));
        return;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args); the reader's callable plays __new__.
        const args = this.pop();
        const cls = this.pop();
        this.push(this.call(cls, args));
        return;
      }
      case 0x92: {
        // NEWOBJ_EX: keyword arguments are passed as one trailing Map when present.
        const kwargs = this.pop();
        const args = this.pop();
        const cls = this.pop();
        if (!Array.isArray(args)) throw this.fail("NEWOBJ_EX arguments are not a tuple");
        const all = kwargs instanceof Map && kwargs.size > 0 ? [...args, kwargs] : args;
        this.push(this.call(cls, all));
        return;
      }
      case 0x62: {
        // BUILD
        const state = this.pop();
        this.build(this.top(), state);
        return;
      }
      case 0x51: // BINPERSID
        this.push(this.persistent(this.pop()));
        return;
      case 0x50: // PERSID (protocol 0): the id is a text line
        this.push(this.persistent(this.line()));
        return;

      default: {
        const name = OPCODE_NAMES[op];
        throw new SuperglobalError(
          "BAD_FILE",
          name === undefined
            ? `${this.source}: unknown pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${this.opStart}; the file is corrupt or not a pickle`
            : `${this.source}: unsupported pickle opcode ${name} at byte ${this.opStart}`,
          { input: this.source },
        );
      }
    }
  }

  /** LONG1/LONG4: little-endian two's complement of n bytes. */
  private long(n: number): number | bigint {
    const b = this.take(n, "a long integer");
    if (n === 0) return 0;
    // Through one hex string: linear, where shifting a growing bigint byte by byte is quadratic
    // (a 200 kB LONG4 took a minute).
    const hex = Buffer.from(b).reverse().toString("hex");
    let v = BigInt(`0x${hex}`);
    if (b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
    return toIntValue(v);
  }

  private parseInt(text: string): number | bigint {
    const digits = text.trim();
    if (!/^[-+]?\d+$/.test(digits)) {
      throw this.fail(
        `bad integer ${JSON.stringify(digits.length > 40 ? `${digits.slice(0, 37)}...` : digits)}`,
      );
    }
    // Python refuses longer decimal ints too (sys.int_info.default_max_str_digits); decimal
    // parsing is quadratic.
    if (digits.replace(/^[-+]/, "").length > MAX_INT_DIGITS) {
      throw this.fail(`an integer of more than ${MAX_INT_DIGITS} digits`);
    }
    return toIntValue(BigInt(digits));
  }

  private parseIndex(text: string): number {
    const v = this.parseInt(text);
    if (typeof v !== "number" || v < 0) throw this.fail(`bad memo index ${text}`);
    return v;
  }
}

/** Python's default limit on the digits of a decimal int (sys.int_info.default_max_str_digits). */
const MAX_INT_DIGITS = 4300;

/** Whether `key` of `obj` comes from its class (its prototype chain), not from the pickle. */
function inherited(obj: object, key: string): boolean {
  return key in obj && !Object.hasOwn(obj, key);
}

/**
 * Sets attribute `key` of a pickled object as an own property: defineProperty, so that a key
 * "__proto__" is a plain attribute and never replaces the object's prototype. Frozen objects (the
 * reader's own records) refuse, which surfaces as BAD_FILE.
 */
function setAttribute(obj: object, key: unknown, value: unknown): void {
  const ok = Reflect.defineProperty(obj, String(key), {
    value,
    writable: true,
    enumerable: true,
    configurable: true,
  });
  if (!ok) throw new TypeError(`cannot set attribute ${String(key)} of this object`);
}

/** Python int → number when exactly representable, else bigint. */
function toIntValue(v: bigint): number | bigint {
  return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}
