import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { Float32Matrix } from "../src/core/matrix.ts";
import { argsortDesc, mergeTopK } from "../src/core/topk.ts";
import { SuperglobalError } from "../src/errors.ts";
import { bruteForceSearch } from "../src/search/brute-force.ts";
import { ExactSearch, type SearchResult } from "../src/search/exact-search.ts";

/** Deterministic pseudo-random numbers in [0, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function unitRows(rows: number, cols: number, seed: number): Float32Matrix {
  const rnd = lcg(seed);
  const data = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let norm = 0;
    for (let i = 0; i < cols; i++) {
      // Sum of uniforms: roughly Gaussian, so directions are spread evenly.
      const v = rnd() + rnd() + rnd() - 1.5;
      data[r * cols + i] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let i = 0; i < cols; i++) data[r * cols + i] = data[r * cols + i]! / norm;
  }
  return { data, rows, cols };
}

/** Small integers: every dot product is exact in float32 whatever the summation order. */
function integerRows(rows: number, cols: number, seed: number, levels = 5): Float32Matrix {
  const rnd = lcg(seed);
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(rnd() * levels) - (levels >> 1);
  return { data, rows, cols };
}

function exactScore(db: Float32Matrix, queries: Float32Matrix, q: number, id: number): number {
  let s = 0;
  for (let i = 0; i < db.cols; i++)
    s += queries.data[q * db.cols + i]! * db.data[id * db.cols + i]!;
  return s;
}

/**
 * Fast result vs oracle on float data: same scores within tol (float32 rounding) at every position, each returned
 * id really has (to tol) the score of its position, ids distinct; ids may differ only at
 * near-ties. Returns how many positions hold a different id.
 */
function assertMatchesOracle(
  got: SearchResult,
  want: SearchResult,
  db: Float32Matrix,
  queries: Float32Matrix,
  tol = 2e-6,
): number {
  assert.equal(got.k, want.k);
  assert.equal(got.ids.length, want.ids.length);
  let differing = 0;
  for (let q = 0; q < queries.rows; q++) {
    const seen = new Set<number>();
    for (let j = 0; j < got.k; j++) {
      const at = q * got.k + j;
      const id = got.ids[at]!;
      assert.ok(id >= 0 && id < db.rows, `id ${id} out of range`);
      assert.ok(!seen.has(id), `query ${q}: id ${id} twice`);
      seen.add(id);
      assert.ok(Math.abs(got.scores[at]! - want.scores[at]!) <= tol, `query ${q} position ${j}`);
      assert.ok(Math.abs(exactScore(db, queries, q, id) - want.scores[at]!) <= tol);
      if (id !== want.ids[at]) differing++;
    }
  }
  return differing;
}

let search: ExactSearch;
before(async () => {
  search = await ExactSearch.create();
});
after(async () => {
  await search.release();
});

test("float unit vectors: ORT search equals the float64 oracle up to near-ties", async () => {
  const cases = [
    { n: 1, d: 8, nq: 1, k: 1, chunk: 65536 },
    { n: 100, d: 16, nq: 1, k: 10, chunk: 65536 },
    { n: 1000, d: 64, nq: 13, k: 37, chunk: 300 },
    { n: 257, d: 32, nq: 5, k: 257, chunk: 64 },
    { n: 500, d: 128, nq: 3, k: 20, chunk: 7 },
    { n: 2000, d: 256, nq: 40, k: 2000, chunk: 512 },
  ];
  for (const [i, c] of cases.entries()) {
    const db = unitRows(c.n, c.d, 100 + i);
    const queries = unitRows(c.nq, c.d, 200 + i);
    const s = await ExactSearch.create({ chunkRows: c.chunk });
    try {
      const got = await s.search(db, queries, c.k);
      const want = bruteForceSearch(db, queries, c.k);
      const differing = assertMatchesOracle(got, want, db, queries);
      // Ids may differ only at float32 near-ties, which are rare in random data.
      assert.ok(differing <= Math.max(2, got.ids.length / 1000), `case ${i}: ${differing} differ`);
    } finally {
      await s.release();
    }
  }
});

test("exact-arithmetic data: ids and scores equal the oracle exactly, ties lower id first", async () => {
  // With 5 integer levels and d = 6 there are many exact ties, so this pins the tie rule down
  // through TopK, the block merges and the query blocks.
  const db = integerRows(600, 6, 1);
  const queries = integerRows(9, 6, 2);
  for (const chunk of [1, 7, 64, 599, 600, 65536]) {
    const s = await ExactSearch.create({ chunkRows: chunk });
    try {
      for (const k of [1, 5, 40, 599, 600]) {
        const got = await s.search(db, queries, k);
        const want = bruteForceSearch(db, queries, k);
        assert.deepEqual(got.ids, want.ids, `chunk ${chunk} k ${k}`);
        assert.deepEqual(got.scores, want.scores, `chunk ${chunk} k ${k}`);
        for (let q = 0; q < queries.rows; q++) {
          for (let j = 0; j + 1 < got.k; j++) {
            const a = q * got.k + j;
            assert.ok(
              got.scores[a]! > got.scores[a + 1]! ||
                (got.scores[a] === got.scores[a + 1] && got.ids[a]! < got.ids[a + 1]!),
            );
          }
        }
      }
    } finally {
      await s.release();
    }
  }
});

test("duplicate rows across block boundaries come out lower id first", async () => {
  // 10 distinct rows repeated: copies of a row land in different blocks of 7 rows.
  const base = integerRows(10, 12, 3, 9);
  const n = 95;
  const data = new Float32Array(n * 12);
  for (let r = 0; r < n; r++)
    data.set(base.data.subarray((r % 10) * 12, (r % 10) * 12 + 12), r * 12);
  const db = { data, rows: n, cols: 12 };
  const queries = integerRows(4, 12, 4, 9);
  const s = await ExactSearch.create({ chunkRows: 7 });
  try {
    const got = await s.search(db, queries, n);
    for (let q = 0; q < queries.rows; q++) {
      const position = new Map<number, number>();
      got.ids.subarray(q * n, q * n + n).forEach((id, j) => {
        position.set(id, j);
      });
      // Copies r, r+10, r+20, ... score exactly alike: they must come out in id order.
      for (let id = 10; id < n; id++) assert.ok(position.get(id - 10)! < position.get(id)!);
    }
    assert.deepEqual(got.ids, bruteForceSearch(db, queries, n).ids);
  } finally {
    await s.release();
  }
});

test("k larger than the database is clamped to a full ranking", async () => {
  const db = unitRows(50, 16, 5);
  const queries = unitRows(3, 16, 6);
  const got = await search.search(db, queries, 80);
  assert.equal(got.k, 50);
  assert.equal(got.ids.length, 150);
  for (let q = 0; q < 3; q++) {
    assert.deepEqual(
      [...got.ids.subarray(q * 50, q * 50 + 50)].sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i),
    );
  }
  assert.equal(bruteForceSearch(db, queries, 80).k, 50);
});

test("no queries or an empty database give empty results", async () => {
  const db = unitRows(10, 4, 7);
  const none = await search.search(db, { data: new Float32Array(0), rows: 0, cols: 4 }, 3);
  assert.equal(none.ids.length, 0);
  const empty = await search.search({ data: new Float32Array(0), rows: 0, cols: 4 }, db, 3);
  assert.equal(empty.k, 0);
  assert.equal(empty.ids.length, 0);
});

test("bad arguments are INVALID_ARGUMENT naming the input", async () => {
  const db = unitRows(10, 4, 8);
  const q3 = unitRows(2, 3, 9);
  const isInvalid = (name: RegExp) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && name.test(e.message);
  await assert.rejects(search.search(db, q3, 2), isInvalid(/queries have 3 .*db rows have 4/));
  assert.throws(() => bruteForceSearch(db, q3, 2), isInvalid(/queries have 3 .*db rows have 4/));
  await assert.rejects(search.search(db, unitRows(1, 4, 1), 0), isInvalid(/for k /));
  await assert.rejects(search.search(db, unitRows(1, 4, 1), 1.5), isInvalid(/for k /));
  await assert.rejects(
    search.search({ data: new Float32Array(7), rows: 2, cols: 4 }, unitRows(1, 4, 1), 1),
    isInvalid(/db\.data has 7 values/),
  );
  await assert.rejects(
    search.search(db, { data: [1, 2, 3, 4] as unknown as Float32Array, rows: 1, cols: 4 }, 1),
    isInvalid(/queries/),
  );
  await assert.rejects(ExactSearch.create({ chunkRows: 0 }), isInvalid(/chunkRows/));
  await assert.rejects(ExactSearch.create({ threads: 0 }), isInvalid(/threads/));
});

test("argsortDesc is stable and mergeTopK keeps the (score desc, id asc) order", () => {
  assert.deepEqual(Array.from(argsortDesc([0.5, 1, 0.5, 2, 1])), [3, 1, 4, 0, 2]);
  const ids = new Int32Array(4);
  const scores = new Float32Array(4);
  const count = mergeTopK(
    new Int32Array([4, 1, 9]),
    new Float32Array([3, 2, 2]),
    0,
    3,
    new Int32Array([0, 2, 7]),
    new Float32Array([2, 2, 1]),
    0,
    3,
    4,
    ids,
    scores,
    0,
  );
  assert.equal(count, 4);
  assert.deepEqual(Array.from(ids), [4, 0, 1, 2]);
  assert.deepEqual(Array.from(scores), [3, 2, 2, 2]);
});

/** `db` with rows `bad` spoiled: all NaN, or one NaN / +Inf / -Inf value. */
function spoil(db: Float32Matrix, bad: number[]): Float32Matrix {
  const data = Float32Array.from(db.data);
  const poison = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
  bad.forEach((r, i) => {
    if (i === 0) data.fill(Number.NaN, r * db.cols, (r + 1) * db.cols);
    else data[r * db.cols + (i % db.cols)] = poison[i % 3]!;
  });
  return { data, rows: db.rows, cols: db.cols };
}

test("rows that are not all finite are skipped, counted, and never returned", async () => {
  const clean = integerRows(40, 6, 11);
  const bad = [0, 7, 8, 13, 39];
  const db = spoil(clean, bad);
  const good = Array.from({ length: 40 }, (_, r) => r).filter((r) => !bad.includes(r));
  // The same search over the finite rows only, ids mapped back: what must come out.
  const finiteDb = {
    data: Float32Array.from(good.flatMap((r) => [...clean.data.subarray(r * 6, r * 6 + 6)])),
    rows: good.length,
    cols: 6,
  };
  const queries = integerRows(5, 6, 12);
  for (const chunk of [1, 4, 65536]) {
    const s = await ExactSearch.create({ chunkRows: chunk });
    try {
      for (const k of [1, 2, 10, 35, 40]) {
        const want = bruteForceSearch(finiteDb, queries, k);
        const wantIds = Int32Array.from(want.ids, (i) => good[i]!);
        for (const got of [await s.search(db, queries, k), bruteForceSearch(db, queries, k)]) {
          assert.equal(got.skipped, bad.length, `chunk ${chunk} k ${k}`);
          assert.equal(got.k, Math.min(k, good.length));
          assert.deepEqual(got.ids, wantIds, `chunk ${chunk} k ${k}`);
          assert.deepEqual(got.scores, want.scores);
          assert.ok(got.scores.every(Number.isFinite));
        }
      }
    } finally {
      await s.release();
    }
  }
  // The reported case: [bad, a, b], top 2 gives a and b.
  const three = spoil(unitRows(3, 4, 13), [0]);
  const top = await search.search(three, unitRows(1, 4, 14), 2);
  assert.deepEqual([...top.ids].sort(), [1, 2]);
  assert.equal(top.skipped, 1);
  // Nothing finite: nothing to return.
  const none = await search.search(spoil(unitRows(2, 4, 15), [0, 1]), unitRows(1, 4, 16), 2);
  assert.equal(none.k, 0);
  assert.equal(none.ids.length, 0);
  assert.equal(none.skipped, 2);
  assert.equal((await search.search(unitRows(3, 4, 17), unitRows(1, 4, 18), 2)).skipped, 0);
});

test("a query that is not finite is INVALID_ARGUMENT naming its row", async () => {
  const db = unitRows(10, 4, 19);
  const queries = spoil(unitRows(3, 4, 20), [2]);
  const named = (e: unknown) =>
    e instanceof SuperglobalError &&
    e.code === "INVALID_ARGUMENT" &&
    /queries row 2 /.test(e.message);
  await assert.rejects(search.search(db, queries, 3), named);
  assert.throws(() => bruteForceSearch(db, queries, 3), named);
});
