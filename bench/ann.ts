/**
 * `npm run bench -- ann [--rows 1000000] [--dim 2048] [--queries 100] [--k 100] [--clusters 1000]
 *   [--seed 1] [--threads 2] [--connectivity 16] [--expansion-add 128] [--ef 64,128,256,512]
 *   [--skip-peer] [--skip-main] [--crossover 3000,10000,30000,100000] [--crossover-dim 1792]
 *   [--concurrent-builds] [--builds-from RESULT.json]`
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
 * peak RSS is its own. At 1M × 2048 each build takes about an hour here: `--concurrent-builds`
 * runs the two builds side by side (reporting each one's CPU seconds, since they share the cores)
 * and saves the graphs, then times each side's searches alone; `--builds-from` a result file of
 * such a run times the searches again on its saved graphs without rebuilding.
 */
import { execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
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
  /** Recall of the first 10 results against the oracle's top 10 (what a user's first page shows). */
  recall_at_10?: number;
  median_ms: number;
  p99_ms: number;
  /** The first pass over the queries, before the graph's pages are in memory. */
  cold_median_ms?: number;
  cold_p99_ms?: number;
}

interface SideReport {
  side: string;
  build_s?: number;
  /** RSS right after the build (data + index), before any search: the peak also counts the memory-mapped views. */
  build_rss_mib?: number;
  file_mib?: number;
  /** With --concurrent-builds: the build's own CPU seconds, and what else ran meanwhile (the other build included). */
  build_cpu_s?: number;
  build_other_cpu_s?: number;
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

/** Writes through a temporary name in pieces (one typed-array view is capped below 8 GiB). */
function writeAtomic(path: string, a: Float32Array | Int32Array): void {
  const fd = openSync(`${path}.tmp`, "w");
  const step = 1 << 26;
  for (let i = 0; i < a.length; i += step) {
    const part = a.subarray(i, Math.min(a.length, i + step));
    const bytes = new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
    for (let o = 0; o < bytes.length; ) o += writeSync(fd, bytes, o, bytes.length - o);
  }
  closeSync(fd);
  renameSync(`${path}.tmp`, path);
}

/** Reads floats [from, from + out.length) of a float32 file into `out`, in pieces (readFileSync stops at 2 GiB). */
function readInto(fd: number, out: Float32Array | Int32Array, from: number): void {
  const step = 1 << 26;
  for (let i = 0; i < out.length; i += step) {
    const part = out.subarray(i, Math.min(out.length, i + step));
    const bytes = new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
    for (let o = 0; o < bytes.length; ) {
      const n = readSync(fd, bytes, o, bytes.length - o, (from + i) * 4 + o);
      if (n === 0) throw new Error("unexpected end of file");
      o += n;
    }
  }
}

/** A whole file of 4-byte values, as `Type` (Float32Array or Int32Array). */
function readAll<T extends Float32Array | Int32Array>(path: string, Type: new (n: number) => T): T {
  const out = new Type(statSync(path).size / 4);
  const fd = openSync(path, "r");
  try {
    readInto(fd, out, 0);
  } finally {
    closeSync(fd);
  }
  return out;
}

const readF32 = (path: string): Float32Array => readAll(path, Float32Array);
const readI32 = (path: string): Int32Array => readAll(path, Int32Array);

/**
 * Calls `fn(r0, rows)` for consecutive blocks of `step` rows of a float32 file, reusing one
 * buffer, so a side that copies the rows into its own index never holds the whole file.
 */
function forEachBlock(
  path: string,
  rows: number,
  dim: number,
  step: number,
  fn: (r0: number, block: Float32Array) => void,
): void {
  const fd = openSync(path, "r");
  const buf = new Float32Array(step * dim);
  try {
    for (let r0 = 0; r0 < rows; r0 += step) {
      const block = buf.subarray(0, Math.min(step, rows - r0) * dim);
      readInto(fd, block, r0 * dim);
      fn(r0, block);
    }
  } finally {
    closeSync(fd);
  }
}

/** What to generate: `rows` database rows and `nq` queries, with the oracle's top `k` for each of the `prefixes` (row counts). */
interface DataSpec {
  rows: number;
  dim: number;
  nq: number;
  k: number;
  clusters: number;
  seed: number;
  prefixes: number[];
}

/** Generates (or reuses) the database, queries and the oracle's top-k for each prefix. */
function prepare(spec: DataSpec): { data: Data; truths: Map<number, string> } {
  const { rows, dim, nq, k, clusters, seed, prefixes } = spec;
  mkdirSync(work, { recursive: true });
  const tag = `${rows}x${dim}-c${clusters}-s${seed}`;
  const db = join(work, `${tag}.db.f32`);
  const queries = join(work, `${tag}.q${nq}.f32`);
  // The rows just generated serve the oracle too (a second copy read back would be 8 GiB more at 1M).
  let x: Float32Array | undefined;
  if (!existsSync(db) || !existsSync(queries)) {
    const t = performance.now();
    const rnd = new SeededRandom(seed);
    const centres = new Float32Array(clusters * dim);
    for (let i = 0; i < centres.length; i++) centres[i] = rnd.normal();
    x = clustered(rows, dim, centres, rnd);
    const q = clustered(nq, dim, centres, rnd);
    writeAtomic(db, x);
    writeAtomic(queries, q);
    log(`generated ${tag} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  const truths = new Map<number, string>();
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
      writeAtomic(truth, r.ids);
      log(
        `oracle (float64 brute force) ${n} rows: ${((performance.now() - t) / 1000).toFixed(1)} s`,
      );
    }
    truths.set(n, truth);
  }
  return { data: { db, queries, truth: truths.get(rows)!, rows, dim, nq, k }, truths };
}

/** prepare() in a child process, so the parent never holds the database (8 GiB at 1M × 2048). */
function prepareInChild(spec: DataSpec): { data: Data; truths: Map<number, string> } {
  const { prefixes, ...rest } = spec;
  const r = runChild({ child: "prepare", ...rest, sizes: prefixes.join(",") }) as {
    data: Data;
    truths: Array<[number, string]>;
  };
  return { data: r.data, truths: new Map(r.truths) };
}

/** Recall of the first `at` results of each query against the oracle's first `at` (truth rows hold k, best first). */
function recallOf(found: ArrayLike<number>[], truth: Int32Array, k: number, at = k): number {
  let hit = 0;
  found.forEach((ids, q) => {
    const want = new Set(truth.subarray(q * k, q * k + at));
    for (let j = 0; j < Math.min(at, ids.length); j++) if (want.has(ids[j]!)) hit += 1;
  });
  return hit / (found.length * at);
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A build's progress every ~64k rows, so a long build's rate can be read (and projected) while it runs. */
function progress(side: string, done: number, rows: number, t0: number): void {
  if (done % 65536 >= 16384 && done !== rows) return;
  const s = (performance.now() - t0) / 1000;
  log(`${side}: ${done}/${rows} rows in ${s.toFixed(0)} s (${(done / s).toFixed(0)} rows/s)`);
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
  // "build" builds and saves the graph, "search" loads it and measures, "all" does both.
  const phase = a["phase"] ?? "all";
  // Only exact search needs all rows in memory; the ANN sides copy them into their own index.
  const x = side === "exact" ? readF32(a["db"]!) : new Float32Array(0);
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
    const file = join(work, `usearch-${rows}x${dim}.usearch`);
    if (phase !== "search") {
      const t = performance.now();
      const ann = AnnSearch.create(dim, { connectivity, expansionAdd });
      forEachBlock(a["db"]!, rows, dim, 16384, (r0, block) => {
        const n = block.length / dim;
        ann.add(
          Int32Array.from({ length: n }, (_, i) => r0 + i),
          block,
          threads,
        );
        progress("usearch", r0 + n, rows, t);
      });
      report.build_s = (performance.now() - t) / 1000;
      report.build_rss_mib = process.memoryUsage().rss / 2 ** 20;
      log(`usearch: built in ${report.build_s.toFixed(1)} s`);
      ann.save(file);
      report.file_mib = statSync(file).size / 2 ** 20;
    }
    if (phase !== "build") {
      for (const ef of efs) {
        // What a reader gets: the saved graph, memory-mapped, with this expansion.
        const v = AnnSearch.open(file, dim, { connectivity, expansionAdd, expansionSearch: ef });
        points.push(measure(ef, (i) => v.search(query(i), k).keys));
      }
    }
  } else if (side === "hnswlib") {
    const { default: hnswlib } = await import("hnswlib-node");
    const file = join(work, `hnswlib-${rows}x${dim}.bin`);
    const h = new hnswlib.HierarchicalNSW("ip", dim);
    if (phase === "search") {
      h.readIndexSync(file);
    } else {
      const t = performance.now();
      h.initIndex(rows, connectivity, expansionAdd, 100);
      forEachBlock(a["db"]!, rows, dim, 16384, (r0, block) => {
        const n = block.length / dim;
        for (let i = 0; i < n; i++)
          h.addPoint(Array.from(block.subarray(i * dim, (i + 1) * dim)), r0 + i);
        progress("hnswlib", r0 + n, rows, t);
      });
      report.build_s = (performance.now() - t) / 1000;
      report.build_rss_mib = process.memoryUsage().rss / 2 ** 20;
      log(`hnswlib: built in ${report.build_s.toFixed(1)} s`);
      if (phase === "build") h.writeIndexSync(file);
    }
    if (phase !== "build") {
      for (const ef of efs) {
        h.setEf(ef);
        points.push(measure(ef, (i) => h.searchKnn(Array.from(query(i)), k).neighbors));
      }
    }
  } else {
    throw new Error(`unknown side ${side}`);
  }
  report.peak_rss_mib = peakRssMiB();
  report.cpu_s = ownCpuSeconds();
  return report;

  /**
   * Two timed passes over the queries: the first (cold: a memory-mapped graph's pages are read in
   * as the searches touch them) and the second (warm: the figures compared).
   */
  function measure(ef: number, search: (i: number) => ArrayLike<number>): SearchPoint {
    const pass = () => {
      const found: ArrayLike<number>[] = [];
      const ms: number[] = [];
      for (let i = 0; i < nq; i++) {
        const t0 = performance.now();
        found.push(search(i));
        ms.push(performance.now() - t0);
      }
      return { found, ms };
    };
    const cold = pass();
    const { found, ms } = pass();
    const p = {
      ef,
      recall: recallOf(found, truth, k),
      recall_at_10: recallOf(found, truth, k, Math.min(10, k)),
      median_ms: median(ms),
      p99_ms: pct(ms, 99),
      cold_median_ms: median(cold.ms),
      cold_p99_ms: pct(cold.ms, 99),
    };
    log(
      `${side} ef ${ef}: recall@${k} ${p.recall.toFixed(4)}, ${p.median_ms.toFixed(2)} ms (cold ${p.cold_median_ms.toFixed(2)} ms)`,
    );
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

/** runChild without blocking: for the ANN builds that run side by side. */
function runChildAsync(args: Record<string, string | number>): Promise<unknown> {
  const flat = Object.entries(args).flatMap(([key, v]) => [`--${key}`, String(v)]);
  return new Promise((done, fail) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(here, "main.ts"), "ann", ...flat],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      out += chunk;
    });
    child.on("error", fail);
    child.on("close", (code) => {
      if (code !== 0) fail(new Error(`ann child ${String(args["child"])} exited with ${code}`));
      else done(JSON.parse(out.trim().split("\n").pop()!));
    });
  });
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
      "concurrent-builds": { type: "boolean", default: false },
      "builds-from": { type: "string" },
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
      phase: { type: "string" },
    },
  });
  const v = values as unknown as Record<string, string>;
  if (values.child !== undefined) {
    if (values.child === "prepare") {
      const p = prepare({
        rows: Number(v["rows"]),
        dim: Number(v["dim"]),
        nq: Number(v["nq"]),
        k: Number(v["k"]),
        clusters: Number(v["clusters"]),
        seed: Number(v["seed"]),
        prefixes: v["sizes"]!.split(",").map(Number),
      });
      process.stdout.write(`${JSON.stringify({ data: p.data, truths: [...p.truths] })}\n`);
      return;
    }
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
  let crossover: CrossPoint[] = [];
  let crossoverDisturbance = { otherCpuS: 0, stealShare: 0 };
  if (!values["skip-main"]) {
    const { data } = prepareInChild({
      rows,
      dim,
      nq,
      k,
      clusters,
      seed,
      prefixes: [rows],
    });
    const base = { ...common, rows, dim, db: data.db, queries: data.queries, truth: data.truth };
    const annSides = ["usearch", ...(values["skip-peer"] ? [] : ["hnswlib"])];
    const record = (r: SideReport, before: ReturnType<typeof cpuTimes>, ownCpuS: number) => {
      const c = contention(before, cpuTimes(), ownCpuS);
      sides.push({ ...r, other_cpu_s: c.otherCpuS, steal_share: c.stealShare });
      save(); // a long run (1M rows: hours) keeps each finished side
    };
    log("--- exact");
    let before = cpuTimes();
    const exact = runChild({ ...base, child: "exact" }) as SideReport;
    record(exact, before, exact.cpu_s);
    if (!values["concurrent-builds"]) {
      for (const side of annSides) {
        log(`--- ${side}`);
        before = cpuTimes();
        const r = runChild({ ...base, child: side }) as SideReport;
        record(r, before, r.cpu_s);
      }
    } else {
      // The builds side by side (each with its own CPU seconds: their wall times share the
      // cores), then each side's searches alone on a quiet machine.
      let built: SideReport[];
      let buildOtherCpuS: number;
      const from = v["builds-from"];
      if (from !== undefined) {
        // The graphs a previous run built and saved (bench/.work/ann/), with that run's build figures.
        const prior = JSON.parse(readFileSync(from, "utf8")) as { sides: typeof sides };
        built = annSides.map((side) => {
          const b = prior.sides.find((p) => p.side === side && p.build_cpu_s !== undefined);
          if (b === undefined) throw new Error(`${from} has no side-by-side build of ${side}`);
          return { ...b, cpu_s: b.build_cpu_s! };
        });
        buildOtherCpuS = prior.sides.find((p) => p.side === "usearch")!.build_other_cpu_s!;
        buildOtherCpuS -= built[1]?.cpu_s ?? 0;
        log(`--- builds from ${from}`);
      } else {
        log(`--- building ${annSides.join(" and ")} side by side`);
        before = cpuTimes();
        built = (await Promise.all(
          annSides.map((side) => runChildAsync({ ...base, child: side, phase: "build" })),
        )) as SideReport[];
        const buildCpuS = built.reduce((sum, b) => sum + b.cpu_s, 0);
        buildOtherCpuS = contention(before, cpuTimes(), buildCpuS).otherCpuS;
      }
      const buildCpuS = built.reduce((sum, b) => sum + b.cpu_s, 0);
      for (const [i, side] of annSides.entries()) {
        log(`--- ${side} searches`);
        before = cpuTimes();
        const b = built[i]!;
        const r = runChild({ ...base, child: side, phase: "search" }) as SideReport;
        record(
          {
            ...r,
            build_s: b.build_s,
            build_rss_mib: b.build_rss_mib,
            build_cpu_s: b.cpu_s,
            build_other_cpu_s: buildOtherCpuS + buildCpuS - b.cpu_s,
            peak_rss_mib: Math.max(r.peak_rss_mib, b.peak_rss_mib),
            ...(b.file_mib === undefined ? {} : { file_mib: b.file_mib }),
          },
          before,
          r.cpu_s,
        );
      }
    }
  }
  const sizes = v["crossover"] === "" ? [] : v["crossover"]!.split(",").map(Number);
  if (sizes.length > 0) {
    const cdim = Number(v["crossover-dim"]);
    const max = Math.max(...sizes);
    const { data, truths } = prepareInChild({
      rows: max,
      dim: cdim,
      nq,
      k,
      clusters,
      seed,
      prefixes: sizes,
    });
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
  save();

  function save(): void {
    const m = machine();
    const record = {
      bench: "ann",
      machine: m,
      options: {
        rows,
        dim,
        queries: nq,
        clusters,
        seed,
        ...common,
        builds_from: v["builds-from"] ?? null,
      },
      sides,
      crossover: {
        dim: Number(v["crossover-dim"]),
        points: crossover,
        disturbance: crossoverDisturbance,
      },
    };
    saveResult(`ann-${rows}x${dim}-${m.date.slice(0, 10)}`, record, summary(record));
  }
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
    "Recall is against the float64 brute-force oracle; latency is one query's wall time (median, p99) in a second pass over the queries, once the graph's pages are in memory (the first pass is the cold column: usearch reads a memory-mapped file, hnswlib-node a graph loaded whole). usearch's peak RSS also counts its memory-mapped views (one per ef, each mapping the whole file): compare RSS after build.",
    "",
  ];
  if (r.sides.length > 0) {
    lines.push(
      "| side | ef | recall@k | recall@10 | median ms | p99 ms | cold median / p99 ms | build s | RSS after build MiB | peak RSS MiB (data alone) | other CPU s |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
    );
    for (const s of r.sides) {
      for (const p of s.points) {
        lines.push(
          `| ${s.side} | ${s.side === "exact" ? "—" : p.ef} | ${p.recall.toFixed(4)} | ${p.recall_at_10?.toFixed(4) ?? "—"} | ${p.median_ms.toFixed(2)} | ${p.p99_ms.toFixed(2)} | ${p.cold_median_ms === undefined ? "—" : `${p.cold_median_ms.toFixed(2)} / ${p.cold_p99_ms?.toFixed(1)}`} | ${s.build_s?.toFixed(1) ?? "—"} | ${s.build_rss_mib?.toFixed(0) ?? "—"} | ${s.peak_rss_mib.toFixed(0)} (${s.data_rss_mib.toFixed(0)}) | ${s.other_cpu_s.toFixed(0)} |`,
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
    const hBest = hn?.points.reduce((a, b) => (b.recall > a.recall ? b : a));
    const uMatch = us?.points
      .filter((p) => hBest !== undefined && p.recall >= hBest.recall)
      .reduce<SearchPoint | undefined>(
        (a, b) => (a === undefined || b.median_ms < a.median_ms ? b : a),
        undefined,
      );
    if (hBest !== undefined && uMatch !== undefined) {
      lines.push(
        `At hnswlib-node's best measured recall (${hBest.recall.toFixed(4)}, ef ${hBest.ef}, ${hBest.median_ms.toFixed(2)} ms), usearch's fastest point with at least that recall: ef ${uMatch.ef} (${uMatch.recall.toFixed(4)}, ${uMatch.median_ms.toFixed(2)} ms), latency ${(uMatch.median_ms / hBest.median_ms).toFixed(2)}× hnswlib-node's.`,
      );
    }
    if (us?.build_s !== undefined && hn?.build_s !== undefined) {
      lines.push(
        `Build: usearch ${us.build_s.toFixed(0)} s, hnswlib-node ${hn.build_s.toFixed(0)} s (${(hn.build_s / us.build_s).toFixed(2)}×). usearch file ${us.file_mib?.toFixed(0)} MiB.`,
      );
    }
    if (o["builds_from"] !== null && o["builds_from"] !== undefined) {
      lines.push(
        `The graphs (and the build figures) are those saved by the run recorded in ${String(o["builds_from"])}; this run measured the searches.`,
      );
    }
    if (us?.build_cpu_s !== undefined && hn?.build_cpu_s !== undefined) {
      lines.push(
        `The two builds ran side by side (--concurrent-builds), so their wall times share the cores; the work each did: usearch ${us.build_cpu_s.toFixed(0)} CPU s, hnswlib-node ${hn.build_cpu_s.toFixed(0)} CPU s (${(hn.build_cpu_s / us.build_cpu_s).toFixed(2)}×). Other processes besides the two builds: ${Math.max(0, (us.build_other_cpu_s ?? 0) - hn.build_cpu_s).toFixed(0)} CPU s. Each side's searches ran alone afterwards.`,
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
