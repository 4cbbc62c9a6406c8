/**
 * The whole revisitop protocol end to end on a tiny dataset in the official layout, built from
 * fixture photos and the fixture checkpoint: the CLI's numbers must equal those computed from the
 * library pieces (each tested against the goldens elsewhere), and a killed run must resume.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, test } from "node:test";
import sharp from "sharp";
import { DESCRIPTOR_DIM, Extractor } from "../src/descriptor/extractor.ts";
import { type GroundTruth, readGroundTruth } from "../src/eval/ground-truth.ts";
import { runRevisitop } from "../src/eval/protocol.ts";
import { revisitopJson } from "../src/eval/report.ts";
import { evaluateRevisitop } from "../src/eval/revisitop-map.ts";
import { writeNpy } from "../src/io/npy.ts";
import { SuperGlobalReranker } from "../src/rerank/superglobal-rerank.ts";
import { bruteForceSearch } from "../src/search/brute-force.ts";
import { assetsDir, fixture, sharedOnly } from "./helpers/shared.ts";

const photos = join(assetsDir, "debian-photos");
// Database: 10 photos; queries: the other half of two real same-scene pairs, cropped to a box.
const dbFiles = [
  "opencv-pairs/graf1.jpg",
  "opencv-pairs/leuvenA.jpg",
  "opencv-pairs/box.jpg",
  "opencv-pairs/aero1.jpg",
  "mate/Aqua.jpg",
  "mate/Dune.jpg",
  "plasma/Path.jpg",
  "darknet/dog.jpg",
  "darknet/kite.jpg",
  "lomiri/Wine_by_Jakkub_Mede.jpg",
];
const queryFiles = ["opencv-pairs/graf3.jpg", "opencv-pairs/box_in_scene.jpg"];
const gnd = {
  imlist: dbFiles.map((f) => f.replace(/[/.]/g, "_")),
  qimlist: queryFiles.map((f) => f.replace(/[/.]/g, "_")),
  gnd: [
    { bbx: [10.7, 5.2, 150.9, 110.3], easy: [0], hard: [], junk: [3] },
    { bbx: [20.2, 12.8, 140.6, 100.1], easy: [], hard: [2], junk: [] },
  ],
};

let dataDir = "";
const cli = join(import.meta.dirname, "..", "src", "cli", "main.ts");
const args = () => [
  "eval",
  "--dataset",
  "roxford5k",
  "--data-dir",
  dataDir,
  "--checkpoint",
  fixture("cvnet_r50_random.pyth"),
  "--json",
  "--threads",
  "2",
];

before(async () => {
  if (!existsSync(photos)) return;
  dataDir = mkdtempSync(join(tmpdir(), "sg-eval-"));
  const jpg = join(dataDir, "roxford5k", "jpg");
  mkdirSync(jpg, { recursive: true });
  // Small copies (longer side 160) keep the run short; the pipeline is the same at any size.
  for (const [i, f] of [...dbFiles, ...queryFiles].entries()) {
    const name = i < dbFiles.length ? gnd.imlist[i]! : gnd.qimlist[i - dbFiles.length]!;
    await sharp(join(photos, f))
      .resize(160, 160, { fit: "inside" })
      .jpeg({ quality: 90 })
      .toFile(join(jpg, `${name}.jpg`));
  }
  writeFileSync(join(dataDir, "roxford5k", "gnd_roxford5k.json"), JSON.stringify(gnd));
});

type Matrix = { data: Float32Array; rows: number; cols: number };

/** The protocol's ranking, reranking and evaluation from the library pieces (the oracle). */
async function protocolByHand(db: Matrix, queries: Matrix, gt: GroundTruth) {
  const ranks = bruteForceSearch(db, queries, db.rows).ids;
  const reranker = await SuperGlobalReranker.create();
  const reranked = await reranker.rerankRanks(db, queries, {
    data: ranks,
    rows: queries.rows,
    cols: db.rows,
  });
  await reranker.release();
  return {
    global: revisitopJson(evaluateRevisitop(ranks, queries.rows, db.rows, gt)),
    rerank: revisitopJson(evaluateRevisitop(reranked.ranks, queries.rows, db.rows, gt)),
  };
}

function runCli(): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", cli, ...args()], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test(
  "eval --dataset: the table equals the library pieces run by hand; a rerun uses the cache",
  sharedOnly,
  async () => {
    const first = runCli();
    assert.equal(first.status, 0, first.stderr);
    const got = JSON.parse(first.stdout.trim());

    // The same protocol from the library pieces.
    const extractor = await Extractor.create({
      checkpoint: fixture("cvnet_r50_random.pyth"),
      threads: 2,
    });
    const gt = readGroundTruth(join(dataDir, "roxford5k", "gnd_roxford5k.json"));
    const jpg = (name: string) => join(dataDir, "roxford5k", "jpg", `${name}.jpg`);
    const X = new Float32Array(gt.imlist.length * DESCRIPTOR_DIM);
    for (const [i, name] of gt.imlist.entries())
      X.set(await extractor.extract(jpg(name)), i * DESCRIPTOR_DIM);
    const Q = new Float32Array(gt.qimlist.length * DESCRIPTOR_DIM);
    for (const [i, name] of gt.qimlist.entries()) {
      Q.set(await extractor.extract(jpg(name), { bbox: gt.gnd[i]!.bbx }), i * DESCRIPTOR_DIM);
    }
    await extractor.release();
    const db = { data: X, rows: gt.imlist.length, cols: DESCRIPTOR_DIM };
    const queries = { data: Q, rows: gt.qimlist.length, cols: DESCRIPTOR_DIM };
    const expected = await protocolByHand(db, queries, gt);
    assert.deepEqual(got.global, expected.global);
    assert.deepEqual(got.rerank, expected.rerank);
    assert.equal(got.dataset, "roxford5k");

    // +distractors: rows from two files (float32 and float64) appended after the dataset, in order.
    const extra = [
      Float32Array.from({ length: 3 * DESCRIPTOR_DIM }, (_, i) => Math.sin(i * 0.37)),
      Float64Array.from({ length: 2 * DESCRIPTOR_DIM }, (_, i) => Math.cos(i * 0.11)),
    ];
    const files = extra.map((m, i) => {
      const path = join(dataDir, `distractors${i}.npy`);
      writeNpy(path, m, [m.length / DESCRIPTOR_DIM, DESCRIPTOR_DIM]);
      return path;
    });
    const Xd = new Float32Array(X.length + 5 * DESCRIPTOR_DIM);
    Xd.set(X);
    Xd.set(extra[0]!, X.length);
    Xd.set(extra[1]!, X.length + 3 * DESCRIPTOR_DIM);
    const dbd = { data: Xd, rows: db.rows + 5, cols: DESCRIPTOR_DIM };
    const expectedD = await protocolByHand(dbd, queries, gt);
    const withD = spawnSync(
      process.execPath,
      ["--import", "tsx", cli, ...args(), "--distractors", ...files],
      {
        encoding: "utf8",
      },
    );
    assert.equal(withD.status, 0, withD.stderr);
    const gotD = JSON.parse(withD.stdout.trim());
    assert.equal(gotD.distractors, 5);
    assert.deepEqual(gotD.global, expectedD.global);
    assert.deepEqual(gotD.rerank, expectedD.rerank);

    // Everything is cached: the second run extracts nothing and prints the same.
    const keys = readFileSync(join(dataDir, "roxford5k", "superglobal-cache", "keys.txt"), "utf8")
      .trim()
      .split("\n");
    assert.equal(keys.length, gt.imlist.length + gt.qimlist.length);
    const second = runCli();
    assert.equal(second.status, 0, second.stderr);
    assert.deepEqual(JSON.parse(second.stdout.trim()), got);
  },
);

test("eval --dataset: a killed run resumes and gives the same numbers", sharedOnly, async () => {
  const reference = runCli(); // fills the default cache (or reuses it)
  assert.equal(reference.status, 0, reference.stderr);
  const cacheDir = mkdtempSync(join(tmpdir(), "sg-eval-cache-"));
  const keysFile = join(cacheDir, "keys.txt");
  const child = spawn(
    process.execPath,
    ["--import", "tsx", cli, ...args(), "--cache-dir", cacheDir],
    { stdio: "ignore" },
  );
  // Kill it once a few descriptors are on disk, mid-run.
  const killedAt = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      const n = existsSync(keysFile) ? readFileSync(keysFile, "utf8").split("\n").length - 1 : 0;
      if (n >= 3) {
        child.kill("SIGKILL");
        clearInterval(timer);
        resolve(n);
      }
    }, 20);
    child.on("exit", () => {
      clearInterval(timer);
      reject(new Error("the run finished before it could be killed"));
    });
  });
  assert.ok(killedAt < 12, `killed after ${killedAt} descriptors`);
  const resumed = spawnSync(
    process.execPath,
    ["--import", "tsx", cli, ...args(), "--cache-dir", cacheDir],
    { encoding: "utf8" },
  );
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.deepEqual(JSON.parse(resumed.stdout), JSON.parse(reference.stdout));
  const keys = readFileSync(keysFile, "utf8").trim().split("\n");
  assert.equal(new Set(keys).size, keys.length, "no descriptor is stored twice");
  assert.equal(keys.length, 12);
});

test(
  "eval --dataset: a corrupt image is named, the rest is evaluated, exit code 1",
  sharedOnly,
  () => {
    const broken = mkdtempSync(join(tmpdir(), "sg-eval-broken-"));
    const jpg = join(broken, "roxford5k", "jpg");
    mkdirSync(jpg, { recursive: true });
    for (const name of [...gnd.imlist, ...gnd.qimlist]) {
      writeFileSync(
        join(jpg, `${name}.jpg`),
        readFileSync(join(dataDir, "roxford5k", "jpg", `${name}.jpg`)),
      );
    }
    const bad = join(jpg, `${gnd.imlist[5]}.jpg`);
    writeFileSync(bad, "not a jpeg");
    writeFileSync(join(broken, "roxford5k", "gnd_roxford5k.json"), JSON.stringify(gnd));
    const r = spawnSync(
      process.execPath,
      [
        "--import",
        "tsx",
        cli,
        "eval",
        "--dataset",
        "roxford5k",
        "--data-dir",
        broken,
        "--checkpoint",
        fixture("cvnet_r50_random.pyth"),
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 1);
    assert.ok(r.stderr.includes(bad), r.stderr);
    assert.match(r.stdout, /SuperGlobal \(\+rerank\)/);
  },
);

test("eval --dataset: a missing ground truth file is a clear error", () => {
  const empty = mkdtempSync(join(tmpdir(), "sg-eval-empty-"));
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      cli,
      "eval",
      "--dataset",
      "rparis6k",
      "--data-dir",
      empty,
      "--checkpoint",
      "x.pyth",
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 1);
  assert.match(r.stderr, /gnd_rparis6k/);
});

test(
  "runRevisitop: progress reports every image once, in order, up to the total",
  sharedOnly,
  async () => {
    const extractor = await Extractor.create({
      checkpoint: fixture("cvnet_r50_random.pyth"),
      threads: 2,
    });
    const seen: Array<[number, number, string]> = [];
    try {
      const result = await runRevisitop({
        dataset: "roxford5k",
        dataDir,
        extractor,
        onProgress: (done, total, name) => seen.push([done, total, name]),
      });
      assert.equal(result.failures.length, 0);
      assert.equal(result.queries, gnd.qimlist.length);
      assert.equal(result.database, gnd.imlist.length);
    } finally {
      await extractor.release();
    }
    const total = gnd.qimlist.length + gnd.imlist.length;
    assert.equal(seen.length, total);
    seen.forEach(([done, t], i) => {
      assert.equal(done, i + 1);
      assert.equal(t, total);
    });
    assert.deepEqual(
      seen.map(([, , name]) => name),
      [...gnd.qimlist, ...gnd.imlist],
    );
  },
);
