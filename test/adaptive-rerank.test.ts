import assert from "node:assert/strict";
import { after, test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { AdaptiveReranker, type AdaptiveRerankOptions } from "../src/rerank/adaptive-rerank.ts";
import type { Reranker } from "../src/rerank/reranker.ts";
import { SuperGlobalReranker } from "../src/rerank/superglobal-rerank.ts";

// ---------------------------------------------------------------------------------------------
// An independent float64 reference, written straight from the rule in adaptive-rerank.ts: full
// similarity matrix, explicit refined vectors, full stable sorts, no shortcuts.

function stableArgsortDesc(values: number[]): number[] {
  return values.map((_, i) => i).sort((a, b) => values[b]! - values[a]! || a - b);
}

interface Params {
  M: number;
  K: number;
  beta: number;
  R: number;
}

function referenceRerank(
  q: ArrayLike<number>,
  G: ArrayLike<number>,
  ids: number[],
  d: number,
  p: Params,
  guard = true,
): { ids: number[]; r: number[] } {
  const finite = (b: number) =>
    Array.from({ length: d }, (_, i) => G[b * d + i]!).every((x) => Number.isFinite(x));
  const givenRows = G.length / d;
  const keepRows = Array.from({ length: givenRows }, (_, b) => b).filter(finite);
  const kept = [
    ...keepRows.map((b) => ids[b]!),
    ...ids.slice(givenRows), // candidates without descriptors: the tail
  ];
  const m = Math.min(p.M, kept.length, keepRows.length);
  const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);
  const g = keepRows.slice(0, m).map((b) => Array.from({ length: d }, (_, i) => G[b * d + i]!));
  const qv = Array.from({ length: d }, (_, i) => q[i]!);
  const sq = g.map((gb) => dot(qv, gb));
  const S = g.map((gb) => g.map((gc) => dot(gb, gc)));
  // Refinement: b's K nearest other candidates, those nearer to b than the query is.
  const refined = g.map((gb, b) => {
    const others = stableArgsortDesc(S[b]!)
      .filter((c) => c !== b)
      .slice(0, p.K)
      .filter((c) => S[b]![c]! > sq[b]!);
    const w = others.map((c) => p.beta * S[b]![c]!);
    const wsum = 1 + w.reduce((a, x) => a + x, 0);
    return gb.map((x, i) => (x + others.reduce((s, c, k) => s + w[k]! * g[c]![i]!, 0)) / wsum);
  });
  const r = refined.map((gp) => dot(qv, gp));
  const o1 = stableArgsortDesc(r);
  // The query's rank among b's neighbours (query first on ties).
  const queryRank = (b: number) => S[b]!.filter((s, c) => c !== b && s > sq[b]!).length;
  const pooled = o1.slice(0, Math.min(p.K + 1, m)).filter((b) => queryRank(b) < p.R);
  let order = o1;
  if (pooled.length > 0) {
    const qe = Array.from({ length: d }, (_, i) => Math.max(...pooled.map((b) => refined[b]![i]!)));
    const score = o1.map((b) => (r[b]! + dot(qe, refined[b]!)) / 2);
    order = stableArgsortDesc(score).map((j) => o1[j]!);
  }
  // Guard: the initial first stays first unless the new first has the query as its nearest
  // neighbour and the initial first does not.
  if (guard && m > 0 && order[0] !== 0 && !(queryRank(order[0]!) === 0 && queryRank(0) > 0)) {
    order = [0, ...order.filter((b) => b !== 0)];
  }
  return { ids: [...order.map((b) => kept[b]!), ...kept.slice(m)], r };
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function unitRows(rows: number[][]): Float32Array {
  return Float32Array.from(
    rows.flatMap((v) => {
      const norm = Math.hypot(...v);
      return v.map((x) => x / norm);
    }),
  );
}

/** Uniform random unit vectors. */
function random(rows: number, d: number, seed: number): Float32Array {
  const rnd = lcg(seed);
  return unitRows(Array.from({ length: rows }, () => Array.from({ length: d }, () => rnd() - 0.5)));
}

/**
 * Clustered unit vectors as a small-group collection: groups of 1 to 15 members around random
 * centres, in random order; the query is a noisy member of `queryGroup`.
 */
function clustered(
  rows: number,
  d: number,
  seed: number,
): { G: Float32Array; q: Float32Array; group: number[] } {
  const rnd = lcg(seed);
  const centres: number[][] = [];
  const group: number[] = [];
  while (group.length < rows) {
    const size = 1 + Math.floor(rnd() * 15);
    centres.push(Array.from({ length: d }, () => rnd() - 0.5));
    for (let i = 0; i < size && group.length < rows; i++) group.push(centres.length - 1);
  }
  for (let i = group.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [group[i], group[j]] = [group[j]!, group[i]!];
  }
  const noisy = (c: number, sigma: number) => centres[c]!.map((x) => x + sigma * (rnd() - 0.5));
  const G = unitRows(group.map((c) => noisy(c, 0.5 + rnd())));
  const q = unitRows([noisy(group[0]!, 0.8)]);
  // Candidates sorted by similarity to the query, as a first search returns them.
  const sims = group.map((_, b) => {
    let s = 0;
    for (let i = 0; i < d; i++) s += q[i]! * G[b * d + i]!;
    return s;
  });
  const order = stableArgsortDesc(sims);
  const sorted = new Float32Array(rows * d);
  order.forEach((b, j) => {
    sorted.set(G.subarray(b * d, (b + 1) * d), j * d);
  });
  return { G: sorted, q, group: order.map((b) => group[b]!) };
}

const rerankers = new Map<string, AdaptiveReranker>();
async function reranker(options: AdaptiveRerankOptions): Promise<AdaptiveReranker> {
  const key = JSON.stringify(options);
  let r = rerankers.get(key);
  if (r === undefined) {
    r = await AdaptiveReranker.create(options);
    rerankers.set(key, r);
  }
  return r;
}
after(async () => {
  for (const r of rerankers.values()) await r.release();
});

const GRAMS = ["onnx", "float64"] as const;
const DEFAULTS: Params = { M: 100, K: 9, beta: 0.15, R: 5 };

/** Runs both Gram paths and checks the exact order, r and the invariants against the reference. */
async function check(
  q: Float32Array | Float64Array,
  G: Float32Array | Float64Array,
  ids: number[],
  d: number,
  p: Params,
  label: string,
): Promise<number[]> {
  const want = referenceRerank(q, G, ids, d, p);
  for (const gram of GRAMS) {
    const rr = await reranker({ ...p, gram });
    const out = await rr.rerank(q, { ids, descriptors: G });
    assert.deepEqual(Array.from(out.ids), want.ids, `${label} (${gram})`);
    assert.equal(out.head, want.r.length, `${label}: head`);
    assert.equal(out.scores.length, out.head);
    assert.equal(out.refinedScores.length, out.head);
    want.r.forEach((v, b) => {
      assert.ok(Math.abs(out.refinedScores[b]! - v) < 1e-12, `${label}: r[${b}]`);
    });
    // A permutation of the (finite) input ids; the tail past the head untouched.
    const dropped = Array.from(out.dropped ?? []);
    const finiteIds = ids.filter((id) => !dropped.includes(id));
    assert.deepEqual(
      [...out.ids].sort((a, b) => a - b),
      [...finiteIds].sort((a, b) => a - b),
    );
    assert.deepEqual(Array.from(out.ids.subarray(out.head)), finiteIds.slice(out.head));
  }
  return want.ids;
}

// ---------------------------------------------------------------------------------------------

test("exact orders on random data equal the float64 reference (both Gram paths)", async () => {
  const d = 32;
  const cases: (Params & { n: number })[] = [
    { ...DEFAULTS, n: 60 },
    { ...DEFAULTS, n: 150 }, // a tail beyond M
    { ...DEFAULTS, n: 40, K: 3, R: 2 },
    { ...DEFAULTS, n: 40, K: 0, R: 1 }, // no refinement
    { ...DEFAULTS, n: 30, beta: 0.6, R: 10 },
  ];
  for (const [i, c] of cases.entries()) {
    const G = random(c.n, d, 100 + i);
    const q = random(1, d, 200 + i);
    const ids = Array.from({ length: c.n }, (_, j) => 5000 + 3 * j);
    await check(q, G, ids, d, c, `random case ${i}`);
  }
});

test("exact orders on clustered small-group data; reranking does move candidates", async () => {
  const d = 24;
  let moved = 0;
  let guarded = 0;
  for (let i = 0; i < 24; i++) {
    const n = 20 + 7 * i;
    const { G, q } = clustered(n, d, 300 + i);
    const ids = Array.from({ length: n }, (_, j) => j);
    for (const p of [DEFAULTS, { ...DEFAULTS, M: 40, K: 5, R: 3 }]) {
      const got = await check(q, G, ids, d, p, `clustered ${i} M${p.M}`);
      if (got.some((id, j) => id !== j)) moved++;
      // The first result stayed although the plain stage-2 order would have moved it.
      if (got[0] === 0) {
        const noGuard = referenceRerank(q, G, ids, d, p, false);
        if (noGuard.ids[0] !== 0) guarded++;
      }
    }
  }
  assert.ok(moved > 10, `only ${moved} of 48 lists changed order`);
  assert.ok(guarded > 0, "the first-result guard never mattered");
});

test("float64 input vectors: the float32 Gram path still decides on float64 values", async () => {
  const d = 40;
  const n = 70;
  const { G, q } = clustered(n, d, 77);
  // Float64 vectors that are not float32 values (a rounding of their own).
  const G64 = Float64Array.from(G, (x, i) => x * (1 + 1e-9 * ((i % 7) - 3)));
  const q64 = Float64Array.from(q, (x) => x * (1 + 3e-10));
  await check(
    q64,
    G64,
    Array.from({ length: n }, (_, j) => j),
    d,
    DEFAULTS,
    "float64 input",
  );
});

test("tiny lists: n = 0, 1, 2, K and R larger than n", async () => {
  const d = 8;
  const q = random(1, d, 1);
  for (const n of [1, 2, 3, 5]) {
    const G = random(n, d, 10 + n);
    const ids = Array.from({ length: n }, (_, j) => 40 - j);
    await check(q, G, ids, d, DEFAULTS, `n=${n}`);
    await check(q, G, ids, d, { M: 100, K: 50, beta: 0.15, R: 50 }, `n=${n}, K and R > n`);
    await check(q, G, ids, d, { M: 1, K: 9, beta: 0.15, R: 5 }, `n=${n}, M=1`);
  }
  const rr = await reranker({});
  const empty = await rr.rerank(q, { ids: [], descriptors: new Float32Array(0) });
  assert.equal(empty.ids.length, 0);
  assert.equal(empty.head, 0);
  // A single candidate comes back as it is, with r = q·g.
  const g = random(1, d, 3);
  const one = await rr.rerank(q, { ids: [9], descriptors: g });
  assert.deepEqual(Array.from(one.ids), [9]);
  const qg = q.reduce((s, x, i) => s + x * g[i]!, 0);
  assert.ok(Math.abs(one.refinedScores[0]! - qg) < 1e-12);
});

test("ties are stable: identical candidates keep their input order", async () => {
  const d = 16;
  const base = random(1, d, 5);
  const other = random(1, d, 6);
  // Everything identical, the query too: every score ties, the list is unchanged.
  const same = new Float32Array(12 * d);
  for (let j = 0; j < 12; j++) same.set(base, j * d);
  const ids = Array.from({ length: 12 }, (_, j) => 100 + j);
  assert.deepEqual(await check(base, same, ids, d, DEFAULTS, "all identical"), ids);
  // Duplicated pairs among distinct vectors: each copy keeps its input order relative to its twin.
  const rows = random(10, d, 7);
  const dup = new Float32Array(20 * d);
  for (let j = 0; j < 10; j++) {
    dup.set(rows.subarray(j * d, (j + 1) * d), 2 * j * d);
    dup.set(rows.subarray(j * d, (j + 1) * d), (2 * j + 1) * d);
  }
  const dupIds = Array.from({ length: 20 }, (_, j) => j);
  const got = await check(other, dup, dupIds, d, DEFAULTS, "duplicates");
  for (let j = 0; j < 10; j++) assert.ok(got.indexOf(2 * j) < got.indexOf(2 * j + 1));
});

test("without the query near any neighbour, stage 1 is the paper's refinement", async () => {
  // A tight cluster (pairwise similarity ≈ 0.9) and a query almost orthogonal to it: every
  // neighbour is nearer than the query, so the refined scores are SuperGlobal's.
  const d = 32;
  const rnd = lcg(11);
  const centre = Array.from({ length: d }, () => rnd() - 0.5);
  const G = unitRows(Array.from({ length: 30 }, () => centre.map((x) => x + 0.15 * (rnd() - 0.5))));
  const q = unitRows([Array.from({ length: d }, (_, i) => (i === 0 ? 1 : 0.02 * (rnd() - 0.5)))]);
  const ids = Array.from({ length: 30 }, (_, j) => j);
  const paper = await SuperGlobalReranker.create({ M: 100, K: 9, beta: 0.15, gram: "float64" });
  try {
    const want = await paper.rerank(q, { ids, descriptors: G });
    const got = await (await reranker({ gram: "float64" })).rerank(q, { ids, descriptors: G });
    want.refinedScores.forEach((v, b) => {
      assert.ok(Math.abs(got.refinedScores[b]! - v) < 1e-13, `r[${b}]`);
    });
  } finally {
    await paper.release();
  }
});

test("non-finite candidates are dropped and never weigh on the others; a non-finite query is refused", async () => {
  const d = 16;
  const n = 40;
  const { G, q } = clustered(n, d, 21);
  const ids = Array.from({ length: n }, (_, j) => 700 + j);
  const bad = new Map([
    [0, Number.NaN], // the initial first
    [4, Number.POSITIVE_INFINITY],
    [17, Number.NaN],
  ]);
  const X = Float32Array.from(G);
  for (const [row, v] of bad) X[row * d + 3] = v;
  const clean = ids.filter((_, j) => !bad.has(j));
  const cleanG = new Float32Array(clean.length * d);
  let k = 0;
  for (let j = 0; j < n; j++) {
    if (!bad.has(j)) cleanG.set(G.subarray(j * d, (j + 1) * d), d * k++);
  }
  for (const gram of GRAMS) {
    const rr = await reranker({ gram });
    const out = await rr.rerank(q, { ids, descriptors: X });
    const want = await rr.rerank(q, { ids: clean, descriptors: cleanG });
    assert.deepEqual(out.ids, want.ids);
    assert.deepEqual(Array.from(out.dropped!), [700, 704, 717]);
    assert.deepEqual(out.scores, want.scores);
    assert.ok([...out.scores, ...out.refinedScores].every(Number.isFinite));
  }
  await check(q, X, ids, d, DEFAULTS, "with non-finite rows");
  const badQ = Float32Array.from(q);
  badQ[2] = Number.NaN;
  await assert.rejects(
    (await reranker({})).rerank(badQ, { ids, descriptors: G }),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.input === "query",
  );
});

test("descriptors for the head only; bad arguments are INVALID_ARGUMENT", async () => {
  const d = 8;
  const G = random(30, d, 31);
  const q = random(1, d, 32);
  const ids = Array.from({ length: 30 }, (_, j) => j);
  const rr = await reranker({ M: 10 });
  const headOnly = await rr.rerank(q, { ids, descriptors: G.subarray(0, 10 * d) });
  const full = await rr.rerank(q, { ids, descriptors: G });
  assert.deepEqual(headOnly.ids, full.ids);
  const isInvalid = (re: RegExp) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && re.test(e.message);
  await assert.rejects(
    rr.rerank(q, { ids, descriptors: G.subarray(0, 9 * d) }),
    isInvalid(/candidates.descriptors/),
  );
  await assert.rejects(
    rr.rerank(q, { ids: [0.5], descriptors: G.subarray(0, d) }),
    isInvalid(/candidates.ids\[0\]/),
  );
  for (const bad of [{ M: 0 }, { K: -1 }, { beta: -0.1 }, { R: 0 }, { gram: "gpu" }]) {
    await assert.rejects(
      AdaptiveReranker.create(bad as AdaptiveRerankOptions),
      isInvalid(/M|K|beta|R|gram/),
    );
  }
});

test("both rerankers are interchangeable behind the Reranker interface", async () => {
  const d = 16;
  const { G, q } = clustered(50, d, 41);
  const ids = Array.from({ length: 50 }, (_, j) => j);
  const modes: Reranker[] = [
    await SuperGlobalReranker.create({ M: 100 }),
    await AdaptiveReranker.create(),
  ];
  try {
    for (const r of modes) {
      assert.equal(r.M, 100);
      const out = await r.rerank(q, { ids, descriptors: G });
      assert.equal(out.head, 50);
      assert.deepEqual(
        [...out.ids].sort((a, b) => a - b),
        ids,
      );
    }
  } finally {
    for (const r of modes) await r.release();
  }
});

test("float32 Gram near-ties with the query: 'nearer than the query' is decided in float64", async () => {
  // One candidate is the query itself with 64 elements moved by ±1 ulp: for every other
  // candidate b, s(b, that copy) and s(b, q) differ by ~1e-9, below float32 resolution. Whether
  // the copy counts as nearer to b than the query (refinement, gate, guard) is a float64 matter.
  const d = 256;
  let undecidable = 0;
  for (let trial = 0; trial < 8; trial++) {
    const rnd = lcg(900 + trial);
    const { G, q } = clustered(40, d, 950 + trial);
    const copy = Float32Array.from(q);
    const bits = new Uint32Array(copy.buffer);
    for (let k = 0; k < 64; k++) bits[Math.floor(rnd() * d)]! += rnd() < 0.5 ? 1 : -1;
    const X = new Float32Array(41 * d);
    X.set(G.subarray(0, 3 * d));
    X.set(copy, 3 * d); // fourth in the list
    X.set(G.subarray(3 * d), 4 * d);
    for (let b = 0; b < 41; b++) {
      if (b === 3) continue;
      let sc = 0;
      let sq = 0;
      for (let i = 0; i < d; i++) {
        sc += X[b * d + i]! * copy[i]!;
        sq += X[b * d + i]! * q[i]!;
      }
      if (Math.abs(sc - sq) < 2e-8 * 2) undecidable++;
    }
    const ids = Array.from({ length: 41 }, (_, j) => j);
    await check(q, X, ids, d, DEFAULTS, `near-tie trial ${trial}`);
  }
  assert.ok(undecidable > 0, "no comparison was within float32 error");
});
