/**
 * The int8 form of a descriptor model: made from the float model's ONNX bytes (any backbone we
 * build: CVNet, the default MobileNetV2, a saved model), with activation ranges that come from
 *
 * - the default model: `models/default-int8/ranges.json`, calibrated once on real photos that are
 *   not in the quality benchmark (provenance in the README there), so users need no photos and
 *   every install quantises identically;
 * - any other model: the user's own photos (`calibration`), since a checkpoint's activations are
 *   its own and only the user knows what they will index. Measured once, cached by content.
 *
 * The int8 model is cached like the default float model (runtime/model-cache.ts), keyed by the
 * float model's record and the ranges, so a second start reads one file.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fileError, SuperglobalError } from "../errors.ts";
import {
  CACHE_KEY,
  type CachedModel,
  cachedModel,
  defaultCacheDir,
} from "../runtime/model-cache.ts";
import { readMetadata } from "../runtime/onnx-graph.ts";
import {
  QUANTIZER_VERSION,
  type QuantizeOptions,
  quantizationPoints,
  quantizeModel,
  type Range,
} from "../runtime/quantize-graph.ts";
import { type CalibrationSettings, calibrateRanges, DEFAULT_QUANTILE } from "./calibration.ts";
import { encodeModelInfo, MODEL_INFO_KEY, readModelInfo } from "./model-metadata.ts";

/** The ranges shipped for the default model. */
export const DEFAULT_RANGES_FILE = fileURLToPath(
  new URL("../../models/default-int8/ranges.json", import.meta.url),
);

/**
 * How photos are calibrated: each at one scale with its longer side brought to 1024 px at most
 * (the extraction's middle scale; all three would triple the time for ranges that differ little),
 * the first 32 of a folder.
 */
export const CALIBRATION: Readonly<
  Omit<CalibrationSettings, "input" | "threads"> & { maxImages: number }
> = {
  maxSide: 1024,
  scales: [1],
  quantile: DEFAULT_QUANTILE,
  maxImages: 32,
};

/** Depthwise convolutions are quantised too: MobileNetV2 ran 1.3x faster so, at equal quality. */
export const QUANTIZE: QuantizeOptions = { depthwise: true };

const IMAGE_FILE = /\.(jpe?g|png|webp|tiff?|gif)$/i;

/** Where the activation ranges come from. */
export type RangeSource =
  /** Shipped ranges (the default model's file). */
  | { file: string }
  /** Photos to calibrate on: a folder or a list of files. */
  | { images: string | readonly string[] };

/** The ranges file `bench/calibrate-default.ts` writes and the default model reads. */
export interface RangesFile {
  /** What network the ranges are for (defaultNetworkSource()); a mismatch is refused. */
  network: string;
  settings: object;
  images: string[];
  ranges: Record<string, [number, number]>;
}

/**
 * The int8 model of the float model `float` (named `name` in errors), from the cache when it
 * holds it. UNSUPPORTED when the model has nothing to quantise (e.g. an already quantised
 * foreign model).
 */
export async function int8Model(
  float: Uint8Array,
  name: string,
  source: RangeSource,
  options: { cacheDir?: string; threads?: number; network?: string } = {},
): Promise<CachedModel> {
  const info = readModelInfo(float, name);
  if (info.precision === "int8") return { model: float, fromCache: true, cachePath: null };
  const points = quantizationPoints(float, QUANTIZE);
  if (points.length === 0) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${name}: precision int8 needs float convolutions to quantise, and this model has none`,
      { input: "precision" },
    );
  }
  const record = readMetadata(float)[MODEL_INFO_KEY] as string;
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const ranges =
    "file" in source
      ? shippedRanges(source.file, points, options.network)
      : await calibratedRanges(float, record, points, source.images, {
          cacheDir,
          input: info.input,
          ...(options.threads === undefined ? {} : { threads: options.threads }),
        });
  const calibration = sha256({ ranges: points.map((p) => ranges[p]), QUANTIZE, QUANTIZER_VERSION });
  const key = sha256({ record, calibration });
  return cachedModel(
    `int8-${info.network}-${key.slice(0, 16)}`,
    key,
    (cacheKey) =>
      quantizeModel(float, ranges, {
        ...QUANTIZE,
        metadata: {
          [MODEL_INFO_KEY]: encodeModelInfo({ ...info, precision: "int8", calibration }),
          [CACHE_KEY]: cacheKey,
        },
      }),
    { cacheDir },
  );
}

/** The ranges of a shipped file; BAD_FILE when it is unreadable, for another network or short. */
export function shippedRanges(
  file: string,
  points: readonly string[],
  network?: string,
): Record<string, Range> {
  let parsed: RangesFile;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8")) as RangesFile;
  } catch (cause) {
    throw fileError(file, "cannot read the int8 activation ranges", cause);
  }
  if (network !== undefined && parsed.network !== network) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${file}: ranges calibrated for ${parsed.network}, not ${network}; recalibrate with \`npm run bench -- calibrate-default\``,
      { input: file },
    );
  }
  const out: Record<string, Range> = {};
  for (const p of points) {
    const r = parsed.ranges?.[p];
    if (!Array.isArray(r) || r.length !== 2 || !r.every(Number.isFinite)) {
      throw new SuperglobalError("BAD_FILE", `${file}: no activation range for tensor ${p}`, {
        input: file,
      });
    }
    out[p] = { min: r[0], max: r[1] };
  }
  return out;
}

/** The image files of a folder (name order, the first CALIBRATION.maxImages) or a list. */
export function calibrationImages(images: string | readonly string[]): string[] {
  if (typeof images !== "string") return [...images];
  let names: string[];
  try {
    if (!statSync(images).isDirectory()) return [images];
    names = readdirSync(images).filter((f) => IMAGE_FILE.test(f));
  } catch (cause) {
    throw fileError(images, "cannot read the calibration photos", cause);
  }
  if (names.length === 0) {
    throw new SuperglobalError("NOT_FOUND", `${images}: no photos to calibrate int8 on`, {
      input: "calibration",
    });
  }
  return names
    .sort()
    .slice(0, CALIBRATION.maxImages)
    .map((f) => join(images, f));
}

/**
 * Ranges measured on photos, cached as `<cacheDir>/calibration-<key>.json`, the key covering the
 * float model's record (its weight hash), every photo's bytes and the settings.
 */
async function calibratedRanges(
  float: Uint8Array,
  record: string,
  points: readonly string[],
  images: string | readonly string[],
  options: { cacheDir: string; input: CalibrationSettings["input"]; threads?: number },
): Promise<Record<string, Range>> {
  const files = calibrationImages(images);
  const contents = await Promise.all(
    files.map(async (f) => {
      try {
        return await readFile(f);
      } catch (cause) {
        throw fileError(f, "cannot read the calibration photo", cause);
      }
    }),
  );
  const key = sha256({
    record,
    images: contents.map((c) => createHash("sha256").update(c).digest("hex")),
    CALIBRATION,
    points,
  });
  const file = join(options.cacheDir, `calibration-${key.slice(0, 16)}.json`);
  try {
    const cached = JSON.parse(await readFile(file, "utf8")) as {
      key: string;
      ranges: Record<string, Range>;
    };
    if (cached.key === key) return cached.ranges;
  } catch {
    // absent or unreadable: calibrate
  }
  const ranges = await calibrateRanges(float, points, contents, {
    ...CALIBRATION,
    input: options.input,
    ...(options.threads === undefined ? {} : { threads: options.threads }),
  });
  try {
    await mkdir(options.cacheDir, { recursive: true });
    const temp = `${file}.${process.pid}.tmp`;
    await writeFile(temp, JSON.stringify({ key, files, ranges }));
    await rename(temp, file);
  } catch {
    // an unwritable cache only costs a recalibration next time
  }
  return ranges;
}

function sha256(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex");
}
