/**
 * The SuperGlobal pooling constants (spec §4.1–§4.3), shared by the float32 head graph and the
 * float64 reference modules so the two can never disagree.
 */

/** SuperGlobal's GeM+ constants (`modules/coarse_retrieval/gemp.py`), the same for R50 and R101. */
export const GEM_PLUS = { p: 4.6, eps: 1e-8 } as const;
/** The eps of CVNet's `GeneralizedMeanPoolingP`, used with `encoder_q.head.pool.p`. */
export const GEM_BASELINE_EPS = 1e-6;
/** SuperGlobal's Regional-GeM constants (`rgem.py`): power 2.5 over 5×5 windows. */
export const RGEM = { p: 2.5, size: 5 } as const;
/** `F.normalize`'s eps. */
export const NORMALIZE_EPS = 1e-12;
