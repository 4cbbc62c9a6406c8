/**
 * Ordering helpers shared by exact search and reranking. One order everywhere: higher score first,
 * and on equal scores the lower id (or earlier position) first, so results are deterministic.
 * NaN scores are not supported (their place in the order is unspecified).
 */

/** Positions 0..n-1 sorted by `values` descending; equal values keep ascending position (stable). */
export function argsortDesc(values: ArrayLike<number>, n: number = values.length): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((a, b) => values[b]! - values[a]! || a - b);
  return order;
}

/**
 * Merges two lists already ordered best first (score desc, id asc) and keeps the first `k`.
 * Returns how many were written to the out arrays (from outOffset).
 */
export function mergeTopK(
  aIds: Int32Array,
  aScores: Float32Array,
  aOffset: number,
  aCount: number,
  bIds: Int32Array,
  bScores: Float32Array,
  bOffset: number,
  bCount: number,
  k: number,
  outIds: Int32Array,
  outScores: Float32Array,
  outOffset: number,
): number {
  const total = Math.min(k, aCount + bCount);
  let i = 0;
  let j = 0;
  for (let w = 0; w < total; w++) {
    let takeA: boolean;
    if (i >= aCount) takeA = false;
    else if (j >= bCount) takeA = true;
    else {
      const sa = aScores[aOffset + i]!;
      const sb = bScores[bOffset + j]!;
      takeA = sa > sb || (sa === sb && aIds[aOffset + i]! < bIds[bOffset + j]!);
    }
    if (takeA) {
      outIds[outOffset + w] = aIds[aOffset + i]!;
      outScores[outOffset + w] = aScores[aOffset + i]!;
      i++;
    } else {
      outIds[outOffset + w] = bIds[bOffset + j]!;
      outScores[outOffset + w] = bScores[bOffset + j]!;
      j++;
    }
  }
  return total;
}
