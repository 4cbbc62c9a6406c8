/**
 * What the routes do with the index, and in what order: image searches wait their turn in the
 * bounded extraction queue; every search holds a read lock of the index, adding images the write
 * lock (the store renumbers rows on commit, so no search may straddle one); results carry the
 * catalog's stable ids; each stage's time goes to the metrics.
 */
import { randomUUID } from "node:crypto";
import { rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Index, RerankMode } from "../app/photo-index.ts";
import type { Box } from "../image/crop.ts";
import { Catalog } from "./catalog.ts";
import { HttpError } from "./http-errors.ts";
import type { Metrics } from "./metrics.ts";
import { EXTENSION } from "./params.ts";
import type { JobQueue } from "./queue.ts";
import { ReadWriteLock } from "./rwlock.ts";

export interface SearchResultItem {
  id: number;
  path: string;
  score: number;
  rank: number;
}

/** Milliseconds per stage; `decode` and `extract` are 0 for a search by id. */
export interface StageTimings {
  queue: number;
  decode: number;
  extract: number;
  search: number;
  rerank: number;
  total: number;
}

export interface SearchAnswer {
  results: SearchResultItem[];
  model: ModelDescription;
  timings: StageTimings;
  /** How the candidates were found (Index.search's `method`). */
  method: "exact" | "ann";
}

export interface ModelDescription {
  /** The model's name (`default`, `cvnet-r50`, …) or file. */
  name: string;
  network: string;
  dim: number;
  /** Content hash of the weights and extraction settings: equal identities, comparable descriptors. */
  identity: string;
}

export interface AddedFile {
  /** The name the client gave the part (or "body"); informational only. */
  name: string;
  status: "added" | "failed";
  id?: number;
  reason?: string;
}

export class SearchService {
  readonly catalog: Catalog;
  readonly lock = new ReadWriteLock();
  readonly model: ModelDescription;
  private warmed = false;

  constructor(
    readonly index: Index,
    readonly queue: JobQueue,
    private readonly metrics: Metrics,
  ) {
    this.catalog = new Catalog(index.paths());
    const spec = index.modelSpec;
    this.model = {
      name: spec.model ?? (spec.checkpoint === undefined ? "default" : basename(spec.checkpoint)),
      network: index.extractor.info.network,
      dim: index.extractor.dim,
      identity: index.extractor.identity,
    };
  }

  /**
   * Creates the search and reranking sessions once, before requests arrive (two first requests
   * at once would otherwise each create them): one search by a stored descriptor per mode.
   */
  async warm(): Promise<void> {
    if (this.warmed) return;
    await this.lock.read(async () => {
      const first = this.catalog.path(0);
      const q = first === undefined ? undefined : this.index.vector(first);
      if (q === undefined || this.index.size === 0) return;
      for (const rerank of ["off", "adaptive", "paper"] as const) {
        await this.index.search(q, { top: 1, rerank });
      }
      this.warmed = true;
    });
  }

  /** Searches by an uploaded image, in the extraction queue. */
  async byImage(
    bytes: Uint8Array,
    options: { top: number; rerank: RerankMode; box: Box | undefined },
  ): Promise<SearchAnswer> {
    const t0 = performance.now();
    return this.queue.run((waited) =>
      this.lock.read(async () => {
        const stats = this.index.extractor.stats;
        const decodedBefore = stats.decode;
        const r = await this.index.search(bytes, {
          top: options.top,
          rerank: options.rerank,
          ...(options.box === undefined ? {} : { bbox: options.box }),
        });
        // Extractions run one at a time (the queue's concurrency is 1), so this delta is ours.
        const decode = Math.min(stats.decode - decodedBefore, r.timings.extract);
        const timings: StageTimings = {
          queue: waited,
          decode,
          extract: r.timings.extract - decode,
          search: r.timings.search,
          rerank: r.timings.rerank,
          total: performance.now() - t0,
        };
        return this.answer(r, timings, true);
      }),
    );
  }

  /** "More like this": searches by the stored descriptor of indexed image `id`. */
  async byId(id: number, options: { top: number; rerank: RerankMode }): Promise<SearchAnswer> {
    const t0 = performance.now();
    return this.lock.read(async () => {
      const path = this.catalog.path(id);
      const q = path === undefined ? undefined : this.index.vector(path);
      if (q === undefined) throw new HttpError(404, "UNKNOWN_ID", `no indexed image has id ${id}`);
      const r = await this.index.search(q, { top: options.top, rerank: options.rerank });
      return this.answer(
        r,
        {
          queue: 0,
          decode: 0,
          extract: 0,
          search: r.timings.search,
          rerank: r.timings.rerank,
          total: performance.now() - t0,
        },
        false,
      );
    });
  }

  /**
   * Saves checked uploads into `dir` under names of our own and adds them to the index, one image
   * per write lock (searches go on between images). One queue place for the whole request.
   */
  async add(
    dir: string,
    files: Array<{ name: string; bytes: Uint8Array; type: string }>,
  ): Promise<AddedFile[]> {
    return this.queue.run(async () => {
      const out: AddedFile[] = [];
      for (const file of files) {
        const path = join(dir, `${Date.now()}-${randomUUID()}${EXTENSION[file.type] ?? ""}`);
        await writeFile(path, file.bytes, { flag: "wx" });
        const summary = await this.lock.write(() => this.index.add([path]));
        const failed = summary.failed[0];
        if (failed === undefined) {
          this.catalog.sync([path]);
          out.push({ name: file.name, status: "added", id: this.catalog.id(path) as number });
        } else {
          await rm(path, { force: true });
          out.push({ name: file.name, status: "failed", reason: failed.reason });
        }
      }
      await this.warm();
      return out;
    });
  }

  private answer(
    found: { hits: Array<{ rank: number; path: string; score: number }>; method: "exact" | "ann" },
    timings: StageTimings,
    byImage: boolean,
  ): SearchAnswer {
    const results = found.hits.map((h) => {
      let id = this.catalog.id(h.path);
      if (id === undefined) id = this.catalog.sync([h.path])[0] as number;
      return { id, path: h.path, score: h.score, rank: h.rank };
    });
    const stages = byImage
      ? (["queue", "decode", "extract", "search", "rerank"] as const)
      : (["search", "rerank"] as const);
    for (const stage of stages) {
      // rerank=off has no rerank stage: leave it out rather than count a zero.
      if (stage !== "rerank" || timings.rerank > 0) this.metrics.stage(stage, timings[stage]);
    }
    return { results, model: this.model, timings, method: found.method };
  }
}
