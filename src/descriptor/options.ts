/**
 * What an extractor computes: the model depth, the scale set and which SuperGlobal modules are on.
 * Validated once, at the boundary, so the pipeline below can trust it.
 */
import { DEPTHS, type Depth } from "../backbone/cvnet/resnet-graph.ts";
import { assertInteger, assertOneOf, invalidArgument } from "../errors.ts";
import { checkFeatureSpec, type FeatureSpec } from "./feature-model.ts";
import { PRECISIONS, PRESET_SETTINGS, PRESETS, type Precision, type Preset } from "./presets.ts";
import { DEFAULT_MODEL, registeredModel } from "./registry.ts";

export type { Depth } from "../backbone/cvnet/resnet-graph.ts";
export type { Precision, Preset } from "./presets.ts";

export type ScaleSet = 1 | 3 | 5;

/** The official scale lists (constants truncated as in the official code, not exact 1/√2 and √2). */
export const SCALE_SETS: Record<ScaleSet, readonly number[]> = {
  1: [1.0],
  // biome-ignore lint/suspicious/noApproximativeNumericConstant: the official truncated constant
  3: [0.7071, 1.0, 1.4142],
  // biome-ignore lint/suspicious/noApproximativeNumericConstant: the official truncated constant
  5: [0.5, 0.7071, 1.0, 1.4142, 2.0],
};

export interface ExtractorOptions {
  /** CVNet checkpoint (`CVPR2022_CVNet_R50.pyth` / `R101`), read directly. */
  checkpoint?: string;
  /**
   * A registered model name (`superglobal models` lists them; `"default"` ships with the package
   * and is used when neither `model` nor `checkpoint` is given), or a model file saved with
   * `Extractor.save()` / `superglobal build-model` (it records depth, relup, gemp and rgem: leave
   * them out, or give the recorded values: others are refused).
   */
  model?: string;
  /**
   * The default model's whitening: a folder written by `writeWhitening` (default: the one that
   * ships with the package), or null for none. Other models have their own FC.
   */
  whitening?: string | null;
  /**
   * Images whose longer side exceeds this many pixels are first downscaled to it (antialiased),
   * which bounds time and memory for camera photos (a 2048×2048 photo at 3 scales needs ~3.6 GB
   * otherwise); null: used as given, as the paper's protocol does. Default: the model's (1024 for
   * the default model, null for CVNet).
   */
  maxSide?: number | null;
  /** Where models made at first use are cached (default: `$SUPERGLOBAL_CACHE`, `~/.cache/superglobal`). */
  cacheDir?: string;
  /** ResNet depth of the checkpoint: 50 or 101; read from the checkpoint when left out. */
  depth?: Depth;
  /** Scale set: 1, 3 ([0.7071, 1, 1.4142]) or 5; default: the model's (3 for CVNet). */
  scales?: ScaleSet;
  /** GeM+ (p 4.6); off: CVNet's GeM with the checkpoint's learned p. Default on. Built into the model. */
  gemp?: boolean;
  /** Regional-GeM (p 2.5, 5x5); off: the raw conv5 map. Default on. Built into the model. */
  rgem?: boolean;
  /** Scale-GeM (max over L2-normalised scales); off: the mean of the raw per-scale vectors. Default on. */
  sgem?: boolean;
  /** ReLU+ floors (0.014) in the backbone. Default on. Built into the model. */
  relup?: boolean;
  /** onnxruntime intra-op threads; default: all cores. */
  threads?: number;
  /**
   * Backbone precision: "float32" (exact, the default) or "int8" (quantised from the float model
   * with calibrated activation ranges; several times faster on CPUs with VNNI, refused on others,
   * see runtime/cpu-features.ts). A saved model's recorded precision is adopted when left out.
   */
  precision?: Precision;
  /**
   * A speed preset: "exact" (the model's scales and sizes, float32), "balanced" (3 scales, 1024
   * px, int8) or "fast" (1 scale, 1024 px, int8). It fills in scales, maxSide and precision;
   * any of them given explicitly wins.
   */
  preset?: Preset;
  /**
   * Photos int8 calibrates its activation ranges on: a folder (its images in name order, the
   * first 32) or a list of image files. The default model ships ranges calibrated on real photos
   * and needs none; CVNet checkpoints and saved float models need it for int8 (photos like the
   * ones to index). Ranges are cached with the model.
   */
  calibration?: string | readonly string[];
  /**
   * `model` is a foreign ONNX model used as a feature network: `output` names its feature-map
   * tensor [1, C, h, w] (default: its output if 4-D, else the input of its global pooling; a
   * quantised tensor is dequantised), `input` how images become its input. The SuperGlobal head
   * (identity FC) is appended to it. Set for `mobilenetv2-imagenet` by the registry.
   */
  feature?: FeatureSpec;
}

export interface ResolvedOptions {
  /** CVNet's depth (detected from the checkpoint when not given); undefined for other networks. */
  depth: Depth | undefined;
  scales: ScaleSet;
  gemp: boolean;
  rgem: boolean;
  sgem: boolean;
  relup: boolean;
  maxSide: number | null;
  threads: number | undefined;
  /** undefined: float32, or what a saved model records. */
  precision: Precision | undefined;
  preset: Preset | undefined;
}

function flag(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") invalidArgument(name, "a boolean", value);
  return value;
}

export function resolveOptions(options: ExtractorOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null)
    invalidArgument("options", "an object", options);
  if (options.checkpoint !== undefined && options.model !== undefined) {
    invalidArgument("options", "at most one of checkpoint or model", options);
  }
  if (options.checkpoint !== undefined && typeof options.checkpoint !== "string") {
    invalidArgument("checkpoint", "a file path", options.checkpoint);
  }
  if (options.model !== undefined && (typeof options.model !== "string" || options.model === "")) {
    invalidArgument("model", "a model name or a file path", options.model);
  }
  if (
    options.whitening !== undefined &&
    options.whitening !== null &&
    typeof options.whitening !== "string"
  ) {
    invalidArgument("whitening", "a folder path or null", options.whitening);
  }
  if (options.feature !== undefined) {
    checkFeatureSpec(options.feature);
    if (options.model === undefined || registeredModel(options.model) !== undefined) {
      invalidArgument("feature", "nothing, or model as an ONNX file path", options.feature);
    }
    for (const key of ["depth", "relup"] as const) {
      if (options[key] !== undefined) {
        invalidArgument(
          key,
          "nothing: it is a CVNet option, not one of a feature network",
          options[key],
        );
      }
    }
  }
  const preset =
    options.preset === undefined ? undefined : assertOneOf("preset", options.preset, PRESETS);
  const fromPreset = preset === undefined ? undefined : PRESET_SETTINGS[preset];
  const precision =
    options.precision !== undefined
      ? assertOneOf("precision", options.precision, PRECISIONS)
      : fromPreset?.precision;
  if (options.calibration !== undefined) checkCalibration(options.calibration);
  const entry =
    options.checkpoint === undefined ? registeredModel(options.model ?? DEFAULT_MODEL) : undefined;
  const defaults = entry?.defaults ?? {
    scales: 3,
    rgem: true,
    gemp: true,
    sgem: true,
    maxSide: null,
  };
  return {
    depth: options.depth === undefined ? undefined : assertOneOf("depth", options.depth, DEPTHS),
    scales: assertOneOf("scales", options.scales ?? fromPreset?.scales ?? defaults.scales, [
      1, 3, 5,
    ] as const),
    gemp: flag("gemp", options.gemp, defaults.gemp),
    rgem: flag("rgem", options.rgem, defaults.rgem),
    sgem: flag("sgem", options.sgem, defaults.sgem),
    relup: flag("relup", options.relup, true),
    maxSide:
      options.maxSide === undefined
        ? fromPreset?.maxSide === undefined
          ? defaults.maxSide
          : fromPreset.maxSide
        : options.maxSide === null
          ? null
          : assertInteger("maxSide", options.maxSide, 32, 1 << 16),
    threads:
      options.threads === undefined
        ? undefined
        : assertInteger("threads", options.threads, 1, 1024),
    precision,
    preset,
  };
}

function checkCalibration(value: unknown): void {
  const ok =
    (typeof value === "string" && value !== "") ||
    (Array.isArray(value) &&
      value.length > 0 &&
      value.every((v) => typeof v === "string" && v !== ""));
  if (!ok) invalidArgument("calibration", "a folder or a non-empty list of image files", value);
}
