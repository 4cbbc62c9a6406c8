/**
 * The torch object model of a `torch.save` pickle, shared by the zip and legacy containers: the
 * unpickler hooks that stand for storage classes, dtypes and tensor rebuild functions, the entry
 * that holds the state dict, and the cutting of each tensor out of its storage record (offset,
 * strides, float16/bfloat16 and small-int widening). The containers are read by torch-zip.ts and
 * torch-legacy.ts; load.ts ties them together.
 */
import { badFile, SuperglobalError } from "../errors.ts";
import type { UnpickleOptions } from "../io/pickle.ts";
import type { StateDict, Tensor, TensorDtype } from "./state-dict.ts";

/** Entries that wrap the state dict in training checkpoints (CVNet uses `model_state`). */
const WRAPPERS = ["model_state", "state_dict", "model_state_dict", "model"];

/** Element kinds of torch storages we can read; some are widened into a TensorDtype. */
type StorageKind =
  | "float32"
  | "float64"
  | "float16"
  | "bfloat16"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

const ELEMENT_SIZE: Record<StorageKind, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};

/** `torch.<Name>Storage` classes. */
const STORAGE_CLASSES: Record<string, StorageKind> = {
  FloatStorage: "float32",
  DoubleStorage: "float64",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool",
  // Untyped storages hold bytes; _rebuild_tensor_v3 gives them their dtype.
  UntypedStorage: "uint8",
};

/** `torch.<dtype>` objects (used by _rebuild_tensor_v3). */
const TORCH_DTYPES: Record<string, StorageKind> = {
  float32: "float32",
  float: "float32",
  float64: "float64",
  double: "float64",
  float16: "float16",
  half: "float16",
  bfloat16: "bfloat16",
  int64: "int64",
  long: "int64",
  int32: "int32",
  int: "int32",
  int16: "int16",
  short: "int16",
  int8: "int8",
  uint8: "uint8",
  bool: "bool",
};

/** Rebuild functions for tensor kinds we do not read (quantised, sparse, ...). */
const UNSUPPORTED_REBUILDS = new Set([
  "_rebuild_qtensor",
  "_rebuild_sparse_tensor",
  "_rebuild_sparse_csr_tensor",
  "_rebuild_meta_tensor_no_storage",
  "_rebuild_wrapper_subclass",
  "_rebuild_device_tensor_from_numpy",
  "_rebuild_xla_tensor",
  "_rebuild_mlc_tensor",
  "_rebuild_nested_tensor",
]);

type Callable = (...args: unknown[]) => unknown;

/** A pickle global that stands for a storage class or a dtype; calling it is an error. */
interface KindMarker extends Callable {
  torchKind: StorageKind;
  torchName: string;
}

/**
 * One storage record (or, in legacy files, a view into one): elements [base, base + numel).
 * Frozen, like PendingTensor: a later SETITEM or BUILD in the pickle must not rewrite what was
 * checked when it was made.
 */
class StorageRef {
  constructor(
    readonly key: string,
    readonly kind: StorageKind,
    readonly base: number,
    readonly numel: number,
  ) {
    Object.freeze(this);
  }
}

class PendingTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: unknown,
    readonly size: unknown,
    readonly stride: unknown,
  ) {
    Object.freeze(this);
  }
}

/** A tensor kind we do not read; an error only if the state dict holds one. */
class UnsupportedTensor {
  constructor(readonly how: string) {}
}

/**
 * Modules whose classes a checkpoint may hold besides tensors (numpy scalars and arrays, an
 * argparse.Namespace of training options, torch.Size, ...): kept inert, never called. Any other
 * global is refused, as torch.load(weights_only=True) refuses it; the code-running ones (os,
 * subprocess, builtins.eval, ...) are refused earlier by the unpickler itself.
 */
const INERT_GLOBALS = [
  /^numpy(\.|$)/,
  /^torch(\.|$)/,
  /^argparse\.Namespace$/,
  /^collections\./,
  /^copyreg\._reconstructor$/,
  /^copy_reg\._reconstructor$/,
  /^(builtins|__builtin__)\./,
  /^_codecs\.encode$/,
  /^pathlib\.(Pure)?(Posix|Windows)?Path$/,
  /^datetime\.(date|time|datetime|timedelta|timezone)$/,
  /^decimal\.Decimal$/,
  /^fractions\.Fraction$/,
];

/** Any other object in the pickle (numpy scalars, argparse.Namespace, ...): kept inert. */
class OpaqueObject {
  state: unknown = null;
  constructor(
    readonly global: string,
    readonly args: unknown[],
  ) {}
  __setstate__(state: unknown): void {
    this.state = state;
  }
}

/** The torch side of unpickling, and the cutting of tensors out of storages. */
export class TorchModel {
  /** Storage records seen in the pickle: key → element kind (the record holds `numel` elements). */
  private readonly records = new Map<string, { kind: StorageKind; numel: number }>();
  readonly options: UnpickleOptions;

  constructor(private readonly source: string) {
    this.options = {
      source,
      findClass: (module, name) => this.findClass(module, name),
      persistentLoad: (pid) => this.persistentLoad(pid),
    };
  }

  elementSize(key: string): number | undefined {
    const rec = this.records.get(key);
    return rec === undefined ? undefined : ELEMENT_SIZE[rec.kind];
  }

  private findClass(module: string, name: string): Callable {
    const isTorch = module === "torch" || module.startsWith("torch.");
    if (isTorch && STORAGE_CLASSES[name] !== undefined) return marker(name, STORAGE_CLASSES[name]);
    if (module === "torch" && TORCH_DTYPES[name] !== undefined) {
      return marker(name, TORCH_DTYPES[name]);
    }
    if (module === "torch._utils") {
      switch (name) {
        case "_rebuild_tensor":
        case "_rebuild_tensor_v2":
          return (storage, offset, size, stride) =>
            new PendingTensor(this.asStorage(storage), offset, size, stride);
        case "_rebuild_tensor_v3":
          // (storage, offset, size, stride, requires_grad, hooks, dtype, ...): an untyped
          // storage read as `dtype`.
          return (storage, offset, size, stride, _grad, _hooks, dtype) =>
            new PendingTensor(this.retype(this.asStorage(storage), dtype), offset, size, stride);
        case "_rebuild_parameter":
        case "_rebuild_parameter_with_state":
          return (data) => data;
      }
      if (UNSUPPORTED_REBUILDS.has(name)) return () => new UnsupportedTensor(`${module}.${name}`);
    }
    if (module === "torch._tensor" && name === "_rebuild_from_type_v2") {
      // (func, new_type, args, state): the plain tensor that func(*args) rebuilds.
      return (func, _type, args) => {
        if (typeof func !== "function" || !Array.isArray(args)) {
          throw badFile(this.source, "malformed _rebuild_from_type_v2 in the pickle");
        }
        return func(...args);
      };
    }
    if (module === "torch.nn.parameter" && name === "Parameter") return (data) => data;
    const global = `${module}.${name}`;
    if (!INERT_GLOBALS.some((re) => re.test(global))) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${this.source}: the pickle names ${global}, which is neither a tensor nor plain data; only state dicts of tensors are read (as torch.load(weights_only=True) reads them): re-save with torch.save(model.state_dict(), path)`,
        { input: this.source },
      );
    }
    return Object.assign((...args: unknown[]) => new OpaqueObject(global, args), {
      pickleGlobal: global,
    });
  }

  /** BINPERSID `('storage', storage_type, key, location, numel[, view_metadata])`. */
  private persistentLoad(pid: unknown): StorageRef {
    if (!Array.isArray(pid) || pid[0] !== "storage" || pid.length < 5) {
      throw badFile(this.source, `unexpected persistent id in the pickle: ${describe(pid)}`);
    }
    const [, type, key, , numel, view] = pid as unknown[];
    if (!isMarker(type)) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${this.source}: storage type ${describe(type)} is not supported`,
        { input: this.source },
      );
    }
    if (typeof key !== "string" || !isCount(numel)) {
      throw badFile(this.source, `malformed storage id ${describe(pid)}`);
    }
    const known = this.records.get(key);
    if (known !== undefined && known.kind !== type.torchKind) {
      throw badFile(
        this.source,
        `storage ${key} is used as both ${known.kind} and ${type.torchKind}`,
      );
    }
    this.records.set(key, { kind: type.torchKind, numel: Math.max(numel, known?.numel ?? 0) });
    if (view === undefined || view === null) return new StorageRef(key, type.torchKind, 0, numel);
    // Legacy views: (view_key, offset, view_size) into the storage `key`.
    if (!Array.isArray(view) || view.length !== 3 || !isCount(view[1]) || !isCount(view[2])) {
      throw badFile(this.source, `malformed storage view ${describe(view)} of storage ${key}`);
    }
    if (view[1] + view[2] > numel) {
      throw badFile(this.source, `storage view of ${key} runs past its ${numel} elements`);
    }
    return new StorageRef(key, type.torchKind, view[1], view[2]);
  }

  private asStorage(storage: unknown): StorageRef {
    if (!(storage instanceof StorageRef)) {
      throw badFile(this.source, `a tensor is built from ${describe(storage)}, not a storage`);
    }
    return storage;
  }

  private retype(storage: StorageRef, dtype: unknown): StorageRef {
    if (!isMarker(dtype)) throw badFile(this.source, `tensor dtype ${describe(dtype)} is unknown`);
    const size = ELEMENT_SIZE[dtype.torchKind];
    const byteBase = storage.base * ELEMENT_SIZE[storage.kind];
    const bytes = storage.numel * ELEMENT_SIZE[storage.kind];
    return new StorageRef(
      storage.key,
      dtype.torchKind,
      Math.floor(byteBase / size),
      Math.floor(bytes / size),
    );
  }

  /**
   * The tensors of the state dict in `root` (unwrapping `model_state` and the like), each
   * storage record read once through `readRecord` (given the bytes the pickle says it holds).
   */
  stateDict(
    root: unknown,
    readRecord: (key: string, bytes: number | undefined) => Uint8Array,
  ): StateDict {
    const dict = this.findStateDict(root);
    const raw = new Map<string, Uint8Array>();
    const handedOut = new Set<string>();
    const out: StateDict = new Map();
    // What the tensors may take, in storage bytes: views of a storage may overlap (tied weights,
    // slices, expanded stride-0 tensors), but many large views of one small storage are a memory
    // bomb (a 1 kB pickle asking for 30000 x 30000 of stride 0). Bounded by what the file holds.
    const budget = { left: MEMORY_SLACK };
    for (const [name, value] of dict) {
      if (value instanceof UnsupportedTensor) {
        throw new SuperglobalError(
          "UNSUPPORTED",
          `${this.source}: tensor ${String(name)} is saved with ${value.how}, which is not supported`,
          { input: this.source },
        );
      }
      if (!(value instanceof PendingTensor) || typeof name !== "string") continue;
      const key = value.storage.key;
      let bytes = raw.get(key);
      if (bytes === undefined) {
        const rec = this.records.get(key);
        bytes = readRecord(key, rec === undefined ? undefined : rec.numel * ELEMENT_SIZE[rec.kind]);
        this.checkRecord(key, bytes);
        raw.set(key, bytes);
        budget.left += OVERLAP_FACTOR * bytes.length;
      }
      out.set(name, this.cut(name, value, bytes, handedOut, budget));
    }
    if (out.size === 0) {
      throw badFile(
        this.source,
        `no tensors found (looked at the top level and under ${WRAPPERS.join(", ")})`,
      );
    }
    return out;
  }

  private findStateDict(root: unknown): Map<unknown, unknown> {
    if (!(root instanceof Map)) {
      const what = root instanceof OpaqueObject ? `a pickled ${root.global}` : describe(root);
      throw badFile(this.source, `holds ${what}, not a dict of tensors (a state dict)`);
    }
    for (const wrapper of WRAPPERS) {
      const inner = root.get(wrapper);
      if (inner instanceof Map && [...inner.values()].some((v) => isTensorLike(v))) return inner;
    }
    return root;
  }

  /** A storage record holds at least the bytes its persistent id claims (torch writes exactly those). */
  private checkRecord(key: string, bytes: Uint8Array): void {
    const rec = this.records.get(key);
    if (rec === undefined) return;
    const claimed = rec.numel * ELEMENT_SIZE[rec.kind];
    if (bytes.length < claimed) {
      throw badFile(
        this.source,
        `storage ${key} claims ${rec.numel} ${rec.kind} elements (${claimed} bytes) but its record holds ${bytes.length} bytes`,
      );
    }
  }

  /** The C-order values of `t`, widened to a TensorDtype. */
  private cut(
    name: string,
    t: PendingTensor,
    record: Uint8Array,
    handedOut: Set<string>,
    budget: { left: number },
  ): Tensor {
    if (!isCountList(t.size) || !isCountList(t.stride) || !isCount(t.offset)) {
      throw badFile(
        this.source,
        `tensor ${name} has a malformed size ${describe(t.size)}, stride ${describe(t.stride)} or offset ${describe(t.offset)}`,
      );
    }
    const shape = t.size;
    const stride = t.stride;
    if (stride.length !== shape.length) {
      throw badFile(
        this.source,
        `tensor ${name} has ${shape.length} sizes but ${stride.length} strides`,
      );
    }
    const { kind, key } = t.storage;
    const elSize = ELEMENT_SIZE[kind];
    const recordElements = Math.floor(record.length / elSize);
    const available = Math.min(t.storage.numel, recordElements - t.storage.base);
    const numel = shape.reduce((a, b) => a * b, 1);
    let last = t.offset;
    for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * stride[d]!;
    if (numel > 0 && last >= available) {
      throw badFile(
        this.source,
        `tensor ${name} (offset ${t.offset}, size [${shape}], stride [${stride}]) reaches element ${last} of storage ${key}, which has ${available} (${record.length} bytes of ${kind})`,
      );
    }
    if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) {
      throw badFile(this.source, `tensor ${name} has an impossible size [${shape}]`);
    }
    budget.left -= numel * elSize;
    if (budget.left < 0) {
      throw badFile(
        this.source,
        `tensor ${name} (size [${shape}], stride [${stride}]) would take the tensors past ${OVERLAP_FACTOR}x the storage bytes in the file: overlapping views of storage ${key} multiply memory`,
      );
    }
    const all = typedView(kind, record, recordElements);
    const start = t.storage.base + t.offset;
    let values: TypedArray;
    if (isContiguous(shape, stride)) {
      // A tensor that is its whole storage keeps the record's memory (no copy); views of a
      // shared storage, and second users of one, get their own copy.
      if (start === 0 && numel === recordElements && !handedOut.has(key)) {
        handedOut.add(key);
        values = all;
      } else {
        values = all.slice(start, start + numel);
      }
    } else {
      values = gather(all, start, shape, stride, numel);
    }
    return { ...widen(kind, values), shape };
  }
}

/** Tensors may take this many times the bytes of the storages they view, ... */
const OVERLAP_FACTOR = 4;
/** ... plus this much (small expanded tensors, scalars). */
const MEMORY_SLACK = 16 * 2 ** 20;

type TypedArray =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Uint16Array;

function typedView(kind: StorageKind, bytes: Uint8Array, n: number): TypedArray {
  const { buffer, byteOffset } = bytes;
  if (byteOffset % ELEMENT_SIZE[kind] !== 0) {
    // ByteSource buffers start at 0; this guards other callers.
    return typedView(kind, bytes.slice(), n);
  }
  switch (kind) {
    case "float32":
      return new Float32Array(buffer, byteOffset, n);
    case "float64":
      return new Float64Array(buffer, byteOffset, n);
    case "int64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "int32":
      return new Int32Array(buffer, byteOffset, n);
    case "int16":
      return new Int16Array(buffer, byteOffset, n);
    case "int8":
      return new Int8Array(buffer, byteOffset, n);
    case "float16":
    case "bfloat16":
      return new Uint16Array(buffer, byteOffset, n);
    case "uint8":
    case "bool":
      return new Uint8Array(buffer, byteOffset, n);
  }
}

/** Into the dtypes a StateDict holds: half floats to float32, small ints to int32. */
function widen(
  kind: StorageKind,
  values: TypedArray,
): { dtype: TensorDtype; data: Tensor["data"] } {
  switch (kind) {
    case "float32":
    case "float64":
    case "int64":
    case "int32":
    case "uint8":
    case "bool":
      return { dtype: kind, data: values as Tensor["data"] };
    case "float16": {
      const table = halfTable();
      const src = values as Uint16Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
      return { dtype: "float16", data: out };
    }
    case "bfloat16": {
      // bfloat16 is the top half of a float32, so widening is exact (reported as float32).
      const src = values as Uint16Array;
      const bits = new Uint32Array(src.length);
      for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
      return { dtype: "float32", data: new Float32Array(bits.buffer) };
    }
    case "int16":
    case "int8":
      return { dtype: "int32", data: Int32Array.from(values as Int16Array) };
  }
}

let halfValues: Float32Array | undefined;

/** All 65536 float16 values as float32 (built once; exact). */
function halfTable(): Float32Array {
  if (halfValues !== undefined) return halfValues;
  halfValues = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac === 0 ? Infinity : NaN;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    halfValues[h] = sign * v;
  }
  return halfValues;
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** A C-order copy of the strided view at `start`. */
function gather(
  all: TypedArray,
  start: number,
  shape: number[],
  stride: number[],
  numel: number,
): TypedArray {
  const Ctor = all.constructor as new (n: number) => TypedArray;
  const out = new Ctor(numel);
  if (numel === 0) return out;
  const nd = shape.length;
  const index = new Array<number>(nd).fill(0);
  const inner = nd > 0 ? shape[nd - 1]! : 1;
  const innerStride = nd > 0 ? stride[nd - 1]! : 0;
  let base = start;
  const dst = out as unknown as { [i: number]: number | bigint };
  const srcArr = all as unknown as { [i: number]: number | bigint };
  for (let o = 0; o < numel; o += inner) {
    for (let i = 0; i < inner; i++) dst[o + i] = srcArr[base + i * innerStride]!;
    // Advance the odometer over all but the last dimension.
    for (let d = nd - 2; d >= 0; d--) {
      index[d]!++;
      base += stride[d]!;
      if (index[d]! < shape[d]!) break;
      base -= stride[d]! * shape[d]!;
      index[d] = 0;
    }
  }
  return out;
}

function marker(name: string, kind: StorageKind): KindMarker {
  const fn = () => {
    throw new Error(`torch.${name} cannot be called here`);
  };
  return Object.assign(fn, { torchKind: kind, torchName: name });
}

function isMarker(value: unknown): value is KindMarker {
  return typeof value === "function" && "torchKind" in value;
}

function isTensorLike(value: unknown): boolean {
  return value instanceof PendingTensor || value instanceof UnsupportedTensor;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0;
}

function isCountList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every(isCount);
}

function describe(value: unknown, depth = 0): string {
  if (Array.isArray(value)) {
    // Depth-limited: pickled lists may nest (and share themselves) exponentially.
    if (depth >= 2) return `(${value.length > 0 ? "..." : ""})`;
    const parts = value.slice(0, 6).map((v) => describe(v, depth + 1));
    return `(${parts.join(", ")}${value.length > 6 ? ", ..." : ""})`;
  }
  if (typeof value === "string")
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 37)}...` : value);
  if (typeof value === "function") {
    if (isMarker(value)) return `torch.${value.torchName}`;
    return "pickleGlobal" in value ? String(value.pickleGlobal) : "a function";
  }
  if (value instanceof Map) return `a dict of ${value.size} entries`;
  if (value instanceof OpaqueObject) return value.global;
  if (value === null) return "None";
  if (typeof value === "object") return "an object";
  return String(value);
}
