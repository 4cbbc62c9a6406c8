/**
 * Exact inner-product search: the top-k database rows for each query by dot product, computed
 * with a small ONNX graph (Gemm + TopK) over blocks of database rows, so the database can be far
 * larger than one tensor; the per-block lists are merged into a bounded top-k. TopK serves every
 * k up to a full ranking: at 100k rows it was as fast as one sort of all scores even at k = N.
 *
 * Order: higher score first; equal float32 scores give the lower id first (onnxruntime's TopK
 * rule, kept by the merge). Caveat: the float32 rounding of a dot product depends on where the
 * row falls in the kernel's blocking, so two identical rows can score 1-2 ulp apart and then come
 * out in score order rather than id order; data whose dot products are exact ties always obey it.
 */

import { checkMatrix, type Float32Matrix } from "../core/matrix.ts";
import { mergeTopK } from "../core/topk.ts";
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";
import { OnnxGraph } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";

/** Search output, query-major: row q holds the k best ids of query q, best first. */
export interface SearchResult {
  /** Results per query: the requested k, clamped to the number of database rows. */
  k: number;
  /** [nq, k] database row ids. */
  ids: Int32Array;
  /** [nq, k] their dot products with the query (float32, as computed). */
  scores: Float32Array;
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

/** Shared argument checks of exact search (also used by the oracle); returns the clamped k. */
export function checkSearchArguments(db: Float32Matrix, queries: Float32Matrix, k: number): number {
  checkMatrix("db", db);
  checkMatrix("queries", queries);
  if (queries.cols !== db.cols) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `queries have ${queries.cols} dimensions but db rows have ${db.cols}`,
      { input: "queries" },
    );
  }
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

  /** The k best database rows for each query (k is clamped to the number of rows). */
  async search(db: Float32Matrix, queries: Float32Matrix, k: number): Promise<SearchResult> {
    const kk = checkSearchArguments(db, queries, k);
    const nq = queries.rows;
    const ids = new Int32Array(nq * kk);
    const scores = new Float32Array(nq * kk);
    if (kk === 0 || nq === 0) return { k: kk, ids, scores };
    await this.selectTopK(db, queries, kk, ids, scores);
    return { k: kk, ids, scores };
  }

  async release(): Promise<void> {
    await this.session?.release();
    this.session = undefined;
  }

  /** TopK per block of rows, merged into a running top-k per query. */
  private async selectTopK(
    db: Float32Matrix,
    queries: Float32Matrix,
    k: number,
    ids: Int32Array,
    scores: Float32Array,
  ): Promise<void> {
    const d = db.cols;
    const session = await this.topK();
    const queryBlock = Math.max(1, Math.floor(BLOCK_FLOATS / Math.min(this.chunkRows, db.rows)));
    const mergedIds = new Int32Array(k);
    const mergedScores = new Float32Array(k);
    const chunkIds = new Int32Array(k);
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
        const kc = out["values"]!.dims[1]!;
        for (let i = 0; i < nb; i++) {
          for (let j = 0; j < kc; j++) chunkIds[j] = r0 + Number(indices[i * kc + j]!);
          const base = (q0 + i) * k;
          const count = mergeTopK(
            ids,
            scores,
            base,
            filled[i]!,
            chunkIds,
            values.subarray(i * kc, (i + 1) * kc),
            0,
            kc,
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
    }
  }

  /**
   * Gemm + TopK, one session for every k: k comes in as a float32 input (the seam feeds float32
   * only; exact since k ≤ chunkRows ≤ 2^24) and is cast to int64. onnxruntime's TopK puts the
   * lower index first on ties.
   */
  private async topK(): Promise<OnnxSession> {
    if (this.session === undefined) {
      const g = new OnnxGraph("exact_topk");
      const [s] = g.node("Gemm", [g.input("q", ["nq", "d"]), g.input("x", ["n", "d"])], {
        transB: 1,
      });
      const [k] = g.node("Cast", [g.input("k", [1])], { to: 7 }); // 7: INT64
      g.node("TopK", [s!, k!], { axis: 1, largest: 1, sorted: 1 }, ["values", "indices"]);
      g.output("values", ["nq", "k"]);
      g.output("indices", ["nq", "k"], "int64");
      this.session = await OnnxSession.create(g.encode(), this.sessionOptions());
    }
    return this.session;
  }

  private sessionOptions(): { threads?: number } {
    return this.threads === undefined ? {} : { threads: this.threads };
  }
}
