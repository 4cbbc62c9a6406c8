/**
 * Descriptor sources for the quality benchmark: anything that turns an image file into one
 * global descriptor, with a name. The name keys the on-disk cache, so it must change whenever
 * the descriptors would (another model, pooling, scale set, input size).
 *
 * To measure another model: the product's Extractor with any options is one line,
 *
 *   SOURCES["cvnet-r50"] = () => extractorSource({ model: "cvnet-r50" }, "cvnet-r50");
 *
 * (its cache key comes from Extractor.identity, so a changed model is never served stale), and
 * anything else is an object { name, describe(path) → Float32Array, release? }. List it in
 * `SOURCES` below to select it with `--source`, or pass it to `evaluateSource` (bench/quality.ts)
 * from a script of your own.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExtractorOptions } from "../src/descriptor/options.ts";
import { decodeImage } from "../src/image/decode.ts";
import { gem } from "../src/pooling/reference/gem.ts";
import { l2Normalize } from "../src/pooling/vector.ts";
import { OnnxSession } from "../src/runtime/session.ts";

export interface DescriptorSource {
  /** Identifies the descriptors (model + pooling + settings): the cache key. Path-safe. */
  readonly name: string;
  /** One descriptor of the image file at `path` (any length, the same for every image). */
  describe(path: string): Promise<Float32Array>;
  release?(): Promise<void>;
  /**
   * Known multiview-dev numbers for this source (mAP and top-1 in percent without reranking, mAP
   * with the paper's reranking at M 100), e.g. from the asset's README: the bench checks its own
   * results against them, as a test of the harness.
   */
  readonly expected?: { map: number; top1: number; paperM100: number };
}

/** Where the shared test assets live (not part of the project; read at run time only). */
export const sharedAssetsDir = join(
  process.env["SUPERGLOBAL_SHARED"] ?? join(import.meta.dirname, "..", "..", "shared"),
  "assets",
);

/** Default cache folder: $SUPERGLOBAL_QUALITY_CACHE or <tmp>/superglobal-quality-cache. */
export function defaultCacheDir(): string {
  return process.env["SUPERGLOBAL_QUALITY_CACHE"] ?? join(tmpdir(), "superglobal-quality-cache");
}

/**
 * Wraps a source so each descriptor is kept on disk under `<dir>/<source name>/<sha256 of the
 * file's bytes>.f32`: a rerun (or a regenerated but byte-identical transformed copy) is read back
 * instead of recomputed. Keyed by content, not path, so a changed image is never served stale.
 */
export function cachedSource(
  source: DescriptorSource,
  dir = defaultCacheDir(),
): DescriptorSource & { hits: number; misses: number; release(): Promise<void> } {
  if (!/^[\w.@+-]+$/.test(source.name)) {
    throw new Error(`descriptor source name "${source.name}" must be path-safe ([A-Za-z0-9_.@+-])`);
  }
  const folder = join(dir, source.name);
  mkdirSync(folder, { recursive: true });
  const wrapped = {
    name: source.name,
    ...(source.expected === undefined ? {} : { expected: source.expected }),
    hits: 0,
    misses: 0,
    async describe(path: string): Promise<Float32Array> {
      const key = createHash("sha256").update(readFileSync(path)).digest("hex");
      const file = join(folder, `${key}.f32`);
      if (existsSync(file)) {
        const bytes = readFileSync(file);
        wrapped.hits++;
        return new Float32Array(
          bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
        );
      }
      const v = await source.describe(path);
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      renameSync(tmp, file);
      wrapped.misses++;
      return v;
    },
    release: () => source.release?.() ?? Promise.resolve(),
  };
  return wrapped;
}

/** ImageNet normalisation in RGB order. */
const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export interface FeatureMapSourceOptions {
  /** Cache key (see DescriptorSource.name). */
  name: string;
  expected?: DescriptorSource["expected"];
  /** The ONNX model: a file path or its bytes. */
  model: string | Uint8Array;
  /** Input [1, 3, H, W] float32 RGB, and the feature-map output [1, C, h, w]. */
  input: string;
  output: string;
  /** "imagenet": x/255 then ImageNet mean/std; "unit": x/255. */
  normalise: "imagenet" | "unit";
  /** GeM exponent (default 3; clamp 1e-6). */
  p?: number;
  /** onnxruntime threads (default: all cores). */
  threads?: number;
}

/**
 * A CNN feature map of the image as stored (no resize; EXIF orientation applied), GeM-pooled per
 * channel and L2-normalised: the setting of multiview-dev's reference table.
 */
export async function featureMapSource(
  options: FeatureMapSourceOptions,
): Promise<DescriptorSource> {
  const p = options.p ?? 3;
  const session = await OnnxSession.create(
    options.model,
    options.threads === undefined ? {} : { threads: options.threads },
  );
  const mean = options.normalise === "imagenet" ? IMAGENET_MEAN : [0, 0, 0];
  const std = options.normalise === "imagenet" ? IMAGENET_STD : [1, 1, 1];
  return {
    name: options.name,
    ...(options.expected === undefined ? {} : { expected: options.expected }),
    async describe(path: string): Promise<Float32Array> {
      const { width, height, data } = await decodeImage(path); // BGR, HWC
      const plane = width * height;
      const input = new Float32Array(3 * plane);
      for (let c = 0; c < 3; c++) {
        const src = 2 - c; // RGB channel c is BGR channel 2 - c
        const m = mean[c]!;
        const sd = std[c]!;
        for (let i = 0; i < plane; i++) input[c * plane + i] = (data[i * 3 + src]! / 255 - m) / sd;
      }
      const out = await session.run(
        { [options.input]: { data: input, dims: [1, 3, height, width] } },
        [options.output],
      );
      const features = out[options.output]!;
      const [, channels, h, w] = features.dims as number[];
      const pooled = gem(
        { data: features.data as Float32Array, channels: channels!, height: h!, width: w! },
        p,
        1e-6,
      );
      return Float32Array.from(l2Normalize(pooled));
    },
    release: () => session.release(),
  };
}

/**
 * The reference source: ImageNet MobileNetV2 (ONNX model zoo, int8) `features` [1, 1280, h, w],
 * input RGB x/255 then ImageNet mean/std, GeM p 3, L2; 1280-d. multiview-dev: 81.60 mAP.
 */
export function mobileNetV2Source(
  options: { model?: string; threads?: number } = {},
): Promise<DescriptorSource> {
  return featureMapSource({
    name: "mobilenetv2-int8-imagenet-gem3",
    expected: { map: 81.6, top1: 86.59, paperM100: 79.28 },
    model:
      options.model ??
      join(sharedAssetsDir, "mobilenetv2-12-int8-onnx", "mobilenetv2-12-int8-features.onnx"),
    input: "input",
    output: "features",
    normalise: "imagenet",
    ...(options.threads === undefined ? {} : { threads: options.threads }),
  });
}

/**
 * nsfwjs's MobileNetV2-1.4 (the default network's weights) cut at `Conv_1` (1792-d), input RGB
 * x/255, one scale, GeM p 3, L2: the second row of multiview-dev's reference table (77.94 mAP).
 * Not the product's descriptor (that adds SuperGlobal's pooling): a second reference point.
 */
export async function nsfwjsConv1Source(
  options: { threads?: number } = {},
): Promise<DescriptorSource> {
  const { buildDefaultNetwork, CONVERTER_VERSION } = await import(
    "../src/backbone/mobilenet/default-network.ts"
  );
  return featureMapSource({
    name: `nsfwjs-conv1-c${CONVERTER_VERSION}-gem3`,
    expected: { map: 77.94, top1: 83.24, paperM100: 73.29 },
    model: buildDefaultNetwork(),
    input: "image",
    output: "features",
    normalise: "unit",
    ...(options.threads === undefined ? {} : { threads: options.threads }),
  });
}

/**
 * The product's Extractor (`Extractor.create(options)`: the default model, a registered one, a
 * saved model file…) as a source. The cache key is `label` plus a hash of the extractor's
 * identity (model content hash and extraction settings).
 */
export async function extractorSource(
  options: ExtractorOptions = {},
  label = "extractor",
): Promise<DescriptorSource> {
  const { Extractor } = await import("../src/descriptor/extractor.ts");
  const extractor = await Extractor.create(options);
  const id = createHash("sha256").update(extractor.identity).digest("hex").slice(0, 16);
  return {
    name: `${label}-${id}`,
    describe: (path) => extractor.extract(path),
    release: () => extractor.release(),
  };
}

/**
 * The product's default model as users get it, but with its whitening learned on debian-photos
 * only. The shipped whitening (models/default-whitening) was learned on multiview-dev and
 * debian-photos: scored on its own training photos it memorises them (whitened training vectors
 * are nearly equidistant: multiview-dev mAP 46.76 where a held-out whitening gives ~81), so no
 * number on those photos would say anything about users' photos. Scored on multiview-dev, this
 * source is held out; its copies/pairs numbers are not (their originals trained it).
 * The whitening is learned on first use (bench/learn-whitening.ts --only debian-photos, ~1 min).
 */
export async function productSource(
  options: ExtractorOptions,
  label: string,
): Promise<DescriptorSource> {
  const dir = join(import.meta.dirname, ".work", "whitening-debian-photos");
  if (!existsSync(join(dir, "vectors.npy"))) {
    const { main } = await import("./learn-whitening.ts");
    await main(["--only", "debian-photos", "--out", dir]);
  }
  return extractorSource({ whitening: dir, ...options }, `${label}-heldout`);
}

/** Sources selectable with `npm run bench -- quality --source <name>`. */
export const SOURCES: Record<string, () => Promise<DescriptorSource>> = {
  "mobilenetv2-imagenet": () => mobileNetV2Source(),
  "nsfwjs-conv1": () => nsfwjsConv1Source(),
  "product-default": () => productSource({}, "product-default"),
  // The speed presets and precisions of the default model (README "Faster extraction").
  "product-int8": () => productSource({ precision: "int8" }, "product-int8"),
  "product-balanced": () => productSource({ preset: "balanced" }, "product-balanced"),
  "product-fast": () => productSource({ preset: "fast" }, "product-fast"),
  "product-fast-float32": () =>
    productSource({ scales: 1, precision: "float32" }, "product-fast-float32"),
  // Without the whitening: int8's own effect on the pooled features.
  "product-plain-float32": () => extractorSource({ whitening: null }, "product-plain-float32"),
  "product-plain-int8": () =>
    extractorSource({ whitening: null, precision: "int8" }, "product-plain-int8"),
};
