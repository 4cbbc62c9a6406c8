/**
 * Models pulled on request: where they live (`<cache>/models/`, the cache folder of
 * runtime/model-cache.ts), how they are fetched and checked, and how a registered name becomes
 * the file `Extractor.create` reads. A file whose publisher gives a sha256 is checked against it;
 * one without (CVNet's checkpoints) must load as a CVNet checkpoint of the expected depth, and its
 * sha256 is recorded in `<cache>/models/manifest.json` at download time.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { detectDepth } from "../backbone/cvnet/cvnet-network.ts";
import { loadCheckpoint } from "../checkpoint/load.ts";
import { invalidArgument, SuperglobalError } from "../errors.ts";
import { type DownloadProgress, type DownloadResult, download } from "../io/download.ts";
import { driveDownloadUrl } from "../io/google-drive.ts";
import { defaultCacheDir } from "../runtime/model-cache.ts";
import type { ExtractorOptions } from "./options.ts";
import { MODELS, type ModelEntry, registeredModel } from "./registry.ts";

export const MANIFEST = "manifest.json";

/** One pulled file as the manifest records it. */
export interface PulledRecord {
  model: string;
  url: string;
  bytes: number;
  sha256: string;
  /** How the file was checked: against the published sha256, or by loading it. */
  checked: string;
  /** ISO time of the download. */
  pulledAt: string;
}

/** The folder pulled models go to: `<cacheDir>/models` (default cache: `defaultCacheDir()`). */
export function modelsDir(cacheDir?: string): string {
  return join(cacheDir ?? defaultCacheDir(), "models");
}

/** `<dir>/manifest.json`'s records by file name (empty when absent or unreadable). */
export function readManifest(dir: string): Record<string, PulledRecord> {
  try {
    const parsed = JSON.parse(readFileSync(join(dir, MANIFEST), "utf8")) as {
      files?: Record<string, PulledRecord>;
    };
    return typeof parsed.files === "object" && parsed.files !== null ? parsed.files : {};
  } catch {
    return {};
  }
}

async function recordPull(dir: string, file: string, record: PulledRecord): Promise<void> {
  const files = { ...readManifest(dir), [file]: record };
  const path = join(dir, MANIFEST);
  const temp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(temp, `${JSON.stringify({ format: 1, files }, null, 2)}\n`);
  await rename(temp, path);
}

/** What `superglobal models` shows of one model. */
export interface ModelStatus {
  name: string;
  description: string;
  network: string;
  input: string;
  dim: number;
  licence: string | null;
  /** "package": ships with npm; "pull": downloaded on request. */
  delivery: "package" | "pull";
  /** Whether it can be used now. */
  available: boolean;
  /** The pulled file (null for the packaged model). */
  path: string | null;
  file: string | null;
  urls: string[];
  /** A page to open when no URL is known or works. */
  page: string | null;
  bytes: number | null;
  /** The published sha256, else the one recorded at download; null when neither. */
  sha256: string | null;
  /** Whether `sha256` is published (true) or recorded here (false). */
  sha256Published: boolean;
  provenance: string | null;
  /** How to get it. */
  get: string;
}

/** Every registered model with where it stands in `dir` (default: `modelsDir()`). */
export function modelStatuses(dir = modelsDir()): ModelStatus[] {
  const manifest = readManifest(dir);
  return Object.values(MODELS).map((entry) => {
    const d = entry.download;
    const path = d === undefined ? null : join(dir, d.file);
    const available = path === null || existsSync(path);
    const recorded = d === undefined ? undefined : manifest[d.file];
    return {
      name: entry.name,
      description: entry.description,
      network: entry.network,
      input: entry.input,
      dim: entry.dim,
      licence: entry.licence ?? null,
      delivery: d === undefined ? "package" : "pull",
      available,
      path: available ? path : null,
      file: d?.file ?? null,
      urls: d === undefined ? [] : [...d.urls],
      page: d?.page ?? null,
      bytes: d?.bytes ?? (available ? (recorded?.bytes ?? null) : null),
      sha256: d?.sha256 ?? (available ? (recorded?.sha256 ?? null) : null),
      sha256Published: d?.sha256 !== undefined,
      provenance: d?.provenance ?? null,
      get:
        d === undefined
          ? "ships with the npm package"
          : d.urls.length > 0
            ? `superglobal models pull ${entry.name}`
            : `superglobal models pull ${entry.name} --url <link to ${d.file} from ${d.page ?? "its page"}>`,
    };
  });
}

/** A registered model that is pulled on request, or INVALID_ARGUMENT naming the known ones. */
export function pullableModel(name: string): ModelEntry & Required<Pick<ModelEntry, "download">> {
  const entry = registeredModel(name);
  if (entry === undefined) {
    throw new SuperglobalError(
      "NOT_FOUND",
      `no model named ${JSON.stringify(name)}; known: ${Object.keys(MODELS).join(", ")}`,
      { input: name },
    );
  }
  if (entry.download === undefined) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${name} ships with the npm package: there is nothing to pull`,
      { input: name },
    );
  }
  return entry as ModelEntry & Required<Pick<ModelEntry, "download">>;
}

export interface PullOptions {
  /** Folder to download into (default `modelsDir()`). */
  dir?: string;
  /** Download from this URL instead of the registered ones (a Drive share link works too). */
  url?: string;
  /** Download again even when the file is there. */
  force?: boolean;
  onProgress?: (progress: DownloadProgress) => void;
  /** Called when one URL fails and the next is tried. */
  onFallback?: (url: string, error: Error) => void;
  signal?: AbortSignal;
  /** Automatic resumptions per URL (see `download`). */
  retries?: number;
}

export interface PullResult extends Omit<DownloadResult, "url"> {
  model: string;
  /** null when the file was already there. */
  url: string | null;
  /** Whether the file was there already (nothing downloaded). */
  present: boolean;
  checked: string;
}

/**
 * Downloads a registered model into the models folder and checks it: the published sha256, or,
 * for a CVNet checkpoint (none published), that it loads and has the expected depth. The
 * registered URLs are tried in order; the last failure is thrown.
 */
export async function pullModel(name: string, options: PullOptions = {}): Promise<PullResult> {
  const entry = pullableModel(name);
  const d = entry.download;
  const dir = options.dir ?? modelsDir();
  const dest = join(dir, d.file);
  if (
    options.url !== undefined &&
    (typeof options.url !== "string" || !/^https?:\/\//.test(options.url))
  ) {
    invalidArgument("url", "an http(s) URL", options.url);
  }
  const checked = d.sha256 !== undefined ? "sha256 (published)" : checkDescription(entry);
  if (existsSync(dest) && options.force !== true) {
    const recorded = readManifest(dir)[d.file];
    return {
      model: name,
      path: dest,
      bytes: recorded?.bytes ?? 0,
      sha256: recorded?.sha256 ?? d.sha256 ?? "",
      url: null,
      resumed: false,
      present: true,
      checked,
    };
  }
  const urls = options.url !== undefined ? [driveDownloadUrl(options.url)] : [...d.urls];
  if (urls.length === 0) {
    throw new SuperglobalError(
      "NOT_FOUND",
      `${name}: no direct download URL is known for ${d.file}; open ${d.page ?? "its publisher's page"}, ` +
        `copy the file's link and run \`superglobal models pull ${name} --url <link>\``,
      { input: name },
    );
  }
  await mkdir(dir, { recursive: true });
  if (options.force === true) await rm(dest, { force: true });
  // A part left by an earlier pull is continued only from the URL it came from (noted beside it),
  // which is then tried first.
  const part = `${dest}.part`;
  const partSource = `${part}.url`;
  const earlier = existsSync(part) ? readText(partSource) : null;
  if (earlier !== null && urls.includes(earlier)) {
    urls.splice(urls.indexOf(earlier), 1);
    urls.unshift(earlier);
  }
  let last: Error | undefined;
  for (const [i, url] of urls.entries()) {
    if (existsSync(part) && readText(partSource) !== url) await rm(part, { force: true });
    try {
      const result = await download(url, dest, {
        ...(d.sha256 === undefined
          ? { verify: (part) => verifyPulled(entry, part) }
          : { sha256: d.sha256 }),
        ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        ...(options.retries === undefined ? {} : { retries: options.retries }),
      });
      await rm(partSource, { force: true });
      await recordPull(dir, d.file, {
        model: name,
        url,
        bytes: result.bytes,
        sha256: result.sha256,
        checked,
        pulledAt: new Date().toISOString(),
      });
      return { ...result, model: name, url: result.url, present: false, checked };
    } catch (error) {
      if (existsSync(part)) await writeFile(partSource, url);
      else await rm(partSource, { force: true });
      if (options.signal?.aborted) throw error;
      last = error as Error;
      if (i < urls.length - 1) options.onFallback?.(url, last);
    }
  }
  throw last as Error;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

function checkDescription(entry: ModelEntry): string {
  return entry.use?.kind === "cvnet-checkpoint"
    ? `loads as a CVNet ResNet-${entry.use.depth} checkpoint (no sha256 is published)`
    : "none (no sha256 is published)";
}

/** BAD_FILE unless a downloaded CVNet checkpoint loads and has the registered depth. */
function verifyPulled(entry: ModelEntry, part: string): void {
  if (entry.use?.kind !== "cvnet-checkpoint") return;
  let depth: number;
  try {
    depth = detectDepth(loadCheckpoint(part), part);
  } catch (cause) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${entry.name}: the downloaded file is not a CVNet checkpoint (${(cause as Error).message}); it was deleted`,
      { input: entry.name, cause },
    );
  }
  if (depth !== entry.use.depth) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${entry.name}: the downloaded file is a ResNet-${depth} checkpoint, not ResNet-${entry.use.depth}; it was deleted`,
      { input: entry.name },
    );
  }
}

/**
 * `options` with a pulled model's name replaced by its file: a CVNet checkpoint as
 * `checkpoint` (with its depth), an ONNX feature network as `model` + `feature`, and the entry's
 * default scales/rgem/gemp where none are given. Other options are returned as they are.
 * NOT_FOUND with the `superglobal models pull NAME` hint when the file is not there.
 */
export function resolvePulled(options: ExtractorOptions): ExtractorOptions {
  if (typeof options !== "object" || options === null) return options;
  if (options.checkpoint !== undefined || typeof options.model !== "string") return options;
  const entry = registeredModel(options.model);
  if (entry?.download === undefined || entry.use === undefined) return options;
  const path = join(modelsDir(options.cacheDir), entry.download.file);
  if (!existsSync(path)) {
    throw new SuperglobalError(
      "NOT_FOUND",
      `model ${entry.name} is not pulled (no ${path}); run \`superglobal models pull ${entry.name}\``,
      { input: entry.name },
    );
  }
  const { model: _name, ...rest } = options;
  const defaults = {
    // A preset brings its own scale set (resolveOptions applies it).
    scales: options.scales ?? (options.preset === undefined ? entry.defaults.scales : undefined),
    rgem: options.rgem ?? entry.defaults.rgem,
    gemp: options.gemp ?? entry.defaults.gemp,
  };
  if (entry.use.kind === "cvnet-checkpoint") {
    return { ...rest, ...defaults, checkpoint: path, depth: options.depth ?? entry.use.depth };
  }
  return { ...rest, ...defaults, model: path, feature: options.feature ?? entry.use.feature };
}
