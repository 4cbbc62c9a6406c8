/**
 * NumPy `.npy` files (format versions 1-3, little-endian, C order): the exchange format of the
 * CLI and of the golden fixtures. Reads go through a file descriptor in chunks, so matrices larger
 * than Node's 2 GiB readFileSync limit load too.
 */
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { fileError, SuperglobalError } from "../errors.ts";

export type NpyDtype = "float32" | "float64" | "int32" | "int64" | "uint8";
export type NpyData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface NpyArray<T extends NpyData = NpyData> {
  dtype: NpyDtype;
  shape: number[];
  data: T;
}

const DESCR: Record<string, NpyDtype> = {
  "<f4": "float32",
  "<f8": "float64",
  "<i4": "int32",
  "<i8": "int64",
  "|u1": "uint8",
  "<u1": "uint8",
};
const DESCR_OF: Record<NpyDtype, string> = {
  float32: "<f4",
  float64: "<f8",
  int32: "<i4",
  int64: "<i8",
  uint8: "|u1",
};
const BYTES: Record<NpyDtype, number> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1 };
const MAGIC = "\x93NUMPY";
const CHUNK = 1 << 26; // 64 MiB per read
const MAX_DIM = 2 ** 32;

function allocate(dtype: NpyDtype, length: number): NpyData {
  switch (dtype) {
    case "float32":
      return new Float32Array(length);
    case "float64":
      return new Float64Array(length);
    case "int32":
      return new Int32Array(length);
    case "int64":
      return new BigInt64Array(length);
    case "uint8":
      return new Uint8Array(length);
  }
}

function dtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Float64Array) return "float64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof BigInt64Array) return "int64";
  return "uint8";
}

/** Parses the header dict, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`. */
function parseHeader(text: string, path: string): { dtype: NpyDtype; shape: number[] } {
  const descr = /'descr':\s*'([^']+)'/.exec(text)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new SuperglobalError("BAD_FILE", `${path}: not a valid .npy header`, { input: path });
  }
  const dtype = DESCR[descr];
  if (dtype === undefined) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${path}: dtype ${descr} is not supported (float32, float64, int32, int64, uint8)`,
      { input: path },
    );
  }
  if (fortran === "True") {
    throw new SuperglobalError("UNSUPPORTED", `${path}: Fortran-order arrays are not supported`, {
      input: path,
    });
  }
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  // Safe integers, each at most 2^32 (even in an empty array, where no data bounds them), with a
  // safe product: "1e308" or 2^60 are no shape of a real array.
  if (
    shape.some((d) => !Number.isSafeInteger(d) || d < 0 || d > MAX_DIM) ||
    !Number.isSafeInteger(shape.reduce((a, b) => a * b, 1))
  ) {
    throw new SuperglobalError("BAD_FILE", `${path}: bad shape (${shapeText})`, { input: path });
  }
  return { dtype, shape };
}

/**
 * Fills the bytes of `target` from the file at `position`. Works through byte views of at most
 * CHUNK bytes, since one Uint8Array view cannot span more than 2^32 bytes (a 1M x 2048 matrix).
 */
function readFully(fd: number, target: ArrayBufferView, position: number, path: string): void {
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(CHUNK, target.byteLength - done);
    const view = new Uint8Array(target.buffer, target.byteOffset + done, want);
    let got: number;
    try {
      got = readSync(fd, view, 0, want, position + done);
    } catch (cause) {
      // A folder opens but does not read (EISDIR); an I/O error: name the file either way.
      throw fileError(path, "cannot read", cause);
    }
    if (got === 0) {
      throw new SuperglobalError("BAD_FILE", `${path}: file is truncated`, { input: path });
    }
    done += got;
  }
}

/** Opens a `.npy` file and parses its header; the caller reads the data and closes `fd`. */
function openNpy(path: string): {
  fd: number;
  dtype: NpyDtype;
  shape: number[];
  dataStart: number;
  size: number;
} {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (cause) {
    throw fileError(path, "cannot open", cause);
  }
  try {
    const size = fstatSync(fd).size;
    const pre = new Uint8Array(12);
    if (size < 10)
      throw new SuperglobalError("BAD_FILE", `${path}: not a .npy file`, { input: path });
    readFully(fd, pre.subarray(0, Math.min(12, size)), 0, path);
    if (Buffer.from(pre.subarray(0, 6)).toString("latin1") !== MAGIC) {
      throw new SuperglobalError("BAD_FILE", `${path}: not a .npy file (bad magic)`, {
        input: path,
      });
    }
    const major = pre[6]!;
    if (major < 1 || major > 3) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${path}: .npy format version ${major} is not supported (1-3)`,
        {
          input: path,
        },
      );
    }
    const view = new DataView(pre.buffer);
    const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
    const headerStart = major === 1 ? 10 : 12;
    // Checked before allocating: a header length field of 4 GB in a tiny file is a lie.
    if (headerStart + headerLen > size) {
      throw new SuperglobalError(
        "BAD_FILE",
        `${path}: file is truncated (its header claims ${headerLen} bytes, the file has ${size})`,
        { input: path },
      );
    }
    const header = new Uint8Array(headerLen);
    readFully(fd, header, headerStart, path);
    const { dtype, shape } = parseHeader(Buffer.from(header).toString("latin1"), path);
    const length = shape.reduce((a, b) => a * b, 1);
    const dataStart = headerStart + headerLen;
    const bytes = length * BYTES[dtype];
    if (size - dataStart < bytes) {
      throw new SuperglobalError(
        "BAD_FILE",
        `${path}: file is truncated (${size - dataStart} of ${bytes} data bytes)`,
        { input: path },
      );
    }
    return { fd, dtype, shape, dataStart, size };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** Reads a whole `.npy` file. */
export function readNpy(path: string): NpyArray {
  const { fd, dtype, shape, dataStart } = openNpy(path);
  try {
    const data = allocate(
      dtype,
      shape.reduce((a, b) => a * b, 1),
    );
    readFully(fd, data, dataStart, path);
    return { dtype, shape, data };
  } finally {
    closeSync(fd);
  }
}

/** The shape and dtype of a `.npy` file, without reading its data. */
export function npyInfo(path: string): { dtype: NpyDtype; shape: number[] } {
  const { fd, dtype, shape } = openNpy(path);
  closeSync(fd);
  return { dtype, shape };
}

/**
 * Reads a float32/float64 `.npy` matrix straight into `target` starting at `offset` (float64 is
 * narrowed chunk by chunk), so a huge matrix can land in a larger preallocated one without a copy.
 * Returns the number of rows read.
 */
export function readMatrixF32Into(
  path: string,
  target: Float32Array,
  offset: number,
  cols: number,
): number {
  const { fd, dtype, shape, dataStart } = openNpy(path);
  try {
    if (shape.length !== 2 || shape[1] !== cols) {
      throw new SuperglobalError(
        "BAD_FILE",
        `${path}: expected a [rows, ${cols}] matrix but found (${shape.join(", ")})`,
        {
          input: path,
        },
      );
    }
    const length = shape[0]! * cols;
    if (offset + length > target.length) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${path}: ${shape[0]} rows do not fit the target`,
        { input: path },
      );
    }
    if (dtype === "float32") {
      readFully(fd, target.subarray(offset, offset + length), dataStart, path);
    } else if (dtype === "float64") {
      const chunk = new Float64Array(CHUNK / 8);
      for (let done = 0; done < length; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, length - done));
        readFully(fd, part, dataStart + done * 8, path);
        target.set(part, offset + done);
      }
    } else {
      throw new SuperglobalError(
        "BAD_FILE",
        `${path}: expected float32 or float64 but found ${dtype}`,
        { input: path },
      );
    }
    return shape[0]!;
  } finally {
    closeSync(fd);
  }
}

/** A 2-D `.npy` array, or BAD_FILE naming the file. */
function readMatrix(path: string): { rows: number; cols: number; arr: NpyArray } {
  const arr = readNpy(path);
  if (arr.shape.length !== 2) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: expected a 2-D matrix but the array has shape (${arr.shape.join(", ")})`,
      { input: path },
    );
  }
  return { rows: arr.shape[0]!, cols: arr.shape[1]!, arr };
}

/** Reads a 2-D `.npy` matrix as float32 (float64 files are converted). */
export function readMatrixF32(path: string): { rows: number; cols: number; data: Float32Array } {
  const { rows, cols, arr } = readMatrix(path);
  if (arr.data instanceof Float32Array) return { rows, cols, data: arr.data };
  if (arr.data instanceof Float64Array) return { rows, cols, data: Float32Array.from(arr.data) };
  throw new SuperglobalError(
    "BAD_FILE",
    `${path}: expected float32 or float64 but found ${arr.dtype}`,
    {
      input: path,
    },
  );
}

/** Reads a 2-D integer `.npy` matrix (int32, or int64 within the int32 range) as int32. */
export function readMatrixI32(path: string): { rows: number; cols: number; data: Int32Array } {
  const { rows, cols, arr } = readMatrix(path);
  if (arr.data instanceof Int32Array) return { rows, cols, data: arr.data };
  if (arr.data instanceof BigInt64Array) {
    const out = new Int32Array(arr.data.length);
    for (let i = 0; i < out.length; i++) {
      const v = arr.data[i]!;
      if (v < -2147483648n || v > 2147483647n) {
        throw new SuperglobalError(
          "BAD_FILE",
          `${path}: value ${v} at index ${i} does not fit int32`,
          {
            input: path,
          },
        );
      }
      out[i] = Number(v);
    }
    return { rows, cols, data: out };
  }
  throw new SuperglobalError(
    "BAD_FILE",
    `${path}: expected int32 or int64 but found ${arr.dtype}`,
    {
      input: path,
    },
  );
}

function headerBytes(dtype: NpyDtype, shape: number[]): Buffer {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let dict = `{'descr': '${DESCR_OF[dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Version 1.0: 10-byte preamble, header padded with spaces so the data starts on 64 bytes.
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = `${dict}${" ".repeat(total - 10 - dict.length - 1)}\n`;
  const out = Buffer.alloc(total);
  out.write(MAGIC, 0, "latin1");
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(dict.length, 8);
  out.write(dict, 10, "latin1");
  return out;
}

/** Writes `data` with the given shape as a `.npy` file (written in chunks, any size). */
export function writeNpy(path: string, data: NpyData, shape: number[]): void {
  const length = shape.reduce((a, b) => a * b, 1);
  if (length !== data.length) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${path}: shape (${shape.join(", ")}) does not match ${data.length} elements`,
      { input: path },
    );
  }
  let fd: number;
  try {
    fd = openSync(path, "w");
  } catch (cause) {
    throw fileError(path, "cannot write", cause);
  }
  try {
    writeSync(fd, headerBytes(dtypeOf(data), shape));
    // Byte views of at most CHUNK bytes: one view cannot span more than 2^32 bytes.
    for (let off = 0; off < data.byteLength; off += CHUNK) {
      const part = new Uint8Array(
        data.buffer,
        data.byteOffset + off,
        Math.min(CHUNK, data.byteLength - off),
      );
      let written = 0;
      while (written < part.length) written += writeSync(fd, part, written);
    }
  } catch (cause) {
    // A full disk, say: name the file rather than surface a bare errno.
    throw fileError(path, "write failed", cause);
  } finally {
    closeSync(fd);
  }
}
