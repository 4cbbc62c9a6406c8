/**
 * Activation ranges for int8 quantisation, measured by running the float network on real photos
 * (prepared exactly as extraction prepares them: the model's input convention, its largest side,
 * its scales) and recording, per quantised tensor and image, the minimum and a high quantile.
 * A quantile rather than the maximum: a few outlier activations would otherwise stretch the
 * uint8 grid and cost every other value its precision. The result is deterministic for given
 * photos (same images, same order, same float model) and is cached with the model it makes.
 */
import type { InputConvention } from "../backbone/network.ts";
import { IMAGE_INPUT } from "../backbone/network.ts";
import { decodeImage } from "../image/decode.ts";
import {
  type ImageTensor,
  toImagenetRgbTensor,
  toInputTensor,
  toUnitRgbTensor,
} from "../image/normalize.ts";
import { fitInside, resizeBilinear, scaledSize } from "../image/resize.ts";
import { OnnxGraph } from "../runtime/onnx-graph.ts";
import type { Range } from "../runtime/quantize-graph.ts";
import { OnnxSession } from "../runtime/session.ts";

export interface CalibrationSettings {
  input: InputConvention;
  /** Longer side images are brought down to first (null: as they are). */
  maxSide: number | null;
  /** Scales each image is run at. */
  scales: readonly number[];
  /** The quantile of each tensor's values per image taken as its range's end. */
  quantile: number;
  threads?: number;
}

/** Calibration defaults: 99.999% of each image's values fit the grid, the rest saturate. */
export const DEFAULT_QUANTILE = 0.99999;

/** The calibrated range of each tensor in `points` over `images` (files or encoded bytes). */
export async function calibrateRanges(
  network: Uint8Array,
  points: readonly string[],
  images: readonly (string | Uint8Array)[],
  settings: CalibrationSettings,
): Promise<Record<string, Range>> {
  if (images.length === 0) throw new Error("calibration: no images");
  const graph = OnnxGraph.fromModel(network);
  graph.clearOutputs();
  for (const p of points) graph.output(p, null);
  graph.prune();
  const session = await OnnxSession.create(graph.encode(), {
    ...(settings.threads === undefined ? {} : { threads: settings.threads }),
  });
  const lows = new Map<string, number>();
  const highs = new Map<string, number>();
  try {
    for (const image of images) {
      const tensor = await prepare(image, settings);
      for (const scale of settings.scales) {
        const [h0, w0] = scaledSize(tensor.height, tensor.width, scale);
        const resized = resizeBilinear(tensor, Math.max(1, h0), Math.max(1, w0));
        const out = await session.run({
          [IMAGE_INPUT]: { data: resized.data, dims: [1, 3, resized.height, resized.width] },
        });
        for (const p of points) {
          const data = out[p]?.data;
          if (!(data instanceof Float32Array)) throw new Error(`calibration: no float ${p}`);
          const { low, high } = quantileRange(data, settings.quantile);
          lows.set(p, Math.min(lows.get(p) ?? 0, low));
          highs.set(p, Math.max(highs.get(p) ?? 0, high));
        }
      }
    }
  } finally {
    await session.release();
  }
  const ranges: Record<string, Range> = {};
  for (const p of points) ranges[p] = { min: lows.get(p) ?? 0, max: highs.get(p) ?? 0 };
  return ranges;
}

async function prepare(
  image: string | Uint8Array,
  settings: CalibrationSettings,
): Promise<ImageTensor> {
  let decoded = await decodeImage(image, typeof image === "string" ? image : "calibration image");
  const { maxSide } = settings;
  if (maxSide !== null && Math.max(decoded.width, decoded.height) > maxSide) {
    decoded = await fitInside(decoded, maxSide);
  }
  return settings.input === "rgb-unit"
    ? toUnitRgbTensor(decoded)
    : settings.input === "rgb-imagenet"
      ? toImagenetRgbTensor(decoded)
      : toInputTensor(decoded);
}

const BINS = 4096;

/**
 * The `quantile` of the positive values and the `1 − quantile` of the negative ones (each side
 * measured from zero; a side with no values gives 0), by histogram: two linear passes.
 */
export function quantileRange(data: Float32Array, quantile: number): { low: number; high: number } {
  let min = 0;
  let max = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (v < min) min = v;
    else if (v > max) max = v;
  }
  const pos = new Float64Array(BINS);
  const neg = new Float64Array(BINS);
  let nPos = 0;
  let nNeg = 0;
  const ps = max > 0 ? BINS / max : 0;
  const ns = min < 0 ? BINS / -min : 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i] as number;
    if (v > 0) {
      pos[Math.min(BINS - 1, Math.floor(v * ps))] += 1;
      nPos++;
    } else if (v < 0) {
      neg[Math.min(BINS - 1, Math.floor(-v * ns))] += 1;
      nNeg++;
    }
  }
  const end = (hist: Float64Array, n: number, extreme: number): number => {
    if (n === 0) return 0;
    const target = quantile * n;
    let seen = 0;
    for (let b = 0; b < BINS; b++) {
      seen += hist[b] as number;
      if (seen >= target) return ((b + 1) / BINS) * extreme;
    }
    return extreme;
  };
  return { low: nNeg === 0 ? 0 : -end(neg, nNeg, -min), high: end(pos, nPos, max) };
}
