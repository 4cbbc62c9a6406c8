/**
 * Scale-GeM (`modules/coarse_retrieval/sgem.py`, spec §4.4): how the per-scale FC outputs of one
 * image become one vector, plus the ablation that replaces it by a plain mean.
 */
import { commonLength, elementwiseMax, elementwiseMean, l2Normalize } from "./vector.ts";

/**
 * The default branch (p_s = ∞): `max_s v_s / max(‖v_s‖, 1e-12)`, the element-wise max of the
 * L2-normalised per-scale vectors. Returns a Float64Array (not normalised again: the caller's
 * final `l2Normalize` does that, as `extract_feature` does).
 */
export function scaleGemMax(perScale: ArrayLike<number>[]): Float64Array {
  commonLength("perScale", perScale);
  return elementwiseMax(perScale.map((v) => l2Normalize(v)));
}

/**
 * The official finite branch (`sgem(ps=10, infinity=False)`, unused by default):
 * `γ = min of all elements`, `d = (mean_s (v_s − γ)^ps)^(1/ps) + γ`, with no per-scale
 * normalisation. Returns a Float64Array.
 */
export function scaleGemFinite(perScale: ArrayLike<number>[], ps = 10): Float64Array {
  const n = commonLength("perScale", perScale);
  let gamma = Infinity;
  for (const v of perScale) for (let i = 0; i < n; i++) gamma = Math.min(gamma, v[i]);
  const out = new Float64Array(n);
  for (const v of perScale) for (let i = 0; i < n; i++) out[i] += (v[i] - gamma) ** ps;
  for (let i = 0; i < n; i++) out[i] = (out[i] / perScale.length) ** (1 / ps) + gamma;
  return out;
}

/**
 * The ablation with Scale-GeM off (`SupG.sgem=False`): the mean over the **unnormalised**
 * per-scale vectors. Returns a Float64Array.
 */
export function scaleMean(perScale: ArrayLike<number>[]): Float64Array {
  commonLength("perScale", perScale);
  return elementwiseMean(perScale);
}
