/**
 * Float64 dot products over rows of descriptor matrices: the exact kernels behind reranking's
 * float64 checks and the reference computations. Two monomorphic variants on purpose (V8 speed):
 * row·row inside one matrix, and a float64 vector·row.
 */
import type { Vectors } from "./matrix.ts";

/** g_b·g_c in float64 for rows starting at offsets bo and co (four accumulators, for speed). */
export function dotRows(g: Vectors, bo: number, co: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < d; i += 4) {
    s0 += g[bo + i]! * g[co + i]!;
    s1 += g[bo + i + 1]! * g[co + i + 1]!;
    s2 += g[bo + i + 2]! * g[co + i + 2]!;
    s3 += g[bo + i + 3]! * g[co + i + 3]!;
  }
  for (; i < d; i++) s0 += g[bo + i]! * g[co + i]!;
  return s0 + s1 + (s2 + s3);
}

/** v·g_c in float64, for a float64 vector v (kept apart from dotRows so each stays monomorphic). */
export function dotVector(v: Float64Array, g: Vectors, go: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < d; i += 4) {
    s0 += v[i]! * g[go + i]!;
    s1 += v[i + 1]! * g[go + i + 1]!;
    s2 += v[i + 2]! * g[go + i + 2]!;
    s3 += v[i + 3]! * g[go + i + 3]!;
  }
  for (; i < d; i++) s0 += v[i]! * g[go + i]!;
  return s0 + s1 + (s2 + s3);
}

/**
 * Relative rounding bound of a float32 dot product of length d, |err| ≤ γ_d·Σ|a_i·b_i| ≤
 * γ_d·‖a‖·‖b‖, plus the rounding of float64 inputs to float32 (3u) where that happens.
 */
export function float32DotBound(d: number, roundedInputs: boolean): number {
  const u = 2 ** -24;
  const gamma = (d * u) / (1 - d * u);
  return 2 * (gamma + (roundedInputs ? 3 * u : 0)); // twice the bound, as a margin
}
