/**
 * `node --import tsx bench/default-model-study.ts <stage> [options]`: chooses the default model's
 * pooling settings and its whitening by measurement (results: bench/results/default-model-<date>).
 *
 * Stages (each caches what it computes under $SUPERGLOBAL_STUDY_DIR or <tmp>/superglobal-study,
 * so nothing is computed twice):
 * - `extract [--augment flip,crop-c] [--scales 3]`: per image of multiview-dev, the debian-photos
 *   originals and their transformed copies (bench/quality-data.ts, seed 1), one pass of the default
 *   network at the scales 0.7071, 1, 1.4142 (or 1 only) keeping the feature maps; from each map the
 *   four heads (Regional-GeM off/on × GeM p 3 / GeM+ p 4.6, then L2: the whitening's input) are
 *   pooled here in float64 (src/pooling/reference), so the network runs once for all four.
 *   Augmented variants (bench/learn-whitening.ts) are made of the training photos only.
 * - `check`: the float64 heads against the product's own models (each head built into ONNX, as
 *   `Extractor` runs it) on a few photos, and this file's whitening + Scale-GeM emulation against
 *   an `Extractor` with a whitening folder.
 * - `timing [--images 8] [--rounds 3] [--heads gemp-rgem,…]`: seconds per image (extractor.stats)
 *   at 1 vs 3 scales per head, the two extractors taking turns.
 * - `evaluate --poolings a,b --whitenings x,y`: scores candidates (appended to the study's
 *   results.json). A pooling is `<gem3|gemp>-<raw|rgem>-<1|3max|3mean>`; a whitening `none`, or
 *   `<cv|debian>:<shrinkage>:<used|1|3>:<augmentations joined by +>`. `cv`: on multiview-dev, each
 *   folder scored with a whitening learned on the other three + debian-photos (per-query APs pooled
 *   over the 4 folds); on debian copies and pairs, one learned on all of multiview-dev. `debian`:
 *   learned on the debian-photos originals only, scored on multiview-dev only. `used`: every
 *   per-scale vector the pooling uses is a training row; `1`: the scale-1 vector only; `3`: the
 *   vectors of all three scales, whatever the pooling uses (a 1-scale model whose whitening saw
 *   each photo at three resolutions).
 * - `report`: writes bench/results/default-model-<date>.md/.json from everything measured.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Extractor } from "../src/descriptor/extractor.ts";
import { type BgrImage, decodeImage } from "../src/image/decode.ts";
import { GEM_BASELINE_EPS, GEM_PLUS } from "../src/pooling/constants.ts";
import { type FeatureMap, gem } from "../src/pooling/reference/gem.ts";
import { regionalGem } from "../src/pooling/reference/regional-gem.ts";
import { scaleGemMax, scaleMean } from "../src/pooling/scale-gem.ts";
import { l2Normalize } from "../src/pooling/vector.ts";
import { learnWhitening, type Whitening, writeWhitening } from "../src/pooling/whitening.ts";
import { AUGMENTATIONS } from "./learn-whitening.ts";
import { machine, saveResult } from "./machine.ts";
import { evaluateSet } from "./quality.ts";
import { debianCopies, debianPairs, multiviewDev, type QualitySet } from "./quality-data.ts";
import { sharedAssetsDir } from "./quality-sources.ts";

export const STUDY_DIR =
  process.env["SUPERGLOBAL_STUDY_DIR"] ?? join(tmpdir(), "superglobal-study");
const MODEL_CACHE = join(STUDY_DIR, "models");
const C = 1792;
const THREADS = 2;

export interface Head {
  rgem: boolean;
  gemp: boolean;
}
const HEADS: readonly Head[] = [
  { rgem: false, gemp: false },
  { rgem: false, gemp: true },
  { rgem: true, gemp: false },
  { rgem: true, gemp: true },
];
const headName = (h: Head) => `${h.gemp ? "gemp" : "gem3"}-${h.rgem ? "rgem" : "raw"}`;

/** The head before its FC, in float64: [Regional-GeM], GeM (p 3) or GeM+ (p 4.6), L2. */
export function headVector(map: FeatureMap, h: Head): Float64Array {
  const m = h.rgem ? regionalGem(map) : map;
  const g = h.gemp ? gem(m, GEM_PLUS.p, GEM_PLUS.eps) : gem(m, 3, GEM_BASELINE_EPS);
  return l2Normalize(g);
}

/** An image of the study: a file, possibly in an augmented variant. */
interface Item {
  path: string;
  aug: string;
}

const shaCache = new Map<string, string>();
function keyOf(item: Item): string {
  let sha = shaCache.get(item.path);
  if (sha === undefined) {
    sha = createHash("sha256").update(readFileSync(item.path)).digest("hex");
    shaCache.set(item.path, sha);
  }
  return item.aug === "" ? sha : `${sha}-${item.aug}`;
}

/** Per-scale head vectors on disk: desc/<head>/<key>.s<1|3>.f32, [scales × C] float32. */
function descFile(h: Head, key: string, scales: 1 | 3): string {
  return join(STUDY_DIR, "desc", headName(h), `${key}.s${scales}.f32`);
}

function readF32(file: string): Float32Array {
  const b = readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

function writeF32(file: string, v: Float32Array): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  renameSync(tmp, file);
}

/** The [scales × C] vectors of an item for a head (scales 1: the scale-1 vector, from either file). */
function loadVectors(h: Head, item: Item, scales: 1 | 3): Float32Array {
  const key = keyOf(item);
  const f3 = descFile(h, key, 3);
  if (existsSync(f3)) {
    const v = readF32(f3);
    return scales === 3 ? v : v.slice(C, 2 * C);
  }
  if (scales === 1) {
    const f1 = descFile(h, key, 1);
    if (existsSync(f1)) return readF32(f1);
  }
  throw new Error(`no descriptor for ${item.path}${item.aug ? ` (${item.aug})` : ""}: run extract`);
}

function hasVectors(item: Item, scales: 1 | 3): boolean {
  const key = keyOf(item);
  return HEADS.every(
    (h) => existsSync(descFile(h, key, 3)) || (scales === 1 && existsSync(descFile(h, key, 1))),
  );
}

interface Sets {
  multiview: QualitySet;
  copies: QualitySet;
  pairs: QualitySet;
  /** Multiview folder of each multiview image. */
  folderOf: string[];
}

/** `withCopies` false: no transformed copies (they are written to disk when made). */
async function sets(withCopies = true): Promise<Sets> {
  const multiview = multiviewDev(sharedAssetsDir);
  return {
    multiview,
    copies: withCopies
      ? await debianCopies(sharedAssetsDir, STUDY_DIR, 1)
      : { ...debianPairs(sharedAssetsDir), name: "(not made)", queries: [] },
    pairs: debianPairs(sharedAssetsDir),
    folderOf: multiview.labels.map((l) => l.split("/")[0]!),
  };
}

const plain = (paths: readonly string[]): Item[] => paths.map((path) => ({ path, aug: "" }));
const withAugs = (paths: readonly string[], augs: readonly string[]): Item[] =>
  paths.flatMap((path) => [{ path, aug: "" }, ...augs.map((aug) => ({ path, aug }))]);

async function extractStage(augs: string[], scales: 1 | 3): Promise<void> {
  const s = await sets();
  const items = [
    ...withAugs(s.multiview.images, augs),
    ...withAugs(s.pairs.images, augs),
    ...plain(s.copies.images.slice(s.pairs.images.length)),
  ];
  const todo = items.filter((it) => !hasVectors(it, scales));
  process.stderr.write(`extract: ${todo.length} of ${items.length} images to do\n`);
  if (todo.length === 0) return;
  for (const h of HEADS) mkdirSync(join(STUDY_DIR, "desc", headName(h)), { recursive: true });
  const extractor = await Extractor.create({
    model: "default",
    whitening: null,
    rgem: false,
    gemp: false,
    scales,
    cacheDir: MODEL_CACHE,
    threads: THREADS,
  });
  let worst = 0;
  const t0 = performance.now();
  try {
    let decodedPath = "";
    let decoded: BgrImage | undefined;
    for (const [i, item] of todo.entries()) {
      if (decodedPath !== item.path) {
        decoded = await decodeImage(item.path);
        decodedPath = item.path;
      }
      const image = item.aug === "" ? decoded! : AUGMENTATIONS[item.aug]!(decoded!);
      const trace = await extractor.trace(image);
      const key = keyOf(item);
      const out = HEADS.map(() => new Float32Array(scales * C));
      trace.scales.forEach((sc, si) => {
        HEADS.forEach((h, hi) => {
          const v = headVector(sc.s4!, h);
          out[hi]!.set(v, si * C);
          if (!h.rgem && !h.gemp) {
            // The model's own head (GeM p 3, identity FC) computed the same vector in float32.
            for (let c = 0; c < C; c++) worst = Math.max(worst, Math.abs(v[c]! - sc.vector[c]!));
          }
        });
      });
      for (const [hi, h] of HEADS.entries()) writeF32(descFile(h, key, scales), out[hi]!);
      if ((i + 1) % 10 === 0 || i + 1 === todo.length) {
        const rate = (performance.now() - t0) / 1000 / (i + 1);
        process.stderr.write(
          `extract: ${i + 1}/${todo.length} (${rate.toFixed(2)} s/image, max |TS − ONNX| ${worst.toExponential(2)})\n`,
        );
      }
    }
  } finally {
    await extractor.release();
  }
}

/** The whitening applied to one vector: rest·(x − m) + Vᵀ((a − rest) ⊙ V(x − m)), float64. */
export function applyWhitening(w: Whitening, x: ArrayLike<number>): Float64Array {
  const { channels, mean, vectors, scales, rest } = w;
  const z = new Float64Array(channels);
  const y = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    z[c] = x[c]! - mean[c]!;
    y[c] = rest * z[c]!;
  }
  for (let r = 0; r < scales.length; r++) {
    const base = r * channels;
    let p = 0;
    for (let c = 0; c < channels; c++) p += vectors[base + c]! * z[c]!;
    const f = (scales[r]! - rest) * p;
    for (let c = 0; c < channels; c++) y[c] = y[c]! + f * vectors[base + c]!;
  }
  return y;
}

/** Pooling candidate: head + scales + Scale-GeM (max) or mean. */
export interface Pooling {
  id: string;
  head: Head;
  scales: 1 | 3;
  sgem: boolean;
}

export function parsePooling(id: string): Pooling {
  const m = /^(gem3|gemp)-(raw|rgem)-(1|3max|3mean)$/.exec(id);
  if (m === null) throw new Error(`bad pooling ${id}`);
  return {
    id,
    head: { gemp: m[1] === "gemp", rgem: m[2] === "rgem" },
    scales: m[3] === "1" ? 1 : 3,
    sgem: m[3] !== "3mean",
  };
}

export const ALL_POOLINGS = ["gem3", "gemp"].flatMap((g) =>
  ["raw", "rgem"].flatMap((r) => ["1", "3max", "3mean"].map((s) => `${g}-${r}-${s}`)),
);

/** The final descriptor of an item as Extractor computes it: [whitening per scale], combine, L2. */
function finalDescriptor(v: Float32Array, p: Pooling, w: Whitening | null): Float64Array {
  const per: ArrayLike<number>[] = [];
  for (let s = 0; s < p.scales; s++) {
    const x = v.subarray(s * C, (s + 1) * C);
    per.push(w === null ? x : applyWhitening(w, x));
  }
  return l2Normalize(p.sgem ? scaleGemMax(per) : scaleMean(per));
}

function descriptors(items: Item[], p: Pooling, w: Whitening | null): Float32Array {
  const out = new Float32Array(items.length * C);
  items.forEach((it, i) => {
    out.set(finalDescriptor(loadVectors(p.head, it, p.scales), p, w), i * C);
  });
  return out;
}

export interface WhiteningSpec {
  id: string;
  train: "cv" | "debian";
  shrinkage: number;
  /** Training rows: the scales the pooling uses, the scale 1 only, or all 3 scales. */
  trainScales: "used" | "1" | "3";
  augs: string[];
}

export function parseWhitening(id: string): WhiteningSpec | null {
  if (id === "none") return null;
  const [train, s, ts, augs] = id.split(":");
  if ((train !== "cv" && train !== "debian") || (ts !== "used" && ts !== "1" && ts !== "3")) {
    throw new Error(`bad whitening ${id}`);
  }
  return {
    id,
    train,
    shrinkage: Number(s),
    trainScales: ts,
    augs: augs === undefined || augs === "" ? [] : augs.split("+"),
  };
}

/** The shrinkage every whitening is learned at; others are derived from it by `reshrink`. */
const BASE_SHRINKAGE = 0.1;

/**
 * The same whitening at another shrinkage, exactly (up to rounding): the eigenvectors do not
 * depend on it, each eigenvalue is 1/a² − floor and the mean eigenvalue floor/shrinkage, with
 * floor = 1/rest². The check stage compares it with learnWhitening at the other shrinkage.
 */
export function reshrink(w: Whitening, from: number, to: number): Whitening {
  const floor = 1 / (w.rest * w.rest);
  const next = (to * floor) / from;
  return {
    ...w,
    scales: w.scales.map((a) => 1 / Math.sqrt(Math.max(1 / (a * a) - floor, 0) + next)),
    rest: 1 / Math.sqrt(next),
  };
}

function saveF64(file: string, a: Float64Array): void {
  writeFileSync(file, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
}
function loadF64(file: string): Float64Array {
  const b = readFileSync(file);
  return new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/**
 * The whitening learned on `items` (named `trainSet`) for a pooling and spec, through an on-disk
 * cache of the base-shrinkage whitening (float64). Training rows: the per-scale vectors of every
 * scale used (`used`, 3 scales) or the scale-1 vector only.
 */
function learn(trainSet: string, items: Item[], p: Pooling, spec: WhiteningSpec): Whitening {
  const rowScales: 1 | 3 =
    spec.trainScales === "3" || (spec.trainScales === "used" && p.scales === 3) ? 3 : 1;
  const key = `${headName(p.head)}-s${rowScales}-${trainSet}-${spec.augs.join("+") || "noaug"}`;
  const dir = join(STUDY_DIR, "whitenings", key);
  let base: Whitening;
  if (existsSync(join(dir, "rest.f64"))) {
    const scales = loadF64(join(dir, "scales.f64"));
    base = {
      channels: C,
      mean: loadF64(join(dir, "mean.f64")),
      vectors: loadF64(join(dir, "vectors.f64")),
      scales,
      rest: loadF64(join(dir, "rest.f64"))[0]!,
    };
  } else {
    const data = new Float64Array(items.length * rowScales * C);
    let row = 0;
    for (const it of items) {
      const v = loadVectors(p.head, it, rowScales);
      for (let s = 0; s < rowScales; s++) data.set(v.subarray(s * C, (s + 1) * C), row++ * C);
    }
    base = learnWhitening(data, row, C, { shrinkage: BASE_SHRINKAGE });
    mkdirSync(dir, { recursive: true });
    saveF64(join(dir, "mean.f64"), base.mean);
    saveF64(join(dir, "vectors.f64"), base.vectors);
    saveF64(join(dir, "scales.f64"), base.scales);
    saveF64(join(dir, "rest.f64"), Float64Array.of(base.rest));
  }
  return spec.shrinkage === BASE_SHRINKAGE ? base : reshrink(base, BASE_SHRINKAGE, spec.shrinkage);
}

interface Score {
  queries: number;
  map: number;
  top1: number;
}

function score(ap: number[], top1: number[], idx: number[]): Score {
  const n = idx.length;
  return {
    queries: n,
    map: (100 * idx.reduce((a, i) => a + ap[i]!, 0)) / n,
    top1: (100 * idx.reduce((a, i) => a + top1[i]!, 0)) / n,
  };
}

export interface CandidateResult {
  pooling: string;
  whitening: string;
  multiview: Score & { small: Score; large: Score; folds: Record<string, Score> };
  copies: Score | null;
  /** Copies by transformation recipe. */
  copiesByRecipe: Record<string, Score> | null;
  pairs: Score | null;
  /** Eigenvectors of the whitening learned on all of multiview-dev (cv) or debian (debian). */
  rank: number | null;
  seconds: number;
}

async function scoreSet(
  set: QualitySet,
  data: Float32Array,
): Promise<{ ap: number[]; top1: number[] }> {
  const r = (await evaluateSet(set, data, C, [{ name: "none" }]))["none"]!;
  return { ap: r.perQueryAp, top1: r.perQueryTop1 };
}

async function evaluateCandidate(
  s: Sets,
  p: Pooling,
  spec: WhiteningSpec | null,
  withDebian = true,
): Promise<CandidateResult> {
  const t0 = performance.now();
  const mv = s.multiview;
  const mvItems = plain(mv.images);
  const folds = [...new Set(s.folderOf)].sort();
  const ap = new Array<number>(mv.queries.length).fill(Number.NaN);
  const top1 = new Array<number>(mv.queries.length).fill(Number.NaN);
  const foldScores: Record<string, Score> = {};
  let rank: number | null = null;
  const fill = (r: { ap: number[]; top1: number[] }, only: (q: number) => boolean) => {
    mv.queries.forEach((q, i) => {
      if (only(q.image)) {
        ap[i] = r.ap[i]!;
        top1[i] = r.top1[i]!;
      }
    });
  };
  if (spec === null) {
    fill(await scoreSet(mv, descriptors(mvItems, p, null)), () => true);
  } else if (spec.train === "debian") {
    const w = learn("debian", withAugs(s.pairs.images, spec.augs), p, spec);
    rank = w.scales.length;
    fill(await scoreSet(mv, descriptors(mvItems, p, w)), () => true);
  } else {
    for (const fold of folds) {
      const train = withAugs(
        [...mv.images.filter((_, i) => s.folderOf[i] !== fold), ...s.pairs.images],
        spec.augs,
      );
      const w = learn(`multiview-minus-${fold}+debian`, train, p, spec);
      fill(await scoreSet(mv, descriptors(mvItems, p, w)), (img) => s.folderOf[img] === fold);
    }
  }
  for (const fold of folds) {
    foldScores[fold] = score(
      ap,
      top1,
      mv.queries.flatMap((q, i) => (s.folderOf[q.image] === fold ? [i] : [])),
    );
  }
  const by = (label: string) => mv.queries.flatMap((q, i) => (q.breakdown === label ? [i] : []));
  const all = mv.queries.map((_, i) => i);
  const [smallLabel, largeLabel] = mv.breakdowns as [string, string];
  let copies: Score | null = null;
  let copiesByRecipe: Record<string, Score> | null = null;
  let pairs: Score | null = null;
  if (withDebian && (spec === null || spec.train === "cv")) {
    // debian-photos is scored with a whitening that never saw it: learned on all of multiview-dev.
    const w = spec === null ? null : learn("multiview", withAugs(mv.images, spec.augs), p, spec);
    if (w !== null) rank = w.scales.length;
    const c = await scoreSet(s.copies, descriptors(plain(s.copies.images), p, w));
    copies = score(
      c.ap,
      c.top1,
      s.copies.queries.map((_, i) => i),
    );
    copiesByRecipe = Object.fromEntries(
      s.copies.breakdowns.map((label) => [
        label,
        score(
          c.ap,
          c.top1,
          s.copies.queries.flatMap((q, i) => (q.breakdown === label ? [i] : [])),
        ),
      ]),
    );
    const pr = await scoreSet(s.pairs, descriptors(plain(s.pairs.images), p, w));
    pairs = score(
      pr.ap,
      pr.top1,
      s.pairs.queries.map((_, i) => i),
    );
  }
  return {
    pooling: p.id,
    whitening: spec?.id ?? "none",
    multiview: {
      ...score(ap, top1, all),
      small: score(ap, top1, by(smallLabel)),
      large: score(ap, top1, by(largeLabel)),
      folds: foldScores,
    },
    copies,
    copiesByRecipe,
    pairs,
    rank,
    seconds: (performance.now() - t0) / 1000,
  };
}

interface StudyState {
  candidates: CandidateResult[];
  checks?: Record<string, number>;
  timing?: TimingRow[];
}

const STATE = join(STUDY_DIR, "results.json");
function readState(): StudyState {
  return existsSync(STATE)
    ? (JSON.parse(readFileSync(STATE, "utf8")) as StudyState)
    : { candidates: [] };
}
function writeState(s: StudyState): void {
  writeFileSync(STATE, `${JSON.stringify(s, null, 1)}\n`);
}

const f2 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(2));

function row(r: CandidateResult, timing: readonly TimingRow[] = []): string {
  const p = parsePooling(r.pooling);
  const t = timing.find((x) => x.head === headName(p.head) && x.scales === p.scales);
  return [
    r.pooling,
    r.whitening,
    f2(r.multiview.map),
    f2(r.multiview.top1),
    f2(r.multiview.small.map),
    f2(r.multiview.large.map),
    f2(r.copies?.map),
    f2(r.copies?.top1),
    f2(r.pairs?.map),
    t === undefined ? "—" : t.secondsPerImage.toFixed(2),
  ].join(" | ");
}

/** `multiviewOnly`: a quick look (multiview-dev only), printed and not recorded. */
async function evaluateStage(
  poolings: string[],
  whitenings: string[],
  multiviewOnly: boolean,
): Promise<void> {
  const s = await sets(!multiviewOnly);
  const state = readState();
  for (const pid of poolings) {
    for (const wid of whitenings) {
      if (state.candidates.some((c) => c.pooling === pid && c.whitening === wid)) continue;
      const r = await evaluateCandidate(s, parsePooling(pid), parseWhitening(wid), !multiviewOnly);
      if (!multiviewOnly) {
        state.candidates.push(r);
        writeState(state);
      }
      process.stdout.write(`| ${row(r)} | (${r.seconds.toFixed(1)} s)\n`);
    }
  }
}

/** The float64 heads and the whitening emulation against the product's ONNX models. */
async function checkStage(): Promise<void> {
  const s = await sets();
  const probe = [s.multiview.images[0]!, s.multiview.images[100]!, s.pairs.images[7]!];
  const checks: Record<string, number> = {};
  for (const h of HEADS) {
    const ex = await Extractor.create({
      model: "default",
      whitening: null,
      ...h,
      scales: 3,
      cacheDir: MODEL_CACHE,
      threads: THREADS,
    });
    let worst = 0;
    try {
      for (const path of probe) {
        const t = await ex.trace(path);
        const v = loadVectors(h, { path, aug: "" }, 3);
        t.scales.forEach((sc, si) => {
          for (let c = 0; c < C; c++)
            worst = Math.max(worst, Math.abs(sc.vector[c]! - v[si * C + c]!));
        });
      }
    } finally {
      await ex.release();
    }
    checks[`head ${headName(h)}: max |float64 − ONNX| per-scale vector`] = worst;
    process.stdout.write(`${headName(h)}: ${worst.toExponential(2)}\n`);
  }
  // Whitening + Scale-GeM/mean emulation vs Extractor with a whitening folder.
  const h = { rgem: true, gemp: true };
  const p3 = parsePooling("gemp-rgem-3max");
  const w = learn("debian", plain(s.pairs.images), p3, parseWhitening("debian:0.1:used:")!);
  // reshrink against learnWhitening at another shrinkage.
  {
    const rows = s.pairs.images.flatMap((path) => {
      const v = loadVectors(h, { path, aug: "" }, 3);
      return [0, 1, 2].map((sc) => v.subarray(sc * C, (sc + 1) * C));
    });
    const data = new Float64Array(rows.length * C);
    rows.forEach((r, i) => {
      data.set(r, i * C);
    });
    const direct = learnWhitening(data, rows.length, C, { shrinkage: 0.5 });
    const derived = reshrink(w, BASE_SHRINKAGE, 0.5);
    let worst = Math.abs(direct.rest - derived.rest) / direct.rest;
    direct.scales.forEach((a, i) => {
      worst = Math.max(worst, Math.abs(a - derived.scales[i]!) / a);
    });
    checks["reshrink 0.1 → 0.5 vs learnWhitening at 0.5: max relative difference of the scales"] =
      worst;
    process.stdout.write(`reshrink: ${worst.toExponential(2)}\n`);
  }
  const dir = join(STUDY_DIR, "check-whitening");
  mkdirSync(dir, { recursive: true });
  writeWhitening(dir, w);
  for (const pid of ["gemp-rgem-1", "gemp-rgem-3max", "gemp-rgem-3mean"]) {
    const p = parsePooling(pid);
    const ex = await Extractor.create({
      model: "default",
      whitening: dir,
      ...h,
      scales: p.scales,
      sgem: p.sgem,
      cacheDir: MODEL_CACHE,
      threads: THREADS,
    });
    let worst = 0;
    try {
      for (const path of probe.slice(0, 2)) {
        const d = await ex.extract(path);
        const e = finalDescriptor(loadVectors(h, { path, aug: "" }, p.scales), p, w);
        for (let c = 0; c < C; c++) worst = Math.max(worst, Math.abs(d[c]! - e[c]!));
      }
    } finally {
      await ex.release();
    }
    checks[`whitened ${pid}: max |emulation − Extractor| descriptor`] = worst;
    process.stdout.write(`whitened ${pid}: ${worst.toExponential(2)}\n`);
  }
  const state = readState();
  state.checks = checks;
  writeState(state);
}

interface TimingRow {
  head: string;
  scales: 1 | 3;
  /** Images per round, and rounds. */
  images: number;
  rounds: number;
  /** Seconds per image (decode + preprocess + model + pooling): the median over the rounds. */
  secondsPerImage: number;
  /** The model's (backbone + head) part of it, median over the rounds. */
  backbonePerImage: number;
  /** Every round's seconds per image. */
  perRound: number[];
  /** 1-minute load average, at the start and the end. */
  loadavg: [number, number];
}

const medianOf = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Seconds per image at 1 and 3 scales for each head: the extractors of a head take turns, `n`
 * images each, for `rounds` rounds (the machine is shared: interleaving spreads load changes over
 * both), and the median round is reported.
 */
async function timingStage(n: number, rounds: number, heads: readonly Head[]): Promise<void> {
  const s = await sets(false);
  // 768 px photos (strecha-mvs: 768 × 512).
  const photos = s.multiview.images.filter((p) => p.includes("strecha-mvs")).slice(0, n + 1);
  const rows: TimingRow[] = [];
  for (const h of heads) {
    const extractors = new Map<1 | 3, Extractor>();
    const rec = new Map<1 | 3, { total: number[]; model: number[] }>();
    const load0 = loadavg()[0]!;
    try {
      for (const scales of [1, 3] as const) {
        const ex = await Extractor.create({
          model: "default",
          whitening: null, // an identity FC: the same Gemm as a whitening
          ...h,
          scales,
          cacheDir: MODEL_CACHE,
          threads: THREADS,
        });
        extractors.set(scales, ex);
        await ex.extract(photos[0]!); // warm-up
        rec.set(scales, { total: [], model: [] });
      }
      for (let r = 0; r < rounds; r++) {
        for (const scales of [1, 3] as const) {
          const ex = extractors.get(scales)!;
          const b = { ...ex.stats };
          for (const path of photos.slice(1)) await ex.extract(path);
          const st = ex.stats;
          const k = st.images - b.images;
          const total =
            st.decode +
            st.preprocess +
            st.backbone +
            st.pooling -
            (b.decode + b.preprocess + b.backbone + b.pooling);
          rec.get(scales)!.total.push(total / 1000 / k);
          rec.get(scales)!.model.push((st.backbone - b.backbone) / 1000 / k);
        }
      }
    } finally {
      for (const ex of extractors.values()) await ex.release();
    }
    for (const scales of [1, 3] as const) {
      const r: TimingRow = {
        head: headName(h),
        scales,
        images: photos.length - 1,
        rounds,
        secondsPerImage: medianOf(rec.get(scales)!.total),
        backbonePerImage: medianOf(rec.get(scales)!.model),
        perRound: rec.get(scales)!.total,
        loadavg: [load0, loadavg()[0]!],
      };
      rows.push(r);
      process.stdout.write(`${JSON.stringify(r)}\n`);
    }
  }
  const state = readState();
  state.timing = rows;
  writeState(state);
}

function reportStage(notes: string[]): void {
  const state = readState();
  const host = machine();
  const date = host.date.slice(0, 10);
  const lines = [
    `# Default model: pooling and whitening (${date})`,
    "",
    `${host.cpu}, ${host.cores} cores (shared with other jobs), Node ${host.node}, onnxruntime ${host.onnxruntime}`,
    "",
    "nsfwjs MobileNetV2-1.4 `Conv_1` (1792 channels), images as stored (≤ 768 px). Produced by",
    "`node --import tsx bench/default-model-study.ts` (stages extract, check, timing, evaluate, report).",
    "",
    "multiview-dev: its README's protocol (179 queries, each against the other 178 images; query",
    "counts of the group-size classes in the header), mAP / top-1 in %. debian copies: 324 harsh",
    "transformed copies (6 recipes, bench/quality-data.ts, seed 1) against the 54 originals; pairs:",
    "the 5 real opencv pairs (10 queries) against the other 53 images. Pooling ids:",
    "`<gem3: GeM p 3 | gemp: GeM+ p 4.6>-<raw | rgem: Regional-GeM>-<1 scale | 3 scales, max (Scale-GeM) | 3 scales, mean>`.",
    "Whitening ids: `none`, or `<cv|debian>:<shrinkage>:<training rows: the scales used | scale 1 only | all 3 scales>:<augmentations>`.",
    "`cv`: multiview-dev numbers are leave-one-folder-out (each folder scored with a whitening",
    "learned on the other three folders + the 54 debian-photos; per-query APs pooled over the 4",
    "folds); copies/pairs with one learned on all of multiview-dev. `debian`: learned on the 54",
    "debian-photos only, scored on multiview-dev only. No number here was scored with a whitening",
    "that saw the scored photos.",
    "",
  ];
  const c0 = state.candidates[0];
  if (c0 !== undefined) {
    lines.push(
      `| pooling | whitening | mAP | top-1 | mAP groups <15 (${c0.multiview.small.queries}) | mAP groups ≥15 (${c0.multiview.large.queries}) | copies mAP | copies top-1 | pairs mAP | s/image |`,
      "|---|---|---|---|---|---|---|---|---|---|",
      ...state.candidates.map((r) => `| ${row(r, state.timing)} |`),
      "",
    );
  }
  const byRecipe = state.candidates.filter(
    (r) => r.copiesByRecipe !== null && (r.whitening === "none" || r.whitening === "cv:0.1:used:"),
  );
  const recipes = Object.keys(byRecipe[0]?.copiesByRecipe ?? {});
  if (recipes.length > 0) {
    lines.push(
      "## debian copies by recipe (mAP; whitening none vs cv:0.1:used:)",
      "",
      `| pooling | whitening | ${recipes.join(" | ")} |`,
      `|---|---|${recipes.map(() => "---").join("|")}|`,
      ...byRecipe.map(
        (r) =>
          `| ${r.pooling} | ${r.whitening} | ${recipes.map((k) => f2(r.copiesByRecipe![k]?.map)).join(" | ")} |`,
      ),
      "",
    );
  }
  if (state.timing !== undefined) {
    lines.push(
      "## Cost (768 × 512 photos, 2 onnxruntime threads, `extractor.stats`)",
      "",
      "| head | scales | images × rounds | s/image (median round) | of which the model | every round | load average (start, end) |",
      "|---|---|---|---|---|---|---|",
      ...state.timing.map(
        (t) =>
          `| ${t.head} | ${t.scales} | ${t.images} × ${t.rounds} | ${t.secondsPerImage.toFixed(3)} | ${t.backbonePerImage.toFixed(3)} | ${t.perRound.map((x) => x.toFixed(2)).join(", ")} | ${t.loadavg.map((x) => x.toFixed(1)).join(", ")} |`,
      ),
      "",
    );
  }
  if (state.checks !== undefined) {
    lines.push(
      "## Checks of this study's pipeline",
      "",
      ...Object.entries(state.checks).map(([k, v]) => `- ${k}: ${v.toExponential(2)}`),
      "",
    );
  }
  lines.push(...notes);
  saveResult(`default-model-${date}`, { machine: host, ...state }, lines.join("\n"));
}

export async function main(argv: string[]): Promise<void> {
  const [stage, ...rest] = argv;
  const opt = (name: string, fallback: string) => {
    const i = rest.indexOf(`--${name}`);
    return i < 0 ? fallback : rest[i + 1]!;
  };
  mkdirSync(STUDY_DIR, { recursive: true });
  switch (stage) {
    case "extract": {
      const augs = opt("augment", "");
      await extractStage(augs === "" ? [] : augs.split(","), Number(opt("scales", "3")) as 1 | 3);
      break;
    }
    case "check":
      await checkStage();
      break;
    case "timing":
      await timingStage(
        Number(opt("images", "8")),
        Number(opt("rounds", "3")),
        opt("heads", HEADS.map(headName).join(","))
          .split(",")
          .map((name) => HEADS.find((h) => headName(h) === name)!),
      );
      break;
    case "evaluate":
      await evaluateStage(
        opt("poolings", ALL_POOLINGS.join(",")).split(","),
        opt("whitenings", "none").split(","),
        rest.includes("--multiview-only"),
      );
      break;
    case "report": {
      const notesFile = opt("notes", "");
      reportStage(notesFile === "" ? [] : [readFileSync(notesFile, "utf8")]);
      break;
    }
    default:
      throw new Error("stage: extract | check | timing | evaluate | report");
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main(process.argv.slice(2));
}
