/**
 * Regional-GeM (`modules/coarse_retrieval/rgem.py`, spec §4.3): each activation is averaged with
 * the p-power mean of its 5×5 reflection-padded neighbourhood.
 */
import { assertInteger, assertNumber, invalidArgument } from "../../errors.ts";
import { RGEM } from "../constants.ts";
import { checkFeatureMap, type FeatureMap } from "./gem.ts";

/**
 * `0.5 · (mean_{5×5} pad(x)^p)^(1/p) + 0.5 · x` per channel, same shape, p = 2.5 and size 5 by
 * default (the official `0.5·LPPool2d(ReflectionPad2d(x / 25^(1/p))) + 0.5·x`, the same up to
 * rounding). Computed in float64 and returned as a Float64Array map.
 *
 * Padding is reflection without repeating the edge (−1 → 1, n → n−2), as torch's ReflectionPad2d.
 * Torch refuses maps with a side not larger than the pad (< 3 for size 5: inputs under 65 px at
 * some scale); there we keep reflecting back and forth (numpy's `pad(mode="reflect")`), which
 * equals torch wherever torch works and keeps a full window of the map's own values: a side of 1
 * repeats its single value, so a 1×1 map comes back unchanged (up to rounding); a side of 2
 * alternates its two values. Negative inputs give NaN as in torch (`pow` of a negative to 2.5);
 * the conv5 maps that feed this are ReLU outputs, so none occur.
 */
export function regionalGem(
  map: FeatureMap,
  p: number = RGEM.p,
  size: number = RGEM.size,
): FeatureMap {
  checkFeatureMap("map", map);
  assertNumber("p", p, Number.MIN_VALUE);
  assertInteger("size", size, 1);
  // An even window makes the official module's output smaller than its input (it then fails to
  // add the two), so only odd sizes have a meaning.
  if (size % 2 === 0) invalidArgument("size", "an odd window size", size);
  const { data, channels, height: h, width: w } = map;
  const pad = (size - 1) / 2;
  const rowOf = reflectedIndices(h, pad);
  const colOf = reflectedIndices(w, pad);
  const ph = rowOf.length;
  const pw = colOf.length;
  const plane = h * w;
  const invP = 1 / p;
  const area = size * size;
  const fast = p === 2.5;

  // Per channel: x^p on the padded plane, box sums along W, then along H, then the root.
  const padded = new Float64Array(ph * pw);
  const rowSums = new Float64Array(ph * w);
  const out = new Float64Array(data.length);
  for (let c = 0; c < channels; c++) {
    const base = c * plane;
    for (let py = 0, d = 0; py < ph; py++) {
      const src = base + rowOf[py] * w;
      for (let px = 0; px < pw; px++, d++) {
        const x = data[src + colOf[px]];
        // x·x·√x is x^2.5 to within an ulp at a tenth of Math.pow's cost.
        padded[d] = fast ? x * x * Math.sqrt(x) : Math.exp(p * Math.log(x));
      }
    }
    for (let py = 0; py < ph; py++) {
      const src = py * pw;
      const dst = py * w;
      for (let x = 0; x < w; x++) {
        const i = src + x;
        let s: number;
        // The default window unrolled (twice as fast); the same left-to-right sum.
        if (size === 5)
          s = padded[i] + padded[i + 1] + padded[i + 2] + padded[i + 3] + padded[i + 4];
        else {
          s = 0;
          for (let k = 0; k < size; k++) s += padded[i + k];
        }
        rowSums[dst + x] = s;
      }
    }
    for (let y = 0; y < h; y++) {
      const dst = base + y * w;
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        let s: number;
        if (size === 5) {
          s =
            rowSums[i] +
            rowSums[i + w] +
            rowSums[i + 2 * w] +
            rowSums[i + 3 * w] +
            rowSums[i + 4 * w];
        } else {
          s = 0;
          for (let k = 0; k < size; k++) s += rowSums[i + k * w];
        }
        // exp(log) is within a few ulps of Math.pow and twice as fast; it also maps 0 to 0.
        out[dst + x] = 0.5 * Math.exp(invP * Math.log(s / area)) + 0.5 * data[dst + x];
      }
    }
  }
  return { data: out, channels, height: h, width: w };
}

/**
 * The source index of each position of a side of length n padded by `pad` on both ends, reflected
 * into [0, n) without repeating the edge, and reflected again while still out of range.
 */
function reflectedIndices(n: number, pad: number): Int32Array {
  const idx = new Int32Array(n + 2 * pad);
  const period = 2 * (n - 1);
  for (let j = 0; j < idx.length; j++) {
    let i = j - pad;
    if (period === 0) i = 0;
    else {
      i = ((i % period) + period) % period;
      if (i >= n) i = period - i;
    }
    idx[j] = i;
  }
  return idx;
}
