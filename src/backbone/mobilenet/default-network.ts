/**
 * The default feature network: nsfwjs's MobileNetV2 (mobilenet_v2_mid) converted to ONNX from
 * the files of the installed nsfwjs package (mobilenet-graph.ts says what the model computes).
 * Nothing is downloaded, ever.
 *
 * Cost (2 vCPU, Node 20): converting takes ~0.2 s in a fresh process (~0.1 s to read and decode
 * the 5.7 MB of base64 shards, the rest to rearrange the filters and encode 17 MB of ONNX);
 * reading the cached .onnx takes ~0.01 s. So the cache saves ~0.2 s per start: worth having for
 * a CLI, but not worth more than the simple form here — one file per (nsfwjs version, converter
 * version), written atomically, checked by its metadata when read, rebuilt when that check fails,
 * and skipped (conversion in memory) when the cache folder cannot be written.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { readMetadata } from "../../runtime/onnx-graph.ts";
import { convertMobilenet, MOBILENET_KIND, MOBILENET_METADATA } from "./mobilenet-graph.ts";
import { NSFWJS_MODEL, nsfwjsPackage } from "./nsfwjs-package.ts";
import { readTfjsGraphModel } from "./tfjs-model.ts";

/** Bump when the converter's output changes, so stale cached models are not reused. */
export const CONVERTER_VERSION = "1";

/** ONNX bytes of the default network, converted now (no cache). */
export function buildDefaultNetwork(): Uint8Array {
  const pkg = nsfwjsPackage();
  return convertMobilenet(readTfjsGraphModel(pkg.modelDir), {
    source: sourceOf(pkg.version),
    converter: CONVERTER_VERSION,
  });
}

export interface DefaultNetwork {
  /** ONNX bytes. */
  model: Uint8Array;
  /** Whether `model` was read from the cache (false: converted by this call). */
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
 * The default network, from the cache when a valid copy is there, else converted and cached.
 * `cacheDir` defaults to `defaultCacheDir()`.
 */
export async function loadDefaultNetwork(
  options: { cacheDir?: string } = {},
): Promise<DefaultNetwork> {
  const pkg = nsfwjsPackage();
  const source = sourceOf(pkg.version);
  const dir = options.cacheDir ?? defaultCacheDir();
  const file = join(
    dir,
    `nsfwjs-${pkg.version.replace(/[^\w.-]/g, "_")}-${NSFWJS_MODEL}-c${CONVERTER_VERSION}.onnx`,
  );
  const cached = await readIfValid(file, source);
  if (cached !== null) return { model: cached, fromCache: true, cachePath: file };
  const model = convertMobilenet(readTfjsGraphModel(pkg.modelDir), {
    source,
    converter: CONVERTER_VERSION,
  });
  const written = await writeAtomically(dir, file, model);
  return { model, fromCache: false, cachePath: written ? file : null };
}

function sourceOf(version: string): string {
  return `nsfwjs@${version}`;
}

/**
 * The cached model if it decodes and says it is this network from this source and converter;
 * null otherwise (missing, truncated, garbage, stale). Truncation is caught because protobuf
 * decoding fails or the metadata, which is encoded after the graph, is gone.
 */
async function readIfValid(file: string, source: string): Promise<Uint8Array | null> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch {
    return null;
  }
  try {
    const meta = readMetadata(bytes);
    const ok =
      meta[MOBILENET_METADATA.kind] === MOBILENET_KIND &&
      meta[MOBILENET_METADATA.source] === source &&
      meta[MOBILENET_METADATA.converter] === CONVERTER_VERSION;
    return ok ? bytes : null;
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
