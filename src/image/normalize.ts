/**
 * Input tensors from decoded BGR pixels. CVNet's is the official input normalisation (`_prepare_im` + `color_norm`, spec §2.3): HWC BGR uint8 →
 * CHW float32, `(x / 255 − mean) / std` per channel, in BGR order, in float32 arithmetic.
 */
import type { BgrImage } from "./decode.ts";

/** A 3-channel CHW float32 tensor (batch 1 implied). */
export interface ImageTensor {
  data: Float32Array;
  height: number;
  width: number;
}

/** ImageNet statistics in BGR order, as the official code lists them. */
export const BGR_MEAN = [0.406, 0.456, 0.485] as const;
export const BGR_STD = [0.225, 0.224, 0.229] as const;

/**
 * Each float32 numpy step is emulated with Math.fround (one double operation rounded to float32
 * equals the float32 operation for + − ×  ÷), so the result is bit-exact. There are only 256
 * inputs per channel, so a lookup table does the work.
 */
export function toInputTensor(image: BgrImage): ImageTensor {
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    const table = channelTable(c);
    const base = c * plane;
    for (let i = 0, s = c; i < plane; i++, s += 3) out[base + i] = table[data[s]];
  }
  return { data: out, height, width };
}

const f32 = Math.fround;
const tables: Float32Array[] = [];

function channelTable(c: number): Float32Array {
  let table = tables[c];
  if (table === undefined) {
    table = new Float32Array(256);
    const mean = f32(BGR_MEAN[c]);
    const std = f32(BGR_STD[c]);
    for (let v = 0; v < 256; v++) table[v] = f32(f32(f32(v / 255) - mean) / std);
    tables[c] = table;
  }
  return table;
}

/**
 * RGB CHW float32 with values x/255 in [0, 1], for networks that rescale inside their graph
 * (the default MobileNetV2 maps [0, 1] to [−1, 1] itself).
 */
export function toUnitRgbTensor(image: BgrImage): ImageTensor {
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    // RGB channel c is BGR channel 2 − c.
    const base = c * plane;
    for (let i = 0, s = 2 - c; i < plane; i++, s += 3)
      out[base + i] = UNIT[data[s] as number] as number;
  }
  return { data: out, height, width };
}

const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255);

/**
 * RGB CHW float32 with `(x/255 − mean)/std` per channel and ImageNet statistics in RGB order
 * (mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]): what torchvision and the ONNX model
 * zoo's ImageNet classifiers expect. The same statistics and float32 steps as `toInputTensor`,
 * channels in RGB order.
 */
export function toImagenetRgbTensor(image: BgrImage): ImageTensor {
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    // RGB channel c is BGR channel 2 − c, with that channel's statistics.
    const table = channelTable(2 - c);
    const base = c * plane;
    for (let i = 0, s = 2 - c; i < plane; i++, s += 3) out[base + i] = table[data[s] as number];
  }
  return { data: out, height, width };
}
