/**
 * `npm run bench -- ann [--rows 1000000] [--dim 2048] [--queries 100] [--k 100] [--clusters 1000]
 *   [--seed 1] [--threads 2] [--connectivity 16] [--expansion-add 128] [--ef 64,128,256,512]
 *   [--skip-peer] [--skip-main] [--crossover 3000,10000,30000,100000] [--crossover-dim 1792]`
 * Approximate search: our AnnSearch (usearch) against hnswlib-node (the peer, same connectivity
 * and expansion; its build is single-threaded, a JS loop of addPoint) and exact search
 * (ExactSearch) in the same run: build time, memory, one-query latency and recall@k against the
 * float64 brute-force oracle, at several search expansions. Then the crossover: exact vs ANN
 * one-query latency at growing sizes of the default model's dimension (1792), which sets the
 * size above which `Index.search` uses ANN.
 * Data: clustered, like real descriptors (ANN on iid random vectors is meaningless: every point is
 * nearly equidistant): `clusters` Gaussian centres, each row = its centre + unit Gaussian noise,
 * L2-normalised, so same-cluster cosine ≈ 0.5; queries are drawn the same way. Generated from a
 * seed, cached in bench/.work/ann/. Each side runs in its own process, one after the other, so its
 * peak RSS is its own.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { AnnSearch } from "../src/search/ann-search.ts";
import { bruteForceSearch } from "../src/search/brute-force.ts";
import { ExactSearch } from "../src/search/exact-search.ts";
import {
  contention,
  cpuTimes,
  machine,
  median,
  ownCpuSeconds,
  peakRssMiB,
  SeededRandom,
  saveResult,
} from "./machine.ts";

const here = import.meta.dirname;
const work = join(here, ".work", "ann");

interface Data {
  db: string;
  queries: string;
  truth: string;
  rows: number;
  dim: number;
  nq: number;
  k: number;
}

interface SearchPoint {
  ef: number;
  recall: number;
  median_ms: number;
  p99_ms: number;
}

interface SideReport {
  side: string;
  build_s?: number;
  /** RSS right after the build (data + index), before any search: the peak also counts the memory-mapped views. */
  build_rss_mib?: number;
  file_mib?: number;
  data_rss_mib: number;
  peak_rss_mib: number;
  points: SearchPoint[];
  cpu_s: number;
}

const pct = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

/** Clustered unit rows [rows, dim] (see the header). */
function clustered(
  rows: number,
  dim: number,
  centres: Float32Array,
  rnd: SeededRandom,
): Float32Array {
  const clusters = centres.length / dim;
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const c = Math.floor(rnd.uniform() * clusters);
    let norm = 0;
    for (let i = 0; i < dim; i++) {
      const v = centres[c * dim + i]! + rnd.normal();
      out[r * dim + i] = v;
      norm += v * v;
    }
    const inv = 1 / Math.sqrt(norm);
    for (let i = r * dim; i < (r + 1) * dim; i++) out[i] = out[i]! * inv;
  }
  return out;
}

function writeAtomic(path: string, bytes: Uint8Array): void {
  writeFileSync(`${path}.tmp`, bytes);
  renameSync(`${path}.tmp`, path);
}

const bytesOf = (a: Float32Array | Int32Array) =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function readF32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function readI32(path: string): Int32Array {
  const b = readFileSync(path);
  return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

/** Generates (or reuses) the database, queries and the oracle's top-k for the first `truthRows` prefixes. */
function prepare(
  rows: number,
  dim: number,
  nq: number,
  k: number,
  clusters: number,
  seed: number,
  prefixes: number[],
): { data: Data; truths: Map<number, string> } {
  mkdirSync(work, { recursive: true });
  const tag = `${rows}x${dim}-c${clusters}-s${seed}`;
  const db = join(work, `${tag}.db.f32`);
  const queries = join(work, `${tag}.q${nq}.f32`);
  if (!existsSync(db) || !existsSync(queries)) {
    const t = performance.now();
    const rnd = new SeededRandom(seed);
    const centres = new Float32Array(clusters * dim);
    for (let i = 0; i < centres.length; i++) centres[i] = rnd.normal();
    const x = clustered(rows, dim, centres, rnd);
    const q = clustered(nq, dim, centres, rnd);
    writeAtomic(db, bytesOf(x));
    writeAtomic(queries, bytesOf(q));
    log(`generated ${tag} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const truths = new Map<number, string>();
  let x: Float32Array | undefined;
  for (const n of prefixes) {
    const truth = join(work, `${tag}.q${nq}.top${k}.n${n}.i32`);
    if (!existsSync(truth)) {
      x ??= readF32(db);
      const q = readF32(queries);
      const t = performance.now();
      const r = bruteForceSearch(
        { data: x.subarray(0, n * dim), rows: n, cols: dim },
        { data: q, rows: nq, cols: dim },
        k,
      );
      writeAtomic(truth, bytesOf(r.ids));
      log(
        `oracle (float64 brute force) ${n} rows: ${((performance.now() - t) / 1000).toFixed(1)} s`,
      );
    }
    truths.set(n, truth);
  }
  return { data: { db, queries, truth: truths.get(rows)!, rows, dim, nq, k }, truths };
}

function recallOf(found: ArrayLike<number>[], truth: Int32Array, k: number): number {
  let hit = 0;
  found.forEach((ids, q) => {
    const want = new Set(truth.subarray(q * k, (q + 1) * k));
    for (let j = 0; j < Math.min(k, ids.length); j++) if (want.has(ids[j]!)) hit += 1;
  });
  return hit / (found.length * k);
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

// --- child sides -----------------------------------------------------------------------------

async function childSide(side: string, a: Record<string, string>): Promise<SideReport> {
  const rows = Number(a["rows"]);
  const dim = Number(a["dim"]);
  const nq = Number(a["nq"]);
  const k = Number(a["k"]);
  const threads = Number(a["threads"]);
  const efs = a["ef"]!.split(",").map(Number);
  const connectivity = Number(a["connectivity"]);
  const expansionAdd = Number(a["expansionAdd"]);
  const x = readF32(a["db"]!);
  const q = readF32(a["queries"]!);
  const truth = readI32(a["truth"]!);
  const dataRss = peakRssMiB();
  const query = (i: number) => q.subarray(i * dim, (i + 1) * dim);
  const points: SearchPoint[] = [];
  const report: SideReport = { side, data_rss_mib: dataRss, peak_rss_mib: 0, points, cpu_s: 0 };
  if (side === "exact") {
    const s = await ExactSearch.create({ threads });
    const db = { data: x, rows, cols: dim };
    const found: Int32Array[] = [];
    const ms: number[] = [];
    await s.search(db, { data: query(0), rows: 1, cols: dim }, k); // warm-up
    for (let i = 0; i < nq; i++) {
      const t = performance.now();
      const r = await s.search(db, { data: query(i), rows: 1, cols: dim }, k);
      ms.push(performance.now() - t);
      found.push(r.ids);
    }
    points.push({
      ef: 0,
      recall: recallOf(found, truth, k),
      median_ms: median(ms),
      p99_ms: pct(ms, 99),
    });
    await s.release();
  } else if (side === "usearch") {
    const t = performance.now();
    const ann = AnnSearch.create(dim, { connectivity, expansionAdd });
    const step = 16384;
    for (let r0 = 0; r0 < rows; r0 += step) {
      const n = Math.min(step, rows - r0);
      ann.add(
        Int32Array.from({ length: n }, (_, i) => r0 + i),
        x.subarray(r0 * dim, (r0 + n) * dim),
        threads,
      );
    }
    report.build_s = (performance.now() - t) / 1000;
    report.build_rss_mib = process.memoryUsage().rss / 2 ** 20;
    log(`usearch: built in ${report.build_s.toFixed(1)} s`);
    const file = join(work, `usearch-${rows}x${dim}.usearch`);
    ann.save(file);
    report.file_mib = readFileSync(file).byteLength / 2 ** 20;
    for (const ef of efs) {
      // What a reader gets: the saved graph, memory-mapped, with this expansion.
      const v = AnnSearch.open(file, dim, { connectivity, expansionAdd, expansionSearch: ef });
      points.push(measure(ef, (i) => v.search(query(i), k).keys));
    }
  } else if (side === "hnswlib") {
    const { default: hnswlib } = await import("hnswlib-node");
    const t = performance.now();
    const h = new hnswlib.HierarchicalNSW("ip", dim);
    h.initIndex(rows, connectivity, expansionAdd, 100);
    for (let r = 0; r < rows; r++) h.addPoint(Array.from(x.subarray(r * dim, (r + 1) * dim)), r);
    report.build_s = (performance.now() - t) / 1000;
    report.build_rss_mib = process.memoryUsage().rss / 2 ** 20;
    log(`hnswlib: built in ${report.build_s.toFixed(1)} s`);
    for (const ef of efs) {
      h.setEf(ef);
      points.push(measure(ef, (i) => h.searchKnn(Array.from(query(i)), k).neighbors));
    }
  } else {
    throw new Error(`unknown side ${side}`);
  }
  report.peak_rss_mib = peakRssMiB();
  report.cpu_s = ownCpuSeconds();
  return report;

  function measure(ef: number, search: (i: number) => ArrayLike<number>): SearchPoint {
    search(0); // warm-up
    const found: ArrayLike<number>[] = [];
    const ms: number[] = [];
    for (let i = 0; i < nq; i++) {
      const t0 = performance.now();
      found.push(search(i));
      ms.push(performance.now() - t0);
    }
    const p = { ef, recall: recallOf(found, truth, k), median_ms: median(ms), p99_ms: pct(ms, 99) };
    log(`${side} ef ${ef}: recall@${k} ${p.recall.toFixed(4)}, ${p.median_ms.toFixed(2)} ms`);
    return p;
  }
}

interface CrossPoint {
  rows: number;
  exact_ms: number;
  ann_ms: number;
  ann_recall: number;
  build_s: number;
}

/** Exact vs ANN (default parameters, plus rescoring the k candidates exactly, as Index.search does) at growing sizes; one growing graph. */
async function childCrossover(
  a: Record<string, string>,
): Promise<{ points: CrossPoint[]; cpu_s: number }> {
  const dim = Number(a["dim"]);
  const nq = Number(a["nq"]);
  const k = Number(a["k"]);
  const threads = Number(a["threads"]);
  const sizes = a["sizes"]!.split(",").map(Number);
  const truths = a["truths"]!.split(",");
  const x = readF32(a["db"]!);
  const q = readF32(a["queries"]!);
  const query = (i: number) => q.subarray(i * dim, (i + 1) * dim);
  const exact = await ExactSearch.create({ threads });
  const ann = AnnSearch.create(dim);
  const points: CrossPoint[] = [];
  let built = 0;
  let buildMs = 0;
  for (const [si, n] of sizes.entries()) {
    const t = performance.now();
    for (let r0 = built; r0 < n; r0 += 16384) {
      const m = Math.min(16384, n - r0);
      ann.add(
        Int32Array.from({ length: m }, (_, i) => r0 + i),
        x.subarray(r0 * dim, (r0 + m) * dim),
        threads,
      );
    }
    buildMs += performance.now() - t;
    built = n;
    const db = { data: x.subarray(0, n * dim), rows: n, cols: dim };
    await exact.search(db, { data: query(0), rows: 1, cols: dim }, k);
    const exactMs: number[] = [];
    const annMs: number[] = [];
    const found: Int32Array[] = [];
    ann.search(query(0), k);
    for (let i = 0; i < nq; i++) {
      let t0 = performance.now();
      await exact.search(db, { data: query(i), rows: 1, cols: dim }, k);
      exactMs.push(performance.now() - t0);
      t0 = performance.now();
      const qv = query(i);
      const m = ann.search(qv, k);
      const scores = new Float64Array(m.keys.length);
      m.keys.forEach((key, j) => {
        let s = 0;
        for (let c = 0, o = key * dim; c < dim; c++) s += qv[c]! * x[o + c]!;
        scores[j] = s;
      });
      annMs.push(performance.now() - t0);
      found.push(m.keys);
    }
    const p = {
      rows: n,
      exact_ms: median(exactMs),
      ann_ms: median(annMs),
      ann_recall: recallOf(found, readI32(truths[si]!), k),
      build_s: buildMs / 1000,
    };
    log(
      `crossover ${n}: exact ${p.exact_ms.toFixed(2)} ms, ANN ${p.ann_ms.toFixed(2)} ms (recall ${p.ann_recall.toFixed(4)})`,
    );
    points.push(p);
  }
  await exact.release();
  return { points, cpu_s: ownCpuSeconds() };
}

function runChild(args: Record<string, string | number>): unknown {
  const flat = Object.entries(args).flatMap(([key, v]) => [`--${key}`, String(v)]);
  const out = execFileSync(
    process.execPath,
    ["--import", "tsx", join(here, "main.ts"), "ann", ...flat],
    {
      encoding: "utf8",
      maxBuffer: 1 << 26,
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const last = out.trim().split("\n").pop()!;
  return JSON.parse(last);
}

// --- main --------------------------------------------------------------------------------------

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      child: { type: "string" },
      rows: { type: "string", default: "1000000" },
      dim: { type: "string", default: "2048" },
      queries: { type: "string", default: "100" },
      k: { type: "string", default: "100" },
      clusters: { type: "string", default: "1000" },
      seed: { type: "string", default: "1" },
      threads: { type: "string", default: "2" },
      connectivity: { type: "string", default: "16" },
      "expansion-add": { type: "string", default: "128" },
      ef: { type: "string", default: "64,128,256,512" },
      "skip-peer": { type: "boolean", default: false },
      "skip-main": { type: "boolean", default: false },
      crossover: { type: "string", default: "3000,10000,30000,100000" },
      "crossover-dim": { type: "string", default: "1792" },
      // child-only
      db: { type: "string" },
      truth: { type: "string" },
      truths: { type: "string" },
      nq: { type: "string" },
      sizes: { type: "string" },
      expansionAdd: { type: "string" },
    },
  });
  const v = values as unknown as Record<string, string>;
  if (values.child !== undefined) {
    const report =
      values.child === "crossover" ? await childCrossover(v) : await childSide(values.child, v);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return;
  }
  const rows = Number(v["rows"]);
  const dim = Number(v["dim"]);
  const nq = Number(v["queries"]);
  const k = Number(v["k"]);
  const clusters = Number(v["clusters"]);
  const seed = Number(v["seed"]);
  const common = {
    threads: v["threads"]!,
    connectivity: v["connectivity"]!,
    expansionAdd: v["expansion-add"]!,
    ef: v["ef"]!,
    k,
    nq,
  };
  const sides: Array<SideReport & { other_cpu_s: number; steal_share: number }> = [];
  if (!values["skip-main"]) {
    const { data } = prepare(rows, dim, nq, k, clusters, seed, [rows]);
    const base = { ...common, rows, dim, db: data.db, queries: data.queries, truth: data.truth };
    for (const side of ["exact", "usearch", ...(values["skip-peer"] ? [] : ["hnswlib"])]) {
      log(`--- ${side}`);
      const before = cpuTimes();
      const r = runChild({ ...base, child: side }) as SideReport;
      const c = contention(before, cpuTimes(), r.cpu_s);
      sides.push({ ...r, other_cpu_s: c.otherCpuS, steal_share: c.stealShare });
    }
  }
  let crossover: CrossPoint[] = [];
  let crossoverDisturbance = { otherCpuS: 0, stealShare: 0 };
  const sizes = v["crossover"] === "" ? [] : v["crossover"]!.split(",").map(Number);
  if (sizes.length > 0) {
    const cdim = Number(v["crossover-dim"]);
    const max = Math.max(...sizes);
    const { data, truths } = prepare(max, cdim, nq, k, clusters, seed, sizes);
    log("--- crossover");
    const before = cpuTimes();
    const r = runChild({
      child: "crossover",
      dim: cdim,
      nq,
      k,
      threads: common.threads,
      sizes: sizes.join(","),
      truths: sizes.map((n) => truths.get(n)!).join(","),
      db: data.db,
      queries: data.queries,
    }) as { points: CrossPoint[]; cpu_s: number };
    crossover = r.points;
    crossoverDisturbance = contention(before, cpuTimes(), r.cpu_s);
  }
  const m = machine();
  const record = {
    bench: "ann",
    machine: m,
    options: { rows, dim, queries: nq, clusters, seed, ...common },
    sides,
    crossover: {
      dim: Number(v["crossover-dim"]),
      points: crossover,
      disturbance: crossoverDisturbance,
    },
  };
  saveResult(`ann-${rows}x${dim}-${m.date.slice(0, 10)}`, record, summary(record));
}

function summary(r: {
  machine: ReturnType<typeof machine>;
  options: Record<string, unknown>;
  sides: Array<SideReport & { other_cpu_s: number; steal_share: number }>;
  crossover: {
    dim: number;
    points: CrossPoint[];
    disturbance: { otherCpuS: number; stealShare: number };
  };
}): string {
  const o = r.options;
  const m = r.machine;
  const lines = [
    `# ANN search, ${o["rows"]} × ${o["dim"]} clustered (${o["clusters"]} clusters), ${o["queries"]} queries, recall@${o["k"]}`,
    "",
    `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}, Node ${m.node}, ${m.date}.`,
    `connectivity ${o["connectivity"]}, expansionAdd ${o["expansion-add"] ?? o["expansionAdd"]}; build with ${o["threads"]} threads (hnswlib-node: 1, its addPoint is synchronous); searches one query at a time, single-threaded (exact: ${o["threads"]} threads).`,
    "Recall is against the float64 brute-force oracle; latency is one query's wall time (median, p99). usearch's peak RSS also counts its memory-mapped views (one per ef, each mapping the whole file): compare RSS after build.",
    "",
  ];
  if (r.sides.length > 0) {
    lines.push(
      "| side | ef | recall@k | median ms | p99 ms | build s | RSS after build MiB | peak RSS MiB (data alone) | other CPU s |",
      "|---|---|---|---|---|---|---|---|---|",
    );
    for (const s of r.sides) {
      for (const p of s.points) {
        lines.push(
          `| ${s.side} | ${s.side === "exact" ? "—" : p.ef} | ${p.recall.toFixed(4)} | ${p.median_ms.toFixed(2)} | ${p.p99_ms.toFixed(2)} | ${s.build_s?.toFixed(1) ?? "—"} | ${s.build_rss_mib?.toFixed(0) ?? "—"} | ${s.peak_rss_mib.toFixed(0)} (${s.data_rss_mib.toFixed(0)}) | ${s.other_cpu_s.toFixed(0)} |`,
        );
      }
    }
    const ex = r.sides.find((s) => s.side === "exact")?.points[0];
    const us = r.sides.find((s) => s.side === "usearch");
    const hn = r.sides.find((s) => s.side === "hnswlib");
    const first = (s: SideReport | undefined) => s?.points.find((p) => p.recall >= 0.98);
    const u = first(us);
    const h = first(hn);
    lines.push("");
    if (u !== undefined) {
      lines.push(
        `Smallest measured ef with recall ≥ 0.98: usearch ef ${u.ef} (${u.recall.toFixed(4)}, ${u.median_ms.toFixed(2)} ms)` +
          (h === undefined
            ? ""
            : `; hnswlib-node ef ${h.ef} (${h.recall.toFixed(4)}, ${h.median_ms.toFixed(2)} ms); usearch/hnswlib latency ${(u.median_ms / h.median_ms).toFixed(2)}×`) +
          (ex === undefined
            ? ""
            : `; exact ${ex.median_ms.toFixed(2)} ms, ${(ex.median_ms / u.median_ms).toFixed(1)}× usearch's.`),
      );
    }
    if (us?.build_s !== undefined && hn?.build_s !== undefined) {
      lines.push(
        `Build: usearch ${us.build_s.toFixed(0)} s, hnswlib-node ${hn.build_s.toFixed(0)} s (${(hn.build_s / us.build_s).toFixed(2)}×). usearch file ${us.file_mib?.toFixed(0)} MiB.`,
      );
    }
  }
  if (r.crossover.points.length > 0) {
    lines.push(
      "",
      `## Crossover at ${r.crossover.dim}-d (default parameters; ANN time includes rescoring the k candidates exactly)`,
      "",
      "| rows | exact ms | ANN ms | ANN recall@k | exact/ANN |",
      "|---|---|---|---|---|",
    );
    for (const p of r.crossover.points) {
      lines.push(
        `| ${p.rows} | ${p.exact_ms.toFixed(2)} | ${p.ann_ms.toFixed(2)} | ${p.ann_recall.toFixed(4)} | ${(p.exact_ms / p.ann_ms).toFixed(2)} |`,
      );
    }
    lines.push(
      "",
      `Other processes used ${r.crossover.disturbance.otherCpuS.toFixed(0)} CPU s during the crossover run.`,
    );
  }
  return lines.join("\n");
}
