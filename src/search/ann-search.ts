/**
 * Approximate nearest-neighbour search by inner product: an HNSW graph (usearch 2.25.x; this is
 * the one module that imports it). HNSW links every vector to a few close ones on several levels;
 * a search walks the graph from a fixed entry point towards the query, keeping a list of the best
 * vectors seen, and reads only a tiny share of the database.
 *
 * Parameters, in plain words (defaults chosen by `npm run bench -- ann`, see the README):
 * - connectivity: links per vector. More links = better recall on hard data, more memory
 *   (about 2·connectivity·8 bytes per vector on the base level) and slower builds.
 * - expansionAdd: how many candidates an insertion looks at to choose its links. Higher = a
 *   better graph (recall) for a slower build; it does not change search speed much.
 * - expansionSearch: how many candidates a search keeps while walking. The recall/latency knob:
 *   doubling it roughly doubles the latency and closes part of the remaining recall gap.
 *
 * Keys are integers in [0, 2^31 - 1) chosen by the caller (one vector per key). Scores are
 * 1 - usearch's inner-product distance, i.e. the dot product up to float32 rounding: callers that
 * need exact scores recompute them from the exact vectors.
 *
 * usearch does not check its files: viewing a truncated file crashes the process (measured:
 * SIGSEGV). Callers verify a file (size, checksum) before `view`/`load`; see app/ann-sync.ts.
 */

import { closeSync, fsyncSync, openSync, renameSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import usearch, { type Index as NativeIndex } from "usearch";
import { rowIsFinite } from "../core/matrix.ts";
import { assertInteger, badFile, invalidArgument } from "../errors.ts";
import { ioError, syncDir } from "../index/durable-io.ts";

export interface AnnParameters {
  /** Links per vector (default 16). */
  connectivity: number;
  /** Candidates looked at when inserting a vector (default 128). */
  expansionAdd: number;
  /** Candidates kept while searching (default 256): the recall/latency knob. */
  expansionSearch: number;
}

/**
 * Measured at 100k × 2048 clustered (bench/results/ann-100000x2048-2026-12-02.md): connectivity 16
 * and expansionAdd 128 reach recall@100 0.982 at the smallest expansionSearch (64) and 0.990 at
 * 256, the default: headroom for larger or less clustered collections at a few ms per query.
 */
export const DEFAULT_ANN_PARAMETERS: Readonly<AnnParameters> = Object.freeze({
  connectivity: 16,
  expansionAdd: 128,
  expansionSearch: 256,
});

/** Largest key + 1: keys are row-like ids and come back in an Int32Array. */
export const MAX_ANN_KEY = 2 ** 31 - 1;

export interface AnnMatches {
  /** Keys, best first (fewer than k when the index holds fewer vectors). */
  keys: Int32Array;
  /** Their approximate dot products with the query. */
  scores: Float32Array;
}

/** Checks and completes parameters (partial ones take the defaults). */
export function annParameters(options: Partial<AnnParameters> = {}): AnnParameters {
  if (options === null || typeof options !== "object") {
    invalidArgument("ann parameters", "an object", options);
  }
  return {
    connectivity: assertInteger(
      "connectivity",
      options.connectivity ?? DEFAULT_ANN_PARAMETERS.connectivity,
      2,
      256,
    ),
    expansionAdd: assertInteger(
      "expansionAdd",
      options.expansionAdd ?? DEFAULT_ANN_PARAMETERS.expansionAdd,
      1,
      1 << 16,
    ),
    expansionSearch: assertInteger(
      "expansionSearch",
      options.expansionSearch ?? DEFAULT_ANN_PARAMETERS.expansionSearch,
      1,
      1 << 16,
    ),
  };
}

export class AnnSearch {
  private released = false;

  private constructor(
    private readonly native: NativeIndex,
    readonly dim: number,
    readonly parameters: Readonly<AnnParameters>,
    /** Memory-mapped from a file: searchable, not changeable. */
    readonly readOnly: boolean,
  ) {}

  /** An empty index for `dim`-dimensional vectors. */
  static create(dim: number, parameters: Partial<AnnParameters> = {}): AnnSearch {
    assertInteger("dim", dim, 1, 1 << 20);
    const p = annParameters(parameters);
    return new AnnSearch(AnnSearch.native(dim, p), dim, p, false);
  }

  /**
   * Opens a saved index memory-mapped (`view`: pages are read on demand and shared with the page
   * cache) for searching only; `load` instead reads it into memory, changeable. The file must
   * have been verified (see the header). Its dimension must be `dim` (BAD_FILE otherwise); the
   * graph keeps the connectivity it was built with, `expansionSearch` is taken from `parameters`.
   */
  static open(
    path: string,
    dim: number,
    parameters: Partial<AnnParameters> = {},
    mode: "view" | "load" = "view",
  ): AnnSearch {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    assertInteger("dim", dim, 1, 1 << 20);
    const p = annParameters(parameters);
    const native = AnnSearch.native(dim, p);
    try {
      if (mode === "view") native.view(path);
      else native.load(path);
    } catch (error) {
      throw badFile(path, `not a usable ANN index (${(error as Error).message})`);
    }
    // usearch adopts the file's dimension silently.
    if (native.dimensions() !== dim) {
      throw badFile(path, `ANN index of dimension ${native.dimensions()}, expected ${dim}`);
    }
    const built = { ...p, connectivity: native.connectivity() };
    return new AnnSearch(native, dim, built, mode === "view");
  }

  private static native(dim: number, p: AnnParameters): NativeIndex {
    return new usearch.Index({
      dimensions: dim,
      metric: usearch.MetricKind.IP,
      quantization: usearch.ScalarKind.F32,
      connectivity: p.connectivity,
      expansion_add: p.expansionAdd,
      expansion_search: p.expansionSearch,
      multi: false,
    });
  }

  /** Vectors held. */
  get size(): number {
    this.checkOpen();
    return this.native.size();
  }

  /**
   * Adds `keys.length` vectors (rows of `vectors`, [n, dim]) under new keys. Every row must be
   * finite: a failed image's row never enters the graph. `threads` 0 = all cores.
   */
  add(keys: ArrayLike<number>, vectors: Float32Array, threads = 0): void {
    this.checkWritable();
    const n = keys.length;
    if (!(vectors instanceof Float32Array) || vectors.length !== n * this.dim) {
      invalidArgument("vectors", `a Float32Array of ${n} × ${this.dim} values`, vectors);
    }
    assertInteger("threads", threads, 0, 1024);
    const big = new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      big[i] = BigInt(assertInteger("key", keys[i], 0, MAX_ANN_KEY - 1));
      if (!rowIsFinite(vectors, i * this.dim, this.dim)) {
        invalidArgument("vectors", "finite values", `row ${i} (key ${keys[i]})`);
      }
    }
    if (n === 0) return;
    const held = this.native.contains(big) as boolean[];
    const dup = held.findIndex((h) => h);
    if (dup >= 0) invalidArgument("key", "a key not in the index", keys[dup]);
    this.native.add(big, vectors, threads);
  }

  /** Removes the vectors of `keys` (absent keys are ignored); returns how many were removed. */
  remove(keys: ArrayLike<number>): number {
    this.checkWritable();
    if (keys.length === 0) return 0;
    const big = BigUint64Array.from(Array.from(keys, (k) => BigInt(assertInteger("key", k, 0))));
    const removed = this.native.remove(big) as number[];
    return removed.reduce((a, b) => a + b, 0);
  }

  /** Whether `key` is held. */
  has(key: number): boolean {
    this.checkOpen();
    return this.native.contains(BigInt(assertInteger("key", key, 0))) as boolean;
  }

  /** The (about) k best vectors for `query` by inner product, best first; single-threaded. */
  search(query: Float32Array, k: number): AnnMatches {
    this.checkOpen();
    if (!(query instanceof Float32Array) || query.length !== this.dim) {
      invalidArgument("query", `a Float32Array of ${this.dim} values`, query);
    }
    if (!rowIsFinite(query, 0, this.dim)) invalidArgument("query", "finite values", query);
    assertInteger("k", k, 1);
    const size = this.native.size();
    if (size === 0) return { keys: new Int32Array(0), scores: new Float32Array(0) };
    const m = this.native.search(query, Math.min(k, size), 1);
    const n = m.keys.length;
    const keys = new Int32Array(n);
    const scores = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      keys[i] = Number(m.keys[i]);
      scores[i] = 1 - m.distances[i]!;
    }
    return { keys, scores };
  }

  /**
   * Writes the index to `path` atomically and durably: to a temporary file beside it, fsynced,
   * renamed over `path`, folder fsynced. A crash leaves the old file or the new one, whole.
   */
  save(path: string): void {
    this.checkOpen();
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
    try {
      this.native.save(tmp);
      const fd = openSync(tmp, "r+");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      syncDir(dirname(path));
    } catch (error) {
      rmSync(tmp, { force: true });
      throw ioError(path, "save the ANN index", error);
    }
  }

  /** Frees the native index (the JS object is unusable afterwards). */
  release(): void {
    // usearch frees the graph when the object is collected; dropping our use is what we can do.
    this.released = true;
  }

  private checkOpen(): void {
    if (this.released) throw new Error("AnnSearch used after release()");
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) {
      invalidArgument(
        "ANN index",
        "a writable index (this one is memory-mapped, read-only)",
        "view",
      );
    }
  }
}
