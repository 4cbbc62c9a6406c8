/**
 * `npm run bench -- learn-whitening [--out models/default-whitening] [--shrinkage 0.1]
 *   [--scales 1|3] [--rgem true|false] [--gemp true|false] [--train-scales used|1]
 *   [--augment flip,crop-c] [--cache DIR] [--threads 2] [--only debian-photos]`
 *
 * Learns the default model's whitening from real photos and writes it where the package reads it
 * (`models/default-whitening/`: mean.npy, vectors.npy, scales.npy and a README.md with the
 * provenance). The photos are the shared assets (`$SUPERGLOBAL_SHARED/assets` or
 * `../shared/assets`; never part of the project): every image of multiview-dev's four folders and
 * the 54 debian-photos originals, each also in a few deterministic variants (mirror, crops) when
 * `--augment` names them.
 *
 * Each photo goes through the default model with `whitening: null` at the given settings (by
 * default the registry's: `MODELS.default.defaults`); the training samples are the per-scale head
 * vectors (L2-normalised GeM, the FC's input: what the whitening is applied to), of every scale
 * the model uses or of the scale 1 only. Per-scale vectors are cached on disk by model identity
 * and image content (`--cache`), so a rerun computes nothing twice.
 *
 * The settings and the training photos were chosen by bench/default-model-study.ts, whose numbers
 * are cross-validated (the whitening evaluated never saw the photos it is scored on); this
 * command learns on all the photos, so its output must not be evaluated on them.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { Extractor } from "../src/descriptor/extractor.ts";
import { SCALE_SETS, type ScaleSet } from "../src/descriptor/options.ts";
import { DEFAULT_MODEL, MODELS } from "../src/descriptor/registry.ts";
import { type BgrImage, decodeImage } from "../src/image/decode.ts";
import { learnWhitening, type Whitening, writeWhitening } from "../src/pooling/whitening.ts";

/** The shared test assets: `$SUPERGLOBAL_SHARED/assets`, else `../shared/assets` beside the checkout. */
export const sharedAssetsDir = join(
  process.env["SUPERGLOBAL_SHARED"] ?? join(import.meta.dirname, "..", "..", "shared"),
  "assets",
);

/** Deterministic variants of a training photo (BGR, HWC). */
export const AUGMENTATIONS: Record<string, (image: BgrImage) => BgrImage> = {
  /** Mirrored left-right. */
  flip: (image) => {
    const { width, height, data } = image;
    const out = new Uint8Array(data.length);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const from = (y * width + x) * 3;
        const to = (y * width + (width - 1 - x)) * 3;
        out[to] = data[from]!;
        out[to + 1] = data[from + 1]!;
        out[to + 2] = data[from + 2]!;
      }
    }
    return { width, height, data: out };
  },
  /** The centre 80% of each side (64% of the area). */
  "crop-c": (image) => cropFraction(image, 0.8, 0.5, 0.5),
  /** The top-left 80% × 80%. */
  "crop-tl": (image) => cropFraction(image, 0.8, 0, 0),
  /** The bottom-right 80% × 80%. */
  "crop-br": (image) => cropFraction(image, 0.8, 1, 1),
};

/** A crop of `side` of each side, placed at (fx, fy) ∈ [0, 1]² of the free range. */
function cropFraction(image: BgrImage, side: number, fx: number, fy: number): BgrImage {
  const width = Math.max(1, Math.round(image.width * side));
  const height = Math.max(1, Math.round(image.height * side));
  const left = Math.round((image.width - width) * fx);
  const top = Math.round((image.height - height) * fy);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * image.width + left) * 3;
    data.set(image.data.subarray(from, from + width * 3), y * width * 3);
  }
  return { width, height, data };
}

/**
 * The training photos, grouped by folder: every image of multiview-dev's four folders (as listed
 * in their groups.json) and the debian-photos originals (every .jpg of its five folders). The
 * same files, in the same order, as the quality benchmark's sets (bench/quality-data.ts), listed
 * here so that this command depends on nothing but the assets.
 */
export function trainingPhotos(assets: string = sharedAssetsDir): {
  folder: string;
  paths: string[];
}[] {
  const subfolders = (dir: string) =>
    readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  const out: { folder: string; paths: string[] }[] = [];
  const multiview = join(assets, "multiview-dev");
  for (const folder of subfolders(multiview)) {
    const groups = JSON.parse(
      readFileSync(join(multiview, folder, "groups.json"), "utf8"),
    ) as Record<string, string[]>;
    const paths = Object.keys(groups)
      .sort()
      .flatMap((g) => groups[g]!.map((p) => join(multiview, folder, p)));
    out.push({ folder: `multiview-dev/${folder}`, paths });
  }
  const debian = join(assets, "debian-photos");
  for (const folder of subfolders(debian)) {
    const paths = readdirSync(join(debian, folder))
      .sort()
      .filter((f) => f.toLowerCase().endsWith(".jpg"))
      .map((f) => join(debian, folder, f));
    out.push({ folder: `debian-photos/${folder}`, paths });
  }
  return out;
}

export interface PerScaleOptions {
  /** Cache folder of per-scale vectors (one file per model identity, image and variant). */
  cacheDir: string;
  /** Augmentation names (keys of AUGMENTATIONS); the original is always included. */
  augment?: readonly string[];
  onImage?: (done: number, total: number) => void;
}

/**
 * The per-scale head vectors ([scales × dim] per image and variant) of each photo and its
 * augmentations, in photo order then variant order ("" first: the photo as stored).
 */
export async function perScaleVectors(
  extractor: Extractor,
  paths: readonly string[],
  options: PerScaleOptions,
): Promise<{ path: string; variant: string; vectors: Float32Array }[]> {
  const variants = ["", ...(options.augment ?? [])];
  for (const v of variants) {
    if (v !== "" && AUGMENTATIONS[v] === undefined) {
      throw new Error(`unknown augmentation ${v}; one of ${Object.keys(AUGMENTATIONS).join(", ")}`);
    }
  }
  const folder = join(options.cacheDir, extractor.identity.replace(/[^\w.@+-]/g, "_"));
  mkdirSync(folder, { recursive: true });
  const scales = SCALE_SETS[extractor.options.scales].length;
  const out: { path: string; variant: string; vectors: Float32Array }[] = [];
  let done = 0;
  for (const path of paths) {
    const sha = createHash("sha256").update(readFileSync(path)).digest("hex");
    let decoded: BgrImage | undefined;
    for (const variant of variants) {
      const file = join(folder, `${sha}${variant === "" ? "" : `-${variant}`}.f32`);
      let vectors: Float32Array;
      if (existsSync(file)) {
        const bytes = readFileSync(file);
        vectors = new Float32Array(
          bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
        );
      } else {
        decoded ??= await decodeImage(path);
        const image = variant === "" ? decoded : AUGMENTATIONS[variant]!(decoded);
        const trace = await extractor.trace(image);
        vectors = new Float32Array(scales * extractor.dim);
        for (const [i, s] of trace.scales.entries()) vectors.set(s.vector, i * extractor.dim);
        const tmp = `${file}.${process.pid}.tmp`;
        writeFileSync(tmp, new Uint8Array(vectors.buffer, vectors.byteOffset, vectors.byteLength));
        renameSync(tmp, file);
      }
      out.push({ path, variant, vectors });
    }
    options.onImage?.(++done, paths.length);
  }
  return out;
}

/**
 * Which per-scale vectors are training samples: those of every scale the model uses, the scale 1
 * only, or those of the three scales 0.7071, 1, 1.4142 whatever the model uses (each photo seen
 * at three resolutions).
 */
export type TrainScales = "used" | "1" | "3";

/** The scale set a training extractor runs at. */
export function trainingScaleSet(modelScales: ScaleSet, trainScales: TrainScales): ScaleSet {
  return trainScales === "3" ? 3 : modelScales;
}

/** The rows [n × dim] that a whitening is learned from (`items` made at `trainingScaleSet`). */
export function trainingRows(
  items: readonly { vectors: Float32Array }[],
  scaleSet: ScaleSet,
  dim: number,
  trainScales: TrainScales,
): { data: Float64Array; rows: number } {
  const scales = SCALE_SETS[trainingScaleSet(scaleSet, trainScales)];
  const picked = trainScales === "1" ? [scales.indexOf(1)] : scales.map((_, i) => i);
  const data = new Float64Array(items.length * picked.length * dim);
  let row = 0;
  for (const item of items) {
    for (const s of picked) data.set(item.vectors.subarray(s * dim, (s + 1) * dim), row++ * dim);
  }
  return { data, rows: row };
}

/** The study's results file whose (cross-validated) numbers the README points to. */
export const STUDY_RESULTS = "bench/results/default-model-2026-12-02.md";

function readme(
  w: Whitening,
  settings: Record<string, unknown>,
  photos: { folder: string; paths: string[] }[],
  rows: number,
  command: string,
  files: Record<string, number>,
): string {
  const total = photos.reduce((a, p) => a + p.paths.length, 0);
  const lines = [
    "# The default model's whitening",
    "",
    "PCA-whitening of the default model's per-scale head vectors (nsfwjs MobileNetV2-1.4 `Conv_1`,",
    "1792 channels, pooled and L2-normalised as the settings below say), the FC layer of the",
    "default model's descriptor head (src/pooling/whitening.ts: centre on the training mean, rotate",
    "onto the covariance's eigenvectors, scale each component by (eigenvalue + shrinkage × mean",
    "eigenvalue)^-1/2, keep every component; stored factored).",
    "",
    "## Provenance",
    "",
    `Made by \`${command}\` (bench/learn-whitening.ts) on ${new Date().toISOString().slice(0, 10)},`,
    `from ${total} real photos (${rows} training rows), read at run time from the shared test assets`,
    "(not part of the project; see their READMEs for sources and licences):",
    "",
    "| folder | photos |",
    "|---|---|",
    ...photos.map((p) => `| ${p.folder} | ${p.paths.length} |`),
    "",
    "Settings:",
    "",
    ...Object.entries(settings).map(
      ([k, v]) => `- ${k}: ${Array.isArray(v) ? v.join(", ") || "none" : String(v)}`,
    ),
    "",
    `Result: ${w.scales.length} eigenvectors of ${w.channels} channels (the other directions share`,
    `one scale, ${w.rest.toPrecision(6)}).`,
    "",
    "| file | bytes |",
    "|---|---|",
    ...Object.entries(files).map(([f, b]) => `| ${f} | ${b} |`),
    "",
    "## How it was chosen and how good it is",
    "",
    `The settings were chosen by bench/default-model-study.ts (results: ${STUDY_RESULTS}).`,
    "Every quality number reported there for a whitening is cross-validated: on multiview-dev,",
    "each of its four folders is scored with a whitening learned without it (the other three",
    "folders and debian-photos, same settings as here), and the per-query APs are pooled over the",
    "four folds; debian-photos is scored with a whitening learned on multiview-dev only. A",
    "whitening scored on the photos it was learned from looks better than it is (on its own",
    "training photos it is fitted to their particular directions), so this file, learned on all",
    "of them for the best estimate, must not be evaluated on multiview-dev or debian-photos.",
    "",
  ];
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<void> {
  const d = MODELS[DEFAULT_MODEL]!.defaults;
  const { values } = parseArgs({
    args: argv,
    options: {
      out: {
        type: "string",
        default: join(import.meta.dirname, "..", "models", "default-whitening"),
      },
      assets: { type: "string", default: sharedAssetsDir },
      shrinkage: { type: "string", default: "0.1" },
      scales: { type: "string", default: String(d.scales) },
      rgem: { type: "string", default: String(d.rgem) },
      gemp: { type: "string", default: String(d.gemp) },
      "train-scales": { type: "string", default: "used" },
      augment: { type: "string", default: "" },
      cache: { type: "string", default: join(tmpdir(), "superglobal-study", "learn-whitening") },
      "model-cache": { type: "string", default: "" },
      threads: { type: "string", default: "2" },
      // Learn on these folders only (prefixes, e.g. `debian-photos`): a held-out whitening, for
      // scoring on the other photos (the quality benchmark's product sources use one).
      only: { type: "string", default: "" },
    },
  });
  const bool = (name: string, v: string) => {
    if (v !== "true" && v !== "false") throw new Error(`--${name} must be true or false`);
    return v === "true";
  };
  const scales = Number(values.scales) as ScaleSet;
  const rgem = bool("rgem", values.rgem);
  const gemp = bool("gemp", values.gemp);
  const trainScales = values["train-scales"] as TrainScales;
  if (trainScales !== "used" && trainScales !== "1" && trainScales !== "3") {
    throw new Error("--train-scales: used, 1 or 3");
  }
  const shrinkage = Number(values.shrinkage);
  const augment = values.augment === "" ? [] : values.augment.split(",");
  const only = values.only === "" ? [] : values.only.split(",");
  const photos = trainingPhotos(values.assets).filter(
    (p) => only.length === 0 || only.some((prefix) => p.folder.startsWith(prefix)),
  );
  if (photos.length === 0) throw new Error(`--only ${values.only}: no training folder matches`);
  const extractor = await Extractor.create({
    model: DEFAULT_MODEL,
    whitening: null,
    scales: trainingScaleSet(scales, trainScales),
    rgem,
    gemp,
    threads: Number(values.threads),
    ...(values["model-cache"] === "" ? {} : { cacheDir: values["model-cache"] }),
  });
  let items: Awaited<ReturnType<typeof perScaleVectors>>;
  try {
    items = await perScaleVectors(
      extractor,
      photos.flatMap((p) => p.paths),
      {
        cacheDir: values.cache,
        augment,
        onImage: (done, total) => {
          if (done % 25 === 0 || done === total) process.stderr.write(`photos: ${done}/${total}\n`);
        },
      },
    );
  } finally {
    await extractor.release();
  }
  const { data, rows } = trainingRows(items, scales, extractor.dim, trainScales);
  const w = learnWhitening(data, rows, extractor.dim, { shrinkage });
  mkdirSync(values.out, { recursive: true });
  writeWhitening(values.out, w);
  const files: Record<string, number> = {};
  for (const f of ["mean.npy", "vectors.npy", "scales.npy"]) {
    files[f] = statSync(join(values.out, f)).size;
  }
  const command = `npm run bench -- learn-whitening ${argv.join(" ")}`.trim();
  const settings = {
    scales: `${scales} (${SCALE_SETS[scales].join(", ")})`,
    "Regional-GeM (rgem)": rgem,
    "over scales (the model's default, not part of the whitening)": d.sgem
      ? "Scale-GeM (max)"
      : "mean",
    pooling: gemp ? "GeM+ (p 4.6)" : "GeM (p 3)",
    "training rows per photo": `${
      {
        used: `the per-scale vectors of every scale used (${SCALE_SETS[scales].length})`,
        "1": "the scale-1 vector only",
        "3": "the per-scale vectors of the scales 0.7071, 1, 1.4142",
      }[trainScales]
    } × ${1 + augment.length} variant(s)`,
    augmentations: augment,
    shrinkage,
    "model identity (whitening: null)": extractor.identity,
  };
  writeFileSync(join(values.out, "README.md"), readme(w, settings, photos, rows, command, files));
  const total = Object.values(files).reduce((a, b) => a + b, 0);
  process.stdout.write(
    `whitening: ${w.scales.length} eigenvectors from ${rows} rows → ${relative(process.cwd(), values.out)} (${(total / 2 ** 20).toFixed(2)} MiB)\n`,
  );
}
