/**
 * Exact inner-product search: the top-k database rows for each query by dot product, computed
 * with a small ONNX graph (Gemm + TopK) over blocks of database rows, so the database can be far
 * larger than one tensor; the per-block lists are merged into a bounded top-k. TopK serves every
 * k up to a full ranking: at 100k rows it was as fast as one sort of all scores even at k = N.
 *
 * Rows that are not all finite (NaN or ±Infinity: the row of an image that failed to extract)
 * are never returned: they are skipped and counted (`skipped`), and k is clamped to the rows left.
 * A query that is not finite is refused. With a finite query, a row's score is finite exactly when
 * the row is (barring a float32 overflow of the product, which is skipped alike), so the graph
 * turns scores that are not finite into -Infinity before TopK, and those never come out.
 *
 * Order: higher score first; equal float32 scores give the lower id first (onnxruntime's TopK
 * rule, kept by the merge). Caveat: the float32 rounding of a dot product depends on where the
 * row falls in the kernel's blocking, so two identical rows can score 1-2 ulp apart and then come
 * out in score order rather than id order; data whose dot products are exact ties always obey it.
 */

import {
  assertFiniteRows,
  checkMatrix,
  dimensionMismatch,
  type Float32Matrix,
} from "../core/matrix.ts";
import { mergeTopK } from "../core/topk.ts";
import { assertInteger } from "../errors.ts";
import { OnnxGraph } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";

/** Search output, query-major: row q holds the k best ids of query q, best first. */
export interface SearchResult {
  /** Results per query: the requested k, clamped to the number of finite database rows. */
  k: number;
  /** [nq, k] database row ids. */
  ids: Int32Array;
  /** [nq, k] their dot products with the query (float32, as computed). */
  scores: Float32Array;
  /** Database rows skipped because they are not all finite (NaN or ±Infinity). */
  skipped: number;
}

export interface ExactSearchOptions {
  /** onnxruntime threads; defaults to all cores. */
  threads?: number;
  /** Database rows per block (default 65536). */
  chunkRows?: number;
}

const DEFAULT_CHUNK_ROWS = 65536;
/** k per block is at most chunkRows and travels as float32: keep it exact. */
const MAX_CHUNK_ROWS = 2 ** 24;
/** Floats in one [queries × rows] score block handed back by onnxruntime (64 MiB). */
const BLOCK_FLOATS = 1 << 24;

/**
 * Shared argument checks of exact search (also used by the oracle); returns k clamped to the
 * database rows (the search clamps it further to the finite ones).
 */
export function checkSearchArguments(db: Float32Matrix, queries: Float32Matrix, k: number): number {
  checkMatrix("db", db);
  checkMatrix("queries", queries);
  if (queries.cols !== db.cols) throw dimensionMismatch(db, queries);
  assertFiniteRows("queries", queries);
  assertInteger("k", k, 1);
  // k > N is clamped: "the top 100" of a 50-row database is all 50 rows, ranked.
  return Math.min(k, db.rows);
}

export class ExactSearch {
  private session: OnnxSession | undefined;

  private constructor(
    private readonly threads: number | undefined,
    private readonly chunkRows: number,
  ) {}

  static async create(options: ExactSearchOptions = {}): Promise<ExactSearch> {
    const threads =
      options.threads === undefined ? undefined : assertInteger("threads", options.threads, 1);
    const chunkRows =
      options.chunkRows === undefined
        ? DEFAULT_CHUNK_ROWS
        : assertInteger("chunkRows", options.chunkRows, 1, MAX_CHUNK_ROWS);
    const search = new ExactSearch(threads, chunkRows);
    // Load a session now so a broken runtime fails at create(), not mid-search.
    await search.topK();
    return search;
  }

  /**
   * The k best database rows for each query, skipping rows that are not all finite (k is clamped
   * to the number of finite rows).
   */
  async search(db: Float32Matrix, queries: Float32Matrix, k: number): Promise<SearchResult> {
    const kk = checkSearchArguments(db, queries, k);
    const nq = queries.rows;
    const ids = new Int32Array(nq * kk);
    const scores = new Float32Array(nq * kk);
    if (kk === 0 || nq === 0) return { k: kk, ids, scores, skipped: 0 };
    const { skipped, kept } = await this.selectTopK(db, queries, kk, ids, scores);
    if (kept === kk) return { k: kk, ids, scores, skipped };
    // Fewer finite rows than k: every query has `kept` results; close up the rows.
    const keptIds = new Int32Array(nq * kept);
    const keptScores = new Float32Array(nq * kept);
    for (let q = 0; q < nq; q++) {
      keptIds.set(ids.subarray(q * kk, q * kk + kept), q * kept);
      keptScores.set(scores.subarray(q * kk, q * kk + kept), q * kept);
    }
    return { k: kept, ids: keptIds, scores: keptScores, skipped };
  }

  async release(): Promise<void> {
    await this.session?.release();
    this.session = undefined;
  }

  /**
   * TopK per block of rows, merged into a running top-k per query. Returns the number of rows
   * skipped as not finite (their scores are -Infinity in the graph and dropped here) and the
   * fewest results any query got.
   */
  private async selectTopK(
    db: Float32Matrix,
    queries: Float32Matrix,
    k: number,
    ids: Int32Array,
    scores: Float32Array,
  ): Promise<{ skipped: number; kept: number }> {
    const d = db.cols;
    const session = await this.topK();
    const queryBlock = Math.max(1, Math.floor(BLOCK_FLOATS / Math.min(this.chunkRows, db.rows)));
    const mergedIds = new Int32Array(k);
    const mergedScores = new Float32Array(k);
    const chunkIds = new Int32Array(k);
    const chunkScores = new Float32Array(k);
    let skipped = 0;
    let fewest = k;
    for (let q0 = 0; q0 < queries.rows; q0 += queryBlock) {
      const nb = Math.min(queryBlock, queries.rows - q0);
      const q = { data: queries.data.subarray(q0 * d, (q0 + nb) * d), dims: [nb, d] };
      const filled = new Int32Array(nb);
      for (let r0 = 0; r0 < db.rows; r0 += this.chunkRows) {
        const rows = Math.min(this.chunkRows, db.rows - r0);
        const x = { data: db.data.subarray(r0 * d, (r0 + rows) * d), dims: [rows, d] };
        const out = await session.run({
          q,
          x,
          k: { data: new Float32Array([Math.min(k, rows)]), dims: [1] },
        });
        const values = out["values"]!.data as Float32Array;
        const indices = out["indices"]!.data as BigInt64Array;
        const finite = out["finite"]!.data as Float32Array;
        const kc = out["values"]!.dims[1]!;
        if (q0 === 0) for (let r = 0; r < rows; r++) if (finite[r] !== 0) skipped += 1;
        for (let i = 0; i < nb; i++) {
          let kept = 0;
          for (let j = 0; j < kc; j++) {
            // Scores that are not finite came out as -Infinity: those rows are not results.
            if (values[i * kc + j] === Number.NEGATIVE_INFINITY) continue;
            chunkIds[kept] = r0 + Number(indices[i * kc + j]!);
            chunkScores[kept] = values[i * kc + j]!;
            kept += 1;
          }
          const base = (q0 + i) * k;
          const count = mergeTopK(
            ids,
            scores,
            base,
            filled[i]!,
            chunkIds,
            chunkScores,
            0,
            kept,
            k,
            mergedIds,
            mergedScores,
            0,
          );
          ids.set(mergedIds.subarray(0, count), base);
          scores.set(mergedScores.subarray(0, count), base);
          filled[i] = count;
        }
      }
      for (const count of filled) fewest = Math.min(fewest, count);
    }
    return { skipped, kept: fewest };
  }

  /**
   * Gemm + TopK, one session for every k: k comes in as a float32 input (the seam feeds float32
   * only; exact since k ≤ chunkRows ≤ 2^24) and is cast to int64. onnxruntime's TopK puts the
   * lower index first on ties. Scores that are not finite become -Infinity before TopK;
   * "finite" (0 or NaN per row, from the first query) marks the rows that are not.
   */
  private async topK(): Promise<OnnxSession> {
    if (this.session === undefined) {
      const g = new OnnxGraph("exact_topk");
      const [s] = g.node("Gemm", [g.input("q", ["nq", "d"]), g.input("x", ["n", "d"])], {
        transB: 1,
      });
      // s·0 is 0 where s is finite and NaN where it is not (NaN or ±Infinity).
      const [zero] = g.node("Mul", [s!, g.floatInit("zero", [1], Float32Array.of(0))]);
      const [bad] = g.node("IsNaN", [zero!]);
      const minusInf = g.floatInit("minus_inf", [1], Float32Array.of(Number.NEGATIVE_INFINITY));
      const [masked] = g.node("Where", [bad!, minusInf, s!]);
      // The first query's marks: which rows of the block are not finite, to count them.
      g.node(
        "Slice",
        [
          zero!,
          g.int64Init("first", [1], [0]),
          g.int64Init("second", [1], [1]),
          g.int64Init("axis0", [1], [0]),
        ],
        {},
        ["finite"],
      );
      const [k] = g.node("Cast", [g.input("k", [1])], { to: 7 }); // 7: INT64
      g.node("TopK", [masked!, k!], { axis: 1, largest: 1, sorted: 1 }, ["values", "indices"]);
      g.output("values", ["nq", "k"]);
      g.output("indices", ["nq", "k"], "int64");
      g.output("finite", [1, "n"]);
      this.session = await OnnxSession.create(g.encode(), this.sessionOptions());
    }
    return this.session;
  }

  private sessionOptions(): { threads?: number } {
    return this.threads === undefined ? {} : { threads: this.threads };
  }
}
