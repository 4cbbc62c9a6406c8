/** Content identity of an image file: its sha256, and its size and mtime read from the same open file. */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";

/** What the index records to tell whether a file changed. */
export interface FileIdentity {
  size: number;
  /** Modification time in milliseconds (fs.Stats.mtimeMs, fractional). */
  mtimeMs: number;
  /** sha256 of the bytes, lowercase hex. */
  hash: string;
}

const CHUNK = 1 << 20;

/** sha256 of a file's bytes, lowercase hex (read in 1 MiB chunks). */
export async function hashFile(path: string): Promise<string> {
  return (await fileIdentity(path)).hash;
}

/**
 * Size, mtime and sha256 of a file, all from one open file handle (fstat, then the bytes), so
 * the three describe the same file even if the path is replaced meanwhile.
 */
export async function fileIdentity(path: string): Promise<FileIdentity> {
  const handle = await open(path, "r");
  try {
    const stat = await handle.stat();
    const hash = createHash("sha256");
    const buffer = Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, CHUNK, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
    }
    return { size: stat.size, mtimeMs: stat.mtimeMs, hash: hash.digest("hex") };
  } finally {
    await handle.close();
  }
}
