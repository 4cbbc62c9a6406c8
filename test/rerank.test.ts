import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { readMatrixF32, readMatrixI32, readNpy } from "../src/io/npy.ts";
import { OnnxGram } from "../src/rerank/gram.ts";
import {
  SuperGlobalReranker,
  type SuperGlobalRerankOptions,
} from "../src/rerank/superglobal-rerank.ts";
import { fixture, manifest, sharedOnly } from "./helpers/shared.ts";

// ---------------------------------------------------------------------------------------------
// An independent float64 reference, written straight from spec §5 (explicit g', full stable sorts).

function stableArgsortDesc(values: number[]): number[] {
  return values.map((_, i) => i).sort((a, b) => values[b]! - values[a]! || a - b);
}

function referenceRerank(
  q: ArrayLike<number>,
  G: ArrayLike<number>,
  ids: number[],
  d: number,
  M: number,
  K: number,
  beta: number,
): { ids: number[]; r: number[] } {
  const m = Math.min(M, ids.length);
  const kSelf = Math.min(K + 1, m);
  const row = (b: number) => Array.from({ length: d }, (_, i) => G[b * d + i]!);
  const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);
  const g = Array.from({ length: m }, (_, b) => row(b));
  const refined = g.map((gb) => {
    const sims = g.map((gc) => dot(gb, gc));
    const nn = stableArgsortDesc(sims).slice(0, kSelf);
    const w = nn.map((c, k) => (k === 0 ? 1 : beta * sims[c]!));
    const wsum = w.reduce((a, b) => a + b, 0);
    return Array.from(
      { length: d },
      (_, i) => nn.reduce((s, c, k) => s + w[k]! * g[c]![i]!, 0) / wsum,
    );
  });
  const qv = Array.from({ length: d }, (_, i) => q[i]!);
  const r = refined.map((gp) => dot(qv, gp));
  const o1 = stableArgsortDesc(r);
  const qe = Array.from({ length: d }, (_, i) =>
    Math.max(...o1.slice(0, kSelf).map((b) => refined[b]![i]!)),
  );
  const score = o1.map((b) => (r[b]! + dot(qe, refined[b]!)) / 2);
  const o2 = stableArgsortDesc(score);
  return { ids: [...o2.map((j) => ids[o1[j]!]!), ...ids.slice(m)], r };
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** Clustered unit vectors (as retrieval descriptors are), float32. */
function clustered(rows: number, d: number, seed: number, clusters = 4): Float32Array {
  const rnd = lcg(seed);
  const centres = Array.from({ length: clusters * d }, () => rnd() - 0.5);
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const c = Math.floor(rnd() * clusters);
    let norm = 0;
    for (let i = 0; i < d; i++) {
      const v = centres[c * d + i]! + 0.6 * (rnd() - 0.5);
      out[r * d + i] = v;
      norm += v * v;
    }
    for (let i = 0; i < d; i++) out[r * d + i] = out[r * d + i]! / Math.sqrt(norm);
  }
  return out;
}

const rerankers = new Map<string, SuperGlobalReranker>();
async function reranker(options: SuperGlobalRerankOptions): Promise<SuperGlobalReranker> {
  const key = JSON.stringify(options);
  let r = rerankers.get(key);
  if (r === undefined) {
    r = await SuperGlobalReranker.create(options);
    rerankers.set(key, r);
  }
  return r;
}
before(async () => {
  await reranker({});
});
after(async () => {
  for (const r of rerankers.values()) await r.release();
});

const GRAMS = ["onnx", "float64"] as const;

// ---------------------------------------------------------------------------------------------

test("Appendix A vectors: r to 1e-9 and the final ranks (M=6, K=2, beta=0.15)", async () => {
  const X = [
    [0.188174, -0.642228, 0.463431, 0.580833],
    [-0.8231, -0.549362, 0.053933, -0.133416],
    [-0.011577, -0.58778, 0.605939, 0.535928],
    [0.044198, 0.754521, 0.312928, -0.575169],
    [0.272618, -0.708904, 0.64944, -0.03691],
    [-0.130187, -0.479537, 0.86096, -0.108826],
    [-0.503266, -0.413741, 0.625439, 0.42938],
    [0.182622, 0.190625, 0.947615, -0.179826],
    [-0.318993, -0.506768, 0.383594, 0.703054],
    [-0.08442, -0.622443, -0.61083, 0.482002],
    [0.641059, 0.468472, -0.574004, 0.20024],
    [0.125041, 0.234348, 0.933828, 0.239606],
  ];
  const Q = [
    [0.69743, 0.069422, 0.297005, 0.648506],
    [-0.862402, -0.189194, -0.278385, -0.378113],
  ];
  const initial = [
    [0, 11, 2, 10, 8, 4, 7, 6, 5, 9, 3, 1],
    [1, 9, 6, 5, 8, 3, 2, 4, 7, 0, 11, 10],
  ];
  const expectedR = [
    [0.558044375, 0.5183481801, 0.4747500308, 0.4253412096, 0.3593642286, 0.3537648719],
    [0.7441857945, 0.1959061594, 0.1408707716, 0.0203223668, 0.0187025231, -0.1020497386],
  ];
  const expectedFinal = [
    [11, 0, 2, 8, 4, 10, 7, 6, 5, 9, 3, 1],
    [1, 6, 8, 5, 9, 3, 2, 4, 7, 0, 11, 10],
  ];
  const ranks = { data: Int32Array.from(initial.flat()), rows: 2, cols: 12 };
  for (const gram of GRAMS) {
    const rr = await reranker({ M: 6, K: 2, beta: 0.15, gram });
    // The spec's decimals in float64, as the official modules ran them.
    const db = { data: Float64Array.from(X.flat()), rows: 12, cols: 4 };
    const queries = { data: Float64Array.from(Q.flat()), rows: 2, cols: 4 };
    const out = await rr.rerankRanks(db, queries, ranks);
    assert.deepEqual(Array.from(out.ranks), expectedFinal.flat(), gram);
    assert.equal(out.head, 6);
    expectedR.flat().forEach((v, i) => {
      assert.ok(Math.abs(out.refinedScores[i]! - v) < 1e-9, `${gram} r[${i}]`);
    });
    // The same through the per-query API, and with float32 storage (r moves by ~1e-8 only).
    for (let q = 0; q < 2; q++) {
      const ids = initial[q]!;
      const one = await rr.rerank(Float64Array.from(Q[q]!), {
        ids,
        descriptors: Float64Array.from(ids.flatMap((id) => X[id]!)),
      });
      assert.deepEqual(Array.from(one.ids), expectedFinal[q]);
      assert.deepEqual(one.refinedScores, out.refinedScores.subarray(q * 6, q * 6 + 6));
    }
    const out32 = await rr.rerankRanks(
      { data: Float32Array.from(X.flat()), rows: 12, cols: 4 },
      { data: Float32Array.from(Q.flat()), rows: 2, cols: 4 },
      ranks,
    );
    assert.deepEqual(Array.from(out32.ranks), expectedFinal.flat());
    expectedR.flat().forEach((v, i) => {
      assert.ok(Math.abs(out32.refinedScores[i]! - v) < 1e-7);
    });
  }
});

test(
  "official goldens rerank0..2: final ranks and r (per-query API and batch)",
  sharedOnly,
  async (t) => {
    const cases = manifest().rerank as Array<{
      M: number;
      K: number;
      beta: number;
      X: { file: string };
      Q: { file: string };
      initial_ranks: { file: string };
      refined_scores: { file: string };
      final_ranks: { file: string };
    }>;
    assert.equal(cases.length, 3);
    let swaps = 0;
    let maxRDiff = 0;
    for (const c of cases) {
      const X = readMatrixF32(fixture(c.X.file));
      const Q = readMatrixF32(fixture(c.Q.file));
      const initial = readMatrixI32(fixture(c.initial_ranks.file));
      const final = readMatrixI32(fixture(c.final_ranks.file));
      const r = readNpy(fixture(c.refined_scores.file)).data as Float64Array;
      const rr = await reranker({ M: c.M, K: c.K, beta: c.beta });
      const { rows: nq, cols: n } = initial;
      const head = Math.min(c.M, n);
      const batch = await rr.rerankRanks(X, Q, initial);
      for (let q = 0; q < nq; q++) {
        const ids = initial.data.subarray(q * n, q * n + n);
        const descriptors = new Float32Array(head * X.cols);
        for (let j = 0; j < head; j++) {
          descriptors.set(X.data.subarray(ids[j]! * X.cols, (ids[j]! + 1) * X.cols), j * X.cols);
        }
        const out = await rr.rerank(Q.data.subarray(q * Q.cols, (q + 1) * Q.cols), {
          ids,
          descriptors,
        });
        assert.deepEqual(out.ids, batch.ranks.subarray(q * n, q * n + n), "batch = per query");
        const want = final.data.subarray(q * n, q * n + n);
        // Tail untouched, exactly.
        assert.deepEqual(out.ids.subarray(head), want.subarray(head));
        // Head: any difference must be a swap of neighbours at a float near-tie; count them.
        for (let j = 0; j < head; j++) {
          if (out.ids[j] === want[j]) continue;
          assert.ok(j + 1 < head, `${c.X.file} query ${q} position ${j} differs`);
          assert.equal(out.ids[j], want[j + 1]);
          assert.equal(out.ids[j + 1], want[j]);
          assert.ok(Math.abs(out.scores[j]! - out.scores[j + 1]!) < 1e-6, "swap at a near-tie");
          swaps++;
          j++;
        }
        for (let b = 0; b < head; b++) {
          const diff = Math.abs(out.refinedScores[b]! - r[q * c.M + b]!);
          assert.ok(diff < 1e-6, `${c.X.file} query ${q}: r[${b}] off by ${diff}`);
          maxRDiff = Math.max(maxRDiff, diff);
        }
      }
    }
    t.diagnostic(`near-tie swaps against the goldens: ${swaps}; max |r - golden| ${maxRDiff}`);
  },
);

test("both Gram paths equal the spec reference on clustered data, shapes from 1 to > M", async () => {
  const d = 24;
  const cases = [
    { n: 1, M: 400, K: 9 },
    { n: 3, M: 400, K: 9 }, // n < K+1
    { n: 10, M: 400, K: 9 }, // n = K+1
    { n: 60, M: 400, K: 9 }, // n < M
    { n: 90, M: 40, K: 9 }, // tail beyond M
    { n: 50, M: 50, K: 0 }, // only the item itself
    { n: 70, M: 30, K: 29 }, // K+1 = M
    { n: 35, M: 20, K: 40 }, // K+1 > M
  ];
  for (const [i, c] of cases.entries()) {
    const G = clustered(c.n, d, 10 + i);
    const q = clustered(1, d, 50 + i);
    const ids = Array.from({ length: c.n }, (_, j) => 1000 + 7 * j); // ids from anywhere
    const want = referenceRerank(q, G, ids, d, c.M, c.K, 0.15);
    for (const gram of GRAMS) {
      const rr = await reranker({ M: c.M, K: c.K, beta: 0.15, gram });
      const out = await rr.rerank(q, { ids, descriptors: G });
      assert.deepEqual(Array.from(out.ids), want.ids, `case ${i} ${gram}`);
      assert.equal(out.head, Math.min(c.M, c.n));
      want.r.forEach((v, b) => {
        assert.ok(Math.abs(out.refinedScores[b]! - v) < 1e-12);
      });
      for (let j = 0; j + 1 < out.head; j++) assert.ok(out.scores[j]! >= out.scores[j + 1]!);
    }
  }
});

test("float32 Gram near-ties: neighbours are chosen by their float64 values", async () => {
  // Row 0 has 8 clear neighbours, then two vectors at positions 9 and 10 competing for its 10th
  // and last slot: the second is the first with 64 elements moved by ±1 ulp, arranged so that
  // it is ahead of the first in float64 by ~1e-9, below float32 resolution (~6e-8 here). The
  // float32 Gram ties them or orders them either way; only float64 decides correctly.
  const d = 256;
  const onnxGram = await OnnxGram.create();
  let misordered = 0;
  try {
    for (let trial = 0; trial < 16; trial++) {
      const rnd = lcg(900 + trial);
      const unit = (v: number[]) => {
        const norm = Math.hypot(...v);
        return v.map((x) => Math.fround(x / norm));
      };
      const a = unit(Array.from({ length: d }, () => rnd() - 0.5));
      const near = (sigma: number) => unit(a.map((x) => x + sigma * (rnd() - 0.5)));
      const rows: number[][] = [a];
      for (let j = 1; j <= 8; j++) rows.push(near(0.05));
      const v = near(0.12);
      const w = Float32Array.from(v);
      const bits = new Uint32Array(w.buffer);
      for (let k = 0; k < 64; k++) bits[Math.floor(rnd() * d)]! += rnd() < 0.5 ? 1 : -1;
      const dotA = (r: ArrayLike<number>) => a.reduce((s, x, k) => s + x * r[k]!, 0);
      const [lower, upper] = dotA(w) > dotA(v) ? [v, Array.from(w)] : [Array.from(w), v];
      rows.push(lower, upper);
      for (let j = 11; j < 30; j++) rows.push(unit(Array.from({ length: d }, () => rnd() - 0.5)));
      const G = Float32Array.from(rows.flat());
      const q = Float32Array.from(near(0.2));
      const ids = rows.map((_, j) => j);
      // Preconditions: in float64 the pair are row 0's 10th and 11th, position 10 ahead.
      const sims = rows.map((r) => dotA(r));
      assert.deepEqual(stableArgsortDesc(sims).slice(9, 11), [10, 9]);
      assert.ok(sims[10]! - sims[9]! > 1e-13 && sims[10]! - sims[9]! < 1e-8);
      const rr = await reranker({ M: 30, K: 9, beta: 0.15, gram: "onnx" });
      const A = await onnxGram.compute(G, 30, d); // the reranker's own float32 kernel
      if (A[9]! > A[10]!) misordered++;
      const want = referenceRerank(q, G, ids, d, 30, 9, 0.15);
      const out = await rr.rerank(q, { ids, descriptors: G });
      assert.deepEqual(Array.from(out.ids), want.ids);
      want.r.forEach((x, b) => {
        assert.ok(Math.abs(out.refinedScores[b]! - x) < 1e-13, `r[${b}]`);
      });
    }
  } finally {
    await onnxGram.release();
  }
  // The case under test did occur: float32 put the float64 loser strictly ahead.
  assert.ok(misordered > 0, "no float32 misorder was produced");
});

test("a single candidate: r = q·g and the list is unchanged", async () => {
  const rr = await reranker({});
  const q = new Float32Array([0.6, 0.8]);
  const out = await rr.rerank(q, { ids: [42], descriptors: new Float32Array([1, 0]) });
  assert.deepEqual(Array.from(out.ids), [42]);
  assert.ok(Math.abs(out.refinedScores[0]! - Math.fround(0.6)) < 1e-15);
  const empty = await rr.rerank(q, { ids: [], descriptors: new Float32Array(0) });
  assert.equal(empty.ids.length, 0);
});

test("duplicates and exact ties are deterministic: copies keep their input order", async () => {
  const d = 16;
  const base = clustered(6, d, 77);
  // Descriptor 0 appears four times (ids 10, 11, 12, 13 at scattered positions), 3 twice.
  const pick = [0, 1, 0, 2, 3, 0, 4, 3, 5, 0];
  const ids = [10, 20, 11, 30, 40, 12, 50, 41, 60, 13];
  const G = new Float32Array(pick.length * d);
  pick.forEach((p, j) => {
    G.set(base.subarray(p * d, p * d + d), j * d);
  });
  const q = clustered(1, d, 78);
  for (const gram of GRAMS) {
    const rr = await reranker({ M: 8, K: 3, beta: 0.15, gram });
    const first = await rr.rerank(q, { ids, descriptors: G });
    const again = await rr.rerank(q, { ids, descriptors: G });
    assert.deepEqual(first.ids, again.ids);
    assert.deepEqual(Array.from(first.ids), referenceRerank(q, G, ids, d, 8, 3, 0.15).ids);
    // Copies in the head (positions < 8) have equal r and keep their relative order.
    const r = first.refinedScores;
    assert.equal(r[0], r[2]);
    assert.equal(r[0], r[5]);
    assert.equal(r[4], r[7]);
    const out = Array.from(first.ids);
    assert.ok(out.indexOf(10) < out.indexOf(11) && out.indexOf(11) < out.indexOf(12));
    assert.ok(out.indexOf(40) < out.indexOf(41));
    assert.deepEqual(out.slice(8), [60, 13]); // the tail beyond M
  }
});

test("a batch of queries equals one call per query", async () => {
  const d = 32;
  const n = 120;
  const X = clustered(n, d, 5);
  const Q = clustered(4, d, 6);
  const rnd = lcg(9);
  const ranks = new Int32Array(4 * 90);
  for (let q = 0; q < 4; q++) {
    const perm = Array.from({ length: n }, (_, i) => i).sort(() => rnd() - 0.5);
    ranks.set(perm.slice(0, 90), q * 90);
  }
  const rr = await reranker({ M: 50, K: 9, beta: 0.2 });
  const batch = await rr.rerankRanks(
    { data: X, rows: n, cols: d },
    { data: Q, rows: 4, cols: d },
    { data: ranks, rows: 4, cols: 90 },
  );
  assert.equal(batch.cols, 90);
  assert.equal(batch.head, 50);
  for (let q = 0; q < 4; q++) {
    const ids = Array.from(ranks.subarray(q * 90, q * 90 + 90));
    const descriptors = new Float32Array(
      ids.flatMap((id) => Array.from(X.subarray(id * d, id * d + d))),
    );
    const one = await rr.rerank(Q.subarray(q * d, q * d + d), { ids, descriptors });
    assert.deepEqual(one.ids, batch.ranks.subarray(q * 90, q * 90 + 90));
    assert.deepEqual(one.refinedScores, batch.refinedScores.subarray(q * 50, q * 50 + 50));
  }
});

test("bad arguments are INVALID_ARGUMENT naming the input", async () => {
  const isInvalid = (name: RegExp) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && name.test(e.message);
  await assert.rejects(SuperGlobalReranker.create({ M: 0 }), isInvalid(/for M /));
  await assert.rejects(SuperGlobalReranker.create({ K: -1 }), isInvalid(/for K /));
  await assert.rejects(SuperGlobalReranker.create({ K: 1.5 }), isInvalid(/for K /));
  await assert.rejects(SuperGlobalReranker.create({ beta: Number.NaN }), isInvalid(/for beta /));
  await assert.rejects(SuperGlobalReranker.create({ beta: -0.1 }), isInvalid(/for beta /));
  await assert.rejects(
    SuperGlobalReranker.create({ gram: "gpu" as "onnx" }),
    isInvalid(/for gram /),
  );
  const rr = await reranker({});
  const q = new Float32Array(4);
  await assert.rejects(
    rr.rerank(q, { ids: [1, 2], descriptors: new Float32Array(6) }),
    isInvalid(/candidates\.descriptors has 6 values/),
  );
  await assert.rejects(
    rr.rerank(q, { ids: [1, 2.5], descriptors: new Float32Array(8) }),
    isInvalid(/candidates\.ids\[1\]/),
  );
  await assert.rejects(
    rr.rerank(new Float32Array(0), { ids: [], descriptors: new Float32Array(0) }),
    isInvalid(/for query /),
  );
  const db = { data: new Float32Array(12), rows: 3, cols: 4 };
  const queries = { data: new Float32Array(8), rows: 2, cols: 4 };
  await assert.rejects(
    rr.rerankRanks(
      db,
      { data: new Float32Array(6), rows: 2, cols: 3 },
      {
        data: new Int32Array(4),
        rows: 2,
        cols: 2,
      },
    ),
    isInvalid(/queries have 3 dimensions but db rows have 4/),
  );
  await assert.rejects(
    rr.rerankRanks(db, queries, { data: new Int32Array(3), rows: 1, cols: 3 }),
    isInvalid(/ranks has 1 rows but there are 2 queries/),
  );
  await assert.rejects(
    rr.rerankRanks(db, queries, { data: new Int32Array([0, 1, 2, 3]), rows: 2, cols: 2 }),
    isInvalid(/ranks\[1\]\[1\]/),
  );
});

test("candidates that are not finite are dropped with a note; a non-finite query is refused", async () => {
  const d = 16;
  const n = 30;
  const X = clustered(n, d, 31);
  const Q = clustered(2, d, 32);
  const bad = [3, 11, 20];
  X.fill(Number.NaN, 3 * d, 4 * d); // a failed image's row
  X[11 * d + 5] = Number.POSITIVE_INFINITY;
  X[20 * d] = Number.NaN;
  const rr = await reranker({ M: 12, K: 3, beta: 0.2 });
  const rnd = lcg(33);
  const ranks = new Int32Array(2 * 25);
  for (let q = 0; q < 2; q++) {
    const perm = Array.from({ length: n }, (_, i) => i).sort(() => rnd() - 0.5);
    // Query 0 meets all three bad rows in its 25; query 1 only those that fall there.
    const row = q === 0 ? [...bad, ...perm.filter((i) => !bad.includes(i))] : perm;
    ranks.set(row.slice(0, 25), q * 25);
  }
  const met = new Set([...ranks].filter((id) => bad.includes(id)));
  const perQuery = [0, 1].map(
    (q) => ranks.subarray(q * 25, q * 25 + 25).filter((id) => bad.includes(id)).length,
  );
  const cols = 25 - Math.max(...perQuery);
  const batch = await rr.rerankRanks(
    { data: X, rows: n, cols: d },
    { data: Q, rows: 2, cols: d },
    { data: ranks, rows: 2, cols: 25 },
  );
  assert.deepEqual(
    [...batch.dropped].sort((a, b) => a - b),
    [...met].sort((a, b) => a - b),
  );
  assert.equal(batch.cols, cols);
  assert.equal(batch.ranks.length, 2 * cols);
  assert.ok([...batch.ranks].every((id) => !bad.includes(id)));
  for (let q = 0; q < 2; q++) {
    // Each query is its finite candidates, reranked as if the bad ones had never been there.
    const finite = Array.from(ranks.subarray(q * 25, q * 25 + 25)).filter(
      (id) => !bad.includes(id),
    );
    const descriptors = new Float32Array(
      finite.flatMap((id) => Array.from(X.subarray(id * d, id * d + d))),
    );
    const one = await rr.rerank(Q.subarray(q * d, q * d + d), { ids: finite, descriptors });
    assert.deepEqual(batch.ranks.subarray(q * cols, (q + 1) * cols), one.ids.subarray(0, cols));
    // The one-query form drops them the same way, and says which.
    const all = Array.from(ranks.subarray(q * 25, q * 25 + 25));
    const allDescriptors = new Float32Array(
      all.flatMap((id) => Array.from(X.subarray(id * d, id * d + d))),
    );
    const dropped = await rr.rerank(Q.subarray(q * d, q * d + d), {
      ids: all,
      descriptors: allDescriptors,
    });
    assert.deepEqual(dropped.ids, one.ids);
    assert.deepEqual(
      [...(dropped.dropped ?? [])],
      all.filter((id) => bad.includes(id)),
    );
  }
  // A query that is not finite is an error naming it.
  const badQ = Float32Array.from(Q);
  badQ[d + 2] = Number.NaN;
  await assert.rejects(
    rr.rerankRanks(
      { data: X, rows: n, cols: d },
      { data: badQ, rows: 2, cols: d },
      { data: ranks, rows: 2, cols: 25 },
    ),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "INVALID_ARGUMENT" &&
      /queries row 1 /.test(e.message),
  );
  await assert.rejects(
    rr.rerank(badQ.subarray(d), { ids: [0, 1], descriptors: X.subarray(0, 2 * d) }),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && /query /.test(e.message),
  );
});
