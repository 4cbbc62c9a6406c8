/**
 * Generalised-mean pooling of a conv5 map to one value per channel: GeM+ (SuperGlobal, fixed p)
 * and CVNet's baseline GeM (the checkpoint's learned p) are the same formula with other constants.
 */
import { assertNumber, invalidArgument } from "../../errors.ts";

/** A C×H×W activation map, C-order (channel-major), batch 1 implied. */
export interface FeatureMap {
  data: Float32Array | Float64Array;
  channels: number;
  height: number;
  width: number;
}

export { GEM_BASELINE_EPS, GEM_PLUS } from "../constants.ts";

/**
 * `(mean_hw clamp(x, eps)^p)^(1/p)` per channel, in float64 (`x.clamp(eps).pow(p)`,
 * `adaptive_avg_pool1d`, `.pow(1/p)`). Returns a Float64Array of length C. A NaN input stays NaN.
 */
export function gem(map: FeatureMap, p: number, eps: number): Float64Array {
  checkFeatureMap("map", map);
  assertNumber("p", p, Number.MIN_VALUE);
  assertNumber("eps", eps, 0);
  const { data, channels } = map;
  const plane = map.height * map.width;
  const epsPow = eps ** p;
  const out = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    let sum = 0;
    const end = (c + 1) * plane;
    for (let i = c * plane; i < end; i++) {
      const x = data[i];
      // exp(p·log x) is within a few ulps of Math.pow(x, p) at half its cost. `x < eps` is false
      // for NaN, so NaN passes through as clamp() lets it.
      sum += x < eps ? epsPow : Math.exp(p * Math.log(x));
    }
    out[c] = (sum / plane) ** (1 / p);
  }
  return out;
}

/** Validates the shape of a public FeatureMap argument (C, H, W ≥ 1 and matching data length). */
export function checkFeatureMap(name: string, map: FeatureMap): void {
  if (map === null || typeof map !== "object") invalidArgument(name, "a feature map", map);
  const { channels, height, width } = map;
  for (const [dim, v] of [
    ["channels", channels],
    ["height", height],
    ["width", width],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) invalidArgument(`${name}.${dim}`, "a positive integer", v);
  }
  if (!(map.data instanceof Float32Array || map.data instanceof Float64Array)) {
    invalidArgument(`${name}.data`, "a Float32Array or Float64Array", map.data);
  }
  if (map.data.length !== channels * height * width) {
    invalidArgument(
      `${name}.data`,
      `${channels}x${height}x${width} = ${channels * height * width} values`,
      map.data,
    );
  }
}
