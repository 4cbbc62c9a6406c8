/**
 * `npm run bench -- extract [--images N] [--repeat R] [--checkpoint F] [--official DIR]
 *   [--sections exact,int8,throughput,batch]`
 * Extraction of real photos at 1024x768, 3 scales: ours per image and per stage, against the
 * official PyTorch model (CPU, 2 threads, same weights, same files) in the same run (`exact`);
 * then int8 against float32 for the checkpoint and the default model, and each speed preset's
 * images/s (`int8`, bench/extract-int8.ts; the checkpoint is calibrated on 8 other photos); then
 * many images at once: `index --jobs 1` (one image on all cores) against `--jobs 2` (two images
 * in flight), end to end, for both models (`throughput`, bench/index-throughput.ts); and two
 * same-size images as one batch against one after the other (`batch`, bench/extract-batch.ts).
 * The official code's folder comes from --official or $SUPERGLOBAL_OFFICIAL_DIR.
 */
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import { Extractor, type StageTimes } from "../src/descriptor/extractor.ts";
import { DescriptorModel } from "../src/descriptor/model.ts";
import { SCALE_SETS } from "../src/descriptor/options.ts";
import { decodeImage } from "../src/image/decode.ts";
import { toInputTensor } from "../src/image/normalize.ts";
import { resizeBilinear, scaledSize } from "../src/image/resize.ts";
import { readMatrixF32 } from "../src/io/npy.ts";
import { batchLines, benchBatch } from "./extract-batch.ts";
import { benchInt8, int8Lines } from "./extract-int8.ts";
import { main as indexThroughput } from "./index-throughput.ts";
import {
  contention,
  cpuTimes,
  machine,
  median,
  ownCpuSeconds,
  python,
  saveResult,
} from "./machine.ts";

const here = import.meta.dirname;
const shared = process.env["SUPERGLOBAL_SHARED"] ?? resolve(here, "..", "..", "shared");

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      images: { type: "string", default: "8" },
      repeat: { type: "string", default: "2" },
      checkpoint: {
        type: "string",
        default: join(shared, "fixtures/superglobal-r50/cvnet_r50_random.pyth"),
      },
      official: { type: "string", default: process.env["SUPERGLOBAL_OFFICIAL_DIR"] ?? "" },
      threads: { type: "string", default: "2" },
      sections: { type: "string", default: "exact,int8,throughput,batch" },
    },
  });
  const sections = values.sections.split(",");
  const count = Number(values.images);
  const repeat = Number(values.repeat);
  const threads = Number(values.threads);
  const images = await prepareImages(count);
  // The sections after `exact` each write their own result file.
  const rest = async (): Promise<void> => {
    if (sections.includes("int8")) {
      await int8Section(images, await prepareImages(count + 8), values.checkpoint, threads, repeat);
    }
    if (sections.includes("throughput")) {
      await indexThroughput(["--checkpoint", values.checkpoint]);
    }
    if (sections.includes("batch")) {
      const before = { cpu: cpuTimes(), own: ownCpuSeconds() };
      const points = await benchBatch(values.checkpoint, threads, Math.max(3, repeat));
      const disturbance = contention(before.cpu, cpuTimes(), ownCpuSeconds() - before.own);
      const lines = [
        "# extract batching",
        "",
        `machine: ${JSON.stringify(machine())}`,
        "",
        ...batchLines(points, threads),
        "",
        `Other processes used ${disturbance.otherCpuS.toFixed(0)} CPU s meanwhile (steal ${(100 * disturbance.stealShare).toFixed(0)}%).`,
      ];
      saveResult(
        `extract-batch-${new Date().toISOString().slice(0, 10)}`,
        { machine: machine(), threads, points, disturbance },
        lines.join("\n"),
      );
    }
  };
  if (!sections.includes("exact")) {
    await rest();
    return;
  }
  process.stdout.write(
    `extract bench: ${images.length} photos at 1024x768, 3 scales, ${threads} threads\n`,
  );

  // Ours
  let t = performance.now();
  const extractor = await Extractor.create({ checkpoint: values.checkpoint, depth: 50, threads });
  const createMs = performance.now() - t;
  await extractor.extract(images[0]!); // warm-up: first run at a new shape pays allocation
  const ours: Array<{ image: string; total_ms: number } & Omit<StageTimes, "images">> = [];
  const descriptors: Float32Array[] = [];
  for (const image of images) {
    let best: (typeof ours)[number] | undefined;
    for (let r = 0; r < repeat; r++) {
      const before = { ...extractor.stats };
      t = performance.now();
      const d = await extractor.extract(image);
      const total = performance.now() - t;
      if (r === 0) descriptors.push(d);
      const row = {
        image,
        total_ms: total,
        decode: extractor.stats.decode - before.decode,
        preprocess: extractor.stats.preprocess - before.preprocess,
        backbone: extractor.stats.backbone - before.backbone,
        pooling: extractor.stats.pooling - before.pooling,
      };
      if (best === undefined || row.total_ms < best.total_ms) best = row;
    }
    ours.push(best!);
    process.stdout.write(`  ours ${best!.total_ms.toFixed(0)} ms  ${image}\n`);
  }
  await extractor.release();
  const backboneMs = await timeBackbone(
    values.checkpoint,
    images[0]!,
    threads,
    Math.max(2, repeat),
  );
  const oursMedian = median(ours.map((r) => r.total_ms));
  const stage = (k: keyof Omit<StageTimes, "images">) => median(ours.map((r) => r[k]));

  // Peer: the official code on the same files
  let peer:
    | {
        images: Array<{ total_ms: number; decode_ms: number; model_ms: number }>;
        [k: string]: unknown;
      }
    | undefined;
  let agreement: { maxAbs: number; minCosine: number } | undefined;
  let peerNote = "";
  if (
    values.official === "" ||
    !existsSync(join(values.official, "model", "CVNet_Rerank_model.py"))
  ) {
    peerNote =
      "official code not found: set SUPERGLOBAL_OFFICIAL_DIR (or --official) to a SuperGlobal checkout";
  } else {
    const outNpy = join(workDir(), "official_descriptors.npy");
    const stdout = python(join(here, "peers", "official_extract.py"), [
      "--official",
      values.official,
      "--checkpoint",
      values.checkpoint,
      "--threads",
      String(threads),
      "--repeat",
      String(repeat),
      "--out",
      outNpy,
      ...images,
    ]);
    peer = JSON.parse(stdout.trim().split("\n").pop()!);
    const theirs = readMatrixF32(outNpy);
    let maxAbs = 0;
    let minCosine = 1;
    descriptors.forEach((d, i) => {
      let dot = 0;
      for (let j = 0; j < d.length; j++) {
        const o = theirs.data[i * theirs.cols + j]!;
        maxAbs = Math.max(maxAbs, Math.abs(d[j]! - o));
        dot += d[j]! * o;
      }
      minCosine = Math.min(minCosine, dot);
    });
    agreement = { maxAbs, minCosine };
  }
  const peerMedian = peer === undefined ? undefined : median(peer.images.map((r) => r.total_ms));
  const ratio = peerMedian === undefined ? undefined : peerMedian / oursMedian;

  const lines = [
    `# extract: ${images.length} real photos, 1024x768, 3 scales (ResNet-50), ${threads} threads`,
    "",
    `machine: ${JSON.stringify(machine())}`,
    "",
    "| | ms per image (median of best-of-repeats) |",
    "|---|---|",
    `| superglobal (onnxruntime-node) | ${oursMedian.toFixed(0)} |`,
    `| - decode (sharp) | ${stage("decode").toFixed(1)} |`,
    `| - preprocess (normalise, bilinear resize) | ${stage("preprocess").toFixed(1)} |`,
    `| - model: backbone + R-GeM, GeM+, L2, FC (onnxruntime, 3 scales) | ${stage("backbone").toFixed(1)} |`,
    `| - Scale-GeM + final L2 (TS) | ${stage("pooling").toFixed(1)} |`,
    peerMedian === undefined
      ? `| official PyTorch | not run: ${peerNote} |`
      : `| official PyTorch ${peer!["torch"]} (CPU, ${peer!["threads"]} threads) | ${peerMedian.toFixed(0)} |`,
    "",
    ratio === undefined ? "" : `**speed-up vs official: ${ratio.toFixed(2)}x**`,
    agreement === undefined
      ? ""
      : `descriptor agreement with the official float32 run: max-abs ${agreement.maxAbs.toExponential(2)}, min cosine ${agreement.minCosine.toFixed(8)}`,
    `model build from checkpoint: ${createMs.toFixed(0)} ms`,
    "",
    "The runtime's share — the backbone alone (stem..s4, no head), best of runs, same weights and sizes:",
    "",
    "| size | onnxruntime (ms) | PyTorch (ms) | ratio |",
    "|---|---|---|---|",
    ...Object.entries(backboneMs).map(([size, ms]) => {
      const theirs = (peer?.["backbone_ms"] as Record<string, number> | undefined)?.[size];
      return `| ${size} | ${ms.toFixed(0)} | ${theirs === undefined ? "-" : theirs.toFixed(0)} | ${theirs === undefined ? "-" : `${(theirs / ms).toFixed(2)}x`} |`;
    }),
  ];
  process.stdout.write(`\n${lines.join("\n")}\n`);
  saveResult(
    `extract-${new Date().toISOString().slice(0, 10)}`,
    {
      machine: machine(),
      images,
      threads,
      createMs,
      ours,
      backboneMs,
      peer,
      peerNote,
      ratio,
      agreement,
    },
    lines.join("\n"),
  );
  await rest();
}

/** int8 vs float32 and the presets, for the checkpoint and the default model (own result file). */
async function int8Section(
  images: string[],
  more: string[],
  checkpoint: string,
  threads: number,
  repeat: number,
): Promise<void> {
  const calibration = more.slice(images.length);
  const results = [
    await benchInt8("cvnet-r50 (checkpoint)", { checkpoint }, images, {
      threads,
      repeat,
      calibration,
    }),
    await benchInt8("default (MobileNetV2-1.4)", {}, images, { threads, repeat }),
  ];
  const lines = [
    `# extract int8: ${images.length} real photos, 1024x768, 3 scales, ${threads} threads`,
    "",
    `machine: ${JSON.stringify(machine())}`,
    "",
    ...int8Lines(results),
  ];
  process.stdout.write(`\n${lines.join("\n")}\n`);
  saveResult(
    `extract-int8-${new Date().toISOString().slice(0, 10)}`,
    { machine: machine(), images, calibration, threads, repeat, results },
    lines.join("\n"),
  );
}

/** The backbone alone (no descriptor head) at the three scale sizes of `image`: best of `runs`. */
async function timeBackbone(
  checkpoint: string,
  image: string,
  threads: number,
  runs: number,
): Promise<Record<string, number>> {
  const backbone = await DescriptorModel.fromStateDict(loadCheckpoint(checkpoint), {
    depth: 50,
    threads,
  });
  const input = toInputTensor(await decodeImage(image));
  const out: Record<string, number> = {};
  try {
    for (const scale of SCALE_SETS[3]) {
      const [h, w] = scaledSize(input.height, input.width, scale);
      const x = resizeBilinear(input, h, w);
      await backbone.run(x);
      let best = Infinity;
      for (let r = 0; r < runs; r++) {
        const t = performance.now();
        await backbone.run(x);
        best = Math.min(best, performance.now() - t);
      }
      out[`${h}x${w}`] = best;
    }
  } finally {
    await backbone.release();
  }
  return out;
}

function workDir(): string {
  const dir = join(here, ".work");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Real photos from the shared assets, cropped and resized to 1024x768 JPEGs (made once). */
async function prepareImages(count: number): Promise<string[]> {
  const src = join(shared, "assets", "debian-photos");
  if (!existsSync(src)) throw new Error(`photos not found at ${src} (set SUPERGLOBAL_SHARED)`);
  const files = readdirSync(src, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".jpg"))
    .sort()
    .slice(0, count);
  const dir = join(workDir(), "photos-1024x768");
  mkdirSync(dir, { recursive: true });
  const out: string[] = [];
  for (const f of files) {
    const target = join(dir, f.replaceAll("/", "_"));
    if (!existsSync(target)) {
      await sharp(join(src, f))
        .autoOrient()
        .resize(1024, 768, { fit: "cover" })
        .jpeg({ quality: 92 })
        .toFile(target);
    }
    out.push(target);
  }
  return out;
}
