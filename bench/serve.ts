/**
 * `npm run bench -- serve [--rows 100000] [--clusters 2000] [--requests 300] [--duration 10]
 *   [--concurrency 4] [--queue 8] [--upload-seconds 15] [--seed 7]`
 * A bounded load test of `superglobal serve` on loopback, against an index of `--rows` descriptors
 * (random clustered unit vectors written straight into the store with the default model's
 * identity, so the server opens it as its own):
 * 1. searches by id (no extraction: exactly search + rerank), one at a time, `--requests` per
 *    rerank mode: p50/p99 of the server's search and rerank stages and of the round trip;
 * 2. searches by id from `--concurrency` clients for `--duration` seconds: throughput;
 * 3. image uploads from 4x the queue bound of clients at once, twice, `--upload-seconds` each:
 *    answers (200, or 503 with Retry-After, which the clients honour), errors (anything else),
 *    extraction / queue / search / rerank times, and the server's memory before, during and after.
 * The server runs as its own process (the CLI), the clients in this one. Results go to
 * bench/results/serve-<date>.md/.json with the machine.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { Index } from "../src/app/photo-index.ts";
import { DEFAULT_WHITENING_DIR } from "../src/descriptor/default-model.ts";
import { Extractor } from "../src/descriptor/extractor.ts";
import { IndexStore } from "../src/index/index-store.ts";
import type { StageTimings } from "../src/server/search-service.ts";
import {
  contention,
  cpuTimes,
  machine,
  ownCpuSeconds,
  SeededRandom,
  saveResult,
} from "./machine.ts";

const here = import.meta.dirname;
const repo = join(here, "..");
const photos = join(repo, "..", "shared", "assets", "debian-photos");
/** Uploaded queries: real photos, 384 px on the long side (a phone photo would take longer). */
const QUERY_PHOTOS = ["darknet/dog.jpg", "darknet/eagle.jpg", "mate/Aqua.jpg", "plasma/Kite.jpg"];

interface Options {
  rows: number;
  clusters: number;
  requests: number;
  duration: number;
  concurrency: number;
  queue: number;
  uploadSeconds: number;
  seed: number;
}

/** The server's stage times, as it answers them. */
type Timings = StageTimings;

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      rows: { type: "string", default: "100000" },
      clusters: { type: "string", default: "2000" },
      requests: { type: "string", default: "300" },
      duration: { type: "string", default: "10" },
      concurrency: { type: "string", default: "4" },
      queue: { type: "string", default: "8" },
      "upload-seconds": { type: "string", default: "15" },
      seed: { type: "string", default: "7" },
    },
  });
  const o: Options = {
    rows: Number(values.rows),
    clusters: Number(values.clusters),
    requests: Number(values.requests),
    duration: Number(values.duration),
    concurrency: Number(values.concurrency),
    queue: Number(values.queue),
    uploadSeconds: Number(values["upload-seconds"]),
    seed: Number(values.seed),
  };
  const spec = hasDefaultWhitening() ? {} : { whitening: null };
  const extractor = await Extractor.create(spec);
  const { identity, dim } = extractor;
  await extractor.release();
  const dir = join(
    here,
    ".work",
    "serve",
    `index-${o.rows}-${o.clusters}-${o.seed}-${identity.replace(/[^\w-]/g, "_")}`,
  );
  const built = buildIndex(dir, o, identity, dim, spec);
  log(`index: ${dir} (${built})`);
  // The ANN graph a writer keeps beside the vectors (what `superglobal index` leaves behind past
  // the threshold): the read-only server searches with it. Reused while current.
  const tAnn = performance.now();
  const writer = await Index.open(dir, {});
  try {
    await writer.updateAnn();
  } finally {
    await writer.close();
  }
  const annSeconds = (performance.now() - tAnn) / 1000;
  log(`ANN graph ready in ${annSeconds.toFixed(1)} s`);

  const queries = await Promise.all(
    QUERY_PHOTOS.map((rel) =>
      sharp(join(photos, rel)).resize(384, 384, { fit: "inside" }).jpeg({ quality: 90 }).toBuffer(),
    ),
  );

  const server = await startServer(dir, o.queue);
  const cpu0 = cpuTimes();
  const load0 = loadavg();
  const own0 = ownCpuSeconds() + childCpuSeconds(server.child.pid);
  try {
    const memStart = await memory(server.url);
    log(`server up in ${server.startMs.toFixed(0)} ms; RSS ${mib(memStart.rss)} MiB`);

    // 1. Latency of searches by id: search + rerank, one at a time. The first rounds right after
    // start-up pay for cold memory (the ANN graph is memory-mapped: each page is faulted in on
    // first touch) and compilation; the default mode is measured again at the end, warm.
    const byId: Record<string, ReturnType<typeof summarize>> = {};
    const rng = new SeededRandom(o.seed + 1);
    for (const mode of ["off", "adaptive", "paper", "adaptive-warm"] as const) {
      const samples: Sample[] = [];
      for (let i = 0; i < o.requests; i++) {
        const id = Math.floor(rng.uniform() * o.rows);
        samples.push(
          await searchById(server.url, id, mode === "adaptive-warm" ? "adaptive" : mode),
        );
      }
      byId[mode] = summarize(samples);
      log(`by id, rerank ${mode}: ${line(byId[mode])}`);
    }
    const memAfterById = await memory(server.url);

    // 2. Throughput of searches by id from several clients (default rerank).
    const tp = await closedLoop(o.concurrency, o.duration * 1000, o.requests * 10, () =>
      searchById(server.url, Math.floor(rng.uniform() * o.rows), "adaptive"),
    );
    log(`by id x${o.concurrency}: ${tp.rps.toFixed(1)} req/s, ${line(tp.summary)}`);

    // 3. Uploads from 4x the queue bound of clients, twice (memory must not grow between rounds).
    const clients = 4 * o.queue;
    const rounds: UploadRound[] = [];
    for (let round = 0; round < 2; round++) {
      const r = await uploadRound(server.url, clients, o.uploadSeconds * 1000, queries);
      rounds.push(r);
      log(
        `uploads x${clients} (round ${round + 1}): ${r.ok} ok, ${r.busy} x 503, ${r.errors} errors, ` +
          `${line(r.summary)}; RSS ${mib(r.memBefore.rss)} → peak ${mib(r.peakRss)} → ${mib(r.memAfter.rss)} MiB`,
      );
    }
    const memEnd = await memory(server.url);
    const own1 = ownCpuSeconds() + childCpuSeconds(server.child.pid);
    const cpu1 = cpuTimes();
    const stop = await stopServer(server.child);
    const record = {
      machine: machine(),
      options: o,
      model: { identity, dim, spec },
      index: { dir, rows: o.rows, built, annSeconds },
      loadavg: { before: load0, after: loadavg() },
      cpu: {
        totalS: cpu1.total - cpu0.total,
        busyS: cpu1.busy - cpu0.busy,
        /** Server and clients together. */
        oursS: own1 - own0,
        ...contention(cpu0, cpu1, own1 - own0),
      },
      serverStartMs: server.startMs,
      byId,
      throughput: { clients: o.concurrency, ...tp },
      uploads: { clients, rounds },
      memory: { start: memStart, afterById: memAfterById, end: memEnd },
      shutdown: stop,
    };
    const md = report(record);
    process.stdout.write(`\n${md}\n`);
    saveResult(`serve-${new Date().toISOString().slice(0, 10)}`, record, md);
  } finally {
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
  }
}

/** CPU seconds (user + system) process `pid` used so far, from /proc (0 where unreadable). */
function childCpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100)
  } catch {
    return 0;
  }
}

function hasDefaultWhitening(): boolean {
  return existsSync(DEFAULT_WHITENING_DIR) && readdirSync(DEFAULT_WHITENING_DIR).length > 0;
}

/** Writes the index once (reused while its folder exists): clustered random unit vectors. */
function buildIndex(dir: string, o: Options, model: string, dim: number, spec: object): string {
  if (IndexStore.exists(dir)) {
    const s = IndexStore.open(dir, { model, readOnly: true });
    const size = s.size;
    s.close();
    if (size === o.rows) return "reused";
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const rng = new SeededRandom(o.seed);
  const centres = new Float32Array(o.clusters * dim);
  rng.unitRows(centres, dim);
  const store = IndexStore.create(dir, { model, dim, extra: { modelSpec: spec } });
  const v = new Float32Array(dim);
  // Noise of norm ≈ 1 around each centre: cosine ≈ 0.5 within a cluster, ≈ 0 across.
  const sigma = 1 / Math.sqrt(dim);
  try {
    for (let i = 0; i < o.rows; i++) {
      const c = Math.floor(rng.uniform() * o.clusters);
      let norm = 0;
      for (let j = 0; j < dim; j++) {
        const x = (centres[c * dim + j] as number) + sigma * rng.normal();
        v[j] = x;
        norm += x * x;
      }
      norm = Math.sqrt(norm);
      for (let j = 0; j < dim; j++) v[j] = (v[j] as number) / norm;
      const path = `/bench/serve/photo-${String(i).padStart(7, "0")}.jpg`;
      const hash = createHash("sha256").update(path).digest("hex");
      store.put({ path, size: 100_000, mtimeMs: 0, hash }, v);
      if ((i + 1) % 8192 === 0) store.commit();
    }
    store.commit();
  } finally {
    store.close();
  }
  return `built in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

interface Server {
  child: ChildProcess;
  url: string;
  startMs: number;
}

async function startServer(index: string, queue: number): Promise<Server> {
  const t0 = performance.now();
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(repo, "src/cli/main.ts"),
      "serve",
      "--index",
      index,
      "--port",
      "0",
      "--queue",
      String(queue),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /at (http:\/\/\S+)\//.exec(out);
      if (m) resolve(m[1] as string);
    });
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}`)));
  });
  return { child, url, startMs: performance.now() - t0 };
}

async function stopServer(child: ChildProcess): Promise<{ code: number | null; ms: number }> {
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve) => {
    child.on("exit", (c) => resolve(c));
    child.kill("SIGTERM");
  });
  return { code, ms: performance.now() - t0 };
}

interface Memory {
  rss: number;
  heap: number;
  external: number;
}

async function memory(url: string): Promise<Memory> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const read = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  return {
    rss: read("process_resident_memory_bytes"),
    heap: read("nodejs_heap_used_bytes"),
    external: read("nodejs_external_memory_bytes"),
  };
}

interface Sample {
  status: number;
  ms: number;
  /** The server's search method (exact scan or ANN graph). */
  method?: string;
  timings?: Timings;
  retryAfter?: number;
  error?: string;
}

async function searchById(url: string, id: number, rerank: string): Promise<Sample> {
  const t0 = performance.now();
  try {
    const r = await fetch(`${url}/search`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id, top: 20, rerank }),
    });
    const body = (await r.json()) as { timings?: Timings; method?: string };
    return {
      status: r.status,
      ms: performance.now() - t0,
      ...(body.timings ? { timings: body.timings } : {}),
      ...(body.method ? { method: body.method } : {}),
    };
  } catch (error) {
    return { status: 0, ms: performance.now() - t0, error: String(error) };
  }
}

async function upload(url: string, image: Buffer): Promise<Sample> {
  const t0 = performance.now();
  try {
    const r = await fetch(`${url}/search?top=20`, {
      method: "POST",
      headers: { "content-type": "image/jpeg" },
      body: image,
    });
    const body = (await r.json()) as { timings?: Timings; error?: string };
    const retry = r.headers.get("retry-after");
    return {
      status: r.status,
      ms: performance.now() - t0,
      ...(body.timings ? { timings: body.timings } : {}),
      ...(retry === null ? {} : { retryAfter: Number(retry) }),
      ...(r.status !== 200 && r.status !== 503 ? { error: body.error ?? `HTTP ${r.status}` } : {}),
    };
  } catch (error) {
    return { status: 0, ms: performance.now() - t0, error: String(error) };
  }
}

/** `clients` loops of `job` until `ms` have passed or `max` jobs were started. */
async function closedLoop(clients: number, ms: number, max: number, job: () => Promise<Sample>) {
  const samples: Sample[] = [];
  const t0 = performance.now();
  let started = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() - t0 < ms && started < max) {
        started += 1;
        samples.push(await job());
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const ok = samples.filter((s) => s.status === 200);
  return {
    requests: samples.length,
    ok: ok.length,
    errors: samples.length - ok.length,
    seconds,
    rps: ok.length / seconds,
    summary: summarize(samples),
  };
}

interface UploadRound {
  ok: number;
  busy: number;
  errors: number;
  errorSamples: string[];
  seconds: number;
  rps: number;
  retryAfter: { min: number; max: number };
  summary: ReturnType<typeof summarize>;
  memBefore: Memory;
  memAfter: Memory;
  peakRss: number;
}

/** Uploads from `clients` at once for `ms`; a 503 is honoured by waiting its Retry-After. */
async function uploadRound(
  url: string,
  clients: number,
  ms: number,
  images: Buffer[],
): Promise<UploadRound> {
  const memBefore = await memory(url);
  let peakRss = memBefore.rss;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakRss = Math.max(peakRss, (await memory(url)).rss);
      await sleep(250);
    }
  })();
  const samples: Sample[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      let n = c;
      while (performance.now() - t0 < ms) {
        const s = await upload(url, images[n++ % images.length] as Buffer);
        samples.push(s);
        if (s.status === 503) await sleep((s.retryAfter ?? 1) * 1000);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  sampling = false;
  await sampler;
  const memAfter = await memory(url);
  const ok = samples.filter((s) => s.status === 200);
  const busy = samples.filter((s) => s.status === 503);
  const errors = samples.filter((s) => s.status !== 200 && s.status !== 503);
  const retry = busy.map((s) => s.retryAfter ?? Number.NaN);
  return {
    ok: ok.length,
    busy: busy.length,
    errors: errors.length,
    errorSamples: errors.slice(0, 5).map((s) => s.error ?? String(s.status)),
    seconds,
    rps: ok.length / seconds,
    retryAfter: { min: Math.min(...retry), max: Math.max(...retry) },
    summary: summarize(ok),
    memBefore,
    memAfter,
    peakRss,
  };
}

interface Quantiles {
  p50: number;
  p99: number;
  max: number;
}

function quantiles(values: number[]): Quantiles {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? Number.NaN;
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1] ?? Number.NaN };
}

function summarize(samples: Sample[]) {
  const ok = samples.filter((s) => s.status === 200 && s.timings !== undefined);
  const t = (f: (x: Timings) => number) => quantiles(ok.map((s) => f(s.timings as Timings)));
  return {
    n: samples.length,
    errors: samples.filter((s) => s.status !== 200).length,
    roundTrip: quantiles(ok.map((s) => s.ms)),
    queue: t((x) => x.queue),
    extraction: t((x) => x.decode + x.extract),
    search: t((x) => x.search),
    rerank: t((x) => x.rerank),
    searchRerank: t((x) => x.search + x.rerank),
    server: t((x) => x.total),
    /** How many answers used each search method. */
    methods: Object.fromEntries(
      [...new Set(ok.map((s) => s.method ?? "?"))].map((m) => [
        m,
        ok.filter((s) => (s.method ?? "?") === m).length,
      ]),
    ),
  };
}

const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "–");
const pq = (q: Quantiles) => `${f1(q.p50)} / ${f1(q.p99)}`;
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

function line(s: ReturnType<typeof summarize>): string {
  return (
    `n ${s.n}, errors ${s.errors}; p50/p99 ms: search ${pq(s.search)}, rerank ${pq(s.rerank)}, ` +
    `search+rerank ${pq(s.searchRerank)}, extraction ${pq(s.extraction)}, round trip ${pq(s.roundTrip)}, ` +
    `methods ${JSON.stringify(s.methods)}`
  );
}

// biome-ignore lint/suspicious/noExplicitAny: the record is this file's own, formatted once
function report(r: any): string {
  const row = (name: string, s: ReturnType<typeof summarize>) =>
    `| ${name} | ${s.n} | ${s.errors} | ${pq(s.extraction)} | ${pq(s.queue)} | ${pq(s.search)} | ${pq(s.rerank)} | ${pq(s.searchRerank)} | ${pq(s.roundTrip)} |`;
  const adaptive = r.byId["adaptive-warm"] as ReturnType<typeof summarize>;
  const cold = r.byId.adaptive as ReturnType<typeof summarize>;
  const rounds = r.uploads.rounds as UploadRound[];
  const uploadErrors = rounds.reduce((a, x) => a + x.errors, 0);
  const growth = (rounds[1] as UploadRound).memAfter.rss - (rounds[0] as UploadRound).memAfter.rss;
  return [
    `# serve: \`superglobal serve\` under load on loopback, ${r.options.rows} descriptors (${r.model.dim}-d)`,
    "",
    `machine: ${JSON.stringify(r.machine)}`,
    `load average (1, 5, 15 min) before / after: ${r.loadavg.before.map(f1).join(" ")} / ${r.loadavg.after.map(f1).join(" ")}; ` +
      `while it ran: ${f1(r.cpu.totalS)} CPU-s in all, server + clients used ${f1(r.cpu.oursS)}, other processes ${f1(r.cpu.otherCpuS)}, ` +
      `the hypervisor stole ${(100 * r.cpu.stealShare).toFixed(1)}%`,
    `index: ${r.options.rows} random unit vectors in ${r.options.clusters} clusters, model ${r.model.identity} ` +
      `(${r.index.built}; ANN graph ready in ${f1(r.index.annSeconds)} s); search method of the answers by id: ${JSON.stringify(r.byId.adaptive.methods)}; server: the CLI in its own process, queue ${r.options.queue}, started (index loaded, sessions warmed) in ${f1(r.serverStartMs / 1000)} s`,
    "",
    "Times in ms, p50 / p99, from the server's own timings per request (round trip: the client's).",
    "",
    "| requests | n | errors | extraction | queue wait | search | rerank | search + rerank | round trip |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    row("by id, rerank off, 1 client", r.byId.off),
    row("by id, rerank adaptive, 1 client", r.byId.adaptive),
    row("by id, rerank paper, 1 client", r.byId.paper),
    row("by id, rerank adaptive, 1 client, again (warm)", adaptive),
    row(`by id, adaptive, ${r.throughput.clients} clients`, r.throughput.summary),
    ...rounds.map((x, i) =>
      row(`uploads, ${r.uploads.clients} clients, round ${i + 1} (200s)`, x.summary),
    ),
    "",
    `throughput by id (${r.throughput.clients} clients, ${f1(r.throughput.seconds)} s): **${f1(r.throughput.rps)} searches/s**, ${r.throughput.errors} errors`,
    ...rounds.map(
      (x, i) =>
        `uploads round ${i + 1} (${r.uploads.clients} clients = 4x the queue bound, ${f1(x.seconds)} s; a 503's Retry-After honoured): ` +
        `${x.ok} answered 200 (${f1(x.rps)}/s), ${x.busy} answered 503 with Retry-After ${x.retryAfter.min}–${x.retryAfter.max} s, **${x.errors} errors**` +
        `${x.errorSamples.length ? ` (${x.errorSamples.join("; ")})` : ""}; RSS ${mib(x.memBefore.rss)} → peak ${mib(x.peakRss)} → ${mib(x.memAfter.rss)} MiB`,
    ),
    `memory (RSS, MiB): start ${mib(r.memory.start.rss)}, after the searches by id ${mib(r.memory.afterById.rss)}, end ${mib(r.memory.end.rss)}; ` +
      `growth from the end of upload round 1 to the end of round 2: ${f1(growth / 2 ** 20)} MiB`,
    `shutdown on SIGTERM: exit code ${r.shutdown.code} in ${f1(r.shutdown.ms)} ms`,
    "",
    `targets: search + rerank p99 ≤ 30 ms at ${r.options.rows} (default rerank, by id, warm): ${f1(adaptive.searchRerank.p99)} ms ` +
      `${adaptive.searchRerank.p99 <= 30 ? "(met)" : "(NOT met)"} (the first ${cold.n} after start-up, cold: ${f1(cold.searchRerank.p99)} ms); no error under 4x the queue bound of concurrent uploads: ` +
      `${uploadErrors} errors ${uploadErrors === 0 ? "(met)" : "(NOT met)"}; flat memory: ${f1(growth / 2 ** 20)} MiB between rounds`,
  ].join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function log(text: string): void {
  process.stderr.write(`${text}\n`);
}
