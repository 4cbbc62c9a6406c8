/**
 * `npm run bench -- rerank [--queries 70] [--db 5000] [--dim 2048] [--clusters 300] [--M 400]
 *   [--K 9] [--beta 0.15] [--threads 2] [--repeat 3] [--official DIR]`
 * SuperGlobal reranking (MDescAug + RerankwMDA) of full initial rankings [nq, N], ours against the
 * official PyTorch modules (CPU, same threads) on the same X, Q and ranks in the same run.
 * Data: clustered unit-norm float32 vectors (coarse groups of fine clusters, so a query's top 400
 * holds its own cluster, then its group, then unrelated rows), ranked by our ExactSearch.
 * Each side reranks in its own process, so each peak RSS counts loading the data and reranking.
 * The official code's folder comes from --official or $SUPERGLOBAL_OFFICIAL_DIR.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readMatrixF32, readMatrixI32, writeNpy } from "../src/io/npy.ts";
import { OnnxGram } from "../src/rerank/gram.ts";
import { SuperGlobalReranker } from "../src/rerank/superglobal-rerank.ts";
import { ExactSearch } from "../src/search/exact-search.ts";
import {
  contention,
  cpuTimes,
  machine,
  median,
  normalizeRow,
  ownCpuSeconds,
  peakRssMiB,
  python,
  SeededRandom,
  saveResult,
} from "./machine.ts";

const here = import.meta.dirname;

interface Settings {
  M: number;
  K: number;
  beta: number;
  threads: number;
  repeat: number;
}

/** What one side reports about its reranking runs. */
interface SideReport {
  runs_ms: number[];
  nq: number;
  peak_rss_mb: number;
  /** Peak RSS once the data was loaded, before reranking. */
  loaded_rss_mb: number;
  /** CPU seconds the process used (all threads). */
  cpu_s: number;
  [key: string]: unknown;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      queries: { type: "string", default: "70" },
      db: { type: "string", default: "5000" },
      dim: { type: "string", default: "2048" },
      clusters: { type: "string", default: "300" },
      M: { type: "string", default: "400" },
      K: { type: "string", default: "9" },
      beta: { type: "string", default: "0.15" },
      threads: { type: "string", default: "2" },
      repeat: { type: "string", default: "3" },
      seed: { type: "string", default: "7" },
      official: { type: "string", default: process.env["SUPERGLOBAL_OFFICIAL_DIR"] ?? "" },
      worker: { type: "boolean", default: false },
    },
  });
  const settings: Settings = {
    M: Number(values.M),
    K: Number(values.K),
    beta: Number(values.beta),
    threads: Number(values.threads),
    repeat: Number(values.repeat),
  };
  const dir = workDir();
  const files = {
    db: join(dir, "X.npy"),
    queries: join(dir, "Q.npy"),
    ranks: join(dir, "ranks.npy"),
    ours: join(dir, "ours_final_ranks.npy"),
    peer: join(dir, "official_final_ranks.npy"),
  };
  if (values.worker) {
    await worker(files, settings);
    return;
  }
  const nq = Number(values.queries);
  const n = Number(values.db);
  const d = Number(values.dim);
  const clusters = Number(values.clusters);
  const load = [loadavg()];
  process.stdout.write(
    `rerank bench: ${nq} queries, ${n} × ${d} clustered database (${clusters} clusters), ` +
      `M ${settings.M}, K ${settings.K}, beta ${settings.beta}, ${settings.threads} threads\n`,
  );

  // Data and the initial full ranking by our exact search
  const { db, queries } = clusteredData(n, nq, d, clusters, Number(values.seed));
  const t = performance.now();
  const search = await ExactSearch.create({ threads: settings.threads });
  const initial = await search.search(
    { data: db, rows: n, cols: d },
    { data: queries, rows: nq, cols: d },
    n,
  );
  await search.release();
  const searchMs = performance.now() - t;
  writeNpy(files.db, db, [n, d]);
  writeNpy(files.queries, queries, [nq, d]);
  writeNpy(files.ranks, initial.ids, [nq, n]);
  process.stdout.write(
    `  initial ranking (ExactSearch, full [${nq}, ${n}]): ${searchMs.toFixed(0)} ms\n`,
  );

  // Ours, in a child process
  let cpu = cpuTimes();
  const ours = JSON.parse(
    lastLine(
      execFileSync(
        process.execPath,
        [
          ...process.execArgv,
          join(here, "main.ts"),
          "rerank",
          "--worker",
          ...["--M", values.M, "--K", values.K, "--beta", values.beta],
          ...["--threads", values.threads, "--repeat", values.repeat],
        ],
        { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 },
      ),
    ),
  ) as SideReport;
  const disturbance = [{ side: "ours", ...contention(cpu, cpuTimes(), ours.cpu_s) }];
  load.push(loadavg());
  const oursMs = median(ours.runs_ms) / nq;
  process.stdout.write(
    `  ours: ${oursMs.toFixed(2)} ms/query (runs ${fmtRuns(ours.runs_ms)} ms)\n`,
  );

  // Peer: the official modules
  let peer: SideReport | undefined;
  let peerNote = "";
  const official = values.official;
  if (official === "" || !existsSync(join(official, "modules", "reranking", "MDescAug.py"))) {
    peerNote =
      "official code not found: set SUPERGLOBAL_OFFICIAL_DIR (or --official) to a SuperGlobal checkout";
    process.stdout.write(`  peer: ${peerNote}\n`);
  } else {
    cpu = cpuTimes();
    peer = JSON.parse(
      lastLine(
        python(join(here, "peers", "official_rerank.py"), [
          ...["--official", official, "--db", files.db, "--queries", files.queries],
          ...["--ranks", files.ranks, "--out", files.peer],
          ...["--threads", values.threads, "--repeat", values.repeat],
          ...["--M", values.M, "--K", values.K, "--beta", values.beta],
        ]),
      ),
    ) as SideReport;
    disturbance.push({ side: "official", ...contention(cpu, cpuTimes(), peer.cpu_s) });
    load.push(loadavg());
    process.stdout.write(
      `  official: ${(median(peer.runs_ms) / nq).toFixed(2)} ms/query (runs ${fmtRuns(peer.runs_ms)} ms)\n`,
    );
  }
  const peerMs = peer === undefined ? undefined : median(peer.runs_ms) / nq;
  const ratio = peerMs === undefined ? undefined : peerMs / oursMs;
  const agreement =
    peer === undefined ? undefined : await compareRanks(files, db, queries, d, settings);

  const oblas = process.env["OPENBLAS_CORETYPE"] ?? "unset";
  const lines = [
    `# rerank: SuperGlobal MDescAug + RerankwMDA, ${nq} queries × full ranking of ${n}, D ${d}`,
    "",
    `machine: ${JSON.stringify(machine())}`,
    `OPENBLAS_CORETYPE: ${oblas}; load average (1, 5, 15 min) before / after ours / after peer: ${load.map(fmtLoad).join(" / ")}; ` +
      `while each side ran, other processes used / the hypervisor stole: ${disturbance
        .map(
          (c) => `${c.side} ${c.otherCpuS.toFixed(1)} CPU-s / ${(c.stealShare * 100).toFixed(1)}%`,
        )
        .join("; ")}`,
    "",
    `data: ${n} database and ${nq} query unit vectors, float32, from ${clusters} clusters in ${groupsOf(clusters)} groups ` +
      `(cosine ≈ 0.5 within a cluster, ≈ 0.25 within a group); initial ranks [${nq}, ${n}] by ExactSearch (${searchMs.toFixed(0)} ms)`,
    `settings: M ${settings.M}, K ${settings.K}, beta ${settings.beta}, ${settings.threads} threads, median of ${settings.repeat} runs over all queries`,
    "",
    "| | ms per query | runs (ms, all queries) | peak RSS (MiB) | RSS with data loaded (MiB) |",
    "|---|---|---|---|---|",
    `| superglobal (onnxruntime Gram + TS float64) | ${oursMs.toFixed(2)} | ${fmtRuns(ours.runs_ms)} | ${ours.peak_rss_mb.toFixed(0)} | ${ours.loaded_rss_mb.toFixed(0)} |`,
    peer === undefined || peerMs === undefined
      ? `| official PyTorch | not run: ${peerNote} | | | |`
      : `| official PyTorch ${peer["torch"]} (CPU, ${peer["threads"]} threads) | ${peerMs.toFixed(2)} | ${fmtRuns(peer.runs_ms)} | ${peer.peak_rss_mb.toFixed(0)} | ${peer.loaded_rss_mb.toFixed(0)} |`,
    "",
    ratio === undefined ? "" : `**speed-up vs official: ${ratio.toFixed(1)}x** (target ≥ 5x)`,
    `where our time goes: the float32 Gram matrix (onnxruntime, ${settings.M}×${d} · ${d}×${settings.M}) ` +
      `${Number(ours["gram_ms_per_query"]).toFixed(1)} ms per query; the other ` +
      `${(oursMs - Number(ours["gram_ms_per_query"])).toFixed(1)} ms are TypeScript in float64 (top-${settings.K + 1} neighbours ` +
      `re-checked in float64, both stages' scores, sorts).`,
    agreement === undefined ? "" : agreementText(agreement, nq, settings.M),
  ];
  process.stdout.write(`\n${lines.join("\n")}\n`);
  saveResult(
    `rerank-${new Date().toISOString().slice(0, 10)}`,
    {
      machine: machine(),
      openblasCoretype: oblas,
      loadavg: load,
      disturbance,
      data: { nq, n, d, clusters, seed: Number(values.seed) },
      settings,
      initialSearchMs: searchMs,
      ours: { ...ours, ms_per_query: oursMs },
      peer: peer === undefined ? undefined : { ...peer, ms_per_query: peerMs },
      peerNote,
      ratio,
      agreement,
    },
    lines.join("\n"),
  );
}

/** Our side, run as a child process: load the files, warm up, rerank every query `repeat` times. */
async function worker(
  files: { db: string; queries: string; ranks: string; ours: string },
  s: Settings,
): Promise<void> {
  const db = readMatrixF32(files.db);
  const queries = readMatrixF32(files.queries);
  const ranks = readMatrixI32(files.ranks);
  const loaded = peakRssMiB();
  let t = performance.now();
  const reranker = await SuperGlobalReranker.create({
    M: s.M,
    K: s.K,
    beta: s.beta,
    threads: s.threads,
  });
  const createMs = performance.now() - t;
  // Warm-up on the first query: the first onnxruntime run at a new shape pays allocation.
  await reranker.rerankRanks(
    db,
    { data: queries.data.subarray(0, queries.cols), rows: 1, cols: queries.cols },
    { data: ranks.data.subarray(0, ranks.cols), rows: 1, cols: ranks.cols },
  );
  const runs: number[] = [];
  let final: Int32Array | undefined;
  for (let r = 0; r < s.repeat; r++) {
    t = performance.now();
    const out = await reranker.rerankRanks(db, queries, ranks);
    runs.push(performance.now() - t);
    final = out.ranks;
  }
  await reranker.release();
  writeNpy(files.ours, final!, [ranks.rows, ranks.cols]);
  const peak = peakRssMiB();
  const gramMs = await gramTime(db, ranks, s);
  const report: SideReport = {
    runs_ms: runs,
    nq: queries.rows,
    create_ms: createMs,
    gram_ms_per_query: gramMs,
    peak_rss_mb: peak,
    loaded_rss_mb: loaded,
    cpu_s: ownCpuSeconds(),
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/**
 * Where our time goes: the float32 Gram matrix of every query's head alone (onnxruntime, the
 * reranker's own kernel), in ms per query; the rest of a query's time is TypeScript in float64
 * (checking the top-K neighbours in float64, both stages' scores, the sorts).
 */
async function gramTime(
  db: { data: Float32Array; cols: number },
  ranks: { data: Int32Array; rows: number; cols: number },
  s: Settings,
): Promise<number> {
  const d = db.cols;
  const m = Math.min(s.M, ranks.cols);
  const gram = await OnnxGram.create({ threads: s.threads });
  const g = new Float32Array(m * d);
  const heads: Float32Array[] = [];
  for (let q = 0; q < ranks.rows; q++) {
    for (let j = 0; j < m; j++) {
      const id = ranks.data[q * ranks.cols + j]!;
      g.set(db.data.subarray(id * d, id * d + d), j * d);
    }
    heads.push(g.slice());
  }
  await gram.compute(heads[0]!, m, d);
  const t = performance.now();
  for (const h of heads) await gram.compute(h, m, d);
  const ms = (performance.now() - t) / heads.length;
  await gram.release();
  return ms;
}

interface Agreement {
  /** Head positions (of nq·M) holding a different id. */
  positionsDiffer: number;
  queriesDiffer: number;
  /** Positions past the head that differ (must be 0: both keep the tail as it was). */
  tailDiffer: number;
  /** Per differing query: positions, and the largest gap between the final scores (ours, float64) of the swapped ids. */
  perQuery: Array<{ query: number; positions: number; maxScoreGap: number; scoreScale: number }>;
  /** Largest such gap over all queries. */
  maxScoreGap: number;
}

/**
 * Positions where our final ranks and the official ones differ; for each, the gap between the
 * final (stage-2) scores of the two ids there, from our float64 computation. The official code
 * scores in float32 (rounding ~1e-7 relative per operation, more over 2048-long sums) and its
 * sorts are unstable, so ids whose scores lie within that rounding may come out either way.
 */
async function compareRanks(
  files: { ours: string; peer: string; ranks: string },
  db: Float32Array,
  queries: Float32Array,
  d: number,
  s: Settings,
): Promise<Agreement> {
  const ours = readMatrixI32(files.ours);
  const theirs = readMatrixI32(files.peer);
  const ranks = readMatrixI32(files.ranks);
  const head = Math.min(s.M, ours.cols);
  const agreement: Agreement = {
    positionsDiffer: 0,
    queriesDiffer: 0,
    tailDiffer: 0,
    perQuery: [],
    maxScoreGap: 0,
  };
  const reranker = await SuperGlobalReranker.create({
    M: s.M,
    K: s.K,
    beta: s.beta,
    threads: s.threads,
  });
  for (let q = 0; q < ours.rows; q++) {
    const base = q * ours.cols;
    let positions = 0;
    for (let j = 0; j < ours.cols; j++) {
      if (ours.data[base + j] !== theirs.data[base + j]) {
        if (j < head) positions++;
        else agreement.tailDiffer++;
      }
    }
    if (positions === 0) continue;
    // Our final scores of this query's head, by id.
    const ids = ranks.data.subarray(base, base + ours.cols);
    const descriptors = new Float32Array(head * d);
    for (let j = 0; j < head; j++)
      descriptors.set(db.subarray(ids[j]! * d, ids[j]! * d + d), j * d);
    const result = await reranker.rerank(queries.subarray(q * d, q * d + d), { ids, descriptors });
    const scoreOf = new Map<number, number>();
    let scale = 0;
    for (let j = 0; j < head; j++) {
      scoreOf.set(result.ids[j]!, result.scores[j]!);
      scale = Math.max(scale, Math.abs(result.scores[j]!));
    }
    let maxGap = 0;
    for (let j = 0; j < head; j++) {
      const a = ours.data[base + j]!;
      const b = theirs.data[base + j]!;
      if (a === b) continue;
      const sb = scoreOf.get(b);
      const gap = sb === undefined ? Number.POSITIVE_INFINITY : Math.abs(scoreOf.get(a)! - sb);
      maxGap = Math.max(maxGap, gap);
    }
    agreement.positionsDiffer += positions;
    agreement.queriesDiffer++;
    agreement.perQuery.push({ query: q, positions, maxScoreGap: maxGap, scoreScale: scale });
    agreement.maxScoreGap = Math.max(agreement.maxScoreGap, maxGap);
  }
  await reranker.release();
  return agreement;
}

function agreementText(a: Agreement, nq: number, M: number): string {
  if (a.positionsDiffer === 0 && a.tailDiffer === 0) {
    return `agreement with the official final ranks: identical (all ${nq} × N positions)`;
  }
  const worst = a.perQuery
    .map((p) => `q${p.query}: ${p.positions} (max gap ${p.maxScoreGap.toExponential(1)})`)
    .join(", ");
  return (
    `agreement with the official final ranks: ${a.positionsDiffer} of ${nq * M} head positions differ, in ${a.queriesDiffer} of ${nq} queries ` +
    `(tail positions differing: ${a.tailDiffer}); largest gap between the final scores of swapped ids ${a.maxScoreGap.toExponential(2)} ` +
    `(float32 near-ties: the official code scores in float32 with unstable sorts). Per query: ${worst}`
  );
}

/** Coarse groups of fine clusters: 15 clusters per group. */
function groupsOf(clusters: number): number {
  return Math.max(1, Math.round(clusters / 15));
}

/**
 * Unit-norm float32 vectors in two levels: group centres; cluster centres = group centre + an
 * equal-norm random direction; items = cluster centre + an equal-norm random direction. Items of
 * one cluster then have cosine ≈ 0.5, of one group ≈ 0.25, else ≈ 0. Queries are items of random
 * clusters, drawn apart from the database.
 */
function clusteredData(
  n: number,
  nq: number,
  d: number,
  clusters: number,
  seed: number,
): { db: Float32Array; queries: Float32Array } {
  const rnd = new SeededRandom(seed);
  const groups = groupsOf(clusters);
  const groupCentres = new Float32Array(groups * d);
  rnd.unitRows(groupCentres, d);
  const centres = new Float32Array(clusters * d);
  rnd.unitRows(centres, d);
  for (let c = 0; c < clusters; c++) {
    const g = c % groups;
    for (let i = 0; i < d; i++) centres[c * d + i] += groupCentres[g * d + i]!;
    normalizeRow(centres, c, d);
  }
  const items = (count: number): Float32Array => {
    const out = new Float32Array(count * d);
    rnd.unitRows(out, d);
    for (let r = 0; r < count; r++) {
      const c = Math.floor(rnd.uniform() * clusters);
      for (let i = 0; i < d; i++) out[r * d + i] += centres[c * d + i]!;
      normalizeRow(out, r, d);
    }
    return out;
  };
  return { db: items(n), queries: items(nq) };
}

function workDir(): string {
  const dir = join(here, ".work", "rerank");
  mkdirSync(dir, { recursive: true });
  return dir;
}

function lastLine(stdout: string): string {
  return stdout.trim().split("\n").pop()!;
}

function fmtRuns(runs: number[]): string {
  return runs.map((r) => r.toFixed(0)).join(", ");
}

function fmtLoad(l: number[]): string {
  return l.map((v) => v.toFixed(2)).join(" ");
}
