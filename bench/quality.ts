/**
 * `npm run bench -- quality [--source mobilenetv2-imagenet[,nsfwjs-conv1]]
 *   [--sets multiview,copies,pairs] [--modes none,paper-M100,paper-M400,adaptive-M100,adaptive-M400]
 *   [--seed 1[,2,3]] [--threads 2] [--cache DIR] [--out NAME]`
 *
 * Retrieval quality on real photos (the shared assets, read at run time): mAP (revisitop's
 * trapezoidal AP) and top-1 per evaluation set, broken down by group size or transformation,
 * for one descriptor source and several reranking modes, with the reranking time per query.
 * Results go to bench/results/quality-<date>.json and .md.
 *
 * From another script: build a DescriptorSource (bench/quality-sources.ts), then
 *   const sets = await qualitySets(sharedAssetsDir, { seeds: [1] });
 *   const result = await evaluateSource(cachedSource(source), sets, { modes: RERANK_MODES });
 *   console.log(summary(result), verdicts(result));
 * Each --seed makes its own debian-copies set; several --source run in one report, and the
 * default mode is chosen over all of them (chooseDefault).
 */
import { existsSync } from "node:fs";
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { dotRows } from "../src/core/dot.ts";
import { argsortDesc } from "../src/core/topk.ts";
import { computeMap } from "../src/eval/revisitop-map.ts";
import { AdaptiveReranker } from "../src/rerank/adaptive-rerank.ts";
import type { Reranker } from "../src/rerank/reranker.ts";
import { SuperGlobalReranker } from "../src/rerank/superglobal-rerank.ts";
import { machine, median, saveResult } from "./machine.ts";
import {
  debianCopies,
  debianPairs,
  LARGE_GROUP,
  multiviewDev,
  type QualitySet,
} from "./quality-data.ts";
import {
  cachedSource,
  type DescriptorSource,
  defaultCacheDir,
  SOURCES,
  sharedAssetsDir,
} from "./quality-sources.ts";

/** A reranking mode: "none" has no reranker (the initial ranking by dot product). */
export interface RerankMode {
  name: string;
  /** Undefined for the initial ranking. */
  create?: (threads: number) => Promise<Reranker>;
}

/** The modes compared by default. */
export const RERANK_MODES: readonly RerankMode[] = [
  { name: "none" },
  {
    name: "paper-M100",
    create: (threads) => SuperGlobalReranker.create({ M: 100, K: 9, beta: 0.15, threads }),
  },
  {
    name: "paper-M400",
    create: (threads) => SuperGlobalReranker.create({ M: 400, K: 9, beta: 0.15, threads }),
  },
  {
    name: "adaptive-M100",
    create: (threads) => AdaptiveReranker.create({ M: 100, K: 9, beta: 0.15, R: 5, threads }),
  },
  {
    name: "adaptive-M400",
    create: (threads) => AdaptiveReranker.create({ M: 400, K: 9, beta: 0.15, R: 5, threads }),
  },
];

export interface Score {
  queries: number;
  /** Mean AP in percent. */
  map: number;
  /** Share of queries whose first (non-junk) result is a positive, in percent. */
  top1: number;
}

export interface ModeResult extends Score {
  breakdown: Record<string, Score>;
  /** Reranking time per query (median and mean over the set's queries), ms; 0 for "none". */
  msPerQuery: { median: number; mean: number };
  /** AP per query (fraction), in query order. */
  perQueryAp: number[];
  /** 1 when the first result is a positive, else 0, in query order. */
  perQueryTop1: number[];
}

export interface SetResult {
  set: string;
  images: number;
  queries: number;
  /** Database images per query (a query in the database is left out of its own). */
  database: number;
  dim: number;
  /** Images whose descriptor had non-finite values (ranked last at first; rerankers drop them). */
  nonFinite: string[];
  modes: Record<string, ModeResult>;
}

export interface SourceResult {
  source: string;
  sets: SetResult[];
  /** The source's known multiview-dev numbers against ours (rounded to 2 decimals). */
  harnessCheck?: { expected: number[]; measured: number[]; agrees: boolean };
}

export interface EvaluateOptions {
  modes?: readonly RerankMode[];
  /** onnxruntime threads of the rerankers (default 2). */
  threads?: number;
  /** Called after each image's descriptor. */
  onDescriptor?: (set: string, done: number, total: number) => void;
}

/**
 * The evaluation sets of the shared assets: multiview-dev, debian-copies-s<seed> (one set per
 * seed; the copies are written under `cacheDir`) and debian-pairs.
 */
export async function qualitySets(
  assets: string = sharedAssetsDir,
  options: { cacheDir?: string; seeds?: readonly number[]; only?: readonly string[] } = {},
): Promise<QualitySet[]> {
  const only = options.only ?? ["multiview", "copies", "pairs"];
  const sets: QualitySet[] = [];
  if (only.includes("multiview")) sets.push(multiviewDev(assets));
  if (only.includes("copies")) {
    for (const seed of options.seeds ?? [1]) {
      sets.push(await debianCopies(assets, options.cacheDir ?? defaultCacheDir(), seed));
    }
  }
  if (only.includes("pairs")) sets.push(debianPairs(assets));
  return sets;
}

/** Descriptors of every image of a set, [images, d] row-major, through the (cached) source. */
export async function describeSet(
  source: DescriptorSource,
  set: QualitySet,
  onDescriptor?: EvaluateOptions["onDescriptor"],
): Promise<{ data: Float32Array; dim: number }> {
  let data = new Float32Array(0);
  let dim = 0;
  for (const [i, path] of set.images.entries()) {
    const v = await source.describe(path);
    if (i === 0) {
      dim = v.length;
      data = new Float32Array(set.images.length * dim);
    } else if (v.length !== dim) {
      throw new Error(`${source.name}: ${path} gave ${v.length} values, the first image ${dim}`);
    }
    data.set(v, i * dim);
    onDescriptor?.(set.name, i + 1, set.images.length);
  }
  return { data, dim };
}

function isFiniteRow(data: Float32Array, row: number, d: number): boolean {
  for (let i = row * d; i < (row + 1) * d; i++) if (!Number.isFinite(data[i]!)) return false;
  return true;
}

/**
 * Initial ranking of one query: the database (without the query itself) by dot product in
 * float64, best first, equal scores in database order; non-finite rows last.
 */
export function initialRanking(
  data: Float32Array,
  dim: number,
  query: number,
  database: readonly number[],
  finite: readonly boolean[],
): Int32Array {
  const ids = database.filter((j) => j !== query);
  const scores = ids.map((j) =>
    finite[query] && finite[j] ? dotRows(data, query * dim, j * dim, dim) : -Infinity,
  );
  const order = argsortDesc(scores);
  return Int32Array.from(order, (p) => ids[p]!);
}

function score(ap: number[], top1: number[]): Score {
  const n = ap.length;
  return {
    queries: n,
    map: n === 0 ? Number.NaN : (100 * ap.reduce((a, b) => a + b, 0)) / n,
    top1: n === 0 ? Number.NaN : (100 * top1.reduce((a, b) => a + b, 0)) / n,
  };
}

/** AP (fraction) and top-1 (0/1, junk skipped as revisitop's P@1) of one ranking. */
function evaluateRanking(
  ranking: Int32Array,
  positives: readonly number[],
  junk: readonly number[],
): { ap: number; top1: number } {
  const r = computeMap(ranking, 1, ranking.length, [positives], [junk], [1]);
  return { ap: r.perQueryAp[0]!, top1: r.perQueryPrecision[0]![0]! };
}

/** Every mode on one set whose descriptors are known. */
export async function evaluateSet(
  set: QualitySet,
  data: Float32Array,
  dim: number,
  modes: readonly RerankMode[],
  threads = 2,
): Promise<Record<string, ModeResult>> {
  const finite = set.images.map((_, i) => isFiniteRow(data, i, dim));
  const initial = set.queries.map((q) => initialRanking(data, dim, q.image, set.database, finite));
  const out: Record<string, ModeResult> = {};
  for (const mode of modes) {
    const reranker = await mode.create?.(threads);
    const ap: number[] = [];
    let warm = false;
    const top1: number[] = [];
    const times: number[] = [];
    try {
      for (const [qi, q] of set.queries.entries()) {
        let ranking = initial[qi]!;
        if (reranker !== undefined) {
          const head = Math.min(reranker.M, ranking.length);
          const descriptors = new Float32Array(head * dim);
          for (let j = 0; j < head; j++) {
            descriptors.set(data.subarray(ranking[j]! * dim, (ranking[j]! + 1) * dim), j * dim);
          }
          const query = data.slice(q.image * dim, (q.image + 1) * dim);
          if (!warm) {
            // One untimed call first: onnxruntime's first run of a session is much slower.
            await reranker.rerank(query, { ids: ranking, descriptors });
            warm = true;
          }
          const t0 = performance.now();
          const result = await reranker.rerank(query, { ids: ranking, descriptors });
          times.push(performance.now() - t0);
          ranking = result.ids;
        }
        const e = evaluateRanking(ranking, q.positives, q.junk);
        ap.push(e.ap);
        top1.push(e.top1);
      }
    } finally {
      await reranker?.release();
    }
    const breakdown: Record<string, Score> = {};
    for (const label of set.breakdowns) {
      const idx = set.queries.flatMap((q, i) => (q.breakdown === label ? [i] : []));
      breakdown[label] = score(
        idx.map((i) => ap[i]!),
        idx.map((i) => top1[i]!),
      );
    }
    out[mode.name] = {
      ...score(ap, top1),
      breakdown,
      msPerQuery: {
        median: times.length === 0 ? 0 : median(times),
        mean: times.length === 0 ? 0 : times.reduce((a, b) => a + b, 0) / times.length,
      },
      perQueryAp: ap,
      perQueryTop1: top1,
    };
  }
  return out;
}

/** Describes every set with `source` and evaluates every reranking mode on it. */
export async function evaluateSource(
  source: DescriptorSource,
  sets: readonly QualitySet[],
  options: EvaluateOptions = {},
): Promise<SourceResult> {
  const modes = options.modes ?? RERANK_MODES;
  const results: SetResult[] = [];
  for (const set of sets) {
    const { data, dim } = await describeSet(source, set, options.onDescriptor);
    const nonFinite = set.images.flatMap((_, i) =>
      isFiniteRow(data, i, dim) ? [] : [set.labels[i]!],
    );
    results.push({
      set: set.name,
      images: set.images.length,
      queries: set.queries.length,
      database: set.database.filter((j) => j !== set.queries[0]?.image).length,
      dim,
      nonFinite,
      modes: await evaluateSet(set, data, dim, modes, options.threads),
    });
  }
  const out: SourceResult = { source: source.name, sets: results };
  const mv = results.find((r) => r.set === "multiview-dev");
  if (source.expected !== undefined && mv?.modes["none"] !== undefined) {
    const e = source.expected;
    const expected = [e.map, e.top1, ...(mv.modes["paper-M100"] ? [e.paperM100] : [])];
    const measured = [mv.modes["none"].map, mv.modes["none"].top1];
    if (mv.modes["paper-M100"]) measured.push(mv.modes["paper-M100"].map);
    const round = (x: number) => Math.round(x * 100) / 100;
    out.harnessCheck = {
      expected,
      measured: measured.map(round),
      agrees: measured.every((x, i) => Math.abs(round(x) - expected[i]!) < 0.006),
    };
  }
  return out;
}

/** The default-mode target: reranking never loses more than this many mAP points to none. */
export const MAX_LOSS = 0.5;
/** Share of the paper's (M 100) gain on multiview-dev's large groups a default must keep. */
export const MIN_LARGE_GROUP_SHARE = 0.5;

export interface Verdict {
  mode: string;
  /** mAP change against "none" per set (points). */
  deltaMap: Record<string, number>;
  /** The worst of deltaMap. */
  worstDelta: number;
  /** Change on multiview-dev's groups of ≥ 15 views, and the paper (M 100) change there. */
  largeGroupDelta: number;
  paperLargeGroupDelta: number;
  /** No set loses more than MAX_LOSS. */
  meetsLossTarget: boolean;
  /** Keeps at least MIN_LARGE_GROUP_SHARE of a positive paper gain on large groups. */
  keepsLargeGroupGain: boolean;
}

/** For each reranking mode: its mAP changes against no reranking and the default-mode targets. */
export function verdicts(result: SourceResult): Verdict[] {
  const large = `group>=${LARGE_GROUP}`;
  const mv = result.sets.find((s) => s.set === "multiview-dev");
  const largeDelta = (mode: string) =>
    mv?.modes[mode] === undefined || mv.modes["none"] === undefined
      ? Number.NaN
      : mv.modes[mode].breakdown[large]!.map - mv.modes["none"].breakdown[large]!.map;
  const modes = Object.keys(result.sets[0]?.modes ?? {}).filter((m) => m !== "none");
  if (result.sets.some((s) => s.modes["none"] === undefined)) return [];
  return modes.map((mode) => {
    const deltaMap: Record<string, number> = {};
    for (const s of result.sets) deltaMap[s.set] = s.modes[mode]!.map - s.modes["none"]!.map;
    const worstDelta = Math.min(...Object.values(deltaMap));
    const paper = largeDelta("paper-M100");
    const own = largeDelta(mode);
    return {
      mode,
      deltaMap,
      worstDelta,
      largeGroupDelta: own,
      paperLargeGroupDelta: paper,
      meetsLossTarget: worstDelta >= -MAX_LOSS,
      keepsLargeGroupGain: !(paper > 0) || own >= MIN_LARGE_GROUP_SHARE * paper,
    };
  });
}

/**
 * The default mode these results support: among the modes that meet both targets for every
 * source, the one with the best mean mAP change on multiview-dev; "none" when no mode does.
 */
export function chooseDefault(results: readonly SourceResult[]): { mode: string; why: string } {
  const all = results.map(verdicts);
  const modes = all[0]?.map((v) => v.mode) ?? [];
  const ok = modes.filter((mode) =>
    all.every((vs) => {
      const v = vs.find((x) => x.mode === mode);
      return v?.meetsLossTarget === true && v.keepsLargeGroupGain;
    }),
  );
  if (ok.length === 0) {
    return { mode: "none", why: "no reranking mode meets both targets on every source" };
  }
  const gain = (mode: string) =>
    all.reduce(
      (sum, vs) => sum + (vs.find((x) => x.mode === mode)!.deltaMap["multiview-dev"] ?? 0),
      0,
    );
  const best = ok.reduce((a, b) => (gain(b) > gain(a) ? b : a));
  return {
    mode: best,
    why: `of the modes that meet both targets on every source (${ok.join(", ")}), the best mean multiview-dev gain`,
  };
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
const signed = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(2)}` : "n/a");

/** The Markdown tables of one source's results. */
export function summary(result: SourceResult): string {
  const lines: string[] = [`## ${result.source}`, ""];
  const h = result.harnessCheck;
  if (h !== undefined) {
    lines.push(
      `Harness check (multiview-dev mAP, top-1${h.expected.length > 2 ? ", paper M 100 mAP" : ""} against the asset README): expected ${h.expected.join(" / ")}, measured ${h.measured.join(" / ")}: ${h.agrees ? "**agrees**" : "**DIFFERS**"}.`,
      "",
    );
  }
  for (const s of result.sets) {
    lines.push(
      `### ${s.set} (${s.queries} queries, database ${s.database} images each, ${s.dim}-d)`,
      "",
    );
    if (s.nonFinite.length > 0) lines.push(`Non-finite descriptors: ${s.nonFinite.join(", ")}`, "");
    const labels = Object.keys(Object.values(s.modes)[0]?.breakdown ?? {});
    const head = ["mode", "mAP", "Δ mAP", "top-1"];
    if (labels.length > 1) {
      for (const l of labels) {
        const n = Object.values(s.modes)[0]!.breakdown[l]!.queries;
        head.push(`${l} mAP (${n})`, `${l} top-1`);
      }
    }
    head.push("ms/query (median)");
    lines.push(`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`);
    const none = s.modes["none"];
    for (const [name, m] of Object.entries(s.modes)) {
      const row = [name, f2(m.map), none ? signed(m.map - none.map) : "", f2(m.top1)];
      if (labels.length > 1) {
        for (const l of labels) row.push(f2(m.breakdown[l]!.map), f2(m.breakdown[l]!.top1));
      }
      row.push(name === "none" ? "-" : m.msPerQuery.median.toFixed(2));
      lines.push(`| ${row.join(" | ")} |`);
    }
    lines.push("");
  }
  const v = verdicts(result);
  if (v.length > 0) {
    lines.push(
      `### Targets: no set more than ${MAX_LOSS} mAP below no reranking; keep ≥ ${MIN_LARGE_GROUP_SHARE * 100}% of the paper's (M 100) gain on groups ≥ ${LARGE_GROUP}`,
      "",
    );
    const sets = result.sets.map((s) => s.set);
    const head = [
      "mode",
      ...sets.map((s) => `Δ ${s}`),
      `Δ groups ≥${LARGE_GROUP}`,
      "loss target",
      "large-group target",
    ];
    lines.push(`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`);
    for (const x of v) {
      const row = [x.mode, ...sets.map((s) => signed(x.deltaMap[s]!)), signed(x.largeGroupDelta)];
      row.push(x.meetsLossTarget ? "yes" : "no", x.keepsLargeGroupGain ? "yes" : "no");
      lines.push(`| ${row.join(" | ")} |`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      source: { type: "string", default: "mobilenetv2-imagenet" },
      sets: { type: "string", default: "multiview,copies,pairs" },
      modes: { type: "string", default: RERANK_MODES.map((m) => m.name).join(",") },
      seed: { type: "string", default: "1" },
      threads: { type: "string", default: "2" },
      cache: { type: "string", default: defaultCacheDir() },
      assets: { type: "string", default: sharedAssetsDir },
      out: { type: "string", default: "" },
    },
  });
  const sourceNames = values.source.split(",");
  for (const name of sourceNames) {
    if (SOURCES[name] === undefined) {
      throw new Error(`unknown source ${name}; one of ${Object.keys(SOURCES).join(", ")}`);
    }
  }
  const modes = values.modes.split(",").map((name) => {
    const mode = RERANK_MODES.find((m) => m.name === name);
    if (mode === undefined) {
      throw new Error(`unknown mode ${name}; one of ${RERANK_MODES.map((m) => m.name).join(", ")}`);
    }
    return mode;
  });
  if (!existsSync(values.assets)) {
    throw new Error(
      `the shared assets are not at ${values.assets} (set SUPERGLOBAL_SHARED or pass --assets)`,
    );
  }
  const seeds = values.seed.split(",").map(Number);
  const sets = await qualitySets(values.assets, {
    cacheDir: values.cache,
    seeds,
    only: values.sets.split(","),
  });
  const t0 = performance.now();
  const load0 = loadavg()[0]!;
  const results: SourceResult[] = [];
  const cacheNotes: string[] = [];
  for (const name of sourceNames) {
    const source = cachedSource(await SOURCES[name]!(), values.cache);
    try {
      results.push(
        await evaluateSource(source, sets, {
          modes,
          threads: Number(values.threads),
          onDescriptor: (set, done, total) => {
            if (done % 50 === 0 || done === total) {
              process.stderr.write(`${source.name} ${set}: ${done}/${total}\r`);
            }
          },
        }),
      );
    } finally {
      await source.release();
    }
    cacheNotes.push(`${source.name}: ${source.misses} computed, ${source.hits} from the cache`);
    process.stderr.write("\n");
  }
  const host = machine();
  const decision = chooseDefault(results);
  const md = [
    "# Retrieval quality on real photos (`npm run bench -- quality`)",
    "",
    `${host.cpu}, ${host.cores} cores, ${host.memoryGiB} GiB, Node ${host.node}, onnxruntime ${host.onnxruntime}, ${host.os}, ${host.date}`,
    "",
    `mAP: revisitop's trapezoidal AP (computeMap), in percent; top-1: first (non-junk) result relevant. Options: ${argv.join(" ") || "(defaults)"}.`,
    "",
    `**Default reranking by these measurements: ${decision.mode}** (${decision.why}).`,
    "",
    ...results.map((r) => summary(r)),
    `Descriptors: ${cacheNotes.join("; ")} (cache ${values.cache}). debian-copies seeds: ${seeds.join(", ")}.`,
    `Wall time ${((performance.now() - t0) / 1000).toFixed(0)} s; load average ${load0.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end (times per query are only as good as that: a shared 2-core VM).`,
  ].join("\n");
  process.stdout.write(`${md}\n`);
  const name = values.out || `quality-${host.date.slice(0, 10)}`;
  // The file keeps the scores, not the per-query lists (evaluateSource returns those).
  const compact = results.map((r) => ({
    ...r,
    sets: r.sets.map((s) => ({
      ...s,
      modes: Object.fromEntries(
        Object.entries(s.modes).map(([mode, { perQueryAp: _ap, perQueryTop1: _top1, ...rest }]) => [
          mode,
          rest,
        ]),
      ),
    })),
  }));
  saveResult(
    name,
    { machine: host, options: values, decision, verdicts: results.map(verdicts), results: compact },
    md,
  );
}
