/**
 * The legacy (pre-1.6) `torch.save` stream: pickles back to back — magic number, protocol
 * version, sys_info, the object graph, the list of storage keys — then, for each key in that
 * order, an int64 little-endian element count and the raw storage bytes. Only the container is
 * handled here; the caller's unpickle options interpret the object graph (see torch-tensors.ts).
 */
import { SuperglobalError } from "../errors.ts";
import { PickleEndError, type UnpickleOptions, unpickleAt } from "../io/pickle.ts";
import type { ByteSource } from "./byte-source.ts";

export interface TorchLegacy {
  /** The object graph (the main pickle). */
  readonly root: unknown;
  /** The raw bytes of storage `key`. */
  readStorage(key: string): Uint8Array;
}

const MAGIC = 0x1950a86a20f9469cfc6cn;
const PROTOCOL_VERSION = 1001;
/** The pickles are small next to the storages after them: read a prefix, grow it if needed. */
const FIRST_PREFIX = 1 << 20;

/**
 * `options` unpickles the object graph; `elementSize(key)` gives the bytes per element of each
 * storage the graph referred to (the file stores element counts, not byte counts).
 */
export function readTorchLegacy(
  src: ByteSource,
  options: UnpickleOptions,
  elementSize: (key: string) => number | undefined,
): TorchLegacy {
  const { root, keys, end } = readPickles(src, options);
  const located = new Map<string, { offset: number; bytes: number }>();
  let pos = end;
  for (const key of keys) {
    const size = elementSize(key);
    if (size === undefined) {
      throw bad(src, `storage ${key} is listed in the file but no tensor refers to it`);
    }
    if (pos + 8 > src.size) {
      throw bad(src, `the file ends at byte ${src.size} before storage ${key}: truncated`);
    }
    const header = src.read(pos, 8);
    const count = new DataView(header.buffer, header.byteOffset, 8).getBigInt64(0, true);
    const bytes = Number(count) * size;
    if (count < 0n || pos + 8 + bytes > src.size) {
      throw bad(
        src,
        `storage ${key} (${count} elements at byte ${pos + 8}) runs past the end of the file (${src.size} bytes): truncated`,
      );
    }
    located.set(key, { offset: pos + 8, bytes });
    pos += 8 + bytes;
  }
  return {
    root,
    readStorage(key) {
      const at = located.get(key);
      if (at === undefined) throw bad(src, `storage ${key} is not among the file's storages`);
      return src.read(at.offset, at.bytes);
    },
  };
}

function bad(src: ByteSource, what: string): SuperglobalError {
  return new SuperglobalError("BAD_FILE", `${src.name}: ${what}`, { input: src.name });
}

function readPickles(
  src: ByteSource,
  options: UnpickleOptions,
): { root: unknown; keys: string[]; end: number } {
  let prefix = Math.min(src.size, FIRST_PREFIX);
  for (;;) {
    const head = src.read(0, prefix);
    try {
      return parseHead(src, head, options);
    } catch (err) {
      if (!(err instanceof PickleEndError) || prefix >= src.size) throw err;
      prefix = Math.min(src.size, prefix * 4);
    }
  }
}

function parseHead(
  src: ByteSource,
  head: Uint8Array,
  options: UnpickleOptions,
): { root: unknown; keys: string[]; end: number } {
  const plain = { source: src.name };
  const magic = unpickleAt(head, 0, plain);
  if (magic.value !== MAGIC) {
    throw bad(src, "a pickle, but not a torch.save checkpoint (no torch magic number)");
  }
  const version = unpickleAt(head, magic.end, plain);
  if (version.value !== PROTOCOL_VERSION) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: legacy torch.save protocol version ${String(version.value)} (only ${PROTOCOL_VERSION} is supported)`,
      { input: src.name },
    );
  }
  const sysInfo = unpickleAt(head, version.end, plain);
  if (!(sysInfo.value instanceof Map) || sysInfo.value.get("little_endian") !== true) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: the checkpoint was saved on a big-endian machine; only little-endian is supported`,
      { input: src.name },
    );
  }
  const main = unpickleAt(head, sysInfo.end, { ...options, source: src.name });
  const keys = unpickleAt(head, main.end, plain);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === "string")) {
    throw bad(src, "the storage key list after the object graph is not a list of strings");
  }
  return { root: main.value, keys: keys.value as string[], end: keys.end };
}
