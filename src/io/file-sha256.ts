/**
 * sha256 of a file's bytes, read in bounded chunks (an ANN graph or a checkpoint can be GBs): one
 * loop for the three callers (an image's identity, a download's check, the ANN's save), async
 * from a path or an open handle, and sync for code that must not yield.
 */
import { createHash } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";

/** A file's sha256 (lowercase hex) and the number of bytes it covers. */
export interface FileDigest {
  sha256: string;
  bytes: number;
}

const CHUNK = 1 << 20;

/** sha256 of an open file from its start, read with the handle (so a stat from it describes the same file). */
export async function sha256OfHandle(handle: FileHandle): Promise<FileDigest> {
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(CHUNK);
  let bytes = 0;
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, CHUNK, bytes);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    bytes += bytesRead;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** sha256 of the file at `path`. */
export async function sha256OfFile(path: string): Promise<FileDigest> {
  const handle = await open(path, "r");
  try {
    return await sha256OfHandle(handle);
  } finally {
    await handle.close();
  }
}

/** sha256 of the file at `path`, without yielding (for a synchronous save or load). */
export function sha256OfFileSync(path: string): FileDigest {
  const hash = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.allocUnsafe(CHUNK);
    let bytes = 0;
    for (;;) {
      const got = readSync(fd, buffer, 0, CHUNK, bytes);
      if (got === 0) break;
      hash.update(buffer.subarray(0, got));
      bytes += got;
    }
    return { sha256: hash.digest("hex"), bytes };
  } finally {
    closeSync(fd);
  }
}
