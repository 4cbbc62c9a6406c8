/**
 * The candidate handling both rerankers share: argument checks, non-finite candidates dropped
 * (never ranked, never a neighbour; listed in `dropped`), the head cut to M, and the result put
 * together around a mode's own `rerankHead`.
 */
import { rowIsFinite, type Vectors } from "../core/matrix.ts";
import { invalidArgument, SuperglobalError } from "../errors.ts";
import type { Candidates, RerankResult } from "./superglobal-rerank.ts";

/** A mode's reranking of a head of m finite candidates: the new order and the scores. */
export interface HeadResult {
  order: Int32Array;
  /** r_b per head candidate, in input order. */
  refined: Float64Array;
  /** Final scores in output order. */
  scores: Float64Array;
}

export type RerankHead = (q: Vectors, g: Vectors, m: number, d: number) => Promise<HeadResult>;

export function isVectors(value: unknown): value is Vectors {
  return value instanceof Float32Array || value instanceof Float64Array;
}

/** Reranks one query's candidate list (from any source) with a mode's `rerankHead`. */
export async function rerankCandidates(
  M: number,
  query: Vectors,
  candidates: Candidates,
  rerankHead: RerankHead,
): Promise<RerankResult> {
  if (!isVectors(query) || query.length === 0) {
    invalidArgument("query", "a non-empty Float32Array or Float64Array", query);
  }
  if (candidates === null || typeof candidates !== "object") {
    invalidArgument("candidates", "an object { ids, descriptors }", candidates);
  }
  const { ids, descriptors } = candidates;
  if (!(ids instanceof Int32Array) && !Array.isArray(ids)) {
    invalidArgument("candidates.ids", "an Int32Array or an array of integers", ids);
  }
  if (!isVectors(descriptors)) {
    invalidArgument("candidates.descriptors", "a Float32Array or Float64Array", descriptors);
  }
  const n = ids.length;
  const d = query.length;
  if (!(ids instanceof Int32Array)) {
    for (let i = 0; i < n; i++) {
      if (!Number.isInteger(ids[i]) || Math.abs(ids[i]!) > 2 ** 31 - 1) {
        invalidArgument(`candidates.ids[${i}]`, "an int32 integer", ids[i]);
      }
    }
  }
  const fullHead = Math.min(M, n);
  const given = descriptors.length / d;
  if (!Number.isInteger(given) || given < fullHead || given > n) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `candidates.descriptors has ${descriptors.length} values, not between ${fullHead} and ${n} rows of ${d} (the query's dimension)`,
      { input: "candidates.descriptors" },
    );
  }
  if (!rowIsFinite(query, 0, d)) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      "query is not finite (NaN or infinite values: an image that failed to extract?)",
      { input: "query" },
    );
  }
  // Candidates whose descriptor is not finite are dropped: they cannot be ranked.
  const keep: number[] = [];
  const dropped: number[] = [];
  for (let j = 0; j < given; j++) {
    if (rowIsFinite(descriptors, j * d, d)) keep.push(j);
    else dropped.push(ids[j]!);
  }
  let kept: ArrayLike<number> = ids;
  let g = descriptors;
  if (dropped.length > 0) {
    const rest = Array.from({ length: n - given }, (_, i) => ids[given + i]!);
    kept = [...keep.map((j) => ids[j]!), ...rest];
    g =
      descriptors instanceof Float64Array
        ? new Float64Array(keep.length * d)
        : new Float32Array(keep.length * d);
    keep.forEach((j, i) => {
      g.set(descriptors.subarray(j * d, (j + 1) * d), i * d);
    });
  }
  // Descriptors given for the head only: the head shrinks by what was dropped from it.
  const head = Math.min(M, kept.length, keep.length);
  const out = Int32Array.from(kept);
  const droppedIds = Int32Array.from(dropped);
  if (head === 0) {
    return {
      ids: out,
      head,
      dropped: droppedIds,
      refinedScores: new Float64Array(0),
      scores: new Float64Array(0),
    };
  }
  const result = await rerankHead(query, g.subarray(0, head * d), head, d);
  for (let j = 0; j < head; j++) out[j] = kept[result.order[j]!]!;
  return {
    ids: out,
    head,
    dropped: droppedIds,
    refinedScores: result.refined,
    scores: result.scores,
  };
}
