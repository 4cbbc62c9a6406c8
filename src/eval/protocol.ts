/**
 * The whole Revisited Oxford/Paris protocol from images, as the paper's code runs it: query
 * images cropped to their boxes, database images whole, (+1M distractor descriptors appended),
 * exact ranking by dot product, SuperGlobal reranking, and E/M/H mAP without and with reranking.
 * Descriptors are cached on disk as they are made, so an interrupted run resumes.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { extractMany } from "../descriptor/extract-many.ts";
import type { Extractor } from "../descriptor/extractor.ts";
import { assertOneOf, fileError, SuperglobalError } from "../errors.ts";
import { DescriptorStore } from "../index/store.ts";
import { npyInfo, readMatrixF32Into } from "../io/npy.ts";
import {
  SuperGlobalReranker,
  type SuperGlobalRerankOptions,
} from "../rerank/superglobal-rerank.ts";
import { ExactSearch } from "../search/exact-search.ts";
import { readGroundTruth } from "./ground-truth.ts";
import { evaluateRevisitop, type Protocol, type ProtocolResult } from "./revisitop-map.ts";

export const DATASETS = ["roxford5k", "rparis6k"] as const;
export type Dataset = (typeof DATASETS)[number];

export interface RevisitopRunOptions {
  dataset: Dataset;
  /** Folder holding `<dataset>/jpg/*.jpg` and `<dataset>/gnd_<dataset>.pkl` (revisitop layout). */
  dataDir: string;
  extractor: Extractor;
  /** Where descriptors are cached; default `<dataDir>/<dataset>/superglobal-cache`. */
  cacheDir?: string;
  /** Extra distractor descriptors (.npy files [n, 2048], e.g. revisitop1m in batches), appended in order after the dataset. */
  distractors?: readonly string[];
  rerank?: Omit<SuperGlobalRerankOptions, "threads">;
  threads?: number;
  /** Called after each image: done of total, and the image's name. */
  onProgress?: (done: number, total: number, name: string) => void;
  /** Told what the user should know of: a query box clipped to its image (names both). */
  onWarning?: (message: string) => void;
  /** Checked between images: once aborted, the run stops with the signal's reason. */
  signal?: AbortSignal;
}

export interface RevisitopRunResult {
  dataset: Dataset;
  queries: number;
  database: number;
  distractors: number;
  /** Images that could not be read (named, with the reason); they take a zero descriptor. */
  failures: string[];
  global: Record<Protocol, ProtocolResult>;
  reranked: Record<Protocol, ProtocolResult>;
}

export async function runRevisitop(options: RevisitopRunOptions): Promise<RevisitopRunResult> {
  const dataset = assertOneOf("dataset", options.dataset, DATASETS);
  const root = join(options.dataDir, dataset);
  const gt = readGroundTruth(findGroundTruth(options.dataDir, dataset));
  const dim = options.extractor.dim;
  const store = DescriptorStore.open(options.cacheDir ?? join(root, "superglobal-cache"), dim, {
    model: options.extractor.identity,
  });
  // Every query (cropped to its box), then every database image; zero rows for images that failed.
  const jobs = [
    ...gt.qimlist.map((name, i) => ({ key: `query/${name}`, name, bbox: gt.gnd[i]!.bbx })),
    ...gt.imlist.map((name) => ({ key: `db/${name}`, name, bbox: undefined })),
  ];
  let extracted: Awaited<ReturnType<typeof extractMany>>;
  try {
    const pending = jobs.filter((job) => !store.has(job.key)).map((job) => job.name);
    if (pending.length > 0) checkDatasetImages(options.dataDir, dataset, pending);
    extracted = await extractMany(
      jobs.map((job) => ({
        path: join(root, "jpg", `${job.name}.jpg`),
        key: job.key,
        ...(job.bbox === undefined ? {} : { bbox: job.bbox }),
      })),
      options.extractor,
      {
        cache: store,
        fill: 0,
        onProgress: (e) => options.onProgress?.(e.done, e.total, jobs[e.index]!.name),
        ...(options.onWarning === undefined ? {} : { onWarning: options.onWarning }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
    );
  } finally {
    store.close();
  }
  const failures = extracted.failures.map((f) => f.message);

  // X = [database; distractors], Q = queries.
  const n = gt.imlist.length;
  const nq = gt.qimlist.length;
  const distractors = options.distractors ?? [];
  const extra = distractors.reduce((sum, path) => sum + distractorRows(path, dim), 0);
  const N = n + extra;
  const X = new Float32Array(N * dim);
  X.set(extracted.descriptors.subarray(nq * dim));
  let row = n;
  for (const path of distractors) row += readMatrixF32Into(path, X, row * dim, dim);
  const Q = extracted.descriptors.slice(0, nq * dim);

  const db = { data: X, rows: N, cols: dim };
  const queries = { data: Q, rows: nq, cols: dim };
  const threads = options.threads === undefined ? {} : { threads: options.threads };
  const search = await ExactSearch.create(threads);
  // Distractor rows that are not finite (failed images in a batch) are skipped: k may be < N.
  let ranks: { ids: Int32Array; k: number };
  try {
    ranks = await search.search(db, queries, N);
  } finally {
    await search.release();
  }
  const global = evaluateRevisitop(ranks.ids, nq, ranks.k, gt);
  const reranker = await SuperGlobalReranker.create({ ...options.rerank, ...threads });
  let reranked: Int32Array;
  try {
    reranked = (
      await reranker.rerankRanks(db, queries, { data: ranks.ids, rows: nq, cols: ranks.k })
    ).ranks;
  } finally {
    await reranker.release();
  }
  return {
    dataset,
    queries: nq,
    database: n,
    distractors: extra,
    failures,
    global,
    reranked: evaluateRevisitop(reranked, nq, ranks.k, gt),
  };
}

/**
 * Throws NOT_FOUND, before any extraction, when `<dataDir>/<dataset>/jpg` does not exist or holds
 * none of the images `names` (without `.jpg`): one clear message instead of one failure per image.
 */
export function checkDatasetImages(
  dataDir: string,
  dataset: Dataset,
  names: readonly string[],
): void {
  const jpg = join(dataDir, dataset, "jpg");
  let files: string[];
  try {
    files = readdirSync(jpg);
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
      throw new SuperglobalError(
        "NOT_FOUND",
        `${jpg}: the images folder does not exist (revisitop layout: <data-dir>/${dataset}/jpg/<name>.jpg)`,
        { input: jpg, cause },
      );
    }
    throw fileError(jpg, "cannot read the images folder", cause);
  }
  const present = new Set(files);
  if (!names.some((name) => present.has(`${name}.jpg`))) {
    throw new SuperglobalError(
      "NOT_FOUND",
      `${jpg}: none of the ${names.length} images to extract is there (<name>.jpg for each name of gnd_${dataset})`,
      { input: jpg },
    );
  }
}

/**
 * The checks of a run that need no model, for callers to make before they build one: the ground
 * truth exists, and unless a descriptor cache is already there (it may hold every descriptor), the
 * images are there. runRevisitop makes them again, against the cache's contents.
 */
export function preflightRevisitop(options: {
  dataset: Dataset;
  dataDir: string;
  cacheDir?: string;
}): void {
  const dataset = assertOneOf("dataset", options.dataset, DATASETS);
  const gt = readGroundTruth(findGroundTruth(options.dataDir, dataset));
  const cacheDir = options.cacheDir ?? join(options.dataDir, dataset, "superglobal-cache");
  if (!existsSync(cacheDir))
    checkDatasetImages(options.dataDir, dataset, [...gt.qimlist, ...gt.imlist]);
}

/** The ground-truth file of `dataset` under `dataDir` (revisitop layout), or a NOT_FOUND error. */
export function findGroundTruth(dataDir: string, dataset: Dataset): string {
  const root = join(dataDir, dataset);
  for (const ext of ["pkl", "json"]) {
    const path = join(root, `gnd_${dataset}.${ext}`);
    if (existsSync(path)) return path;
  }
  throw new SuperglobalError(
    "NOT_FOUND",
    `${root}: no gnd_${dataset}.pkl (revisitop layout: <data-dir>/${dataset}/gnd_${dataset}.pkl and jpg/)`,
    { input: root },
  );
}

function distractorRows(path: string, dim: number): number {
  const { shape } = npyInfo(path);
  if (shape.length !== 2 || shape[1] !== dim) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: distractors must be a [n, ${dim}] matrix (the model's dimension), found (${shape.join(", ")})`,
      { input: path },
    );
  }
  return shape[0]!;
}
