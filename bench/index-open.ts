/**
 * `npm run bench -- index [--sizes 100000,1000000] [--dim 2048] [--batch 1024] [--commits 300]
 *   [--repeat 3] [--sqlite-page 4096] [--skip-peer] [--no-cold] [--fresh] [--tag T]`
 * The persistent index's storage (src/index/index-store.ts: a flat float32 vector file beside a
 * checksummed metadata journal) against SQLite (one table, the descriptor as a BLOB; Debian
 * python3's sqlite3 as the peer, WAL + synchronous=FULL, as durable as ours), and against the
 * machine's limit, the time to read the same vector bytes:
 * - open: a new process opens the index and loads every entry and every descriptor into memory
 *   (ours: IndexStore.open + matrix(); float16 storage too; SQLite: SELECT every row into one
 *   buffer), cold (page cache dropped first, when we may: root) and warm (median of --repeat);
 *   beside it `cat vectors > /dev/null` and a plain Node read of the vector file into one buffer.
 * - append: bulk (batches of --batch rows, one fsynced commit each) and single-row commits.
 * - memory: the open process's peak RSS and ArrayBuffer bytes against the vectors' size.
 * Data: rows repeat a pool of 1024 seeded random unit vectors (content does not matter to I/O);
 * built once into bench/.work/index/ and reused (--fresh rebuilds; an index of an older format is
 * rebuilt). Results: bench/results/index-<date>[-<tag>].json/.md.
 */
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readFully } from "../src/index/durable-io.ts";
import { IndexStore, type VectorDtype } from "../src/index/index-store.ts";
import { machine, median, python, SeededRandom, saveResult } from "./machine.ts";

const here = import.meta.dirname;
const POOL_ROWS = 1024;
const MODEL = "bench-model:pool1024";

interface OpenReport {
  /** Opening: manifest, journal read and replay (ours) or the whole SELECT (SQLite). */
  meta_ms: number;
  /** Loading the vectors into one array (ours), 0 for SQLite (inside meta_ms). */
  vectors_ms: number;
  total_ms: number;
  rows: number;
  rss_after_meta_mb: number;
  peak_rss_mb: number;
  array_buffers_mb: number;
}

interface Build {
  rows: number;
  seconds: number;
  bytes: number;
}

interface SizeResult {
  rows: number;
  dim: number;
  vector_bytes: number;
  build: { ours_f32: Build; ours_f16: Build; sqlite?: Build };
  cold?: Runs;
  warm: Runs;
}

interface Runs {
  cat_ms: number[];
  node_read_ms: number[];
  ours_f32: OpenReport[];
  ours_f16: OpenReport[];
  sqlite: OpenReport[];
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: "string", default: "100000,1000000" },
      dim: { type: "string", default: "2048" },
      batch: { type: "string", default: "1024" },
      commits: { type: "string", default: "300" },
      repeat: { type: "string", default: "3" },
      "sqlite-page": { type: "string", default: "4096" },
      "skip-peer": { type: "boolean", default: false },
      "no-cold": { type: "boolean", default: false },
      fresh: { type: "boolean", default: false },
      tag: { type: "string" },
      child: { type: "string" },
      path: { type: "string" },
    },
  });
  if (values.child !== undefined) {
    process.stdout.write(`${JSON.stringify(child(values.child, values.path!))}\n`);
    return;
  }
  const sizes = values.sizes.split(",").map(Number);
  const dim = Number(values.dim);
  const batch = Number(values.batch);
  const repeat = Number(values.repeat);
  const page = values["sqlite-page"];
  const peer = !values["skip-peer"];
  const work = join(here, ".work", "index");
  mkdirSync(work, { recursive: true });
  const pool = join(work, `pool-${dim}.f32`);
  if (!existsSync(pool)) {
    const v = new Float32Array(POOL_ROWS * dim);
    new SeededRandom(7).unitRows(v, dim);
    writeFileSync(pool, new Uint8Array(v.buffer));
  }
  const poolVectors = new Float32Array(readFileSync(pool).buffer.slice(0));
  const cold = !values["no-cold"] && dropCaches();
  process.stdout.write(
    `index bench: sizes ${sizes.join(", ")} × ${dim}, cold runs ${cold ? "on" : "off (cannot drop the page cache)"}\n`,
  );

  // Single-row commits (each one durable).
  const commits = Number(values.commits);
  const small = join(work, "commits.sgi");
  rmSync(small, { recursive: true, force: true });
  const s = IndexStore.create(small, { model: MODEL, dim });
  let t = performance.now();
  for (let i = 0; i < commits; i++) s.add(meta(i), poolVectors.subarray(0, dim));
  const oursCommitS = (performance.now() - t) / 1000;
  s.close();
  rmSync(small, { recursive: true, force: true });
  let sqliteCommitS: number | undefined;
  if (peer) {
    const db = join(work, "commits.sqlite");
    rmSync(db, { force: true });
    sqliteCommitS = sqlitePeer(["commits", db, pool, String(dim), String(commits), page]).seconds;
    rmSync(db, { force: true });
    rmSync(`${db}-wal`, { force: true });
    rmSync(`${db}-shm`, { force: true });
  }
  process.stdout.write(
    `  single-row commits: ours ${(commits / oursCommitS).toFixed(0)}/s` +
      (sqliteCommitS === undefined ? "" : `, SQLite ${(commits / sqliteCommitS).toFixed(0)}/s`) +
      "\n",
  );

  const results: SizeResult[] = [];
  const load = [loadavg()];
  for (const n of sizes) {
    const ours32 = join(work, `ours-${n}x${dim}.sgi`);
    const ours16 = join(work, `ours-${n}x${dim}-f16.sgi`);
    const db = join(work, `sqlite-${n}x${dim}-p${page}.sqlite`);
    const vectorFile = join(ours32, "vectors-1.f32");
    const build = {
      ours_f32: ensureOurs(ours32, n, dim, "float32", batch, poolVectors, values.fresh),
      ours_f16: ensureOurs(ours16, n, dim, "float16", batch, poolVectors, values.fresh),
      ...(peer ? { sqlite: ensureSqlite(db, pool, n, dim, batch, page, values.fresh) } : {}),
    };
    const runOnce = (): Runs => {
      const r: Runs = { cat_ms: [], node_read_ms: [], ours_f32: [], ours_f16: [], sqlite: [] };
      const before = () => {
        if (cold) dropCaches();
      };
      before();
      t = performance.now();
      execFileSync("sh", ["-c", 'cat "$0" > /dev/null', vectorFile]);
      r.cat_ms.push(performance.now() - t);
      before();
      r.node_read_ms.push(run("raw", vectorFile).total_ms);
      before();
      r.ours_f32.push(run("ours", ours32));
      before();
      r.ours_f16.push(run("ours", ours16));
      if (peer) {
        before();
        const p = sqlitePeer(["open", db, String(n), String(dim)]);
        r.sqlite.push({
          meta_ms: p.open_ms,
          vectors_ms: 0,
          total_ms: p.open_ms,
          rows: p.rows,
          rss_after_meta_mb: 0,
          peak_rss_mb: p.peak_rss_mb,
          array_buffers_mb: 0,
        });
      }
      return r;
    };
    const result: SizeResult = {
      rows: n,
      dim,
      vector_bytes: n * dim * 4,
      build,
      warm: emptyRuns(),
    };
    if (cold) {
      process.stdout.write(`  ${n}: cold opens…\n`);
      result.cold = runOnce();
    }
    process.stdout.write(`  ${n}: warm opens…\n`);
    // Warm: each measurement after a read of its own file (so it is the one in the cache).
    for (let i = 0; i < repeat; i++) {
      const r: Runs = emptyRuns();
      const warm = (file: string) => execFileSync("sh", ["-c", 'cat "$0" > /dev/null', file]);
      warm(vectorFile);
      t = performance.now();
      execFileSync("sh", ["-c", 'cat "$0" > /dev/null', vectorFile]);
      r.cat_ms.push(performance.now() - t);
      r.node_read_ms.push(run("raw", vectorFile).total_ms);
      r.ours_f32.push(run("ours", ours32));
      warm(join(ours16, "vectors-1.f16"));
      r.ours_f16.push(run("ours", ours16));
      if (peer) {
        warm(db);
        const p = sqlitePeer(["open", db, String(n), String(dim)]);
        r.sqlite.push({
          meta_ms: p.open_ms,
          vectors_ms: 0,
          total_ms: p.open_ms,
          rows: p.rows,
          rss_after_meta_mb: 0,
          peak_rss_mb: p.peak_rss_mb,
          array_buffers_mb: 0,
        });
      }
      for (const k of Object.keys(r) as (keyof Runs)[]) {
        (result.warm[k] as unknown[]).push(...(r[k] as unknown[]));
      }
    }
    results.push(result);
    load.push(loadavg());
    process.stdout.write(`${JSON.stringify(summaryRow(result))}\n`);
  }

  const record = {
    bench: "index",
    machine: machine(),
    sqlite_page_size: Number(page),
    batch,
    single_row_commits: {
      count: commits,
      ours_per_s: commits / oursCommitS,
      ...(sqliteCommitS === undefined ? {} : { sqlite_per_s: commits / sqliteCommitS }),
    },
    cold_runs: cold,
    /** Load averages (1, 5, 15 min) before and after each size: this is a shared 2-core VM. */
    load,
    sizes: results,
  };
  const date = new Date().toISOString().slice(0, 10);
  const tag = values.tag === undefined ? "" : `-${values.tag}`;
  saveResult(`index-${date}${tag}`, record, markdown(record, results, cold));
}

function emptyRuns(): Runs {
  return { cat_ms: [], node_read_ms: [], ours_f32: [], ours_f16: [], sqlite: [] };
}

function meta(i: number) {
  return {
    path: `/photos/2024/IMG_${String(i).padStart(7, "0")}.jpg`,
    size: 1000000 + i,
    mtimeMs: 1.7e12 + i,
    hash: i.toString(16).padStart(64, "0"),
  };
}

/** Builds (or reuses) our index of n rows; returns how long building took. */
function ensureOurs(
  dir: string,
  n: number,
  dim: number,
  dtype: VectorDtype,
  batch: number,
  pool: Float32Array,
  fresh: boolean,
): Build {
  const stamp = `${dir}.build.json`;
  if (!fresh && existsSync(stamp) && existsSync(dir) && opens(dir)) {
    return JSON.parse(readFileSync(stamp, "utf8")) as Build;
  }
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`  building ${dir} (${dtype})…\n`);
  const t = performance.now();
  const s = IndexStore.create(dir, { model: MODEL, dim, dtype });
  for (let i = 0; i < n; i++) {
    const k = i % POOL_ROWS;
    s.put(meta(i), pool.subarray(k * dim, (k + 1) * dim));
    if ((i + 1) % batch === 0) s.commit();
  }
  s.close();
  const build = { rows: n, seconds: (performance.now() - t) / 1000, bytes: folderBytes(dir) };
  writeFileSync(stamp, JSON.stringify(build));
  return build;
}

/** Whether our index in `dir` opens (it may be of an older format). */
function opens(dir: string): boolean {
  try {
    IndexStore.open(dir, { readOnly: true }).close();
    return true;
  } catch {
    return false;
  }
}

function ensureSqlite(
  db: string,
  pool: string,
  n: number,
  dim: number,
  batch: number,
  page: string,
  fresh: boolean,
): Build {
  const stamp = `${db}.build.json`;
  if (!fresh && existsSync(stamp) && existsSync(db)) {
    return JSON.parse(readFileSync(stamp, "utf8")) as Build;
  }
  for (const f of [db, `${db}-wal`, `${db}-shm`]) rmSync(f, { force: true });
  process.stdout.write(`  building ${db}…\n`);
  const r = sqlitePeer(["build", db, pool, String(n), String(dim), String(batch), page]);
  const build = { rows: n, seconds: r.seconds, bytes: r.bytes };
  writeFileSync(stamp, JSON.stringify(build));
  return build;
}

function folderBytes(dir: string): number {
  const out = execFileSync("du", ["-sb", dir], { encoding: "utf8" });
  return Number(out.split("\t")[0]);
}

// biome-ignore lint/suspicious/noExplicitAny: the peer's JSON
function sqlitePeer(args: string[]): any {
  const out = python(join(here, "peers", "sqlite_index.py"), args);
  return JSON.parse(out.trim().split("\n").pop()!);
}

/** Runs one open measurement in a fresh process. */
function run(mode: "ours" | "raw", path: string): OpenReport {
  const out = execFileSync(
    process.execPath,
    [...process.execArgv, join(here, "main.ts"), "index", "--child", mode, "--path", path],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  return JSON.parse(out.trim().split("\n").pop()!) as OpenReport;
}

function child(mode: string, path: string): OpenReport {
  const mb = (b: number) => b / 2 ** 20;
  const t0 = performance.now();
  if (mode === "raw") {
    // The limit: the vector file's bytes read into one preallocated buffer, 64 MiB a call.
    const size = statSync(path).size;
    const into = new Float32Array(size / 4); // (a Uint8Array cannot be 8.2 GB long)
    const fd = openSync(path, "r");
    for (let off = 0; off < size; off += 64 << 20) {
      readFully(fd, new Uint8Array(into.buffer, off, Math.min(64 << 20, size - off)), off);
    }
    closeSync(fd);
    const total = performance.now() - t0;
    return {
      meta_ms: 0,
      vectors_ms: total,
      total_ms: total,
      rows: 0,
      rss_after_meta_mb: 0,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024,
      array_buffers_mb: mb(process.memoryUsage().arrayBuffers),
    };
  }
  const store = IndexStore.open(path, { readOnly: true });
  const t1 = performance.now();
  const rssMeta = mb(process.memoryUsage().rss);
  const m = store.matrix();
  const t2 = performance.now();
  // Spot-check: row r holds pool row r % 1024 (rows are in disk order after an open).
  if (m.rows > 0 && store.entryAt(m.rows - 1).size !== 1000000 + m.rows - 1) {
    throw new Error("row order is not what was written");
  }
  const report = {
    meta_ms: t1 - t0,
    vectors_ms: t2 - t1,
    total_ms: t2 - t0,
    rows: m.rows,
    rss_after_meta_mb: rssMeta,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    array_buffers_mb: mb(process.memoryUsage().arrayBuffers),
  };
  store.close();
  return report;
}

/** Drops the page cache (root only); false if not permitted. */
function dropCaches(): boolean {
  try {
    execFileSync("sync");
    writeFileSync("/proc/sys/vm/drop_caches", "3");
    return true;
  } catch {
    return false;
  }
}

function summaryRow(r: SizeResult) {
  const med = (xs: OpenReport[]) =>
    xs.length === 0 ? Number.NaN : median(xs.map((x) => x.total_ms));
  return {
    rows: r.rows,
    cold: r.cold && {
      node_read_ms: r.cold.node_read_ms[0],
      ours_f32_ms: med(r.cold.ours_f32),
      ours_f16_ms: med(r.cold.ours_f16),
      sqlite_ms: med(r.cold.sqlite),
    },
    warm: {
      node_read_ms: median(r.warm.node_read_ms),
      ours_f32_ms: med(r.warm.ours_f32),
      ours_f16_ms: med(r.warm.ours_f16),
      sqlite_ms: med(r.warm.sqlite),
    },
  };
}

function markdown(
  record: {
    machine: object;
    load: number[][];
    batch: number;
    sqlite_page_size: number;
    single_row_commits: Record<string, number>;
  },
  results: SizeResult[],
  cold: boolean,
): string {
  const f = (ms: number) =>
    Number.isNaN(ms) ? "–" : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
  const x = (a: number, b: number) => (Number.isNaN(a) ? "–" : `${(a / b).toFixed(2)}x`);
  const med = (xs: OpenReport[], k: keyof OpenReport = "total_ms") =>
    xs.length === 0 ? Number.NaN : median(xs.map((v) => v[k]));
  const lines = [
    "# index: opening and appending to the persistent index (flat vector file + journal) vs SQLite",
    "",
    `machine: ${JSON.stringify(record.machine)}`,
    `load average (1, 5, 15 min) before / after each size: ${record.load.map((l) => l.map((v) => v.toFixed(2)).join(" ")).join(" / ")}`,
    `data: random unit vectors (a seeded pool of ${POOL_ROWS} rows, repeated), paths like /photos/2024/IMG_0000001.jpg; ` +
      `SQLite: Debian python3 sqlite3, one table, descriptor as BLOB, page size ${record.sqlite_page_size}, WAL, synchronous=FULL. ` +
      `Open = a new process loads every entry and every descriptor into memory. ` +
      `${cold ? "cold: page cache dropped before each (one run); " : ""}warm: the file read once just before (median of the runs).`,
    "",
    "| rows × dim | cache | cat vectors > /dev/null | Node read into one buffer (limit) | ours float32: journal + vectors = open | ours / limit | ours float16 open | SQLite open | SQLite / limit |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of results) {
    const runs: [string, Runs][] = [];
    if (r.cold !== undefined) runs.push(["cold", r.cold]);
    runs.push(["warm", r.warm]);
    for (const [label, v] of runs) {
      const limit = median(v.node_read_ms);
      const ours = med(v.ours_f32);
      lines.push(
        `| ${r.rows} × ${r.dim} (${(r.vector_bytes / 1e9).toFixed(2)} GB) | ${label} | ${f(median(v.cat_ms))} | ${f(limit)} | ` +
          `${f(med(v.ours_f32, "meta_ms"))} + ${f(med(v.ours_f32, "vectors_ms"))} = **${f(ours)}** | **${x(ours, limit)}** | ` +
          `${f(med(v.ours_f16))} | ${f(med(v.sqlite))} | ${x(med(v.sqlite), limit)} |`,
      );
    }
  }
  lines.push(
    "",
    `| rows | ours bulk append (batches of ${record.batch}, each fsynced) | SQLite bulk insert (same batches) | ours bytes on disk (f32 / f16) | SQLite bytes |`,
    "| --- | --- | --- | --- | --- |",
  );
  for (const r of results) {
    const rate = (b: Build | undefined) =>
      b === undefined
        ? "–"
        : `${(b.rows / b.seconds).toFixed(0)} rows/s (${(r.vector_bytes / b.seconds / 1e6).toFixed(0)} MB/s of vectors)`;
    lines.push(
      `| ${r.rows} | ${rate(r.build.ours_f32)} | ${rate(r.build.sqlite)} | ${(r.build.ours_f32.bytes / 1e9).toFixed(3)} GB / ${(r.build.ours_f16.bytes / 1e9).toFixed(3)} GB | ${r.build.sqlite === undefined ? "–" : `${(r.build.sqlite.bytes / 1e9).toFixed(3)} GB`} |`,
    );
  }
  const c = record.single_row_commits;
  lines.push(
    "",
    `single-row commits (each durable): ours ${c["ours_per_s"]!.toFixed(0)}/s` +
      (c["sqlite_per_s"] === undefined ? "" : `, SQLite ${c["sqlite_per_s"].toFixed(0)}/s`) +
      ` (${c["count"]} commits).`,
    "",
    "| rows | vectors (MiB) | ours: RSS after the journal | peak RSS | ArrayBuffer bytes / vector bytes | SQLite peak RSS |",
    "| --- | --- | --- | --- | --- | --- |",
  );
  for (const r of results) {
    const w = r.warm.ours_f32;
    const vm = r.vector_bytes / 2 ** 20;
    lines.push(
      `| ${r.rows} | ${vm.toFixed(0)} | ${med(w, "rss_after_meta_mb").toFixed(0)} MiB | ${med(w, "peak_rss_mb").toFixed(0)} MiB | ${(med(w, "array_buffers_mb") / vm).toFixed(3)}x | ${Number.isNaN(med(r.warm.sqlite, "peak_rss_mb")) ? "–" : `${med(r.warm.sqlite, "peak_rss_mb").toFixed(0)} MiB`} |`,
    );
  }
  return lines.join("\n");
}
