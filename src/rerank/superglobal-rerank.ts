/**
 * SuperGlobal reranking (spec §5): Top-M descriptor augmentation (MDescAug) followed by
 * reranking with max-pooled query expansion (RerankwMDA), computed as the official modules do,
 * one query at a time (no M×10×D temporaries).
 *
 * Per query, with T the first M_eff = min(M, n) candidates (descriptors g_1..g_M, best first):
 *  1. A = G·Gᵀ; for each row b its K_eff = min(K+1, M_eff) largest entries s_b (neighbours nn_b,
 *     usually b itself first), weights w_0 = 1 (forced), w_k = beta·s_b[k];
 *     g'_b = Σ w_k g_{nn_b[k]} / Σ w_k (not renormalised); r_b = q·g'_b; o1 = argsort(-r).
 *  2. m = elementwise max of g'_{o1[0..K_eff-1]}; score_j = (r[o1[j]] + m·g'_{o1[j]}) / 2;
 *     o2 = argsort(-score); the result is T[o1][o2] followed by the untouched tail (positions ≥ M).
 * All sorts are stable (equal values keep the earlier position), where the official code's
 * unstable GPU sorts may break exact ties either way. Everything after the Gram matrix is float64.
 * Since g'_b is a weighted mean, v·g'_b = Σ_k w_k·(v·g_{nn_k}) / Σw: r and the stage-2 products
 * come from m dot products each, and only the kSelf refined descriptors that m needs are built.
 *
 * The Gram matrix comes from onnxruntime in float32 by default. Its rounding must not change
 * which neighbours are picked, so every entry that could belong to a row's top K_eff within the
 * float32 error bound is recomputed in float64 and the selection is made on those values; the
 * neighbour sets and weights are then those of a float64 computation.
 */

import { dotRows, dotVector, float32DotBound } from "../core/dot.ts";
import {
  assertFiniteRows,
  checkMatrix,
  dimensionMismatch,
  matrixLabel,
  rowIsFinite,
  type VectorMatrix,
  type Vectors,
} from "../core/matrix.ts";
import { argsortDesc } from "../core/topk.ts";
import { assertInteger, assertNumber, invalidArgument, SuperglobalError } from "../errors.ts";
import { type HeadResult, rerankCandidates } from "./candidates.ts";
import { gramFloat64, gramFromOptions, type OnnxGram } from "./gram.ts";

export interface SuperGlobalRerankOptions {
  /** Size of the reranked head (default 400). */
  M?: number;
  /** Neighbours besides the item itself (default 9; the official code uses K+1 = 10). */
  K?: number;
  /** Weight factor of the neighbours (default 0.15). */
  beta?: number;
  /** onnxruntime threads for the Gram matrix; defaults to all cores. */
  threads?: number;
  /** "onnx": float32 Gram by onnxruntime, refined in float64 (default); "float64": plain TS. */
  gram?: "onnx" | "float64";
}

/** A candidate list from any source: ids best first, and the descriptors of (at least) the head. */
export interface Candidates {
  ids: Int32Array | readonly number[];
  /** Row-major descriptors of the first rows of `ids`: at least min(M, n) rows, at most n. */
  descriptors: Vectors;
}

export interface RerankResult {
  /** The ids: the reranked head, then the tail in its original order (without `dropped`). */
  ids: Int32Array;
  /** Length of the reranked head: min(M, n), less the candidates dropped from it. */
  head: number;
  /**
   * Candidates left out because their descriptor is not finite (NaN or ±Infinity: an image that
   * failed to extract), in input order. SuperGlobalReranker always sets it.
   */
  dropped?: Int32Array;
  /** r_b = q·g'_b for each head candidate, in the input order (the official res_top1000_dba). */
  refinedScores: Float64Array;
  /** The stage-2 scores of the head, in output order (non-increasing). */
  scores: Float64Array;
}

export interface Int32Matrix {
  data: Int32Array;
  rows: number;
  cols: number;
  /** What errors call it (e.g. the file it came from); default: the argument's name. */
  name?: string;
}

export interface RerankRanksResult {
  /** [nq, cols] reranked ids, query-major. */
  ranks: Int32Array;
  rows: number;
  /**
   * The input's k, less the most candidates dropped from any one query (rows stay rectangular:
   * each query keeps its first `cols` finite candidates).
   */
  cols: number;
  /** Database rows met in the ranks and dropped as not finite, ascending. */
  dropped: Int32Array;
  /** Length of the reranked head, min(M, cols). */
  head: number;
  /** [nq, head] r values per query, in the input order of each head. */
  refinedScores: Float64Array;
}

/** out += w·g[go..go+d). */
function addScaled(out: Float64Array, g: Vectors, go: number, w: number, d: number): void {
  for (let i = 0; i < d; i++) out[i] += w * g[go + i]!;
}

/** v·g'_b from the products v·g_c: Σ_k w_bk·(v·g_{nn_bk}) / Σw_b. */
function combine(
  nn: Int32Array,
  w: Float64Array,
  wsum: Float64Array,
  b: number,
  kSelf: number,
  products: Float64Array,
): number {
  let s = 0;
  for (let k = 0; k < kSelf; k++) s += w[b * kSelf + k]! * products[nn[b * kSelf + k]!]!;
  return s / wsum[b]!;
}

/**
 * The `count` largest entries of row `b` of the m×m matrix `a` (value desc, index asc), as
 * positions into `outIdx` and values into `outVal`.
 */
function selectRow(
  a: Float32Array | Float64Array,
  b: number,
  m: number,
  count: number,
  outIdx: Int32Array,
  outVal: Float64Array,
): void {
  let filled = 0;
  const ro = b * m;
  for (let c = 0; c < m; c++) {
    const v = a[ro + c]!;
    if (filled === count && !(v > outVal[count - 1]!)) continue;
    // Insertion keeps earlier columns first among equal values (strict comparison).
    let j = filled < count ? filled++ : count - 1;
    while (j > 0 && v > outVal[j - 1]!) {
      outVal[j] = outVal[j - 1]!;
      outIdx[j] = outIdx[j - 1]!;
      j--;
    }
    outVal[j] = v;
    outIdx[j] = c;
  }
}

export class SuperGlobalReranker {
  private constructor(
    readonly M: number,
    readonly K: number,
    readonly beta: number,
    private readonly gram: OnnxGram | undefined,
  ) {}

  static async create(options: SuperGlobalRerankOptions = {}): Promise<SuperGlobalReranker> {
    const M = assertInteger("M", options.M ?? 400, 1);
    const K = assertInteger("K", options.K ?? 9, 0);
    const beta = assertNumber("beta", options.beta ?? 0.15, 0);
    const gram = await gramFromOptions(options);
    return new SuperGlobalReranker(M, K, beta, gram);
  }

  /** Reranks one query's candidate list (from any source). */
  rerank(query: Vectors, candidates: Candidates): Promise<RerankResult> {
    return rerankCandidates(this.M, query, candidates, (q, g, m, d) => this.rerankHead(q, g, m, d));
  }

  /**
   * Reranks many queries like the official modules: `ranks` is [nq, k] (query-major, k ≤ N ids
   * into `db`, best first, e.g. from ExactSearch); returns the same shape, less the candidates
   * dropped because their rows are not finite (`dropped`; each query keeps its first `cols`
   * finite candidates). A query row that is not finite is refused.
   */
  async rerankRanks(
    db: VectorMatrix,
    queries: VectorMatrix,
    ranks: Int32Matrix,
  ): Promise<RerankRanksResult> {
    checkMatrix("db", db, 0, true);
    checkMatrix("queries", queries, 0, true);
    if (ranks === null || typeof ranks !== "object" || !(ranks.data instanceof Int32Array)) {
      invalidArgument("ranks", "a matrix { data: Int32Array, rows, cols }", ranks);
    }
    assertInteger("ranks.rows", ranks.rows, 0);
    assertInteger("ranks.cols", ranks.cols, 0);
    if (ranks.data.length !== ranks.rows * ranks.cols) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `ranks.data has ${ranks.data.length} values but ranks is ${ranks.rows}×${ranks.cols}`,
        { input: "ranks" },
      );
    }
    if (queries.cols !== db.cols) throw dimensionMismatch(db, queries);
    const dbName = matrixLabel("db", db);
    const ranksName = matrixLabel("ranks", ranks);
    const named = db.name !== undefined || queries.name !== undefined || ranks.name !== undefined;
    if (ranks.rows !== queries.rows || ranks.cols > db.rows) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        named || ranks.rows === queries.rows
          ? `${ranksName}: ranks have shape (${ranks.rows}, ${ranks.cols}) but ${matrixLabel("queries", queries)} has ${queries.rows} queries and ${dbName} has ${db.rows} rows (expected (${queries.rows}, k ≤ ${db.rows}))`
          : `ranks has ${ranks.rows} rows but there are ${queries.rows} queries`,
        { input: ranksName },
      );
    }
    for (let i = 0; i < ranks.data.length; i++) {
      const id = ranks.data[i]!;
      if (id < 0 || id >= db.rows) {
        const q = Math.floor(i / ranks.cols);
        const j = i % ranks.cols;
        const at = ranks.name === undefined ? `ranks[${q}][${j}]` : `${ranks.name} at [${q}, ${j}]`;
        invalidArgument(at, `a row id of ${dbName} in [0, ${db.rows})`, id);
      }
    }
    assertFiniteRows("queries", queries);
    const { rows: nq, cols: k } = ranks;
    const d = db.cols;
    // Which rows the ranks name are not finite, each row checked once (0: unchecked, 1: finite).
    const state = new Uint8Array(db.rows);
    const dropped: number[] = [];
    let mostDropped = 0;
    for (let q = 0; q < nq; q++) {
      let n = 0;
      for (let j = 0; j < k; j++) {
        const id = ranks.data[q * k + j]!;
        if (state[id] === 0) {
          state[id] = rowIsFinite(db.data, id * d, d) ? 1 : 2;
          if (state[id] === 2) dropped.push(id);
        }
        if (state[id] === 2) n += 1;
      }
      mostDropped = Math.max(mostDropped, n);
    }
    const cols = k - mostDropped;
    const head = Math.min(this.M, cols);
    const out = new Int32Array(nq * cols);
    const refinedScores = new Float64Array(nq * head);
    const g =
      db.data instanceof Float64Array ? new Float64Array(head * d) : new Float32Array(head * d);
    const row = new Int32Array(cols);
    for (let q = 0; q < nq; q++) {
      // This query's first `cols` finite candidates.
      let filled = 0;
      for (let j = 0; j < k && filled < cols; j++) {
        const id = ranks.data[q * k + j]!;
        if (state[id] === 1) row[filled++] = id;
      }
      out.set(row, q * cols);
      if (head === 0) continue;
      for (let j = 0; j < head; j++) g.set(db.data.subarray(row[j]! * d, row[j]! * d + d), j * d);
      const query = queries.data.subarray(q * d, q * d + d);
      const result = await this.rerankHead(query, g, head, d);
      for (let j = 0; j < head; j++) out[q * cols + j] = row[result.order[j]!]!;
      refinedScores.set(result.refined, q * head);
    }
    dropped.sort((a, b) => a - b);
    return { ranks: out, rows: nq, cols, head, refinedScores, dropped: Int32Array.from(dropped) };
  }

  async release(): Promise<void> {
    await this.gram?.release();
  }

  /** Both stages on a head of m descriptors; `order` holds head positions in the final order. */
  private async rerankHead(q: Vectors, g: Vectors, m: number, d: number): Promise<HeadResult> {
    const kSelf = Math.min(this.K + 1, m);
    const gram =
      this.gram === undefined
        ? gramFloat64(g, m, d)
        : await this.gram.compute(g instanceof Float32Array ? g : Float32Array.from(g), m, d);
    const { nn, w, wsum } = this.neighbours(g, m, d, kSelf, gram);

    // Stage 1: r_b = q·g'_b. As g'_b = Σ_k w_k·g_{nn_k} / Σw, this is Σ_k w_k·(q·g_{nn_k}) / Σw:
    // m dot products instead of building every g' (m·kSelf·d work).
    const q64 = Float64Array.from(q);
    const qg = new Float64Array(m);
    for (let c = 0; c < m; c++) qg[c] = dotVector(q64, g, c * d, d);
    const r = new Float64Array(m);
    for (let b = 0; b < m; b++) r[b] = combine(nn, w, wsum, b, kSelf, qg);
    const o1 = argsortDesc(r);

    // Stage 2: the elementwise max of the refined descriptors of the stage-1 top kSelf (the
    // query not included; only these g' are built), then m·g'_j the same way as r.
    const qe = new Float64Array(d).fill(-Infinity);
    const refinedRow = new Float64Array(d);
    for (let j = 0; j < kSelf; j++) {
      const b = o1[j]!;
      refinedRow.fill(0);
      for (let k = 0; k < kSelf; k++) {
        addScaled(refinedRow, g, nn[b * kSelf + k]! * d, w[b * kSelf + k]!, d);
      }
      for (let i = 0; i < d; i++) {
        const v = refinedRow[i]! / wsum[b]!;
        if (v > qe[i]!) qe[i] = v;
      }
    }
    const eg = new Float64Array(m);
    for (let c = 0; c < m; c++) eg[c] = dotVector(qe, g, c * d, d);
    const score = new Float64Array(m);
    for (let j = 0; j < m; j++) {
      const b = o1[j]!;
      score[j] = (r[b]! + combine(nn, w, wsum, b, kSelf, eg)) / 2;
    }
    const o2 = argsortDesc(score);
    const order = new Int32Array(m);
    const scores = new Float64Array(m);
    for (let j = 0; j < m; j++) {
      order[j] = o1[o2[j]!]!;
      scores[j] = score[o2[j]!]!;
    }
    return { order, refined: r, scores };
  }

  /**
   * MDescAug's neighbours: for each row b of the Gram matrix `a`, its kSelf largest entries
   * (value desc, position asc) as `nn` [m, kSelf], their weights `w` (w_0 = 1 whatever s_0 is,
   * w_k = beta·s_k) and the sums `wsum`.
   */
  private neighbours(
    g: Vectors,
    m: number,
    d: number,
    kSelf: number,
    a: Float32Array | Float64Array,
  ): { nn: Int32Array; w: Float64Array; wsum: Float64Array } {
    const nn = new Int32Array(m * kSelf);
    const w = new Float64Array(m * kSelf);
    const wsum = new Float64Array(m);
    const rowIdx = new Int32Array(kSelf);
    const rowVal = new Float64Array(kSelf);
    const exact = a instanceof Float64Array;
    // Float32 Gram: |error| ≤ bound·‖g_b‖·‖g_c‖, with ‖g_b‖² read (over-estimated) off the diagonal.
    const bound = float32DotBound(d, g instanceof Float64Array);
    const norms = new Float64Array(m);
    let maxNorm = 0;
    if (!exact) {
      for (let b = 0; b < m; b++) {
        norms[b] = Math.sqrt(Math.max(0, a[b * m + b]!) / (1 - bound));
        if (norms[b]! > maxNorm) maxNorm = norms[b]!;
      }
    }
    // Float64 values of entries recomputed so far (NaN: not yet); the matrix is symmetric.
    const exactValues = exact ? undefined : new Float64Array(m * m).fill(Number.NaN);
    const cand: number[] = [];
    const candVal: number[] = [];
    for (let b = 0; b < m; b++) {
      selectRow(a, b, m, kSelf, rowIdx, rowVal);
      if (exactValues !== undefined) {
        // Every entry whose exact value could reach the top kSelf lies within twice the error
        // bound of the float32 kSelf-th value: recompute those in float64 and select again.
        const floor =
          bound < 0.5 ? rowVal[kSelf - 1]! - 2 * bound * norms[b]! * maxNorm : -Infinity;
        cand.length = 0;
        candVal.length = 0;
        for (let c = 0; c < m; c++) {
          if (a[b * m + c]! >= floor) {
            let v = exactValues[b * m + c]!;
            if (Number.isNaN(v)) {
              v = dotRows(g, b * d, c * d, d);
              exactValues[b * m + c] = v;
              exactValues[c * m + b] = v;
            }
            cand.push(c);
            candVal.push(v);
          }
        }
        const order = argsortDesc(candVal);
        for (let k = 0; k < kSelf; k++) {
          rowIdx[k] = cand[order[k]!]!;
          rowVal[k] = candVal[order[k]!]!;
        }
      }
      let sum = 0;
      for (let k = 0; k < kSelf; k++) {
        const wk = k === 0 ? 1 : this.beta * rowVal[k]!;
        nn[b * kSelf + k] = rowIdx[k]!;
        w[b * kSelf + k] = wk;
        sum += wk;
      }
      wsum[b] = sum;
    }
    return { nn, w, wsum };
  }
}
