/** Content identity of an image file: its sha256, and its size and mtime read from the same open file. */
import { open } from "node:fs/promises";
import { sha256OfHandle } from "../io/file-sha256.ts";

/** What the index records to tell whether a file changed. */
export interface FileIdentity {
  size: number;
  /** Modification time in milliseconds (fs.Stats.mtimeMs, fractional). */
  mtimeMs: number;
  /** sha256 of the bytes, lowercase hex. */
  hash: string;
}

/**
 * Size, mtime and sha256 of a file, all from one open file handle (fstat, then the bytes), so
 * the three describe the same file even if the path is replaced meanwhile.
 */
export async function fileIdentity(path: string): Promise<FileIdentity> {
  const handle = await open(path, "r");
  try {
    const stat = await handle.stat();
    const { sha256 } = await sha256OfHandle(handle);
    return { size: stat.size, mtimeMs: stat.mtimeMs, hash: sha256 };
  } finally {
    await handle.close();
  }
}
