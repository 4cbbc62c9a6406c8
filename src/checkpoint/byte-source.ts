/**
 * Random access to the bytes of a checkpoint, over an open file or over bytes in memory. Both
 * containers (torch-zip.ts, torch-legacy.ts) read through it, so a big checkpoint is read piece
 * by piece instead of sitting whole in memory.
 */
import { readSync } from "node:fs";
import { SuperglobalError } from "../errors.ts";

/** Random access to the bytes of a checkpoint (an open file, or bytes in memory). */
export interface ByteSource {
  /** Names the file in errors. */
  readonly name: string;
  readonly size: number;
  /** `length` bytes at `offset` in a buffer of their own (starting at byte 0 of it). */
  read(offset: number, length: number): Uint8Array;
}

/** Reads the open file `fd` of `size` bytes; the caller closes it. */
export function fileSource(fd: number, size: number, name: string): ByteSource {
  return {
    name,
    size,
    read(offset, length) {
      checkRange(name, size, offset, length);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, offset + done);
        if (n === 0) {
          throw new SuperglobalError(
            "BAD_FILE",
            `${name}: the file ended at byte ${offset + done} while reading bytes ${offset}..${offset + length} (did it change while loading?)`,
            { input: name },
          );
        }
        done += n;
      }
      return out;
    },
  };
}

/** Reads `bytes`, handing out copies so that tensors never alias them. */
export function bytesSource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.length,
    read(offset, length) {
      checkRange(name, bytes.length, offset, length);
      // A copy (Buffer#slice would share memory): tensors must not alias the caller's bytes.
      const out = new Uint8Array(length);
      out.set(bytes.subarray(offset, offset + length));
      return out;
    },
  };
}

function checkRange(name: string, size: number, offset: number, length: number): void {
  if (offset < 0 || length < 0 || offset + length > size) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${name}: needs bytes ${offset}..${offset + length} but the file has ${size}: truncated`,
      { input: name },
    );
  }
}
