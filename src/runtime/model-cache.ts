/**
 * Models made on this machine at first use (the default model, converted from the nsfwjs package
 * and assembled with its head) are kept in a user cache folder, so later starts read one file
 * instead of converting again. A cached file is trusted only when its metadata carries the key it
 * was made for; anything else (missing, truncated, stale, garbage) is rebuilt. Nothing is ever
 * downloaded here.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { readMetadata } from "./onnx-graph.ts";

/** The metadata key holding the cache key a model file was made for. */
export const CACHE_KEY = "superglobal.cache-key";

export interface CachedModel {
  /** ONNX bytes. */
  model: Uint8Array;
  /** Whether `model` was read from the cache (false: built by this call). */
  fromCache: boolean;
  /** The cache file holding `model`; null when the cache folder could not be written. */
  cachePath: string | null;
}

/**
 * The user cache folder: `$SUPERGLOBAL_CACHE` if set, else `$XDG_CACHE_HOME/superglobal` (when
 * absolute, as the XDG spec asks), else `~/.cache/superglobal`.
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const own = env["SUPERGLOBAL_CACHE"];
  if (own !== undefined && own !== "") return own;
  const xdg = env["XDG_CACHE_HOME"];
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, "superglobal");
  return join(homedir(), ".cache", "superglobal");
}

/**
 * The model `<cacheDir>/<name>.onnx` when it holds `key`; otherwise `build(key)` (which must
 * record `key` under CACHE_KEY in the model's metadata), written atomically. An unwritable cache
 * folder is not an error: the model is then built in memory each time.
 */
export async function cachedModel(
  name: string,
  key: string,
  build: (key: string) => Uint8Array,
  options: { cacheDir?: string } = {},
): Promise<CachedModel> {
  const dir = options.cacheDir ?? defaultCacheDir();
  const file = join(dir, `${name.replace(/[^\w.-]/g, "_")}.onnx`);
  const cached = await readIfValid(file, key);
  if (cached !== null) return { model: cached, fromCache: true, cachePath: file };
  const model = build(key);
  const written = await writeAtomically(dir, file, model);
  return { model, fromCache: false, cachePath: written ? file : null };
}

/**
 * The cached model if it decodes and carries `key`; null otherwise. Truncation is caught because
 * protobuf decoding fails or the metadata, which is encoded after the graph, is gone.
 */
async function readIfValid(file: string, key: string): Promise<Uint8Array | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch {
    return null;
  }
  try {
    return readMetadata(bytes)[CACHE_KEY] === key ? bytes : null;
  } catch {
    return null;
  }
}

/** Writes through a temporary file and a rename; false (and no file left) when that fails. */
async function writeAtomically(dir: string, file: string, bytes: Uint8Array): Promise<boolean> {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(temp, bytes);
    await rename(temp, file);
    return true;
  } catch {
    await rm(temp, { force: true }).catch(() => {});
    return false;
  }
}
