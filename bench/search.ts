/**
 * `npm run bench -- search [--rows 1000000] [--dim 2048] [--queries 70] [--k 100] [--threads 2]
 *   [--repeat 3] [--chunk-rows R] [--seed S] [--peer-blas DIR] [--skip-peer]`
 * Exact top-k inner-product search over a large float32 database: our ExactSearch against faiss
 * IndexFlatIP (Debian python3-faiss, same threads) in the same run, for a batch of queries and for
 * one query, with peak memory; beside them the machine's limits: the time to stream the database
 * once and the matrix-multiply peak (a large onnxruntime MatMul), which bound the one-query and
 * the batch time.
 * faiss sends batches to the BLAS sgemm that libblas.so.3 resolves to. Where that is the netlib
 * reference BLAS (Debian's default without OpenBLAS) faiss is very slow, so --peer-blas (or
 * $SUPERGLOBAL_PEER_BLAS) names a folder holding another libblas.so.3, e.g. OpenBLAS unpacked from
 * Debian's package without installing it (`dpkg-deb -x libopenblas0-pthread_*.deb bench/.work/openblas`,
 * folder usr/lib/x86_64-linux-gnu/openblas-pthread); faiss then also runs with it.
 * Data: random unit vectors from a seeded PRNG, written once to bench/.work/search/ in chunks and
 * reused. The sides run one after the other, each in its own process (each holds the whole
 * database: 8.2 GB at 1M × 2048), never two at once.
 */
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  writeSync,
} from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readMatrixF32, readMatrixF32Into, readMatrixI32, writeNpy } from "../src/io/npy.ts";
import { OnnxGraph } from "../src/runtime/onnx-graph.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { ExactSearch } from "../src/search/exact-search.ts";
import {
  contention,
  cpuTimes,
  machine,
  median,
  ownCpuSeconds,
  peakRssMiB,
  python,
  SeededRandom,
  saveResult,
} from "./machine.ts";

const here = import.meta.dirname;
/** Rows generated and written per step (64 MiB at 2048 dims). */
const WRITE_ROWS = 8192;
/** Block rows of the limit measurements when --chunk-rows is not given (ExactSearch's default). */
const DEFAULT_BLOCK_ROWS = 65536;

interface Options {
  rows: number;
  dim: number;
  queries: number;
  k: number;
  threads: number;
  repeat: number;
  chunkRows: number | undefined;
}

interface Files {
  db: string;
  queries: string;
  oursIds: string;
  oursScores: string;
  peerIds: string;
  peerScores: string;
}

/** What our child process reports. */
interface OursReport {
  load_ms: number;
  create_ms: number;
  batch_ms: number[];
  single_ms: number[];
  /** Peak RSS once the database was loaded, and after the searches (before the limit probes). */
  loaded_rss_mb: number;
  peak_rss_mb: number;
  /** CPU seconds this process used (all threads). */
  cpu_s: number;
  limits: Limits;
}

interface Limits {
  blockRows: number;
  /** One pass of ReduceSum over every block of the database. */
  reduce_sum_ms: number[];
  /** One query's Gemm + ReduceMax over every block: our one-query scan without TopK and merge. */
  gemm_one_ms: number[];
  /** TopK(k) alone on one [nq, blockRows] score block, run once per block (same count). */
  topk_ms: number[];
  matmul: { m: number; k: number; n: number; runs_ms: number[]; gflop_per_s: number };
  /** The batch's Gemm + ReduceMax over every block: our batch without TopK and merge. */
  gemm_batch_ms: number[];
}

interface Peer {
  label: string;
  report: PeerReport;
  agreement: Agreement;
}

interface PeerReport {
  faiss: string;
  threads: number;
  load_s: number;
  batch_ms: number[];
  single_ms: number[];
  peak_rss_mb: number;
  loaded_rss_mb: number;
  cpu_s: number;
  [key: string]: unknown;
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      rows: { type: "string", default: "1000000" },
      dim: { type: "string", default: "2048" },
      queries: { type: "string", default: "70" },
      k: { type: "string", default: "100" },
      threads: { type: "string", default: "2" },
      repeat: { type: "string", default: "3" },
      "chunk-rows": { type: "string" },
      seed: { type: "string", default: "11" },
      "peer-blas": { type: "string", default: process.env["SUPERGLOBAL_PEER_BLAS"] ?? "" },
      "skip-peer": { type: "boolean", default: false },
      worker: { type: "boolean", default: false },
    },
  });
  const o: Options = {
    rows: Number(values.rows),
    dim: Number(values.dim),
    queries: Number(values.queries),
    k: Number(values.k),
    threads: Number(values.threads),
    repeat: Number(values.repeat),
    chunkRows: values["chunk-rows"] === undefined ? undefined : Number(values["chunk-rows"]),
  };
  const seed = Number(values.seed);
  const dir = workDir();
  const tag = `${o.rows}x${o.dim}-s${seed}`;
  const files: Files = {
    db: join(dir, `db-${tag}.npy`),
    queries: join(dir, `queries-${o.queries}x${o.dim}-s${seed}.npy`),
    oursIds: join(dir, `ours-ids-${tag}.npy`),
    oursScores: join(dir, `ours-scores-${tag}.npy`),
    peerIds: join(dir, `faiss-ids-${tag}.npy`),
    peerScores: join(dir, `faiss-scores-${tag}.npy`),
  };
  if (values.worker) {
    await worker(files, o);
    return;
  }

  const gb = (o.rows * o.dim * 4) / 1e9;
  process.stdout.write(
    `search bench: top-${o.k} of ${o.rows} × ${o.dim} float32 (${gb.toFixed(2)} GB), ` +
      `${o.queries} queries, ${o.threads} threads\n`,
  );
  const load = [loadavg()];
  const generated = ensureDatabase(files.db, o.rows, o.dim, seed);
  if (!existsSync(files.queries)) {
    // Queries from their own stream, so they are not database rows.
    const q = new Float32Array(o.queries * o.dim);
    new SeededRandom(seed ^ 0x5bd1e995).unitRows(q, o.dim);
    writeNpy(files.queries, q, [o.queries, o.dim]);
  }

  // Ours, in a child process that holds the database; it exits before any peer starts.
  process.stdout.write("  ours: loading and searching…\n");
  let cpu = cpuTimes();
  const ours = JSON.parse(
    lastLine(
      execFileSync(
        process.execPath,
        [...process.execArgv, join(here, "main.ts"), "search", "--worker", ...argv],
        { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 },
      ),
    ),
  ) as OursReport;
  const disturbance = [{ side: "ours", ...contention(cpu, cpuTimes(), ours.cpu_s) }];
  load.push(loadavg());

  // Peers: faiss with another libblas.so.3 (--peer-blas, e.g. OpenBLAS) first, as it is quick,
  // then with the machine's own BLAS.
  const peerRuns: Array<{ label: string; env: NodeJS.ProcessEnv }> = [];
  if (!values["skip-peer"]) {
    const blasDir = values["peer-blas"];
    if (blasDir !== "") {
      if (!existsSync(join(blasDir, "libblas.so.3"))) {
        throw new Error(`--peer-blas: no libblas.so.3 in ${blasDir}`);
      }
      peerRuns.push({
        label: "OpenBLAS via --peer-blas",
        env: { LD_LIBRARY_PATH: blasDir, OPENBLAS_NUM_THREADS: String(o.threads) },
      });
    }
    peerRuns.push({ label: "system BLAS", env: {} });
  }
  const peers: Peer[] = [];
  for (const run of peerRuns) {
    process.stdout.write(`  faiss (${run.label}): loading and searching…\n`);
    cpu = cpuTimes();
    const report = JSON.parse(
      lastLine(
        python(
          join(here, "peers", "faiss_search.py"),
          [
            ...["--db", files.db, "--queries", files.queries, "--k", String(o.k)],
            ...["--threads", String(o.threads), "--repeat", String(o.repeat)],
            ...["--out", files.peerIds, "--out-scores", files.peerScores],
          ],
          run.env,
        ),
      ),
    ) as PeerReport;
    disturbance.push({ side: `faiss, ${run.label}`, ...contention(cpu, cpuTimes(), report.cpu_s) });
    load.push(loadavg());
    peers.push({ label: run.label, report, agreement: compare(files, o) });
  }

  // Limits: streaming the database once bounds one query; the MatMul peak bounds the batch.
  const lim = ours.limits;
  const flops = 2 * o.queries * o.rows * o.dim;
  // Each limit is the best this machine was seen to do in this run: the fastest single pass over
  // the database by any probe (our own one-query search included), and the higher of the MatMul
  // probe's GFLOP/s and our batch Gemm's (a VM's MatMul probe can come out below what the scan
  // reached, and a limit must not be beaten).
  const oursSingle = median(ours.single_ms);
  const passes: Array<[string, number]> = [
    ["a ReduceSum pass", median(lim.reduce_sum_ms)],
    ["a one-query Gemm + ReduceMax pass", median(lim.gemm_one_ms)],
    ["our one-query search", oursSingle],
  ];
  const [streamBy, streamMs] = passes.reduce((a, b) => (b[1] < a[1] ? b : a));
  const scanGflops = flops / (Math.min(...lim.gemm_batch_ms) * 1e6);
  const peakGflops = Math.max(lim.matmul.gflop_per_s, scanGflops);
  const peakBy =
    peakGflops === lim.matmul.gflop_per_s
      ? "the MatMul probe"
      : "the batch Gemm scan (fastest run)";
  const computeMs = (flops / (peakGflops * 1e9)) * 1000;
  const batchLimitMs = Math.max(computeMs, streamMs);
  const oursBatch = median(ours.batch_ms);
  const vectorsMiB = (o.rows * o.dim * 4) / 2 ** 20;
  const oblas = process.env["OPENBLAS_CORETYPE"] ?? "unset";
  const ratios = peers.map((p) => ({
    peer: p.label,
    batch: median(p.report.batch_ms) / oursBatch,
    single: median(p.report.single_ms) / oursSingle,
  }));
  const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
  const lines = [
    `# search: exact top-${o.k}, ${o.queries} queries over ${o.rows} × ${o.dim} float32 (${gb.toFixed(2)} GB)`,
    "",
    `machine: ${JSON.stringify(machine())}`,
    `OPENBLAS_CORETYPE: ${oblas}; load average (1, 5, 15 min) before / after ours / after each faiss: ${load.map(fmtLoad).join(" / ")}; ` +
      `while each side ran, other processes used / the hypervisor stole: ${disturbance
        .map((c) => `${c.side} ${c.otherCpuS.toFixed(1)} CPU-s / ${pct(c.stealShare)}`)
        .join("; ")}`,
    `data: random unit vectors (seeded Gaussian directions), ${generated ? "generated in this run" : "reused from bench/.work"}, ` +
      `read by readMatrixF32Into into one Float32Array; ` +
      `ExactSearch chunkRows ${o.chunkRows ?? "default"}, ${o.threads} threads; median of ${o.repeat} runs (all runs in brackets)`,
    "",
    `| | batch of ${o.queries} (ms) | one query (ms) | peak RSS (MiB) | load (s) |`,
    "|---|---|---|---|---|",
    `| superglobal ExactSearch (onnxruntime Gemm + TopK) | ${oursBatch.toFixed(0)} (${fmtRuns(ours.batch_ms)}) | ${oursSingle.toFixed(0)} (${fmtRuns(ours.single_ms)}) | ${ours.peak_rss_mb.toFixed(0)} | ${(ours.load_ms / 1000).toFixed(1)} |`,
    ...peers.map(
      ({ label, report: p }) =>
        `| faiss ${p.faiss} IndexFlatIP, ${label} (${p.threads} threads) | ${median(p.batch_ms).toFixed(0)} (${fmtRuns(p.batch_ms)}) | ${median(p.single_ms).toFixed(0)} (${fmtRuns(p.single_ms)}) | ${p.peak_rss_mb.toFixed(0)} | ${p.load_s.toFixed(1)} |`,
    ),
    ...ratios.map(
      (r) =>
        `| **speed-up vs faiss, ${r.peer}** (target ≥ 3x) | **${r.batch.toFixed(2)}x** | **${r.single.toFixed(2)}x** | | |`,
    ),
    `| machine limit | ${batchLimitMs.toFixed(0)} | ${streamMs.toFixed(0)} | ${vectorsMiB.toFixed(0)} (the vectors) | |`,
    `| **ours / limit** (target ≤ 1.5x; memory ≤ 1.1x) | **${(oursBatch / batchLimitMs).toFixed(2)}x** | **${(oursSingle / streamMs).toFixed(2)}x** | **${(ours.peak_rss_mb / vectorsMiB).toFixed(3)}x** | |`,
    "",
    `limits (onnxruntime, ${o.threads} threads, over the same ${lim.blockRows}-row blocks; each the best seen in this run): ` +
      `streaming the database once ${streamMs.toFixed(0)} ms = ${((o.rows * o.dim * 4) / (streamMs * 1e6)).toFixed(1)} GB/s, by ${streamBy} ` +
      `(medians: ReduceSum pass ${passes[0]![1].toFixed(0)} ms, one-query Gemm + ReduceMax pass ${passes[1]![1].toFixed(0)} ms, ` +
      `our one-query search ${oursSingle.toFixed(0)} ms); compute peak ${peakGflops.toFixed(0)} GFLOP/s, by ${peakBy} ` +
      `(MatMul [${lim.matmul.m}×${lim.matmul.k}]·[${lim.matmul.k}×${lim.matmul.n}] best of ${lim.matmul.runs_ms.length}: ${lim.matmul.gflop_per_s.toFixed(0)} GFLOP/s; ` +
      `batch Gemm scan ${scanGflops.toFixed(0)} GFLOP/s), so the batch's ${(flops / 1e9).toFixed(0)} GFLOP need ≥ ${computeMs.toFixed(0)} ms ` +
      `(batch limit = max(compute, stream)).`,
    `where the batch time goes: Gemm + ReduceMax over the same blocks (no TopK, no merge) ${median(lim.gemm_batch_ms).toFixed(0)} ms ` +
      `(${(flops / median(lim.gemm_batch_ms) / 1e6).toFixed(0)} GFLOP/s; runs ${fmtRuns(lim.gemm_batch_ms)}); TopK(${o.k}) alone on ` +
      `${Math.ceil(o.rows / lim.blockRows)} score blocks of [${o.queries}, ${lim.blockRows}] ${median(lim.topk_ms).toFixed(0)} ms; ` +
      `ours with TopK and merge ${oursBatch.toFixed(0)} ms (${(flops / oursBatch / 1e6).toFixed(0)} GFLOP/s).`,
    `memory: ours peak RSS ${ours.peak_rss_mb.toFixed(0)} MiB (${ours.loaded_rss_mb.toFixed(0)} MiB with the database loaded) ` +
      `for ${vectorsMiB.toFixed(0)} MiB of vectors` +
      peers
        .map(
          ({ label, report: p }) =>
            `; faiss (${label}) ${p.peak_rss_mb.toFixed(0)} MiB (${p.loaded_rss_mb.toFixed(0)} MiB after add())`,
        )
        .join("") +
      ".",
    ...peers.map(
      ({ label, report: p }) =>
        `faiss (${label}): BLAS ${p["blas"] === undefined ? "?" : JSON.stringify(p["blas"])}, compile options ${String(p["compile_options"])}.`,
    ),
    ...peers.map(({ label, agreement }) => agreementText(agreement, o, label)),
  ];
  process.stdout.write(`\n${lines.join("\n")}\n`);
  saveResult(
    `search-${o.rows === 1000000 ? "" : `${o.rows}-`}${new Date().toISOString().slice(0, 10)}`,
    {
      machine: machine(),
      openblasCoretype: oblas,
      loadavg: load,
      disturbance,
      options: o,
      seed,
      ours,
      peers,
      limits: { streamMs, streamBy, peakGflops, peakBy, computeMs, batchLimitMs, flops },
      ratios: {
        vsFaiss: ratios,
        batchVsLimit: oursBatch / batchLimitMs,
        singleVsLimit: oursSingle / streamMs,
        memoryVsVectors: ours.peak_rss_mb / vectorsMiB,
      },
    },
    lines.join("\n"),
  );
}

/** Our side, as a child process: load the database into one Float32Array, search, probe limits. */
async function worker(files: Files, o: Options): Promise<void> {
  const { rows, dim } = o;
  let t = performance.now();
  const data = new Float32Array(rows * dim);
  readMatrixF32Into(files.db, data, 0, dim);
  const loadMs = performance.now() - t;
  const loadedRss = peakRssMiB();
  const db = { data, rows, cols: dim };
  const queries = readMatrixF32(files.queries);
  const one = (i: number) => ({
    data: queries.data.subarray(i * dim, (i + 1) * dim),
    rows: 1,
    cols: dim,
  });

  t = performance.now();
  const search = await ExactSearch.create({
    threads: o.threads,
    ...(o.chunkRows === undefined ? {} : { chunkRows: o.chunkRows }),
  });
  const createMs = performance.now() - t;
  // Warm-up on the first block only: the first run at a shape pays allocation.
  const head = {
    data: data.subarray(0, Math.min(rows, 65536) * dim),
    rows: Math.min(rows, 65536),
    cols: dim,
  };
  await search.search(head, queries, o.k);
  await search.search(head, one(0), o.k);

  const batch: number[] = [];
  let result: Awaited<ReturnType<ExactSearch["search"]>> | undefined;
  for (let r = 0; r < o.repeat; r++) {
    t = performance.now();
    result = await search.search(db, queries, o.k);
    batch.push(performance.now() - t);
    progress(`batch ${batch.at(-1)!.toFixed(0)} ms`);
  }
  const single: number[] = [];
  for (let r = 0; r < o.repeat; r++) {
    t = performance.now();
    await search.search(db, one(r % queries.rows), o.k);
    single.push(performance.now() - t);
    progress(`one query ${single.at(-1)!.toFixed(0)} ms`);
  }
  await search.release();
  const peak = peakRssMiB();
  writeNpy(files.oursIds, result!.ids, [queries.rows, result!.k]);
  writeNpy(files.oursScores, result!.scores, [queries.rows, result!.k]);

  const limits = await measureLimits(db, queries, o);
  const report: OursReport = {
    load_ms: loadMs,
    create_ms: createMs,
    batch_ms: batch,
    single_ms: single,
    loaded_rss_mb: loadedRss,
    peak_rss_mb: peak,
    cpu_s: ownCpuSeconds(),
    limits,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/**
 * The machine's limits, measured with onnxruntime (2 threads) on the same blocks as the search:
 * a ReduceSum over each block reads every byte once and does little else (streaming bandwidth),
 * and a large square MatMul gives the attainable GFLOP/s. Gemm + ReduceMax over the blocks is
 * our batch minus TopK and merging.
 */
async function measureLimits(
  db: { data: Float32Array; rows: number; cols: number },
  queries: { data: Float32Array; rows: number; cols: number },
  o: Options,
): Promise<Limits> {
  const { rows, cols: d } = db;
  const blockRows = Math.min(o.chunkRows ?? DEFAULT_BLOCK_ROWS, rows);
  const opts = { threads: o.threads };

  const sum = new OnnxGraph("stream_sum");
  sum.node(
    "ReduceSum",
    [sum.input("x", ["n", "d"]), sum.int64Init("axes", [1], [1])],
    { keepdims: 0 },
    ["s"],
  );
  sum.output("s", ["n"]);
  const sumSession = await OnnxSession.create(sum.encode(), opts);
  const scan = async (
    session: OnnxSession,
    extra: Record<string, { data: Float32Array; dims: number[] }>,
  ) => {
    const t = performance.now();
    for (let r0 = 0; r0 < rows; r0 += blockRows) {
      const n = Math.min(blockRows, rows - r0);
      await session.run({
        ...extra,
        x: { data: db.data.subarray(r0 * d, (r0 + n) * d), dims: [n, d] },
      });
    }
    return performance.now() - t;
  };
  await scan(sumSession, {});
  const stream: number[] = [];
  for (let r = 0; r < o.repeat; r++) stream.push(await scan(sumSession, {}));
  await sumSession.release();
  progress(`stream ${fmtRuns(stream)} ms`);

  const gemm = new OnnxGraph("gemm_scan");
  const [s] = gemm.node("Gemm", [gemm.input("q", ["nq", "d"]), gemm.input("x", ["n", "d"])], {
    transB: 1,
  });
  gemm.node("ReduceMax", [s!], { axes: [1], keepdims: 0 }, ["m"]);
  gemm.output("m", ["nq"]);
  const gemmSession = await OnnxSession.create(gemm.encode(), opts);
  const gemmScan = async (nq: number): Promise<number[]> => {
    const q = { data: queries.data.subarray(0, nq * d), dims: [nq, d] };
    await scan(gemmSession, { q });
    const runs: number[] = [];
    for (let r = 0; r < o.repeat; r++) runs.push(await scan(gemmSession, { q }));
    return runs;
  };
  const gemmBatch = await gemmScan(queries.rows);
  const gemmOne = await gemmScan(1);
  await gemmSession.release();
  progress(`gemm scan, batch ${fmtRuns(gemmBatch)} ms, one query ${fmtRuns(gemmOne)} ms`);

  const tk = new OnnxGraph("topk_alone");
  tk.node("TopK", [tk.input("s", ["nq", "n"]), tk.int64Init("k", [1], [o.k])], { axis: 1 }, [
    "values",
    "indices",
  ]);
  tk.output("values", ["nq", o.k]);
  tk.output("indices", ["nq", o.k], "int64");
  const tkSession = await OnnxSession.create(tk.encode(), opts);
  const scores = new Float32Array(queries.rows * blockRows);
  const rndScores = new SeededRandom(5);
  for (let i = 0; i < scores.length; i++) scores[i] = rndScores.normal() * 0.02;
  const blocks = Math.ceil(rows / blockRows);
  const topkPass = async (): Promise<number> => {
    const t = performance.now();
    for (let b = 0; b < blocks; b++) {
      await tkSession.run({ s: { data: scores, dims: [queries.rows, blockRows] } });
    }
    return performance.now() - t;
  };
  await topkPass();
  const topk: number[] = [];
  for (let r = 0; r < o.repeat; r++) topk.push(await topkPass());
  await tkSession.release();
  progress(`topk alone ${fmtRuns(topk)} ms`);

  const [m, k, n] = [2048, 2048, 2048];
  const mm = new OnnxGraph("matmul_peak");
  mm.node("MatMul", [mm.input("a", [m, k]), mm.input("b", [k, n])], {}, ["c"]);
  mm.output("c", [m, n]);
  const mmSession = await OnnxSession.create(mm.encode(), opts);
  const a = new Float32Array(m * k);
  const b = new Float32Array(k * n);
  const rnd = new SeededRandom(3);
  for (let i = 0; i < a.length; i++) a[i] = rnd.uniform() - 0.5;
  for (let i = 0; i < b.length; i++) b[i] = rnd.uniform() - 0.5;
  const feeds = { a: { data: a, dims: [m, k] }, b: { data: b, dims: [k, n] } };
  await mmSession.run(feeds);
  const mmRuns: number[] = [];
  for (let r = 0; r < Math.max(10, o.repeat); r++) {
    const t = performance.now();
    await mmSession.run(feeds);
    mmRuns.push(performance.now() - t);
  }
  await mmSession.release();
  // The best run: the peak the hardware reaches when nothing else interferes.
  const gflops = (2 * m * k * n) / (Math.min(...mmRuns) * 1e6);
  progress(`matmul ${gflops.toFixed(0)} GFLOP/s`);

  return {
    blockRows,
    reduce_sum_ms: stream,
    gemm_one_ms: gemmOne,
    topk_ms: topk,
    matmul: { m, k, n, runs_ms: mmRuns, gflop_per_s: gflops },
    gemm_batch_ms: gemmBatch,
  };
}

interface Agreement {
  /** Mean over queries of |ours ∩ faiss| / k. */
  recall: number;
  minRecall: number;
  /** Ids found by only one side, in all. */
  differing: number;
  /** Largest |ours − faiss| float32 score at the same rank. */
  maxScoreDiff: number;
  /** Largest exact (float64) score gap between an id only we found and an id only faiss found. */
  maxExactGap: number;
}

/**
 * Our top-k against faiss's: recall per query, the float32 scores rank by rank, and for ids only
 * one side found, their exact float64 scores (rows read back from the file): if those are within
 * float32 rounding of each other, the two lists differ by a near-tie at the k-th place.
 */
function compare(files: Files, o: Options): Agreement {
  const ours = readMatrixI32(files.oursIds);
  const theirs = readMatrixI32(files.peerIds);
  const oursScores = readMatrixF32(files.oursScores);
  const theirScores = readMatrixF32(files.peerScores);
  const queries = readMatrixF32(files.queries);
  const k = ours.cols;
  const d = o.dim;
  const fd = openSync(files.db, "r");
  const dataStart = npyHeader([o.rows, d]).length;
  const row = new Float32Array(d);
  const exact = (q: number, id: number): number => {
    readSync(fd, new Uint8Array(row.buffer), 0, d * 4, dataStart + id * d * 4);
    let s = 0;
    for (let i = 0; i < d; i++) s += row[i]! * queries.data[q * d + i]!;
    return s;
  };
  let recallSum = 0;
  let minRecall = 1;
  let differing = 0;
  let maxScoreDiff = 0;
  let maxExactGap = 0;
  try {
    for (let q = 0; q < ours.rows; q++) {
      const mine = new Set(ours.data.subarray(q * k, (q + 1) * k));
      const other = new Set(theirs.data.subarray(q * k, (q + 1) * k));
      const onlyOurs = [...mine].filter((id) => !other.has(id));
      const onlyTheirs = [...other].filter((id) => !mine.has(id));
      const recall = (k - onlyTheirs.length) / k;
      recallSum += recall;
      minRecall = Math.min(minRecall, recall);
      differing += onlyOurs.length + onlyTheirs.length;
      for (let j = 0; j < k; j++) {
        const diff = Math.abs(oursScores.data[q * k + j]! - theirScores.data[q * k + j]!);
        maxScoreDiff = Math.max(maxScoreDiff, diff);
      }
      if (onlyOurs.length + onlyTheirs.length > 0) {
        const a = onlyOurs.map((id) => exact(q, id));
        const b = onlyTheirs.map((id) => exact(q, id));
        const all = [...a, ...b];
        maxExactGap = Math.max(maxExactGap, Math.max(...all) - Math.min(...all));
      }
    }
  } finally {
    closeSync(fd);
  }
  return { recall: recallSum / ours.rows, minRecall, differing, maxScoreDiff, maxExactGap };
}

function agreementText(a: Agreement, o: Options, label: string): string {
  return (
    `agreement with faiss (${label}): recall of faiss's top-${o.k} ${a.recall.toFixed(4)} (min over queries ${a.minRecall.toFixed(2)}); ` +
    `${a.differing} ids found by only one side` +
    (a.differing === 0
      ? ""
      : ` (largest exact float64 score gap among them ${a.maxExactGap.toExponential(2)}: near-ties at the k-th place)`) +
    `; largest float32 score difference at the same rank ${a.maxScoreDiff.toExponential(2)}.`
  );
}

/**
 * Writes the database `.npy` once, in chunks of WRITE_ROWS rows (to a temporary name first, so a
 * run cut short never leaves a partial file to reuse). Returns whether it was generated now.
 */
function ensureDatabase(path: string, rows: number, dim: number, seed: number): boolean {
  if (existsSync(path)) return false;
  const tmp = `${path}.partial`;
  const rnd = new SeededRandom(seed);
  const chunk = new Float32Array(WRITE_ROWS * dim);
  const t = performance.now();
  const fd = openSync(tmp, "w");
  try {
    writeAll(fd, npyHeader([rows, dim]));
    for (let r0 = 0; r0 < rows; r0 += WRITE_ROWS) {
      const n = Math.min(WRITE_ROWS, rows - r0);
      rnd.unitRows(chunk, dim, 0, n);
      writeAll(fd, new Uint8Array(chunk.buffer, 0, n * dim * 4));
      if ((r0 / WRITE_ROWS) % 16 === 15) progress(`generated ${r0 + n} of ${rows} rows`);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  progress(`database written in ${((performance.now() - t) / 1000).toFixed(0)} s: ${path}`);
  return true;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done);
}

/** A `.npy` version 1.0 header for a little-endian float32 C-order array (data on 64 bytes). */
function npyHeader(shape: number[]): Uint8Array {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}), }`;
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64;
  dict = `${dict}${" ".repeat(total - 10 - dict.length - 1)}\n`;
  const out = Buffer.alloc(total);
  out.write("\x93NUMPY", 0, "latin1");
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(dict.length, 8);
  out.write(dict, 10, "latin1");
  return out;
}

function workDir(): string {
  const dir = join(here, ".work", "search");
  mkdirSync(dir, { recursive: true });
  return dir;
}

function progress(text: string): void {
  process.stderr.write(`    ${text}\n`);
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
