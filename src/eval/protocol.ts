/**
 * The whole Revisited Oxford/Paris protocol from images, as the paper's code runs it: query
 * images cropped to their boxes, database images whole, (+1M distractor descriptors appended),
 * exact ranking by dot product, SuperGlobal reranking, and E/M/H mAP without and with reranking.
 * Descriptors are cached on disk as they are made, so an interrupted run resumes.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DESCRIPTOR_DIM, type Extractor } from "../descriptor/extractor.ts";
import { assertOneOf, SuperglobalError } from "../errors.ts";
import { DescriptorStore } from "../index/store.ts";
import { npyInfo, readMatrixF32Into } from "../io/npy.ts";
import {
  SuperGlobalReranker,
  type SuperGlobalRerankOptions,
} from "../rerank/superglobal-rerank.ts";
import { ExactSearch } from "../search/exact-search.ts";
import { type GroundTruth, readGroundTruth } from "./ground-truth.ts";
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
  const store = DescriptorStore.open(
    options.cacheDir ?? join(root, "superglobal-cache"),
    DESCRIPTOR_DIM,
    { model: options.extractor.identity },
  );
  const failures: string[] = [];
  try {
    await extractAll(options, root, gt, store, failures);
  } finally {
    store.close();
  }

  // X = [database; distractors], Q = queries; zero rows for images that failed.
  const n = gt.imlist.length;
  const distractors = options.distractors ?? [];
  const extra = distractors.reduce((sum, path) => sum + distractorRows(path), 0);
  const N = n + extra;
  const X = new Float32Array(N * DESCRIPTOR_DIM);
  gt.imlist.forEach((name, i) => {
    const v = store.get(`db/${name}`);
    if (v !== undefined) X.set(v, i * DESCRIPTOR_DIM);
  });
  let row = n;
  for (const path of distractors)
    row += readMatrixF32Into(path, X, row * DESCRIPTOR_DIM, DESCRIPTOR_DIM);
  const nq = gt.qimlist.length;
  const Q = new Float32Array(nq * DESCRIPTOR_DIM);
  gt.qimlist.forEach((name, i) => {
    const v = store.get(`query/${name}`);
    if (v !== undefined) Q.set(v, i * DESCRIPTOR_DIM);
  });

  const db = { data: X, rows: N, cols: DESCRIPTOR_DIM };
  const queries = { data: Q, rows: nq, cols: DESCRIPTOR_DIM };
  const threads = options.threads === undefined ? {} : { threads: options.threads };
  const search = await ExactSearch.create(threads);
  let ranks: Int32Array;
  try {
    ranks = (await search.search(db, queries, N)).ids;
  } finally {
    await search.release();
  }
  const global = evaluateRevisitop(ranks, nq, N, gt);
  const reranker = await SuperGlobalReranker.create({ ...options.rerank, ...threads });
  let reranked: Int32Array;
  try {
    reranked = (await reranker.rerankRanks(db, queries, { data: ranks, rows: nq, cols: N })).ranks;
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
    reranked: evaluateRevisitop(reranked, nq, N, gt),
  };
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

function distractorRows(path: string): number {
  const { shape } = npyInfo(path);
  if (shape.length !== 2 || shape[1] !== DESCRIPTOR_DIM) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: distractors must be a [n, ${DESCRIPTOR_DIM}] matrix, found (${shape.join(", ")})`,
      { input: path },
    );
  }
  return shape[0]!;
}

/** Extracts every query (cropped) and database image not yet in the store; failures are listed. */
async function extractAll(
  options: RevisitopRunOptions,
  root: string,
  gt: GroundTruth,
  store: DescriptorStore,
  failures: string[],
): Promise<void> {
  const jobs = [
    ...gt.qimlist.map((name, i) => ({ key: `query/${name}`, name, bbox: gt.gnd[i]!.bbx })),
    ...gt.imlist.map((name) => ({ key: `db/${name}`, name, bbox: undefined })),
  ];
  let done = 0;
  for (const job of jobs) {
    if (!store.has(job.key)) {
      const path = join(root, "jpg", `${job.name}.jpg`);
      try {
        const d = await options.extractor.extract(
          path,
          job.bbox === undefined ? {} : { bbox: job.bbox },
        );
        store.add(job.key, d);
      } catch (error) {
        if (!(error instanceof SuperglobalError)) throw error;
        failures.push(error.message.includes(path) ? error.message : `${path}: ${error.message}`);
      }
    }
    done += 1;
    options.onProgress?.(done, jobs.length, job.name);
  }
}
