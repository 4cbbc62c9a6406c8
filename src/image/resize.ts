/**
 * The official in-model multi-scale resize (spec §2.4): torchvision `resize` on the normalised
 * tensor, i.e. `F.interpolate(mode="bilinear", align_corners=False, antialias=False)`; and the
 * size cap for camera photos before extraction (`fitInside`).
 */
import sharp from "sharp";
import { assertInteger, assertNumber, invalidArgument } from "../errors.ts";
import type { BgrImage } from "./decode.ts";
import type { ImageTensor } from "./normalize.ts";

/**
 * Bilinear resize of a 3-channel CHW tensor with PyTorch's formula per axis: `scale = in/out`,
 * `src = max(scale·(d + 0.5) − 0.5, 0)`, `i0 = trunc(src)`, `i1 = min(i0 + 1, in − 1)`,
 * `l1 = src − i0`, `l0 = 1 − l1`, combined as torch's CPU kernel nests them:
 * `h0·(w0·a + w1·b) + h1·(w0·c + w1·d)`. The arithmetic is float64, the precision of the golden
 * (`model.double()`) reference, rounded to float32 once at the end; torch's float32 kernel differs
 * from that by an ulp or two. The same size returns the input itself, as torchvision does.
 */
export function resizeBilinear(input: ImageTensor, height: number, width: number): ImageTensor {
  assertInteger("height", height, 1);
  assertInteger("width", width, 1);
  const { height: inH, width: inW, data } = input;
  const channels = data.length / (inH * inW);
  if (!Number.isInteger(channels) || channels < 1) {
    invalidArgument("input", `a CHW tensor with data of a multiple of ${inH}x${inW}`, data);
  }
  if (height === inH && width === inW) return input;

  const ax = axisWeights(inW, width);
  const ay = axisWeights(inH, height);
  // Interpolate every input row along W first (the inner sums), then combine rows along H.
  const rowsW = new Float64Array(inH * width);
  const out = new Float32Array(channels * height * width);
  for (let c = 0; c < channels; c++) {
    const inBase = c * inH * inW;
    for (let y = 0; y < inH; y++) {
      const src = inBase + y * inW;
      const dst = y * width;
      for (let x = 0; x < width; x++) {
        rowsW[dst + x] = ax.l0[x] * data[src + ax.i0[x]] + ax.l1[x] * data[src + ax.i1[x]];
      }
    }
    const outBase = c * height * width;
    for (let y = 0; y < height; y++) {
      const h0 = ay.l0[y];
      const h1 = ay.l1[y];
      const r0 = ay.i0[y] * width;
      const r1 = ay.i1[y] * width;
      const dst = outBase + y * width;
      for (let x = 0; x < width; x++) out[dst + x] = h0 * rowsW[r0 + x] + h1 * rowsW[r1 + x];
    }
  }
  return { data: out, height, width };
}

interface AxisWeights {
  i0: Int32Array;
  i1: Int32Array;
  l0: Float64Array;
  l1: Float64Array;
}

function axisWeights(inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const l0 = new Float64Array(outSize);
  const l1 = new Float64Array(outSize);
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(scale * (d + 0.5) - 0.5, 0);
    const lo = Math.trunc(src);
    i0[d] = lo;
    i1[d] = lo < inSize - 1 ? lo + 1 : lo;
    l1[d] = src - lo;
    l0[d] = 1 - l1[d];
  }
  return { i0, i1, l0, l1 };
}

/**
 * The official scale sizes `[int(H·s), int(W·s)]`: a double product truncated, exactly as Python
 * computes it (e.g. 768×1024 at 0.7071 → 543×724).
 */
export function scaledSize(height: number, width: number, scale: number): [number, number] {
  assertInteger("height", height, 1);
  assertInteger("width", width, 1);
  assertNumber("scale", scale, Number.MIN_VALUE);
  return [Math.trunc(height * scale), Math.trunc(width * scale)];
}

/**
 * A decoded image with its longer side brought down to `maxSide` (sharp's antialiased resize;
 * channel order kept). For camera photos before extraction, not for the paper's exact scales.
 */
export async function fitInside(image: BgrImage, maxSide: number): Promise<BgrImage> {
  const { data, info } = await sharp(image.data, {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .resize({ width: maxSide, height: maxSide, fit: "inside" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return {
    width: info.width,
    height: info.height,
    data: new Uint8Array(data.buffer, data.byteOffset, data.length),
  };
}
