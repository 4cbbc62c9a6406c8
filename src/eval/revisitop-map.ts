/**
 * mAP and mP@k of the revisited Oxford/Paris protocol, computed exactly as revisitop's
 * `compute_map` / `compute_ap` (python/evaluate.py, copied into SuperGlobal as test/evaluate.py),
 * including its quirks, in the same floating-point operation order so results agree to the bit.
 *
 * Rankings here are query-major: `ranks[q * n + r]` is the database id at 0-based rank r for
 * query q (the official array is the transpose, [n, nq]).
 */
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";
import type { GroundTruth } from "./ground-truth.ts";

export type Protocol = "easy" | "medium" | "hard";
export const PROTOCOLS: readonly Protocol[] = ["easy", "medium", "hard"];
/** The precision cut-offs revisitop reports. */
export const DEFAULT_KAPPAS: readonly number[] = [1, 5, 10];

export interface MapResult {
  /** Mean AP over the queries that have positives; NaN when none has. */
  map: number;
  /** Mean precision at each kappa over the same queries, in `kappas` order. */
  mpAtK: number[];
  /** AP per query; NaN for a query without positives (excluded from the mean). */
  perQueryAp: number[];
  /** Precision at each kappa per query; NaN rows for excluded queries. */
  perQueryPrecision: number[][];
}

export interface ProtocolResult {
  map: number;
  /** Mean precision keyed by kappa (1, 5, 10 by default). */
  mp: Record<number, number>;
  perQueryAp: number[];
}

/**
 * revisitop `compute_map` for one setup: `positives[q]` / `junk[q]` are query q's ok and junk ids
 * (their lengths count, as the official `len(qgnd)` does). Per query:
 * - no positives: excluded (AP = NaN), as the official code;
 * - positions of positives and junk items are found by membership; each positive's position is
 *   lowered by the number of junk items strictly before it;
 * - AP = trapezoidal rule over the positives found, divided by |ok|;
 * - precision at k uses kq = min(1-based position of the last positive, k), the official quirk.
 *
 * Ids not among a query's positives or junk are negatives, so ids past the dataset (+1M
 * distractors) and negative ids need no special care. A truncated ranking (top-k) works as the
 * official code would on it: positives outside it are simply not found and still count in |ok|.
 * One deviation: when a truncated row holds no positive at all the official code fails on
 * `max([])`; here that query gets AP 0 and precision 0 at every k.
 *
 * Cost: O(n + |ok| + |junk|) per query (membership via a byte mask, not an O(n·|ok|) `in1d`).
 */
export function computeMap(
  ranks: Int32Array,
  nq: number,
  n: number,
  positives: readonly (readonly number[])[],
  junk: readonly (readonly number[])[],
  kappas: readonly number[] = DEFAULT_KAPPAS,
): MapResult {
  assertInteger("nq", nq, 0);
  assertInteger("n", n, 0);
  if (!(ranks instanceof Int32Array)) invalidArgument("ranks", "an Int32Array", ranks);
  if (ranks.length !== nq * n) {
    invalidArgument("ranks", `${nq}×${n} = ${nq * n} ids (nq × n)`, ranks);
  }
  if (!Array.isArray(positives) || positives.length !== nq) {
    invalidArgument("positives", `an array of ${nq} id lists`, positives);
  }
  if (!Array.isArray(junk) || junk.length !== nq) {
    invalidArgument("junk", `an array of ${nq} id lists`, junk);
  }
  if (!Array.isArray(kappas)) invalidArgument("kappas", "an array of positive integers", kappas);
  kappas.forEach((k, j) => {
    assertInteger(`kappas[${j}]`, k, 1);
  });

  let maxId = -1;
  for (const [name, lists] of [
    ["positives", positives],
    ["junk", junk],
  ] as const) {
    lists.forEach((list, q) => {
      if (!Array.isArray(list)) invalidArgument(`${name}[${q}]`, "an array of ids", list);
      list.forEach((id, i) => {
        assertInteger(`${name}[${q}][${i}]`, id, 0, 0x7fffffff);
        if (id > maxId) maxId = id;
      });
    });
  }

  // Bit 1: positive, bit 2: junk. Set and cleared per query, so one allocation serves all.
  const mask = new Uint8Array(maxId + 1);
  const OK = 1;
  const JUNK = 2;

  const perQueryAp: number[] = new Array(nq);
  const perQueryPrecision: number[][] = new Array(nq);
  let mapSum = 0;
  const prSum = new Array<number>(kappas.length).fill(0);
  let nempty = 0;

  for (let q = 0; q < nq; q++) {
    const ok = positives[q]!;
    if (ok.length === 0) {
      perQueryAp[q] = Number.NaN;
      perQueryPrecision[q] = kappas.map(() => Number.NaN);
      nempty++;
      continue;
    }
    const jk = junk[q]!;
    for (const id of ok) mask[id] |= OK;
    for (const id of jk) mask[id] |= JUNK;

    // Junk-adjusted positions of positives, increasing. A position that is both positive and junk
    // (overlapping lists) is kept as a positive and only shifts later ones: the official loop
    // counts junk positions strictly below each positive.
    const pos: number[] = [];
    let junkBefore = 0;
    const row = q * n;
    for (let r = 0; r < n; r++) {
      const id = ranks[row + r]!;
      if (id < 0 || id > maxId) continue;
      const m = mask[id]!;
      if (m === 0) continue;
      if (m & OK) pos.push(r - junkBefore);
      if (m & JUNK) junkBefore++;
    }
    for (const id of ok) mask[id] = 0;
    for (const id of jk) mask[id] = 0;

    const ap = averagePrecision(pos, ok.length);
    mapSum = mapSum + ap;
    perQueryAp[q] = ap;

    const prs = kappas.map((k) => precisionAt(pos, k));
    for (let j = 0; j < kappas.length; j++) prSum[j] = prSum[j]! + prs[j]!;
    perQueryPrecision[q] = prs;
  }

  // With every query excluded the official code divides by zero (it raises for the mAP); NaN here.
  const counted = nq - nempty;
  return {
    map: counted === 0 ? Number.NaN : mapSum / counted,
    mpAtK: prSum.map((s) => (counted === 0 ? Number.NaN : s / counted)),
    perQueryAp,
    perQueryPrecision,
  };
}

/** revisitop `compute_ap`: trapezoids of the PR curve, same operation order as the original. */
function averagePrecision(pos: readonly number[], nres: number): number {
  const recallStep = 1 / nres;
  let ap = 0;
  for (let j = 0; j < pos.length; j++) {
    const rank = pos[j]!;
    const precision0 = rank === 0 ? 1 : j / rank;
    const precision1 = (j + 1) / (rank + 1);
    ap += ((precision0 + precision1) * recallStep) / 2;
  }
  return ap;
}

/** Precision at k with the official kq = min(max 1-based position, k). */
function precisionAt(pos: readonly number[], k: number): number {
  if (pos.length === 0) return 0;
  let last = 0;
  for (const p of pos) if (p + 1 > last) last = p + 1;
  const kq = Math.min(last, k);
  let hits = 0;
  for (const p of pos) if (p + 1 <= kq) hits++;
  return hits / kq;
}

/** Positives and junk of each query under one setup, as the official test_revisitop builds them. */
export function protocolLists(
  gt: GroundTruth,
  protocol: Protocol,
): { positives: number[][]; junk: number[][] } {
  switch (protocol) {
    case "easy":
      return {
        positives: gt.gnd.map((g) => [...g.easy]),
        junk: gt.gnd.map((g) => [...g.junk, ...g.hard]),
      };
    case "medium":
      return {
        positives: gt.gnd.map((g) => [...g.easy, ...g.hard]),
        junk: gt.gnd.map((g) => [...g.junk]),
      };
    case "hard":
      return {
        positives: gt.gnd.map((g) => [...g.hard]),
        junk: gt.gnd.map((g) => [...g.junk, ...g.easy]),
      };
    default:
      return invalidArgument("protocol", "easy, medium or hard", protocol);
  }
}

/**
 * Why `ranks` [nq, n] is not a ranking of this dataset, or undefined when it is one. Ids must be
 * ≥ 0 and distinct within a row. When n ≥ the dataset size the row is taken as a full ranking
 * (the dataset, then distractors with ids ≥ imlist.length, as the official +1M setup stacks them),
 * so its ids must lie in 0..n−1; a shorter row is a top-k ranking and any id ≥ 0 is allowed.
 */
export function findRankingProblem(
  ranks: Int32Array,
  nq: number,
  n: number,
  gt: GroundTruth,
): string | undefined {
  if (nq !== gt.gnd.length) {
    return `holds ${nq} rows but the ground truth has ${gt.gnd.length} queries (expected query-major [nq, N])`;
  }
  if (ranks.length !== nq * n) return `holds ${ranks.length} ids, not ${nq}×${n}`;
  const full = n >= gt.imlist.length;
  // Row number + 1 of the last row that held each id: a duplicate check without clearing.
  const seenIn = full ? new Int32Array(n) : undefined;
  for (let q = 0; q < nq; q++) {
    const rowSet = full ? undefined : new Set<number>();
    for (let r = 0; r < n; r++) {
      const id = ranks[q * n + r]!;
      if (id < 0) return `row ${q}, rank ${r} holds the negative id ${id}`;
      if (seenIn) {
        if (id >= n) {
          return `row ${q}, rank ${r} holds id ${id}, but a full ranking of ${n} items holds ids 0..${n - 1}`;
        }
        if (seenIn[id] === q + 1) return `row ${q} holds id ${id} twice`;
        seenIn[id] = q + 1;
      } else if (rowSet) {
        if (rowSet.has(id)) return `row ${q} holds id ${id} twice`;
        rowSet.add(id);
      }
    }
  }
  return undefined;
}

/**
 * The three revisitop setups (Easy, Medium, Hard) on one query-major ranking [nq, n]. The ranking
 * is checked first (`findRankingProblem`): INVALID_ARGUMENT naming `ranks` when it is not one.
 */
export function evaluateRevisitop(
  ranks: Int32Array,
  nq: number,
  n: number,
  gt: GroundTruth,
  kappas: readonly number[] = DEFAULT_KAPPAS,
): Record<Protocol, ProtocolResult> {
  assertInteger("nq", nq, 0);
  assertInteger("n", n, 1);
  const problem = findRankingProblem(ranks, nq, n, gt);
  if (problem !== undefined) {
    throw new SuperglobalError("INVALID_ARGUMENT", `ranks: ${problem}`, { input: "ranks" });
  }
  const out = {} as Record<Protocol, ProtocolResult>;
  for (const protocol of PROTOCOLS) {
    const { positives, junk } = protocolLists(gt, protocol);
    const r = computeMap(ranks, nq, n, positives, junk, kappas);
    const mp: Record<number, number> = {};
    kappas.forEach((k, j) => {
      mp[k] = r.mpAtK[j]!;
    });
    out[protocol] = { map: r.map, mp, perQueryAp: r.perQueryAp };
  }
  return out;
}
