/**
 * The SuperGlobal descriptor: image → (per scale) bilinear resize → backbone + descriptor head in
 * onnxruntime (Regional-GeM → GeM+ → L2 → FC) → Scale-GeM → L2. Create one extractor (it builds
 * or loads the model once) and call it per image.
 */
import { readFile } from "node:fs/promises";
import { defaultNetworkSource } from "../backbone/mobilenet/default-network.ts";
import { loadCheckpoint } from "../checkpoint/load.ts";
import { fileError, invalidArgument, SuperglobalError } from "../errors.ts";
import { type Box, cropToBox } from "../image/crop.ts";
import { type BgrImage, decodeImage } from "../image/decode.ts";
import {
  type ImageTensor,
  toImagenetRgbTensor,
  toInputTensor,
  toUnitRgbTensor,
} from "../image/normalize.ts";
import { fitInside, resizeBilinear, scaledSize } from "../image/resize.ts";
import { scaleGemMax, scaleMean } from "../pooling/scale-gem.ts";
import { l2Normalize } from "../pooling/vector.ts";
import { assertInt8Supported } from "../runtime/cpu-features.ts";
import { DEFAULT_WHITENING_DIR, defaultModel } from "./default-model.ts";
import { featureModel } from "./feature-model.ts";
import { DEFAULT_RANGES_FILE, int8Model, type RangeSource } from "./int8-model.ts";
import { type BackboneOutput, buildModel, DescriptorModel } from "./model.ts";
import { type ModelInfo, modelIdentity, readModelInfo } from "./model-metadata.ts";
import {
  type ExtractorOptions,
  type ResolvedOptions,
  resolveOptions,
  SCALE_SETS,
} from "./options.ts";
import { resolvePulled } from "./pull.ts";
import { DEFAULT_MODEL } from "./registry.ts";

/** CVNet's descriptor dimension; other models have their own (`extractor.dim`). */
export { CVNET_DIM as DESCRIPTOR_DIM } from "../backbone/cvnet/cvnet-network.ts";

/** Cumulative milliseconds spent in each stage since the extractor was created. */
export interface StageTimes {
  decode: number;
  /** Crop, normalisation and the per-scale resizes. */
  preprocess: number;
  /** The onnxruntime model: backbone and per-scale descriptor head. */
  backbone: number;
  /** What remains in TypeScript: Scale-GeM and the final L2. */
  pooling: number;
  images: number;
}

export interface ExtractInput {
  /** Crop to [x1, y1, x2, y2] first (query images), with the official int truncation. */
  bbox?: Box;
  /** Names the image in errors when it is given as bytes. */
  name?: string;
}

/** Per-scale intermediate results, for inspection and the golden tests. */
export interface ScaleTrace {
  scale: number;
  /** The resized input. */
  height: number;
  width: number;
  /** FC output of this scale (before Scale-GeM). */
  vector: Float32Array;
  /** The conv5 map of this scale (only from `trace`). */
  s4?: BackboneOutput;
}

export interface Trace {
  descriptor: Float32Array;
  scales: ScaleTrace[];
}

/** The build options a saved model records, which `create({ model })` adopts. */
const RECORDED = ["depth", "relup", "rgem", "gemp"] as const;

/**
 * Turns images into unit-norm SuperGlobal descriptors (CVNet: 2048-d, as the official
 * `extract_global_descriptor` + `F.normalize` computes them, spec §4.5).
 *
 * Small images: the official code crashes when an image side falls under 65 px at some scale
 * (its conv5 map is then under 3 px, and torch's reflection padding of 2 needs more). Ours never
 * does: a side that truncates to 0 px at a scale is kept at 1 px, and Regional-GeM pads a map side
 * under 3 by reflecting again while out of range (numpy's "reflect": a side of 1 repeats its value,
 * a side of 2 alternates its two values), so every window still averages the map's own values.
 * Images on which the official code works (every side ≥ 65 px at every scale: sides ≥ 65 px with
 * 1 scale, ≥ 92 px with the default 3, ≥ 130 px with 5) are computed exactly as it computes them.
 */
export class Extractor {
  readonly options: Readonly<ResolvedOptions>;
  readonly stats: StageTimes = { decode: 0, preprocess: 0, backbone: 0, pooling: 0, images: 0 };
  /**
   * Who made these descriptors: the model's content hash with the extraction settings. Equal
   * identities mean interchangeable descriptors (caches and indexes are keyed by it).
   */
  readonly identity: string;

  private constructor(
    private readonly model: DescriptorModel,
    options: ResolvedOptions,
  ) {
    this.options = Object.freeze({ ...options, precision: model.info.precision ?? "float32" });
    this.identity = modelIdentity(model.info, {
      scales: options.scales,
      sgem: options.sgem,
      maxSide: options.maxSide,
    });
  }

  /** What the model is: network, input convention, dimension, pooling, weight hash. */
  get info(): Readonly<ModelInfo> {
    return this.model.info;
  }

  /** The descriptor dimension. */
  get dim(): number {
    return this.model.info.dim as number;
  }

  /**
   * Builds the model from a CVNet checkpoint, or loads one saved with `save()` (or the
   * `build-model` command). A saved model records depth, relup, rgem and gemp: they are adopted,
   * and giving one that differs is refused (INVALID_ARGUMENT naming it). A checkpoint's depth is
   * read from its tensors; a contradicting `depth` is refused.
   */
  static async create(options: ExtractorOptions = {}): Promise<Extractor> {
    // A pulled model's name (`cvnet-r50`, …) stands for its file in the model cache.
    const pulled = resolvePulled(options);
    if (pulled !== options) return Extractor.create(pulled);
    const resolved = resolveOptions(options);
    if (resolved.precision === "int8") assertInt8Supported();
    if (options.calibration !== undefined && resolved.precision !== "int8") {
      invalidArgument("calibration", "nothing unless precision is int8", options.calibration);
    }
    const head = { rgem: resolved.rgem, gemp: resolved.gemp };
    if (options.checkpoint === undefined && (options.model ?? DEFAULT_MODEL) === DEFAULT_MODEL) {
      for (const key of ["depth", "relup"] as const) {
        if (options[key] !== undefined) {
          invalidArgument(
            key,
            "nothing: it is a CVNet option, not one of the default model",
            options[key],
          );
        }
      }
      const { model: bytes } = await defaultModel({
        head,
        whitening: options.whitening === undefined ? DEFAULT_WHITENING_DIR : options.whitening,
        ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
      });
      const model = await openModel(bytes, DEFAULT_MODEL, resolved, options, {
        file: DEFAULT_RANGES_FILE,
      });
      return new Extractor(model, { ...resolved, relup: false });
    }
    if (options.whitening !== undefined) {
      invalidArgument(
        "whitening",
        "nothing: only the default model takes a whitening",
        options.whitening,
      );
    }
    if (options.feature !== undefined && options.model !== undefined) {
      // A foreign ONNX feature network with the head appended (feature-model.ts).
      const bytes = await featureModel(options.model, options.feature, head);
      const model = await openModel(bytes, options.model, resolved, options);
      return new Extractor(model, { ...resolved, depth: undefined, relup: false });
    }
    if (options.model !== undefined) {
      const path = options.model;
      const model = await openModel(await readModelFile(path), path, resolved, options);
      try {
        const saved = recordedOptions(model, path);
        for (const key of RECORDED) {
          const given = options[key];
          if (given !== undefined && given !== saved[key]) {
            throw new SuperglobalError(
              "INVALID_ARGUMENT",
              `${key} ${String(given)} contradicts the model ${path}, built with ${key} ` +
                `${saved[key]}: leave ${key} out or rebuild the model`,
              { input: key },
            );
          }
        }
        return new Extractor(model, { ...resolved, ...saved });
      } catch (error) {
        await model.release();
        throw error;
      }
    }
    const source = options.checkpoint as string;
    const sd = loadCheckpoint(source);
    const bytes = buildModel(
      sd,
      {
        ...(resolved.depth === undefined ? {} : { depth: resolved.depth }),
        relup: resolved.relup,
        head,
      },
      source,
    );
    const model = await openModel(bytes, source, resolved, options);
    return new Extractor(model, { ...resolved, depth: model.depth ?? undefined });
  }

  /** Saves the model (backbone, head and build options) as one `.onnx` file for fast start-up. */
  async save(path: string): Promise<void> {
    await this.model.save(path);
  }

  /** The unit-norm descriptor (2048 float32) of an image file, encoded bytes or decoded BGR image. */
  async extract(
    image: string | Uint8Array | BgrImage,
    input: ExtractInput = {},
  ): Promise<Float32Array> {
    return (await this.describe(await this.prepare(image, input), false)).descriptor;
  }

  /** Like `extract`, with the per-scale vectors and conv5 maps too. */
  async trace(image: string | Uint8Array | BgrImage, input: ExtractInput = {}): Promise<Trace> {
    return this.describe(await this.prepare(image, input), true);
  }

  /**
   * The descriptor of an already normalised BGR tensor (what the official model receives), with
   * the per-scale vectors; `{ s4: true }` adds the conv5 maps.
   */
  async fromTensor(tensor: ImageTensor, options: { s4?: boolean } = {}): Promise<Trace> {
    if (typeof tensor !== "object" || tensor === null) {
      invalidArgument("tensor", "an ImageTensor", tensor);
    }
    return this.describe(tensor, options.s4 === true);
  }

  async release(): Promise<void> {
    await this.model.release();
  }

  /** `prepare` under the name batch jobs look for (extractMany's decode step). */
  decode(image: string | Uint8Array, input: ExtractInput = {}): Promise<ImageTensor> {
    return this.prepare(image, input);
  }

  /** The descriptor of a prepared tensor (extractMany's inference step). */
  async infer(tensor: ImageTensor): Promise<Float32Array> {
    return (await this.describe(tensor, false)).descriptor;
  }

  /**
   * The model's input tensor of an image (decode, crop, normalise): the first half of `extract`.
   * Batch jobs call it for the next image while `fromTensor` runs the current one.
   */
  async prepare(
    image: string | Uint8Array | BgrImage,
    input: ExtractInput = {},
  ): Promise<ImageTensor> {
    if (typeof input !== "object" || input === null) invalidArgument("input", "an object", input);
    let t = performance.now();
    let decoded: BgrImage;
    if (typeof image === "string" || image instanceof Uint8Array) {
      decoded = await decodeImage(
        image,
        input.name ?? (typeof image === "string" ? image : "image"),
      );
    } else if (isBgrImage(image)) {
      decoded = image;
    } else {
      invalidArgument("image", "a file path, encoded image bytes or a BgrImage", image);
    }
    t = this.lap("decode", t);
    if (input.bbox !== undefined) decoded = cropToBox(decoded, input.bbox);
    const maxSide = this.options.maxSide;
    if (maxSide !== null && Math.max(decoded.width, decoded.height) > maxSide) {
      decoded = await fitInside(decoded, maxSide);
    }
    const convention = this.model.info.input;
    const tensor =
      convention === "rgb-unit"
        ? toUnitRgbTensor(decoded)
        : convention === "rgb-imagenet"
          ? toImagenetRgbTensor(decoded)
          : toInputTensor(decoded);
    this.lap("preprocess", t);
    return tensor;
  }

  private async describe(tensor: ImageTensor, withMaps: boolean): Promise<Trace> {
    const o = this.options;
    const scales: ScaleTrace[] = [];
    for (const scale of SCALE_SETS[o.scales]) {
      let t = performance.now();
      // A side can truncate to 0 at a small scale: keep at least one pixel (see the class doc).
      const [h0, w0] = scaledSize(tensor.height, tensor.width, scale);
      const h = Math.max(1, h0);
      const w = Math.max(1, w0);
      const resized = resizeBilinear(tensor, h, w);
      t = this.lap("preprocess", t);
      const { vector, s4 } = await this.model.embed(resized, { s4: withMaps });
      scales.push({ scale, height: h, width: w, vector, ...(s4 === undefined ? {} : { s4 }) });
      this.lap("backbone", t);
    }
    const t = performance.now();
    const vectors = scales.map((s) => s.vector);
    const combined = o.sgem ? scaleGemMax(vectors) : scaleMean(vectors);
    const descriptor = Float32Array.from(l2Normalize(combined));
    this.lap("pooling", t);
    this.stats.images += 1;
    return { descriptor, scales };
  }

  private lap(stage: Exclude<keyof StageTimes, "images">, since: number): number {
    const now = performance.now();
    this.stats[stage] += now - since;
    return now;
  }
}

/**
 * A session on the model's bytes, first quantised when precision is int8 (with the ranges of
 * `shipped`, or of the photos in `options.calibration`). A saved int8 model given precision
 * float32 is refused: it cannot be made exact again.
 */
async function openModel(
  bytes: Uint8Array,
  name: string,
  resolved: ResolvedOptions,
  options: ExtractorOptions,
  shipped?: RangeSource,
): Promise<DescriptorModel> {
  let model = bytes;
  const recorded = readModelInfo(bytes, name).precision ?? "float32";
  // A saved int8 model is refused where int8 is slow, like precision int8 itself.
  if (recorded === "int8") assertInt8Supported();
  if (resolved.precision === "float32" && recorded === "int8") {
    invalidArgument("precision", `int8 or nothing: ${name} is an int8 model`, resolved.precision);
  }
  if (resolved.precision === "int8" && recorded !== "int8") {
    const source: RangeSource | undefined =
      options.calibration !== undefined ? { images: options.calibration } : shipped;
    if (source === undefined) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `precision int8 for ${name} needs photos to calibrate on: give calibration (CLI: --calibrate <dir>), a folder of ` +
          "photos like the ones to index (the default model ships its own ranges)",
        { input: "calibration" },
      );
    }
    model = (
      await int8Model(bytes, name, source, {
        ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
        ...(resolved.threads === undefined ? {} : { threads: resolved.threads }),
        ...("file" in source ? { network: defaultNetworkSource() } : {}),
      })
    ).model;
  }
  return DescriptorModel.fromBytes(model, name, resolved.threads);
}

async function readModelFile(path: string): Promise<Uint8Array> {
  if (typeof path !== "string" || path === "") invalidArgument("model", "a file path", path);
  try {
    return await readFile(path);
  } catch (cause) {
    throw fileError(path, "cannot read the model", cause);
  }
}

/** The options a saved model fixes; BAD_FILE for a model without the descriptor head. */
function recordedOptions(
  model: DescriptorModel,
  path: string,
): Pick<ResolvedOptions, (typeof RECORDED)[number]> {
  const { head, relup } = model.info;
  if (head === null) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: the model has no descriptor head (a backbone-only model); build one with \`superglobal build-model\``,
      { input: path },
    );
  }
  return {
    depth: model.depth ?? undefined,
    relup: relup ?? true,
    rgem: head.rgem,
    gemp: head.gemp,
  };
}

function isBgrImage(value: unknown): value is BgrImage {
  const v = value as BgrImage;
  return (
    typeof v === "object" &&
    v !== null &&
    v.data instanceof Uint8Array &&
    Number.isInteger(v.width) &&
    Number.isInteger(v.height) &&
    v.data.length === v.width * v.height * 3
  );
}
