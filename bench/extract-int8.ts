/**
 * The int8 part of `npm run bench -- extract`: for each model (the CVNet checkpoint, the default
 * model), float32 against int8 on the same photos in the same process, alternating image by image
 * so the load other processes put on this shared machine hits both alike; the ratio of medians,
 * the descriptors' cosine agreement, and each speed preset's images/s. The CPU time other
 * processes used meanwhile is recorded (contention()).
 */
import { Extractor } from "../src/descriptor/extractor.ts";
import { type ExtractorOptions, SCALE_SETS } from "../src/descriptor/options.ts";
import { PRESETS } from "../src/descriptor/presets.ts";
import { resizeBilinear, scaledSize } from "../src/image/resize.ts";
import { contention, cpuTimes, median, ownCpuSeconds } from "./machine.ts";

export interface Int8Result {
  model: string;
  /** Median ms per image (3 scales, extract(): decode to descriptor). */
  floatMs: number;
  int8Ms: number;
  speedup: number;
  /** Model time alone per scale size: median ms, float32 and int8. */
  perSize: Record<string, { float: number; int8: number; ratio: number }>;
  cosine: { mean: number; min: number };
  presets: Record<string, { imagesPerSecond: number; msPerImage: number }>;
  contention: { otherCpuS: number; stealShare: number };
  createMs: { float: number; int8: number };
}

export async function benchInt8(
  label: string,
  base: ExtractorOptions,
  images: readonly string[],
  options: { threads: number; repeat: number; calibration?: readonly string[] },
): Promise<Int8Result> {
  const before = cpuTimes();
  const ownBefore = ownCpuSeconds();
  let t = performance.now();
  const float = await Extractor.create({ ...base, precision: "float32", threads: options.threads });
  const floatCreate = performance.now() - t;
  t = performance.now();
  const int8 = await Extractor.create({
    ...base,
    precision: "int8",
    threads: options.threads,
    ...(options.calibration === undefined ? {} : { calibration: options.calibration }),
  });
  const int8Create = performance.now() - t;
  const floatTimes: number[] = [];
  const int8Times: number[] = [];
  const cos: number[] = [];
  const perSize: Record<string, { float: number[]; int8: number[] }> = {};
  // (filled below: model time per scale size)
  try {
    await float.extract(images[0] as string); // warm-up at these shapes
    await int8.extract(images[0] as string);
    for (const image of images) {
      for (let r = 0; r < options.repeat; r++) {
        // Alternate which goes first, so neither always gets the warmer cache.
        const order = r % 2 === 0 ? [float, int8] : [int8, float];
        const out = new Map<Extractor, Float32Array>();
        for (const ex of order) {
          const s = performance.now();
          out.set(ex, await ex.extract(image));
          (ex === float ? floatTimes : int8Times).push(performance.now() - s);
        }
        if (r === 0) cos.push(dot(out.get(float) as Float32Array, out.get(int8) as Float32Array));
      }
    }
    // The model alone at each scale's size, on the first photo: one-scale extractors, so
    // fromTensor runs the model once.
    const tensor = await float.prepare(images[0] as string);
    const single = [
      await Extractor.create({
        ...base,
        precision: "float32",
        scales: 1,
        threads: options.threads,
      }),
      await Extractor.create({
        ...base,
        precision: "int8",
        scales: 1,
        threads: options.threads,
        ...(options.calibration === undefined ? {} : { calibration: options.calibration }),
      }),
    ] as const;
    try {
      for (const scale of SCALE_SETS[3]) {
        const [h, w] = scaledSize(tensor.height, tensor.width, scale);
        const x = resizeBilinear(tensor, h, w);
        const times = { float: [] as number[], int8: [] as number[] };
        await single[0].fromTensor(x);
        await single[1].fromTensor(x);
        for (let r = 0; r < Math.max(3, options.repeat); r++) {
          for (const [k, ex] of [
            ["float", single[0]],
            ["int8", single[1]],
          ] as const) {
            const s = performance.now();
            await ex.fromTensor(x);
            times[k].push(performance.now() - s);
          }
        }
        perSize[`${h}x${w}`] = times;
      }
    } finally {
      for (const ex of single) await ex.release();
    }
  } finally {
    await float.release();
    await int8.release();
  }
  // Presets: images/s of each, alternating preset by image.
  const presets: Record<string, number[]> = Object.fromEntries(PRESETS.map((p) => [p, []]));
  const extractors = await Promise.all(
    PRESETS.map((preset) =>
      Extractor.create({
        ...base,
        preset,
        threads: options.threads,
        ...(preset === "exact" || options.calibration === undefined
          ? {}
          : { calibration: options.calibration }),
      }),
    ),
  );
  try {
    for (const ex of extractors) await ex.extract(images[0] as string);
    for (const image of images) {
      for (let k = 0; k < extractors.length; k++) {
        const s = performance.now();
        await (extractors[k] as Extractor).extract(image);
        presets[PRESETS[k] as string]?.push(performance.now() - s);
      }
    }
  } finally {
    for (const ex of extractors) await ex.release();
  }
  const floatMs = median(floatTimes);
  const int8Ms = median(int8Times);
  return {
    model: label,
    floatMs,
    int8Ms,
    speedup: floatMs / int8Ms,
    perSize: Object.fromEntries(
      Object.entries(perSize).map(([k, v]) => [
        k,
        { float: median(v.float), int8: median(v.int8), ratio: median(v.float) / median(v.int8) },
      ]),
    ),
    cosine: { mean: cos.reduce((a, b) => a + b, 0) / cos.length, min: Math.min(...cos) },
    presets: Object.fromEntries(
      Object.entries(presets).map(([k, v]) => [
        k,
        { msPerImage: median(v), imagesPerSecond: 1000 / median(v) },
      ]),
    ),
    contention: contention(before, cpuTimes(), ownCpuSeconds() - ownBefore),
    createMs: { float: floatCreate, int8: int8Create },
  };
}

/** The markdown lines of the results. */
export function int8Lines(results: readonly Int8Result[]): string[] {
  const lines = [
    "## int8 vs float32 (exact), same photos, same process, alternating",
    "",
    "| model | float32 ms/image | int8 ms/image | int8 speed-up | cosine int8 vs float32 (mean / min) | other processes' CPU s meanwhile |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of results) {
    lines.push(
      `| ${r.model} | ${r.floatMs.toFixed(0)} | ${r.int8Ms.toFixed(0)} | **${r.speedup.toFixed(2)}x** | ${r.cosine.mean.toFixed(4)} / ${r.cosine.min.toFixed(4)} | ${r.contention.otherCpuS.toFixed(0)} (steal ${(r.contention.stealShare * 100).toFixed(0)}%) |`,
    );
  }
  lines.push("", "The model alone (backbone + head, one run) at each scale's size, median ms:", "");
  lines.push("| model | size | float32 | int8 | ratio |", "|---|---|---|---|---|");
  for (const r of results) {
    for (const [size, v] of Object.entries(r.perSize)) {
      lines.push(
        `| ${r.model} | ${size} | ${v.float.toFixed(0)} | ${v.int8.toFixed(0)} | ${v.ratio.toFixed(2)}x |`,
      );
    }
  }
  lines.push("", "Presets (extract(): decode to descriptor), images/s:", "");
  lines.push(`| model | ${PRESETS.join(" | ")} |`, `|---|${PRESETS.map(() => "---|").join("")}`);
  for (const r of results) {
    lines.push(
      `| ${r.model} | ${PRESETS.map((p) => r.presets[p]?.imagesPerSecond.toFixed(2) ?? "-").join(" | ")} |`,
    );
  }
  return lines;
}

function dot(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += (a[i] as number) * (b[i] as number);
  return d;
}
