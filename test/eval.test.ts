/**
 * The revisitop evaluation: ground-truth reading (.pkl and .json), compute_map against the
 * official goldens, the spec's Appendix A vector, hand-made cases, an independent oracle on random
 * rankings, and the paper-style rounding.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import type { GroundTruth } from "../src/eval/ground-truth.ts";
import { readGroundTruth } from "../src/eval/ground-truth.ts";
import {
  formatPercent,
  formatRevisitopTable,
  npAround,
  revisitopJson,
} from "../src/eval/report.ts";
import type { Protocol } from "../src/eval/revisitop-map.ts";
import {
  computeMap,
  evaluateRevisitop,
  findRankingProblem,
  PROTOCOLS,
} from "../src/eval/revisitop-map.ts";
import { readMatrixI32 } from "../src/io/npy.ts";
import { mulberry32 as rng } from "./helpers/random.ts";
import { assetsDir, fixture, sharedOnly } from "./helpers/shared.ts";

const gndPath = (dataset: string, ext: "pkl" | "json") =>
  join(assetsDir, "revisitop-gnd", `gnd_${dataset}.${ext}`);

interface GoldenProtocol {
  mAP: number;
  "mP@[1,5,10]": number[];
  per_query_ap: (number | null)[];
}
interface GoldenMap {
  dataset: string;
  ranks: { file: string; shape: number[] };
  expected: Record<Protocol, GoldenProtocol>;
}

/** The manifest's revisitop_map goldens. The file holds bare NaN (Python's json), read as null. */
function goldens(): GoldenMap[] {
  const text = readFileSync(fixture("manifest.json"), "utf8");
  return JSON.parse(text.replace(/(?<=[[:,]\s*)NaN(?=\s*[,\]}])/g, "null")).revisitop_map;
}

function tmp(name: string, content: string | Uint8Array): string {
  const dir = mkdtempSync(join(tmpdir(), "sg-eval-"));
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

function assertClose(actual: number, expected: number, tol: number, what: string): void {
  if (Number.isNaN(expected)) {
    assert.ok(Number.isNaN(actual), `${what}: expected NaN, got ${actual}`);
    return;
  }
  assert.ok(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected}`);
}

// ---------------------------------------------------------------- ground truth

test(
  "readGroundTruth: .pkl and .json give the same ground truth, with the documented sizes",
  sharedOnly,
  () => {
    const sizes = {
      roxford5k: { db: 4993, easy: 3029, hard: 2497, junk: 1356 },
      rparis6k: { db: 6322, easy: 6874, hard: 10350, junk: 7153 },
    };
    for (const [dataset, want] of Object.entries(sizes)) {
      const pkl = readGroundTruth(gndPath(dataset, "pkl"));
      const json = readGroundTruth(gndPath(dataset, "json"));
      assert.deepEqual(pkl, json, dataset);
      assert.equal(pkl.dataset, dataset);
      assert.equal(pkl.imlist.length, want.db);
      assert.equal(pkl.qimlist.length, 70);
      assert.equal(pkl.gnd.length, 70);
      const sum = (key: "easy" | "hard" | "junk") => pkl.gnd.reduce((s, g) => s + g[key].length, 0);
      assert.deepEqual(
        { db: pkl.imlist.length, easy: sum("easy"), hard: sum("hard"), junk: sum("junk") },
        want,
      );
      for (const g of pkl.gnd) assert.equal(g.bbx.length, 4);
    }
    const ox = readGroundTruth(gndPath("roxford5k", "pkl"));
    assert.deepEqual(ox.gnd[0]!.bbx, [136.5, 34.1, 648.5, 955.7]);
    assert.equal(ox.imlist[0], "ashmolean_000283");
  },
);

test("readGroundTruth: malformed files are BAD_FILE naming the file, missing ones NOT_FOUND", () => {
  const good = {
    imlist: ["a", "b", "c"],
    qimlist: ["q"],
    gnd: [{ bbx: [0, 0, 5, 5], easy: [0], hard: [2], junk: [1] }],
  };
  const ok = readGroundTruth(tmp("gnd_tiny.json", JSON.stringify(good)));
  assert.equal(ok.dataset, "tiny");
  assert.deepEqual(ok.gnd[0]!.hard, [2]);

  const cases: Array<[string, unknown, RegExp]> = [
    [
      "out-of-range id",
      { ...good, gnd: [{ ...good.gnd[0], junk: [3] }] },
      /gnd\[0\]\.junk\[0\] = 3/,
    ],
    ["non-integer id", { ...good, gnd: [{ ...good.gnd[0], easy: [1.5] }] }, /gnd\[0\]\.easy\[0\]/],
    ["3-number bbx", { ...good, gnd: [{ ...good.gnd[0], bbx: [0, 0, 5] }] }, /bbx/],
    ["missing hard", { ...good, gnd: [{ bbx: [0, 0, 5, 5], easy: [0], junk: [1] }] }, /hard/],
    ["gnd/qimlist mismatch", { ...good, qimlist: ["q", "r"] }, /2 queries/],
    ["no imlist", { qimlist: good.qimlist, gnd: good.gnd }, /imlist/],
    ["not a dict", [1, 2], /top level/],
  ];
  for (const [what, content, message] of cases) {
    const path = tmp("gnd_bad.json", JSON.stringify(content));
    assert.throws(
      () => readGroundTruth(path),
      (e: unknown) =>
        e instanceof SuperglobalError &&
        e.code === "BAD_FILE" &&
        e.message.includes(path) &&
        message.test(e.message),
      what,
    );
  }
  for (const bytes of ["{ not json", "\x80\x03garbage"]) {
    const path = tmp("gnd_broken.pkl", Buffer.from(bytes, "latin1"));
    assert.throws(
      () => readGroundTruth(path),
      (e: unknown) =>
        e instanceof SuperglobalError && e.code === "BAD_FILE" && e.message.includes(path),
    );
  }
  assert.throws(
    () => readGroundTruth("/nonexistent/gnd_x.pkl"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "NOT_FOUND" &&
      e.message.includes("/nonexistent/gnd_x.pkl"),
  );
});

// ---------------------------------------------------------------- official goldens

test(
  "evaluateRevisitop equals the official compute_map on the goldens (.pkl and .json)",
  sharedOnly,
  () => {
    let worst = 0;
    for (const golden of goldens()) {
      const { rows, cols, data } = readMatrixI32(fixture(golden.ranks.file));
      assert.deepEqual([rows, cols], golden.ranks.shape);
      for (const ext of ["pkl", "json"] as const) {
        const gt = readGroundTruth(gndPath(golden.dataset, ext));
        const results = evaluateRevisitop(data, rows, cols, gt);
        for (const p of PROTOCOLS) {
          const want = golden.expected[p];
          const got = results[p];
          const at = `${golden.dataset}.${ext} ${p}`;
          worst = Math.max(worst, Math.abs(got.map - want.mAP));
          assertClose(got.map, want.mAP, 1e-12, `${at} mAP`);
          [1, 5, 10].forEach((k, j) => {
            worst = Math.max(worst, Math.abs(got.mp[k]! - want["mP@[1,5,10]"][j]!));
            assertClose(got.mp[k]!, want["mP@[1,5,10]"][j]!, 1e-12, `${at} mP@${k}`);
          });
          assert.equal(got.perQueryAp.length, 70);
          want.per_query_ap.forEach((ap, q) => {
            assertClose(got.perQueryAp[q]!, ap ?? Number.NaN, 1e-12, `${at} AP[${q}]`);
          });
        }
      }
    }
    // Same operations in the same order as the official code: expected to agree to the last bit.
    assert.ok(worst <= 1e-15, `largest difference ${worst}`);
  },
);

// ---------------------------------------------------------------- small exact cases

const one = (ranks: number[], ok: number[], junk: number[], kappas = [1, 5, 10]) =>
  computeMap(Int32Array.from(ranks), 1, ranks.length, [ok], [junk], kappas);

test("computeMap: the spec's Appendix A vector", () => {
  const r = one([3, 1, 4, 0, 2, 5], [1, 2], [4]);
  assert.equal(r.map, 0.3333333333333333);
  assert.deepEqual(r.mpAtK, [0.0, 0.5, 0.5]);
  assert.deepEqual(r.perQueryAp, [0.3333333333333333]);
});

test("computeMap: hand-made cases", () => {
  // Positive at rank 0 only; mP@5 is 1 by the kq = min(last positive, k) quirk.
  let r = one([5, 0, 1, 2, 3, 4], [5], []);
  assert.equal(r.map, 1);
  assert.deepEqual(r.mpAtK, [1, 1, 1]);
  // Junk before the positives shifts them up: positions 1, 3 become 0, 2.
  r = one([0, 1, 2, 3], [1, 3], [0]);
  assert.equal(r.map, 0.5 + (1 / 2 + 2 / 3) / 4);
  assert.deepEqual(r.mpAtK, [1, 2 / 3, 2 / 3]);
  // Junk only after the positives changes nothing.
  r = one([1, 3, 0, 2], [1, 3], [0, 2]);
  assert.equal(r.map, 1);
  assert.deepEqual(r.mpAtK, [1, 1, 1]);
  // All positives at the end of the ranking.
  r = one([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 7, 8], []);
  assert.ok(Math.abs(r.map - (0 + 1 / 8 + 1 / 8 + 2 / 9 + 2 / 9 + 3 / 10) / 6) < 1e-16);
  assert.deepEqual(r.mpAtK, [0, 0, 0.3]);
  // Three positives in the top 3: mP@10 = 3/3, not 3/10 (the quirk).
  r = one([4, 2, 0, 1, 3, 5, 6, 7, 8, 9, 10, 11], [0, 2, 4], [], [10]);
  assert.deepEqual(r.mpAtK, [1]);
  // A query without positives is NaN and left out of the means.
  r = computeMap(Int32Array.from([0, 1, 2, 2, 1, 0]), 2, 3, [[0], []], [[], [1]]);
  assert.equal(r.map, 1);
  assert.deepEqual(r.mpAtK, [1, 1, 1]);
  assert.ok(Number.isNaN(r.perQueryAp[1]!));
  assert.ok(r.perQueryPrecision[1]!.every(Number.isNaN));
  // Every query excluded: NaN means (the official code divides by zero).
  r = computeMap(Int32Array.from([0, 1]), 1, 2, [[]], [[]]);
  assert.ok(Number.isNaN(r.map) && r.mpAtK.every(Number.isNaN));
  // Truncated ranking: positives outside it are not found but still count in |ok|.
  r = one([1, 5], [1, 2, 3], []);
  assert.equal(r.map, 1 / 3);
  // ...and a truncated row without any positive: AP 0, precision 0 (the official code fails).
  r = one([5, 6], [1, 2], []);
  assert.equal(r.map, 0);
  assert.deepEqual(r.mpAtK, [0, 0, 0]);
  // Ids past the dataset (distractors) and negative ids are negatives.
  r = one([7, 1, -1, 0], [0, 1], []);
  assert.ok(Math.abs(r.map - (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4) < 1e-16);
});

test("computeMap: rejects inconsistent arguments", () => {
  const ranks = Int32Array.from([0, 1, 2, 3]);
  assert.throws(() => computeMap(ranks, 2, 3, [[0], [1]], [[], []]), /ranks/);
  assert.throws(() => computeMap(ranks, 2, 2, [[0]], [[], []]), /positives/);
  assert.throws(() => computeMap(ranks, 2, 2, [[0], [1]], [[]]), /junk/);
  assert.throws(() => computeMap(ranks, 2, 2, [[0], [-1]], [[], []]), /positives\[1\]\[0\]/);
  assert.throws(() => computeMap(ranks, 2, 2, [[0], [1]], [[], []], [0]), /kappas\[0\]/);
});

// ---------------------------------------------------------------- independent oracle

/** Straight transcription of the protocol's math (spec §6.3), O(N·|ok|), no shared code. */
function oracle(row: number[], ok: number[], junk: number[], kappas: number[]) {
  if (ok.length === 0) return { ap: Number.NaN, prs: kappas.map(() => Number.NaN) };
  const positions = row.map((id, r) => (ok.includes(id) ? r : -1)).filter((r) => r >= 0);
  const junkPositions = row.map((id, r) => (junk.includes(id) ? r : -1)).filter((r) => r >= 0);
  const pos = positions.map((p) => p - junkPositions.filter((j) => j < p).length);
  let ap = 0;
  pos.forEach((rank, j) => {
    const p0 = rank === 0 ? 1 : j / rank;
    const p1 = (j + 1) / (rank + 1);
    ap += (p0 + p1) / (2 * ok.length);
  });
  const prs = kappas.map((k) => {
    if (pos.length === 0) return 0;
    const kq = Math.min(Math.max(...pos.map((p) => p + 1)), k);
    return pos.filter((p) => p + 1 <= kq).length / kq;
  });
  return { ap, prs };
}

test("computeMap equals an independent oracle on random rankings", () => {
  const rand = rng(12345);
  const int = (n: number) => Math.floor(rand() * n);
  let checked = 0;
  for (let trial = 0; trial < 60; trial++) {
    const dbSize = 5 + int(60);
    const distractors = trial % 3 === 0 ? int(40) : 0;
    const truncated = trial % 5 === 4;
    const total = dbSize + distractors;
    const nq = 1 + int(6);
    const kappas = [1, 1 + int(5), 1 + int(20)];
    const n = truncated ? 1 + int(total) : total;
    const ranks = new Int32Array(nq * n);
    const positives: number[][] = [];
    const junk: number[][] = [];
    for (let q = 0; q < nq; q++) {
      const perm = Array.from({ length: total }, (_, i) => i);
      for (let i = total - 1; i > 0; i--) {
        const j = int(i + 1);
        [perm[i], perm[j]] = [perm[j]!, perm[i]!];
      }
      ranks.set(perm.slice(0, n), q * n);
      // Ground-truth ids are dataset ids; lists may be empty and, rarely, overlap.
      const ids = perm.filter((id) => id < dbSize);
      const nOk = q === 0 && trial % 4 === 0 ? 0 : int(Math.min(12, dbSize));
      const nJunk = int(Math.min(8, dbSize - nOk) + 1);
      positives.push(ids.slice(0, nOk));
      junk.push(ids.slice(nOk, nOk + nJunk).concat(trial % 7 === 0 ? ids.slice(0, 1) : []));
    }
    const got = computeMap(ranks, nq, n, positives, junk, kappas);
    let apSum = 0;
    const prSum = kappas.map(() => 0);
    let counted = 0;
    for (let q = 0; q < nq; q++) {
      const want = oracle(
        Array.from(ranks.subarray(q * n, q * n + n)),
        positives[q]!,
        junk[q]!,
        kappas,
      );
      assertClose(got.perQueryAp[q]!, want.ap, 1e-12, `trial ${trial} q${q} AP`);
      want.prs.forEach((p, j) => {
        assertClose(got.perQueryPrecision[q]![j]!, p, 0, `trial ${trial} q${q} P@${kappas[j]}`);
      });
      if (!Number.isNaN(want.ap)) {
        apSum += want.ap;
        want.prs.forEach((p, j) => {
          prSum[j]! += p;
        });
        counted++;
      }
      checked++;
    }
    assertClose(got.map, counted ? apSum / counted : Number.NaN, 1e-12, `trial ${trial} mAP`);
    prSum.forEach((s, j) => {
      assertClose(got.mpAtK[j]!, counted ? s / counted : Number.NaN, 1e-12, `trial ${trial} mP`);
    });
  }
  assert.ok(checked > 150);
});

// ---------------------------------------------------------------- evaluateRevisitop

const tinyGt = (): GroundTruth => ({
  imlist: ["a", "b", "c", "d"],
  qimlist: ["q0", "q1"],
  gnd: [
    { bbx: [0, 0, 1, 1], easy: [0], hard: [2], junk: [3] },
    { bbx: [0, 0, 1, 1], easy: [], hard: [1, 3], junk: [] },
  ],
});

test("evaluateRevisitop: the three setups, with distractors past the dataset", () => {
  // Query 0 ranks: 5(distractor) 3(junk) 2(hard) 0(easy) 4 1; query 1: 1 0 5 2 4 3.
  const ranks = Int32Array.from([5, 3, 2, 0, 4, 1, 1, 0, 5, 2, 4, 3]);
  const r = evaluateRevisitop(ranks, 2, 6, tinyGt());
  // Easy, q0: ok {0}, junk {3, 2}: position 3 → 1. q1 has no easy positives: excluded.
  assert.equal(r.easy.map, (0 + 1 / 2) / 2);
  assert.ok(Number.isNaN(r.easy.perQueryAp[1]!));
  assert.deepEqual(r.easy.mp, { 1: 0, 5: 1 / 2, 10: 1 / 2 });
  // Medium, q0: ok {0, 2}, junk {3}: positions 2, 3 → 1, 2. q1: ok {1, 3} at 0 and 5.
  const m0 = (0 + 1 / 2) / 4 + (1 / 2 + 2 / 3) / 4;
  const m1 = (1 + 1) / 4 + (1 / 5 + 2 / 6) / 4;
  assert.equal(r.medium.map, (m0 + m1) / 2);
  assert.deepEqual(r.medium.perQueryAp, [m0, m1]);
  // Hard, q0: ok {2}, junk {3, 0}: position 2 → 1.
  assert.equal(r.hard.perQueryAp[0], (0 + 1 / 2) / 2);
  assert.equal(r.hard.perQueryAp[1], m1);
});

test("evaluateRevisitop / findRankingProblem: rejects what is not a ranking of the dataset", () => {
  const gt = tinyGt();
  const check = (ranks: number[], nq: number, n: number) =>
    findRankingProblem(Int32Array.from(ranks), nq, n, gt);
  assert.equal(check([0, 1, 2, 3, 3, 2, 1, 0], 2, 4), undefined);
  assert.equal(check([9, 1, 0, 7], 2, 2), undefined); // top-2, distractor ids allowed
  assert.match(check([0, 1, 2, 3], 1, 4)!, /1 rows.*2 queries/);
  assert.match(check([0, 1, 2, 3, 3, 2, 1, -1], 2, 4)!, /row 1, rank 3 .*negative/);
  assert.match(check([1, 2, 3, 4, 0, 1, 2, 3], 2, 4)!, /row 0, rank 3 holds id 4/);
  assert.match(check([0, 1, 2, 3, 3, 3, 1, 0], 2, 4)!, /row 1 holds id 3 twice/);
  assert.match(check([5, 5, 0, 1], 2, 2)!, /row 0 holds id 5 twice/);
  assert.throws(
    () => evaluateRevisitop(Int32Array.from([0, 1, 2, 3]), 1, 4, gt),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && /^ranks:/.test(e.message),
  );
});

// ---------------------------------------------------------------- report

test("npAround / formatPercent: numpy's np.around (half to even after ×100)", () => {
  // Values checked with numpy 2.4: np.around(x, 2) and np.around(f * 100, 2).
  assert.equal(npAround(0.125, 2), 0.12);
  assert.equal(npAround(0.375, 2), 0.38);
  assert.equal(npAround(12.5, 0), 12);
  assert.equal(npAround(13.5, 0), 14);
  assert.equal(formatPercent(0.00125), "0.12"); // toFixed would say 0.13
  assert.equal(formatPercent(0.00005), "0.00"); // Math.round would say 0.01
  assert.equal(formatPercent(0.0000625), "0.01");
  assert.equal(formatPercent(0.1235), "12.35");
  assert.equal(formatPercent(0.4405740297529396), "44.06");
  assert.equal(formatPercent(0.9999999), "100.00");
  assert.equal(formatPercent(0.9), "90.00");
  assert.equal(formatPercent(Number.NaN), "nan");
});

test("formatRevisitopTable / revisitopJson", () => {
  const results = {
    easy: {
      map: 0.4405740297529396,
      mp: { 1: 0.8676470588235294, 5: 0.744, 10: 0.6485 },
      perQueryAp: [1, Number.NaN],
    },
    medium: { map: 0.9, mp: { 1: 1, 5: 0.5, 10: 0.25 }, perQueryAp: [1, 1] },
    hard: {
      map: Number.NaN,
      mp: { 1: Number.NaN, 5: Number.NaN, 10: Number.NaN },
      perQueryAp: [Number.NaN, Number.NaN],
    },
  };
  const table = formatRevisitopTable(results);
  assert.equal(
    table,
    [
      "          mAP    mP@1   mP@5  mP@10",
      "Easy    44.06   86.76  74.40  64.85",
      "Medium  90.00  100.00  50.00  25.00",
      "Hard      nan     nan    nan    nan",
      "mAP E/M/H: 44.06 / 90.00 / nan",
      "queries without positives (excluded, as in revisitop): Easy 1, Hard 2",
      "",
    ].join("\n"),
  );
  const json = JSON.parse(JSON.stringify(revisitopJson(results)));
  assert.deepEqual(json, {
    easy: { map: 0.4405740297529396, mp: { "1": 0.8676470588235294, "5": 0.744, "10": 0.6485 } },
    medium: { map: 0.9, mp: { "1": 1, "5": 0.5, "10": 0.25 } },
    hard: { map: null, mp: { "1": null, "5": null, "10": null } },
  });
});
