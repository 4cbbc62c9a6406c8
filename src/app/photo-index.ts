/**
 * The product's main job as a library: a persistent index of photos that keeps their file names,
 * and search over it. It ties together the extractor (descriptor/), the crash-safe storage
 * (index/), exact search (search/) and reranking (rerank/):
 *
 *   const index = await Index.open("photos.sgi", { create: true });   // default model
 *   await index.add(findImages(["~/photos"]), { onProgress });
 *   const { hits } = await index.search("query.jpg", { top: 10 });
 *
 * One index = one model: the model's identity (content hash of its weights and the extraction
 * settings) is stored in the index, and how to rebuild the model beside it (`model.json` inside
 * the store's manifest), so `open` needs no model options later and refuses a different model.
 */

import { createHash } from "node:crypto";
import { resolve } from "node:path";
import type { Float32Matrix } from "../core/matrix.ts";
import {
  type BatchExtractor,
  type DescriptorCache,
  extractMany,
  type StagedExtractor,
} from "../descriptor/extract-many.ts";
import { ExtractorPool } from "../descriptor/extract-pool.ts";
import { Extractor } from "../descriptor/extractor.ts";
import type { ExtractorOptions } from "../descriptor/options.ts";
import { assertInteger, assertOneOf, invalidArgument, SuperglobalError } from "../errors.ts";
import type { Box } from "../image/crop.ts";
import { readImageFile } from "../image/decode.ts";
import type { ImageTensor } from "../image/normalize.ts";
import { type IndexInfo, IndexStore, type VectorDtype } from "../index/index-store.ts";
import { AdaptiveReranker } from "../rerank/adaptive-rerank.ts";
import type { Reranker } from "../rerank/reranker.ts";
import { SuperGlobalReranker } from "../rerank/superglobal-rerank.ts";
import { type AnnParameters, annParameters } from "../search/ann-search.ts";
import { ExactSearch } from "../search/exact-search.ts";
import { type AddOptions, AddRun, type AddSummary } from "./add-run.ts";
import { AnnSync, DEFAULT_ANN_THRESHOLD } from "./ann-sync.ts";

export type { AddEvent, AddOptions, AddSummary } from "./add-run.ts";

/** Reranking modes: `adaptive` (the default: never worse on small groups), `paper`, `off`. */
export type RerankMode = "adaptive" | "paper" | "off";
export const RERANK_MODES: readonly RerankMode[] = ["adaptive", "paper", "off"];

/** Search methods: `auto` (exact below the ANN threshold, ANN above), `exact`, `ann`. */
export type SearchMethod = "auto" | "exact" | "ann";
export const SEARCH_METHODS: readonly SearchMethod[] = ["auto", "exact", "ann"];

/** How the index's model is made: the extractor options a user gave (paths made absolute). */
export type ModelSpec = Omit<ExtractorOptions, "threads" | "cacheDir">;

export interface IndexOpenOptions {
  /** The model, for a new index (default: the default model); for an existing one, optional and checked. */
  model?: ModelSpec;
  /** Create the index when the folder does not hold one (default false). */
  create?: boolean;
  /** Open for searching only: no lock, a snapshot of what was committed (default false). */
  readOnly?: boolean;
  /** On-disk type of a new index's vectors (default float32). */
  dtype?: VectorDtype;
  /** onnxruntime threads (default: all cores). */
  threads?: number;
  /** Model cache folder (see runtime/model-cache.ts). */
  cacheDir?: string;
  /** Size (images) from which `search` uses the ANN index by default (see ann-sync.ts). */
  annThreshold?: number;
  /** ANN parameters (see search/ann-search.ts; the defaults were chosen by measurement). */
  annParameters?: Partial<AnnParameters>;
}

export interface SearchOptions {
  /** Results to return (default 10). */
  top?: number;
  /** Crop the query image to [x1, y1, x2, y2] first. */
  bbox?: Box;
  /** Default `adaptive`. */
  rerank?: RerankMode;
  /** Default `auto`: exact search below the index's ANN threshold, approximate above. */
  search?: SearchMethod;
}

export interface SearchHit {
  /** 1-based. */
  rank: number;
  path: string;
  /** Similarity: the dot product, or the reranker's score for reranked results. */
  score: number;
}

export interface SearchResult {
  hits: SearchHit[];
  /** Milliseconds per stage. */
  timings: { extract: number; search: number; rerank: number };
  /** How the candidates were found: exact search, or the ANN index (then rescored exactly). */
  method: "exact" | "ann";
}

/** Where the store keeps how to rebuild the model (an extra field of its manifest). */
const SPEC_KEY = "modelSpec";

export class Index {
  private searcher: ExactSearch | undefined;
  private readonly rerankers = new Map<RerankMode, Reranker>();
  /** The ANN beside the vectors, opened on first need (app/ann-sync.ts). */
  private ann: AnnSync | undefined;
  private annThreshold = DEFAULT_ANN_THRESHOLD;
  private annParameters: Partial<AnnParameters> = {};

  private constructor(
    readonly path: string,
    private readonly store: IndexStore,
    readonly extractor: Extractor,
    /** How the model is made (stored in the index). */
    readonly modelSpec: ModelSpec,
    private readonly threads: number | undefined,
    /** How the model is made in another thread: the spec with this index's runtime options. */
    private readonly extractorOptions: ExtractorOptions,
  ) {}

  /**
   * Opens the index in folder `path` (creating it with `create: true`). An existing index brings
   * its own model; a `model` given for it must be the same model (MODEL_MISMATCH otherwise).
   */
  static async open(path: string, options: IndexOpenOptions = {}): Promise<Index> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a folder path", path);
    const dir = resolve(path);
    const annThreshold = assertInteger(
      "annThreshold",
      options.annThreshold ?? DEFAULT_ANN_THRESHOLD,
      0,
    );
    const annParams = annParameters(options.annParameters);
    const exists = IndexStore.exists(dir);
    if (!exists && options.create !== true) {
      throw new SuperglobalError(
        "NOT_FOUND",
        `${path}: no index here (create one with \`superglobal index DIR --index ${path}\`)`,
        { input: path },
      );
    }
    const extractorExtras = {
      ...(options.threads === undefined ? {} : { threads: options.threads }),
      ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
    };
    let spec: ModelSpec;
    if (exists) {
      const stored = IndexStore.readExtra(dir)[SPEC_KEY] as ModelSpec | undefined;
      spec = options.model === undefined ? (stored ?? {}) : absoluteSpec(options.model);
    } else {
      spec = absoluteSpec(options.model ?? {});
    }
    const extractor = await Extractor.create({ ...spec, ...extractorExtras });
    try {
      const store = exists
        ? IndexStore.open(dir, { model: extractor.identity, readOnly: options.readOnly ?? false })
        : IndexStore.create(dir, {
            model: extractor.identity,
            dim: extractor.dim,
            ...(options.dtype === undefined ? {} : { dtype: options.dtype }),
            extra: { [SPEC_KEY]: spec },
          });
      const index = new Index(dir, store, extractor, spec, options.threads, {
        ...spec,
        ...extractorExtras,
      });
      index.annThreshold = annThreshold;
      index.annParameters = annParams;
      return index;
    } catch (error) {
      await extractor.release();
      throw error;
    }
  }

  /** Searchable images. */
  get size(): number {
    return this.store.size;
  }

  /**
   * Adds images (absolute or relative paths of files): new and changed files are described and
   * committed in batches, unchanged ones skipped, failures recorded with their reason (and
   * retried only when the file changes). The work runs in `extractMany`, which decodes the next
   * image while the current one is in the model. Returns what happened; never throws for a bad
   * image.
   */
  async add(paths: readonly string[], options: AddOptions = {}): Promise<AddSummary> {
    const run = await this.planAdd(paths, options);
    const todo = new Map(
      run.todo.map((f) => [f.path, { file: f, hash: undefined as string | undefined }]),
    );

    const jobs = assertInteger("jobs", options.jobs ?? 1, 1, 256);

    // Each descriptor goes into the store as it is made (the "cache" extractMany fills), with the
    // sha256 of the bytes it was made from.
    const extractor = this.extractor;
    const staged: StagedExtractor<ImageTensor> = {
      dim: extractor.dim,
      extract: (path) => extractor.extract(path),
      async decode(path) {
        const bytes = await readImageFile(path);
        const entry = todo.get(path);
        if (entry !== undefined) entry.hash = createHash("sha256").update(bytes).digest("hex");
        return extractor.prepare(bytes, { name: path });
      },
      infer: (tensor) => extractor.infer(tensor),
    };
    const pool = jobs > 1 && todo.size > 0 ? await this.pool(Math.min(jobs, todo.size)) : undefined;
    const pooled: BatchExtractor | undefined =
      pool === undefined
        ? undefined
        : {
            dim: pool.dim,
            async extract(path) {
              const { descriptor, sha256 } = await pool.describe(path);
              const entry = todo.get(path);
              if (entry !== undefined) entry.hash = sha256;
              return descriptor;
            },
          };
    const sink: DescriptorCache = {
      dim: extractor.dim,
      get: () => undefined,
      add: (path, descriptor) => {
        const entry = todo.get(path)!;
        run.put(entry.file, entry.hash!, descriptor);
      },
    };
    try {
      await extractMany([...todo.keys()], pooled ?? staged, {
        cache: sink,
        keep: false,
        // Two per worker: each has its next image waiting while it runs one.
        ...(pool === undefined ? {} : { concurrency: 2 * pool.jobs }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        onProgress: (e) => {
          const { file, hash } = todo.get(e.path)!;
          if (!e.ok) run.fail(file, hash ?? null, e.error ?? "unknown");
          const status = !e.ok ? "failed" : file.status === "changed" ? "updated" : "added";
          run.report(e.path, status, e.ms, e.error);
        },
      });
    } finally {
      // Whatever was described before an abort or a bug is kept.
      run.finish();
      await pool?.release();
    }
    this.annAfterChange();
    return run.summary;
  }

  /**
   * The first step of `add`, for callers that describe the images elsewhere (the job queue's
   * committer): stats the files, reports the unchanged and unreadable ones, and returns the run
   * whose `todo` lists the files to describe. Such a caller ends with `afterAdd()`.
   */
  planAdd(paths: readonly string[], options: AddOptions = {}): Promise<AddRun> {
    return AddRun.plan(this.store, paths, options);
  }

  /** What `add` does after its commits (keeps the ANN current), for callers of `planAdd`. */
  afterAdd(): void {
    this.annAfterChange();
  }

  /** Drops these paths from the index; returns how many were there. */
  async remove(paths: readonly string[]): Promise<number> {
    const n = this.store.remove(paths.map((p) => resolve(p)));
    this.store.commit();
    this.compactIfNeeded();
    return n;
  }

  /** Drops entries (and failures) whose files are gone; returns their paths. */
  async prune(): Promise<string[]> {
    const gone = this.store.prune();
    this.store.commit();
    this.compactIfNeeded();
    return gone;
  }

  /** The stored descriptor of an indexed image (a copy), or undefined. */
  vector(path: string): Float32Array | undefined {
    return this.store.vector(resolve(path));
  }

  /** Paths of the searchable images, in row order. */
  paths(): string[] {
    return [...this.store.entries()].map((e) => e.path);
  }

  /**
   * The best matches of a query: an image (path or encoded bytes) or a descriptor of this index's
   * model. Failed images are never results.
   */
  async search(
    query: string | Uint8Array | Float32Array,
    options: SearchOptions = {},
  ): Promise<SearchResult> {
    const top = assertInteger("top", options.top ?? 10, 1);
    const mode = assertOneOf("rerank", options.rerank ?? "adaptive", RERANK_MODES);
    const choice = assertOneOf("search", options.search ?? "auto", SEARCH_METHODS);
    const timings = { extract: 0, search: 0, rerank: 0 };
    let t = performance.now();
    let q: Float32Array;
    if (query instanceof Float32Array) {
      if (query.length !== this.extractor.dim || !query.every(Number.isFinite)) {
        invalidArgument("query", `${this.extractor.dim} finite values`, query);
      }
      q = query;
    } else {
      q = await this.extractor.extract(
        query,
        options.bbox === undefined ? {} : { bbox: options.bbox },
      );
      if (!q.every(Number.isFinite)) {
        throw new SuperglobalError(
          "BAD_IMAGE",
          `${typeof query === "string" ? query : "query"}: the descriptor is not finite`,
          { input: typeof query === "string" ? query : "query" },
        );
      }
    }
    timings.extract = performance.now() - t;
    if (this.store.size === 0) return { hits: [], timings, method: "exact" };
    t = performance.now();
    const reranker = mode === "off" ? undefined : await this.reranker(mode);
    const k = Math.min(this.store.size, Math.max(top, reranker?.M ?? 0));
    const ann = this.annFor(choice);
    let found: { ids: Int32Array; scores: Float32Array };
    let headRows: (head: number) => Float32Array;
    if (ann !== undefined) {
      // ANN candidates, rescored with the exact float32 vectors (which the reranker gets too).
      const c = ann.search(q, k);
      found = c;
      headRows = (head) => c.vectors.subarray(0, head * q.length);
    } else {
      const db = this.store.matrix();
      this.searcher ??= await ExactSearch.create(
        this.threads === undefined ? {} : { threads: this.threads },
      );
      found = await this.searcher.search(db, { data: q, rows: 1, cols: db.cols }, k);
      headRows = (head) => gatherRows(db, found.ids.subarray(0, head));
    }
    timings.search = performance.now() - t;
    let ids: Int32Array = found.ids;
    let scores: ArrayLike<number> = found.scores;
    if (reranker !== undefined) {
      t = performance.now();
      const head = Math.min(reranker.M, ids.length);
      const reranked = await reranker.rerank(q, {
        ids: found.ids,
        descriptors: headRows(head),
      });
      // The head's scores are the reranker's; the tail keeps its dot products.
      const byId = new Map<number, number>();
      found.ids.forEach((id, j) => {
        byId.set(id, found.scores[j] as number);
      });
      const out = Array.from(reranked.ids, (id, j) =>
        j < reranked.head ? (reranked.scores[j] as number) : (byId.get(id) as number),
      );
      ids = reranked.ids;
      scores = out;
      timings.rerank = performance.now() - t;
    }
    const hits: SearchHit[] = [];
    for (let j = 0; j < Math.min(top, ids.length); j++) {
      hits.push({
        rank: j + 1,
        path: this.store.entryAt(ids[j] as number).path,
        score: scores[j] as number,
      });
    }
    return { hits, timings, method: ann === undefined ? "exact" : "ann" };
  }

  /**
   * Builds or brings up to date the ANN index beside the vectors and saves it (writers only), so
   * that readers (`readOnly`, the server) search it at once. `add` and `close` do this by
   * themselves once the index is past the ANN threshold.
   */
  async updateAnn(): Promise<void> {
    if (this.store.readOnly) {
      invalidArgument("index", "an index opened for writing (not readOnly)", this.path);
    }
    this.annSync().update();
    this.ann?.save();
  }

  /** What `superglobal info` shows, plus how the model is made. */
  info(): IndexInfo & { modelSpec: ModelSpec; network: string } {
    return {
      ...this.store.info(),
      modelSpec: this.modelSpec,
      network: this.extractor.info.network,
    };
  }

  async close(): Promise<void> {
    this.saveAnn();
    this.ann?.close();
    this.store.close();
    await this.searcher?.release();
    for (const r of this.rerankers.values()) await r.release();
    await this.extractor.release();
  }

  /** `jobs` extraction workers with this index's model (checked to be the same model). */
  private async pool(jobs: number): Promise<ExtractorPool> {
    // Threads per worker: the index's `threads` when given, else the cores shared out.
    const pool = await ExtractorPool.create(this.extractorOptions, jobs);
    if (pool.identity !== this.extractor.identity) {
      await pool.release();
      throw new Error(
        `extraction workers made model ${pool.identity}, not ${this.extractor.identity}`,
      );
    }
    return pool;
  }

  // --- the ANN beside the vectors (logic in ann-sync.ts; these are the hooks) ----------------

  private annSync(): AnnSync {
    this.ann ??= AnnSync.open(this.store, {
      parameters: this.annParameters,
      ...(this.threads === undefined ? {} : { threads: this.threads }),
    });
    return this.ann;
  }

  /** The ANN to search with for `choice`, or undefined for exact search. */
  private annFor(choice: SearchMethod): AnnSync | undefined {
    if (choice === "exact" || (choice === "auto" && this.store.size < this.annThreshold)) {
      return undefined;
    }
    const ann = this.annSync();
    // A writer keeps it current; a reader uses the saved one if it fits its snapshot, and builds
    // one in memory only when ANN is asked for explicitly.
    if (!this.store.readOnly || (choice === "ann" && !ann.usable())) ann.update();
    return ann.usable() ? ann : undefined;
  }

  /** After commits (writer): keeps the ANN current once the index is past the threshold. */
  private annAfterChange(): void {
    if (this.store.readOnly) return;
    if (this.ann === undefined && this.store.size < this.annThreshold) return;
    const ann = this.annSync();
    ann.update();
    // Saving rewrites the whole graph: small changes wait for more, or close (a crash loses no
    // data: the next writer catches up, readers search what the saved graph lacks exactly).
    if (ann.behind) this.saveAnn();
  }

  private compactIfNeeded(): void {
    // Past the threshold the ANN goes through the compaction (its keys are moved, not rebuilt).
    if (this.ann === undefined && this.store.size < this.annThreshold) {
      this.store.compactIfNeeded();
      return;
    }
    this.annSync().compact(() => this.store.compactIfNeeded());
    this.annAfterChange();
  }

  /** Saves the ANN if it changed. A failed save loses no data (the ANN is rebuilt or caught up from the vectors), so it is not the caller's error. */
  private saveAnn(): void {
    if (this.store.readOnly) return;
    try {
      this.ann?.save();
    } catch {
      // derived data: see above
    }
  }

  private async reranker(mode: Exclude<RerankMode, "off">): Promise<Reranker> {
    let r = this.rerankers.get(mode);
    if (r === undefined) {
      const threads = this.threads === undefined ? {} : { threads: this.threads };
      r =
        mode === "paper"
          ? await SuperGlobalReranker.create(threads)
          : await AdaptiveReranker.create(threads);
      this.rerankers.set(mode, r);
    }
    return r;
  }
}

function gatherRows(db: Float32Matrix, ids: Int32Array): Float32Array {
  const d = db.cols;
  const out = new Float32Array(ids.length * d);
  ids.forEach((id, j) => {
    out.set(db.data.subarray(id * d, (id + 1) * d), j * d);
  });
  return out;
}

/** Paths in a model spec made absolute, so the index works from any folder. */
function absoluteSpec(spec: ModelSpec): ModelSpec {
  const out: ModelSpec = { ...spec };
  if (out.checkpoint !== undefined) out.checkpoint = resolve(out.checkpoint);
  if (out.model !== undefined && /[/\\]|\.onnx$/i.test(out.model)) out.model = resolve(out.model);
  if (typeof out.whitening === "string") out.whitening = resolve(out.whitening);
  if (typeof out.calibration === "string") out.calibration = resolve(out.calibration);
  else if (Array.isArray(out.calibration)) out.calibration = out.calibration.map((p) => resolve(p));
  return out;
}
