/**
 * What every reranking mode offers, so callers can swap them: SuperGlobalReranker (the paper's
 * MDescAug + RerankwMDA, as the official code) and AdaptiveReranker (reciprocal variant for
 * collections whose scenes have few views) both satisfy it.
 */
import type { Vectors } from "../core/matrix.ts";
import type { Candidates, RerankResult } from "./superglobal-rerank.ts";

export type { Candidates, RerankResult, Vectors };

export interface Reranker {
  /** Size of the reranked head: the first min(M, n) candidates are reordered, the rest kept. */
  readonly M: number;
  /** Reranks one query's candidate list (ids best first, descriptors of at least the head). */
  rerank(query: Vectors, candidates: Candidates): Promise<RerankResult>;
  /** Frees native resources (onnxruntime sessions). */
  release(): Promise<void>;
}
