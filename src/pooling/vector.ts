/**
 * Small float64 vector operations shared by the pooling head: L2 normalisation with
 * `F.normalize` semantics, the FC layer, and element-wise max/mean over equal-length vectors.
 */
import { assertNumber, invalidArgument } from "../errors.ts";

/**
 * `v / max(‖v‖₂, eps)`, as `torch.nn.functional.normalize(p=2)` computes it (a division per
 * element, eps 1e-12 by default). Returns a new Float64Array.
 */
export function l2Normalize(v: ArrayLike<number>, eps = 1e-12): Float64Array {
  assertNumber("eps", eps, 0);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] * v[i];
  const norm = Math.max(Math.sqrt(sum), eps);
  const out = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] / norm;
  return out;
}

/**
 * `y = W x + b` (torch `nn.Linear`), W row-major [out, in] float32 as the state dict stores it,
 * accumulated in float64. Returns Float64Array of length `bias.length`.
 */
export function linear(
  weight: Float32Array,
  bias: Float32Array,
  x: ArrayLike<number>,
): Float64Array {
  const rows = bias.length;
  const cols = x.length;
  if (weight.length !== rows * cols) {
    invalidArgument("weight", `${rows}x${cols} = ${rows * cols} values`, weight);
  }
  const xs = Float64Array.from(x);
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let s0 = 0;
    let s1 = 0;
    let j = 0;
    // Two accumulators let the multiplies overlap; float64 keeps the order effect at ~1e-16.
    for (; j + 1 < cols; j += 2) {
      s0 += weight[base + j] * xs[j];
      s1 += weight[base + j + 1] * xs[j + 1];
    }
    if (j < cols) s0 += weight[base + j] * xs[j];
    out[r] = s0 + s1 + bias[r];
  }
  return out;
}

/** Checks that `vectors` is a non-empty list of equal-length vectors; returns that length. */
export function commonLength(name: string, vectors: readonly ArrayLike<number>[]): number {
  if (!Array.isArray(vectors) || vectors.length === 0) {
    return invalidArgument(name, "a non-empty list of vectors", vectors);
  }
  const n = vectors[0].length;
  for (let s = 1; s < vectors.length; s++) {
    if (vectors[s].length !== n) {
      invalidArgument(`${name}[${s}]`, `a vector of length ${n} like ${name}[0]`, vectors[s]);
    }
  }
  return n;
}

/** The element-wise maximum of equal-length vectors (NaN wins, as in torch.max). */
export function elementwiseMax(vectors: readonly ArrayLike<number>[]): Float64Array {
  const n = commonLength("vectors", vectors);
  const out = Float64Array.from(vectors[0]);
  for (let s = 1; s < vectors.length; s++) {
    const v = vectors[s];
    for (let i = 0; i < n; i++) {
      const x = v[i];
      if (x > out[i] || Number.isNaN(x)) out[i] = x;
    }
  }
  return out;
}

/** The element-wise mean of equal-length vectors: their sum in order, divided by the count. */
export function elementwiseMean(vectors: readonly ArrayLike<number>[]): Float64Array {
  const n = commonLength("vectors", vectors);
  const out = new Float64Array(n);
  for (const v of vectors) for (let i = 0; i < n; i++) out[i] += v[i];
  for (let i = 0; i < n; i++) out[i] /= vectors.length;
  return out;
}
