/**
 * The exact-search oracle: plain TypeScript, float64 accumulation, a full sort per query. Slow,
 * but with nothing between the data and the answer; tests check the fast path against it.
 */

import { type Float32Matrix, rowIsFinite } from "../core/matrix.ts";
import { argsortDesc } from "../core/topk.ts";
import { checkSearchArguments, type SearchResult } from "./exact-search.ts";

/**
 * Same contract and order as ExactSearch.search (score desc, then lower id first; rows that are
 * not all finite skipped and counted; k clamped to the finite rows).
 */
export function bruteForceSearch(
  db: Float32Matrix,
  queries: Float32Matrix,
  k: number,
): SearchResult {
  checkSearchArguments(db, queries, k);
  const { rows: n, cols: d } = db;
  const finiteRows: number[] = [];
  for (let r = 0; r < n; r++) if (rowIsFinite(db.data, r * d, d)) finiteRows.push(r);
  const m = finiteRows.length;
  const kk = Math.min(k, m);
  const ids = new Int32Array(queries.rows * kk);
  const scores = new Float32Array(queries.rows * kk);
  const all = new Float64Array(m);
  for (let q = 0; q < queries.rows; q++) {
    const qo = q * d;
    for (const [j, r] of finiteRows.entries()) {
      const ro = r * d;
      let sum = 0;
      for (let i = 0; i < d; i++) sum += queries.data[qo + i]! * db.data[ro + i]!;
      all[j] = sum;
    }
    // finiteRows is increasing, so the stable sort's position order is id order.
    const order = argsortDesc(all, m);
    for (let j = 0; j < kk; j++) {
      ids[q * kk + j] = finiteRows[order[j]!]!;
      scores[q * kk + j] = all[order[j]!]!;
    }
  }
  return { k: kk, ids, scores, skipped: n - m };
}
