/**
 * SIGKILL trials of the real CLI: `node --import tsx src/cli/main.ts index <photos> --index X
 * [--prune]`, killed at a seeded random moment while this process watches the index through
 * read-only snapshots (what a reader saw committed is what the indexer reported committed) and,
 * optionally, a `superglobal search --index X` runs beside it. After the kill the index must
 * open and hold only whole entries, each once, each bit-identical to a clean run's; a resumed
 * run must end with exactly the clean index. Used by test/crash-cli.test.ts and the stress bench.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import sharp from "sharp";
import { Index } from "../../src/app/photo-index.ts";
import { IndexStore } from "../../src/index/index-store.ts";

export const repoRoot = resolve(import.meta.dirname, "..", "..");
const cliMain = join(repoRoot, "src", "cli", "main.ts");

/** `superglobal search --index DIR QUERY`. */
export function runIndexSearchCli(
  dir: string,
  query: string,
  env: NodeJS.ProcessEnv,
): Promise<CliResult> {
  return runCli(["search", "--index", dir, query], env);
}

/** Photos used by the trials (folder/name under debian-photos), in a fixed order. */
const PHOTOS = [
  "darknet/dog.jpg",
  "darknet/eagle.jpg",
  "mate/Aqua.jpg",
  "opencv-pairs/graf1.jpg",
  "plasma/Kite.jpg",
  "darknet/horses.jpg",
  "opencv-pairs/box.jpg",
  "lomiri/warty-final-ubuntu.jpg",
  "darknet/giraffe.jpg",
  "darknet/kite.jpg",
  "darknet/person.jpg",
  "opencv-pairs/leuvenA.jpg",
  "opencv-pairs/aero1.jpg",
  "opencv-pairs/basketball1.jpg",
  "mate/Ubuntu.jpg",
  "opencv-pairs/graf3.jpg",
];

/** Copies `count` real photos into `dir`, downscaled to at most 256 px; returns their paths. */
export async function preparePhotos(source: string, dir: string, count: number): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const available = PHOTOS.filter((p) => existsSync(join(source, p)));
  // Any other photo of the set when a listed one is missing.
  for (const sub of readdirSync(source, { withFileTypes: true })) {
    if (!sub.isDirectory()) continue;
    for (const f of readdirSync(join(source, sub.name))) {
      const rel = `${sub.name}/${f}`;
      if (/\.jpe?g$/i.test(f) && !available.includes(rel)) available.push(rel);
    }
  }
  const out: string[] = [];
  for (const [i, rel] of available.slice(0, count).entries()) {
    const dest = join(dir, `${String(i).padStart(2, "0")}-${rel.split("/").pop()}`);
    await sharp(join(source, rel))
      .resize(256, 256, { fit: "inside" })
      .jpeg({ quality: 90 })
      .toFile(dest);
    out.push(dest);
  }
  return out;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** When stderr first said something (the progress bar starts after the model has loaded). */
  firstOutputMs: number | undefined;
}

/** The preload that records a run's peak RSS (see peak-rss.ts). */
export const peakRssPreload = pathToFileURL(join(import.meta.dirname, "peak-rss.ts")).href;

/** Runs the CLI (or another script: `script`) to the end, with extra node options `node`. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
  script = cliMain,
  node: string[] = [],
): Promise<CliResult> {
  return new Promise((done) => {
    const started = performance.now();
    const child = spawn(process.execPath, ["--import", "tsx", ...node, script, ...args], {
      cwd: repoRoot,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let firstOutputMs: number | undefined;
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      firstOutputMs ??= performance.now() - started;
      stderr += c;
    });
    child.on("close", (code, signal) =>
      done({ code, signal, stdout, stderr, ms: performance.now() - started, firstOutputMs }),
    );
  });
}

/** An index as a reader sees it: path → descriptor bytes (hex), and the failed paths. */
export interface Snapshot {
  rows: Map<string, string>;
  failed: string[];
  /** Paths that appear more than once (must be none). */
  duplicates: string[];
}

const hex = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex");

/** A read-only snapshot of the index in `dir`, or undefined when there is no index yet. */
export function snapshot(dir: string): Snapshot | undefined {
  if (!IndexStore.exists(dir)) return undefined;
  const store = IndexStore.open(dir, { readOnly: true });
  try {
    const rows = new Map<string, string>();
    const duplicates: string[] = [];
    for (const entry of store.entries()) {
      if (rows.has(entry.path)) duplicates.push(entry.path);
      rows.set(entry.path, hex(store.vector(entry.path)!));
    }
    return { rows, failed: store.failures().map((f) => f.path), duplicates };
  } finally {
    store.close();
  }
}

/**
 * The reference: the descriptors of a clean run, read through the public facade
 * (`Index.open(dir, { readOnly: true }).vector(path)`).
 */
export async function referenceOf(dir: string, cacheDir: string): Promise<Map<string, string>> {
  const index = await Index.open(dir, { readOnly: true, cacheDir });
  try {
    return new Map(index.paths().map((p) => [p, hex(index.vector(p)!)]));
  } finally {
    await index.close();
  }
}

/** Problems of a snapshot against the clean reference (empty when it is sound). */
export function checkSnapshot(
  snap: Snapshot,
  reference: Map<string, string>,
  allowed: ReadonlySet<string>,
): string[] {
  const problems: string[] = [];
  for (const p of snap.duplicates) problems.push(`${p} appears more than once`);
  for (const p of snap.failed) problems.push(`${p} is recorded as failed`);
  for (const [p, v] of snap.rows) {
    if (!allowed.has(p)) problems.push(`${p} is not one of the photos`);
    else if (reference.get(p) !== v)
      problems.push(`${p} has a descriptor other than the clean run's`);
  }
  return problems;
}

export interface TrialOptions {
  /** CLI arguments (index ... --index DIR [--prune]). */
  args: string[];
  env: NodeJS.ProcessEnv;
  /** The index folder the CLI writes. */
  dir: string;
  /** Kill this many ms after the start, or after its first output (the progress bar). */
  killAfterMs: number;
  killFrom: "start" | "output";
  /** The clean run's descriptors and the paths that may appear. */
  reference: Map<string, string>;
  allowed: ReadonlySet<string>;
  /** Paths that must be present after the kill whatever happened (the index was complete). */
  mustKeep?: ReadonlySet<string>;
  /** Paths that may vanish (files deleted before a --prune run); any other seen path must stay. */
  mayVanish?: ReadonlySet<string>;
  /** Start `superglobal search --index DIR <query>` this many ms after the indexer. */
  search?: { query: string; afterMs: number };
}

export interface TrialResult {
  /** The CLI ended by itself before the kill (exit code), or was killed (null). */
  finishedCode: number | null;
  /** When it ended (killed or not), from its start. */
  killedAtMs: number;
  /** Snapshots taken while it ran, and the paths they showed committed. */
  snapshots: number;
  seenCommitted: number;
  /** Entries after the kill. */
  after: number;
  /** What went wrong (empty: the trial passed). */
  problems: string[];
  search?: CliResult;
}

/** One SIGKILL trial (see the file comment). */
export async function killTrial(o: TrialOptions): Promise<TrialResult> {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  let snapshots = 0;
  const started = performance.now();
  const child = spawn(process.execPath, ["--import", "tsx", cliMain, ...o.args], {
    cwd: repoRoot,
    env: o.env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  let kill: NodeJS.Timeout | undefined;
  const armKill = () => {
    kill = setTimeout(() => child.kill("SIGKILL"), o.killAfterMs);
  };
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    if (kill === undefined && o.killFrom === "output") armKill();
    stderr = (stderr + c).slice(-4000);
  });
  let exited = false;
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.on("close", (code, signal) => {
      exited = true;
      done({ code, signal });
    }),
  );
  const search =
    o.search === undefined
      ? undefined
      : new Promise<CliResult>((done) =>
          setTimeout(
            () => done(runIndexSearchCli(o.dir, o.search!.query, o.env)),
            o.search!.afterMs,
          ),
        );
  if (o.killFrom === "start") armKill();
  // Watch while it runs: every snapshot sound, and what it shows committed kept.
  while (!exited) {
    try {
      const snap = snapshot(o.dir);
      if (snap !== undefined) {
        snapshots += 1;
        for (const p of checkSnapshot(snap, o.reference, o.allowed))
          problems.push(`while running: ${p}`);
        for (const [p, v] of snap.rows) seen.set(p, v);
      }
    } catch (error) {
      // A reader may meet a half-made index only before its manifest exists; anything else is a bug.
      problems.push(`while running, a reader failed: ${(error as Error).message}`);
    }
    await new Promise((done) => setTimeout(done, 40));
  }
  clearTimeout(kill);
  const { code, signal } = await closed;
  const finishedCode = signal === "SIGKILL" ? null : code;
  if (finishedCode !== null && finishedCode !== 0) {
    problems.push(`the indexer exited with ${finishedCode}: ${stderr.trim().slice(-800)}`);
  }
  // After the kill: the index opens and holds only whole, known, unique entries.
  let after = 0;
  try {
    const snap = snapshot(o.dir);
    if (snap !== undefined) {
      after = snap.rows.size;
      for (const p of checkSnapshot(snap, o.reference, o.allowed))
        problems.push(`after the kill: ${p}`);
      for (const [p, v] of seen) {
        if (!snap.rows.has(p) && o.mayVanish?.has(p) !== true) {
          problems.push(`after the kill: ${p} was seen committed but is gone`);
        } else if (snap.rows.has(p) && snap.rows.get(p) !== v) {
          problems.push(`after the kill: ${p} changed its descriptor`);
        }
      }
      for (const p of o.mustKeep ?? []) {
        if (!snap.rows.has(p)) problems.push(`after the kill: ${p} must be kept but is gone`);
      }
    } else if (seen.size > 0) {
      problems.push("after the kill: the index is gone");
    }
  } catch (error) {
    problems.push(`after the kill, the index does not open: ${(error as Error).message}`);
  }
  const searched = await search;
  if (searched !== undefined) {
    // Succeeds, or fails cleanly (our error, exit 1): never a crash, a signal or a bug's stack.
    if (searched.signal !== null || (searched.code !== 0 && searched.code !== 1)) {
      problems.push(`search ended with ${searched.code ?? searched.signal}: ${searched.stderr}`);
    } else if (/unexpected error/.test(searched.stderr)) {
      problems.push(`search hit a bug: ${searched.stderr.slice(-800)}`);
    } else if (searched.code === 1 && !/^superglobal: /m.test(searched.stderr)) {
      problems.push(`search failed without a message: ${searched.stderr.slice(-800)}`);
    } else if (searched.code === 0) {
      for (const line of searched.stdout
        .trim()
        .split("\n")
        .filter((l) => l.length > 0)) {
        const path = line.split("\t")[2] ?? "";
        if (!o.allowed.has(path)) problems.push(`search returned ${JSON.stringify(line)}`);
      }
    }
  }
  return {
    finishedCode,
    killedAtMs: performance.now() - started,
    snapshots,
    seenCommitted: seen.size,
    after,
    problems,
    ...(searched === undefined ? {} : { search: searched }),
  };
}

/** Problems of the finished index in `dir` against the expected paths and descriptors. */
export function checkFinal(dir: string, expected: Map<string, string>): string[] {
  const snap = snapshot(dir);
  if (snap === undefined) return ["no index"];
  const problems = checkSnapshot(snap, expected, new Set(expected.keys()));
  for (const p of expected.keys()) if (!snap.rows.has(p)) problems.push(`${p} is missing`);
  return problems;
}

/** Whether the default model's whitening has landed (models/default-whitening/). */
export function defaultWhiteningReady(): boolean {
  return existsSync(join(repoRoot, "models", "default-whitening", "README.md"));
}

let template: { model: string; dim: number; extra: Record<string, unknown> } | undefined;

/**
 * Until the default whitening lands, the CLI cannot build the default model: the index is made
 * here first with the default network and no whitening (the model spec is kept in the index, so
 * the CLI then opens it with that model). The first through the facade, the rest as its copies.
 */
export async function precreateIndex(dir: string, cacheDir: string): Promise<void> {
  if (template === undefined) {
    const index = await Index.open(dir, { create: true, model: { whitening: null }, cacheDir });
    const info = index.info();
    template = { model: info.model, dim: info.dim, extra: IndexStore.readExtra(dir) };
    await index.close();
    return;
  }
  IndexStore.create(dir, template).close();
}
