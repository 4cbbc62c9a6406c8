/**
 * Adaptive reranking: SuperGlobal's reranking made safe for collections whose scenes have only a
 * few views (2-14), where the official refinement and max-pooled query expansion mix other scenes
 * into the query and lower mAP (bench/results/quality-*.md). Same candidate interface and result
 * shape as SuperGlobalReranker (both are a `Reranker`); the query counts as a node of the
 * similarity graph of the head, and three reciprocity rules decide what may move:
 *
 * Per query q, with the first m = min(M, n) candidates g_1..g_m (best first) and s = similarity
 * (dot product):
 *  1. Refinement: each candidate b is averaged with those of its K nearest other candidates c
 *     that are nearer to b than the query is (s(b,c) > s(b,q)), weights 1 for b and beta·s(b,c)
 *     for each c: g'_b = (g_b + Σ beta·s(b,c)·g_c) / (1 + Σ beta·s(b,c)); r_b = q·g'_b;
 *     o1 = argsort(-r). (The paper averages with all K; a candidate the query is closer to than
 *     its own neighbours is then pulled away from the query, which sinks lone true matches.)
 *  2. Reciprocal expansion: of the stage-1 top min(K+1, m), only the candidates b that have the
 *     query among their R nearest (fewer than R candidates c ≠ b with s(b,c) > s(b,q)) are
 *     max-pooled into m_q. With at least one, score_j = (r[o1[j]] + m_q·g'_{o1[j]}) / 2 and
 *     o2 = argsort(-score); with none, the stage-1 order stands (score = r).
 *  3. First-result guard: the initial first candidate c0 keeps first place unless the new first
 *     c* has the query as its nearest neighbour and c0 does not (strong reciprocal evidence);
 *     otherwise c0 is moved back to the front, the others keep their order (its score is then
 *     the only one out of the non-increasing order).
 * The result is the reordered head followed by the untouched tail (positions ≥ M). Ties: every
 * sort is stable (equal values keep the earlier position) and the query wins ties with candidates.
 *
 * Candidates whose descriptor has a non-finite value (NaN rows of unreadable images) are dropped,
 * as SuperGlobalReranker drops them: never ranked, never a neighbour nor pooled, and listed in
 * `dropped`. A non-finite query is refused.
 *
 * Why each rule (bench quality, multiview-dev + 3 seeds of debian-copies + debian-pairs, on two
 * descriptor sets: ImageNet MobileNetV2 / nsfwjs Conv_1, GeM; Δ mAP against no reranking):
 * the paper's reranking: multiview −2.3 / −4.7, copies −13 to −20. The reciprocal pooling of
 * stage 2 alone (paper refinement + guard) keeps multiview gains (+1.1 / +2.3) but copies still
 * lose up to −1.2: the paper's refinement averages a lone true match (a query's only relevant
 * image) with unrelated neighbours and sinks it. Refining only with neighbours nearer than the
 * query fixes that (copies +0.03 to +0.66). Without the guard copies lose up to −1.5 on one set;
 * without the reciprocal pooling up to −1.1. Mutual-kNN refinement (a variant tried) kept only
 * 40% of the paper's gain on the large groups of the first set.
 *
 * Exactness: the Gram matrix comes from onnxruntime in float32 by default; every neighbour choice
 * and every comparison with s(b,q) is made on float64 values (entries the float32 error bound
 * cannot settle are recomputed with dotRows), so decisions and scores are those of a float64 run.
 * Cost: as SuperGlobalReranker, O(m²·d) per query for the Gram matrix.
 */
import { dotRows, dotVector, float32DotBound } from "../core/dot.ts";
import type { Vectors } from "../core/matrix.ts";
import { argsortDesc } from "../core/topk.ts";
import { assertInteger, assertNumber } from "../errors.ts";
import { type HeadResult, rerankCandidates } from "./candidates.ts";
import { gramFloat64, gramFromOptions, type OnnxGram } from "./gram.ts";
import type { Reranker } from "./reranker.ts";
import type { Candidates, RerankResult } from "./superglobal-rerank.ts";

export interface AdaptiveRerankOptions {
  /**
   * Size of the reranked head (default 100: on the small collections measured it beat 400, which
   * is the paper's setting for the 5k-image Revisited Oxford/Paris).
   */
  M?: number;
  /** Nearest other candidates considered in the refinement (default 9, as the paper). */
  K?: number;
  /** Weight factor of the neighbours (default 0.15, as the paper). */
  beta?: number;
  /** A stage-1 top candidate is pooled only if the query is among its R nearest (default 5). */
  R?: number;
  /** onnxruntime threads for the Gram matrix; defaults to all cores. */
  threads?: number;
  /** "onnx": float32 Gram by onnxruntime, decisions in float64 (default); "float64": plain TS. */
  gram?: "onnx" | "float64";
}

/**
 * Gram entries in float64 on demand: read from a float64 Gram, or from a float32 Gram with an
 * error bound, recomputing (and remembering) the entries a comparison cannot settle.
 */
class ExactGram {
  private readonly exact: Float64Array | undefined;
  private readonly err: Float64Array;

  constructor(
    readonly a: Float32Array | Float64Array,
    private readonly g: Vectors,
    readonly m: number,
    private readonly d: number,
  ) {
    const err = new Float64Array(m);
    this.err = err;
    if (a instanceof Float32Array) {
      // |error of a[b,c]| ≤ bound·‖g_b‖·‖g_c‖; ‖g_b‖² is read (over-estimated) off the diagonal.
      const bound = float32DotBound(d, g instanceof Float64Array);
      let maxNorm = 0;
      const norms = new Float64Array(m);
      for (let b = 0; b < m; b++) {
        norms[b] = Math.sqrt(Math.max(0, a[b * m + b]!) / (1 - bound));
        maxNorm = Math.max(maxNorm, norms[b]!);
      }
      // Per row, the error bound of any entry of that row (bound < 0.5 always for sane d).
      for (let b = 0; b < m; b++) err[b] = bound < 0.5 ? bound * norms[b]! * maxNorm : Infinity;
      this.exact = new Float64Array(m * m).fill(Number.NaN);
    }
  }

  /** The float64 value of entry (b, c). */
  value(b: number, c: number): number {
    if (this.exact === undefined) return this.a[b * this.m + c]!;
    let v = this.exact[b * this.m + c]!;
    if (Number.isNaN(v)) {
      v = dotRows(this.g, b * this.d, c * this.d, this.d);
      this.exact[b * this.m + c] = v;
      this.exact[c * this.m + b] = v;
    }
    return v;
  }

  /** Whether entry (b, c) exceeds `x` (an exact float64 value), decided on float64 values. */
  greater(b: number, c: number, x: number): boolean {
    const approx = this.a[b * this.m + c]!;
    const e = this.err[b]!;
    if (approx - e > x) return true;
    if (approx + e < x) return false;
    return this.value(b, c) > x;
  }

  /**
   * Row b's `count` largest entries (value desc, column asc) as columns and float64 values:
   * every entry within twice the error bound of the float32 count-th value is recomputed.
   */
  topOfRow(b: number, count: number): { idx: Int32Array; val: Float64Array } {
    const { a, m } = this;
    const ro = b * m;
    // The count-th largest float32 value (partial insertion sort, strict so earlier stays first).
    const top = new Float64Array(count).fill(-Infinity);
    for (let c = 0; c < m; c++) {
      const v = a[ro + c]!;
      if (!(v > top[count - 1]!)) continue;
      let j = count - 1;
      while (j > 0 && v > top[j - 1]!) {
        top[j] = top[j - 1]!;
        j--;
      }
      top[j] = v;
    }
    // Exact values: the count-th value itself; float32: every entry that could reach it.
    const floor = top[count - 1]! - (this.exact === undefined ? 0 : 2 * this.err[b]!);
    const cols: number[] = [];
    const vals: number[] = [];
    for (let c = 0; c < m; c++) {
      if (a[ro + c]! >= floor) {
        cols.push(c);
        vals.push(this.value(b, c));
      }
    }
    const order = argsortDesc(vals);
    const idx = new Int32Array(count);
    const val = new Float64Array(count);
    for (let k = 0; k < count; k++) {
      idx[k] = cols[order[k]!]!;
      val[k] = vals[order[k]!]!;
    }
    return { idx, val };
  }
}

export class AdaptiveReranker implements Reranker {
  private constructor(
    readonly M: number,
    readonly K: number,
    readonly beta: number,
    readonly R: number,
    private readonly gram: OnnxGram | undefined,
  ) {}

  static async create(options: AdaptiveRerankOptions = {}): Promise<AdaptiveReranker> {
    const M = assertInteger("M", options.M ?? 100, 1);
    const K = assertInteger("K", options.K ?? 9, 0);
    const beta = assertNumber("beta", options.beta ?? 0.15, 0);
    const R = assertInteger("R", options.R ?? 5, 1);
    const gram = await gramFromOptions(options);
    return new AdaptiveReranker(M, K, beta, R, gram);
  }

  /**
   * Reranks one query's candidate list (from any source). Arguments, non-finite candidates
   * (dropped, listed in `dropped`) and the result are as SuperGlobalReranker.rerank's.
   */
  rerank(query: Vectors, candidates: Candidates): Promise<RerankResult> {
    return rerankCandidates(this.M, query, candidates, (q, g, m, d) => this.rerankHead(q, g, m, d));
  }

  async release(): Promise<void> {
    await this.gram?.release();
  }

  /** The three steps on m finite rows; `order` holds row positions in the final order. */
  private async rerankHead(q: Vectors, g: Vectors, m: number, d: number): Promise<HeadResult> {
    const kSelf = Math.min(this.K + 1, m);
    const a =
      this.gram === undefined
        ? gramFloat64(g, m, d)
        : await this.gram.compute(g instanceof Float32Array ? g : Float32Array.from(g), m, d);
    const gram = new ExactGram(a, g, m, d);

    // Similarities to the query, in float64.
    const q64 = Float64Array.from(q);
    const qg = new Float64Array(m);
    for (let c = 0; c < m; c++) qg[c] = dotVector(q64, g, c * d, d);

    // Stage 1: nn/w per row (b itself first, weight 1), then r_b = Σ_k w_k·(q·g_{nn_k}) / Σw.
    const kOthers = Math.min(this.K, m - 1);
    const width = kOthers + 1;
    const nn = new Int32Array(m * width);
    const w = new Float64Array(m * width);
    const used = new Int32Array(m);
    const wsum = new Float64Array(m);
    for (let b = 0; b < m; b++) {
      nn[b * width] = b;
      w[b * width] = 1;
      let count = 1;
      let sum = 1;
      if (kOthers > 0) {
        // The K nearest others: the top K+1 of the row without b (or its first K).
        const { idx, val } = gram.topOfRow(b, kOthers + 1);
        for (let k = 0, taken = 0; k <= kOthers && taken < kOthers; k++) {
          if (idx[k] === b) continue;
          taken++;
          if (!(val[k]! > qg[b]!)) continue; // not nearer to b than the query is
          const wk = this.beta * val[k]!;
          nn[b * width + count] = idx[k]!;
          w[b * width + count] = wk;
          sum += wk;
          count++;
        }
      }
      used[b] = count;
      wsum[b] = sum;
    }
    const combine = (b: number, products: Float64Array): number => {
      let s = 0;
      for (let k = 0; k < used[b]!; k++) s += w[b * width + k]! * products[nn[b * width + k]!]!;
      return s / wsum[b]!;
    };
    const r = new Float64Array(m);
    for (let b = 0; b < m; b++) r[b] = combine(b, qg);
    const o1 = argsortDesc(r);

    // Where the query stands among b's neighbours: the number of candidates c ≠ b closer to b
    // than the query is (the query wins ties), counted up to `limit`.
    const queryRank = (b: number, limit: number): number => {
      let count = 0;
      for (let c = 0; c < m && count < limit; c++) {
        if (c !== b && gram.greater(b, c, qg[b]!)) count++;
      }
      return count;
    };

    // Stage 2: max-pool the refined descriptors of the reciprocal stage-1 top kSelf.
    const pooled: number[] = [];
    for (let j = 0; j < kSelf; j++) {
      if (queryRank(o1[j]!, this.R) < this.R) pooled.push(o1[j]!);
    }
    let order = o1;
    let score = Float64Array.from(o1, (b) => r[b]!);
    if (pooled.length > 0) {
      const qe = new Float64Array(d).fill(-Infinity);
      const refinedRow = new Float64Array(d);
      for (const b of pooled) {
        refinedRow.fill(0);
        for (let k = 0; k < used[b]!; k++) {
          const wk = w[b * width + k]!;
          const go = nn[b * width + k]! * d;
          for (let i = 0; i < d; i++) refinedRow[i] += wk * g[go + i]!;
        }
        for (let i = 0; i < d; i++) {
          const v = refinedRow[i]! / wsum[b]!;
          if (v > qe[i]!) qe[i] = v;
        }
      }
      const eg = new Float64Array(m);
      for (let c = 0; c < m; c++) eg[c] = dotVector(qe, g, c * d, d);
      const s2 = new Float64Array(m);
      for (let j = 0; j < m; j++) s2[j] = (r[o1[j]!]! + combine(o1[j]!, eg)) / 2;
      const o2 = argsortDesc(s2);
      order = Int32Array.from(o2, (p) => o1[p]!);
      score = Float64Array.from(o2, (p) => s2[p]!);
    }

    // Stage 3: the initial first (row 0) keeps its place without strong reciprocal evidence.
    if (order[0] !== 0 && !(queryRank(order[0]!, 1) === 0 && queryRank(0, 1) > 0)) {
      const at = order.indexOf(0);
      const c0Score = score[at]!;
      order.copyWithin(1, 0, at);
      score.copyWithin(1, 0, at);
      order[0] = 0;
      score[0] = c0Score;
    }
    return { order, refined: r, scores: score };
  }
}
