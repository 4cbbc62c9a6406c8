/**
 * The exact-search oracle: plain TypeScript, float64 accumulation, a full sort per query. Slow,
 * but with nothing between the data and the answer; tests check the fast path against it.
 */

import type { Float32Matrix } from "../core/matrix.ts";
import { argsortDesc } from "../core/topk.ts";
import { checkSearchArguments, type SearchResult } from "./exact-search.ts";

/** Same contract and order as ExactSearch.search (score desc, then lower id first; k clamped). */
export function bruteForceSearch(
  db: Float32Matrix,
  queries: Float32Matrix,
  k: number,
): SearchResult {
  const kk = checkSearchArguments(db, queries, k);
  const { rows: n, cols: d } = db;
  const ids = new Int32Array(queries.rows * kk);
  const scores = new Float32Array(queries.rows * kk);
  const all = new Float64Array(n);
  for (let q = 0; q < queries.rows; q++) {
    const qo = q * d;
    for (let r = 0; r < n; r++) {
      const ro = r * d;
      let sum = 0;
      for (let i = 0; i < d; i++) sum += queries.data[qo + i]! * db.data[ro + i]!;
      all[r] = sum;
    }
    const order = argsortDesc(all, n);
    for (let j = 0; j < kk; j++) {
      ids[q * kk + j] = order[j]!;
      scores[q * kk + j] = all[order[j]!]!;
    }
  }
  return { k: kk, ids, scores };
}
