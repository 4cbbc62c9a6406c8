/**
 * The ANN index kept beside an index's exact vectors (search/ann-search.ts), as derived data: it
 * can always be rebuilt from the vectors, so a missing, stale, corrupt or differently configured
 * ANN is never an error, only a rebuild (writer) or exact search (reader).
 *
 * Which vectors it holds. The store numbers its searchable rows densely and renumbers them on
 * removal, but each vector also has a "file row" (its row in the append-only vector file) that is
 * fixed for the entry's life within one generation (a compaction starts a new generation). The
 * ANN's keys are its own counter; `keyOf[f]` is the key holding file row f (-1: none), for the
 * file rows [0, covered) of generation `generation` that it has seen. So:
 * - rows added since: file rows ≥ covered (added to the ANN by `update`, else searched exactly);
 * - rows removed or replaced since: held keys whose file row is no longer live (removed by
 *   `update`, else filtered out of results);
 * - a compaction done through `compact` maps keys to the new file rows (compaction writes the
 *   live rows in row order); one done elsewhere changes the generation and the ANN is rebuilt;
 * - a crash between the store's commit and the ANN's save leaves an older ANN that `update`
 *   catches up: nothing is lost, and the store stays the only source of truth.
 *
 * On disk, in the index folder: `ann-<id>.usearch` (the graph and its float32 vectors),
 * `ann-<id>.keys` (keyOf as int32) and `ann.json`, which names the current <id> with the files'
 * sizes and SHA-256s, the store generation and file rows covered, the model, dimension and
 * parameters. A save writes new files, fsyncs them, then replaces ann.json atomically, so a crash
 * leaves the old set or the new one. Opening checks sizes and checksums before usearch sees the
 * file (usearch crashes the process on a damaged file); a writer loads the graph into memory to
 * keep it current, a reader memory-maps it (`view`) and never changes it.
 */

import { createHash, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { rowIsFinite } from "../core/matrix.ts";
import { assertInteger } from "../errors.ts";
import { ioError, replaceFileAtomically, syncFile, writeFileDurably } from "../index/durable-io.ts";
import type { IndexStore } from "../index/index-store.ts";
import { sha256OfFileSync } from "../io/file-sha256.ts";
import { type AnnParameters, AnnSearch, annParameters, MAX_ANN_KEY } from "../search/ann-search.ts";

/**
 * Index size (rows) from which `Index.search` uses ANN by default. Measured at the default
 * model's 1792 dimensions, one query, 2 cores (the crossover in bench/results/
 * ann-100000x2048-2026-12-02-contended.md, and ann-50000x1792-…): ANN is faster from 30k rows,
 * but its recall@100 on clustered data was 0.80–0.85 up to 50k and 0.987 at 100k, where exact
 * search reads 717 MB per query (25 ms median, 66 ms p99 at 100k × 2048 on a quieter run).
 */
export const DEFAULT_ANN_THRESHOLD = 100_000;

const META = "ann.json";
const FORMAT = "superglobal-ann";
const VERSION = 1;
const OWN = /^ann-[0-9a-z-]+\.(usearch|keys)$|^\.ann-.*\.tmp$/;
/** Rows added per usearch call while building (bounds the temporary copy of vectors). */
const ADD_BATCH = 4096;
/**
 * Rows a reader searches exactly beside a saved ANN that lacks them (beyond: exact search), and
 * the unsaved changes after which a writer saves (a save rewrites the whole graph).
 */
export const MAX_BEHIND = 1024;

interface AnnMeta {
  format: typeof FORMAT;
  version: number;
  model: string;
  dim: number;
  connectivity: number;
  expansionAdd: number;
  generation: number;
  fileRows: number;
  held: number;
  nextKey: number;
  file: string;
  annBytes: number;
  annSha256: string;
  keysBytes: number;
  keysSha256: string;
}

/** Why the saved ANN was not used as it was (for tests and diagnostics). */
export type AnnLoadState = "none" | "loaded" | "missing" | "stale" | "corrupt";

export interface AnnCandidates {
  /** Store rows, best first by exact dot product (float32), lower row first on ties. */
  ids: Int32Array;
  scores: Float32Array;
  /** Their exact descriptors, [ids.length, dim]. */
  vectors: Float32Array;
}

export class AnnSync {
  private ann: AnnSearch | undefined;
  private generation = -1;
  private covered = 0;
  private keyOf: Int32Array = new Int32Array(0);
  private fileRowOfKey: Int32Array = new Int32Array(0);
  private nextKey = 0;
  /** Changes not saved yet (rows added or removed); -1: never saved in this form. */
  private unsaved = 0;
  /** How the saved ANN was found at open. */
  loadState: AnnLoadState = "none";
  // Per store state (generation, file rows, size): file row → row, dead keys, rows not held.
  private stateTag = "";
  private rowOfFileRow: Int32Array = new Int32Array(0);
  private deadHeld = 0;
  private tail: number[] = [];

  private constructor(
    private readonly store: IndexStore,
    readonly parameters: AnnParameters,
    private readonly threads: number,
  ) {}

  /** Opens the ANN of `store`'s folder, if a valid one is saved there (see `loadState`). */
  static open(
    store: IndexStore,
    options: { parameters?: Partial<AnnParameters>; threads?: number } = {},
  ): AnnSync {
    const p = annParameters(options.parameters);
    const threads = assertInteger("threads", options.threads ?? 0, 0, 1024);
    const sync = new AnnSync(store, p, threads);
    sync.load();
    return sync;
  }

  /** Vectors in the ANN. */
  get held(): number {
    return this.ann?.size ?? 0;
  }

  /** Whether `search` can answer for the store's current state (else: `update`, or exact search). */
  usable(): boolean {
    if (this.ann === undefined || this.generation !== this.store.generation) return false;
    if (!this.store.readOnly && this.covered > this.store.fileRows) return false;
    this.refresh();
    return this.tail.length <= MAX_BEHIND && this.deadHeld <= MAX_BEHIND;
  }

  /**
   * Brings the ANN up to date with the store's committed rows (writer, or a reader building in
   * memory): adds new rows, removes gone ones, or rebuilds when it is missing, of another
   * generation, or read-only (memory-mapped).
   */
  update(): void {
    const store = this.store;
    const rebuild =
      this.ann === undefined ||
      this.ann.readOnly ||
      this.generation !== store.generation ||
      this.covered > store.fileRows;
    if (rebuild) this.reset();
    this.refresh();
    const current = this.tail.length === 0 && this.deadHeld === 0;
    if (current && this.covered === store.fileRows) return;
    const ann = this.ann!;
    // Gone: held keys whose file rows are no longer live.
    const gone: number[] = [];
    for (let f = 0; f < this.covered; f++) {
      const key = this.keyOf[f]!;
      if (key >= 0 && this.rowOfFileRow[f]! < 0) {
        gone.push(key);
        this.keyOf[f] = -1;
        this.fileRowOfKey[key] = -1;
      }
    }
    ann.remove(gone);
    // New: live rows past `covered`, in file-row order (the order they were added in).
    const fresh = this.tail.map((row) => store.fileRowAt(row)).sort((a, b) => a - b);
    const fileRows = store.fileRows;
    this.growKeyOf(fileRows);
    this.keyOf.fill(-1, this.covered, fileRows);
    const d = store.dim;
    for (let i = 0; i < fresh.length; i += ADD_BATCH) {
      const part = fresh.slice(i, i + ADD_BATCH);
      const keys: number[] = [];
      const vectors = new Float32Array(part.length * d);
      let n = 0;
      for (const f of part) {
        const v = store.vectorAt(this.rowOfFileRow[f]!);
        // A failed (not finite) row never enters the ANN, so it is never a result.
        if (!rowIsFinite(v, 0, d)) continue;
        if (this.nextKey >= MAX_ANN_KEY) throw new Error("ANN keys exhausted");
        const key = this.nextKey++;
        this.growKeys(this.nextKey);
        this.keyOf[f] = key;
        this.fileRowOfKey[key] = f;
        keys.push(key);
        vectors.set(v, n * d);
        n += 1;
      }
      ann.add(keys, vectors.subarray(0, n * d), this.threads);
    }
    this.covered = fileRows;
    if (gone.length > 0 || fresh.length > 0) {
      if (this.unsaved >= 0) this.unsaved += gone.length + fresh.length;
      this.stateTag = "";
    }
  }

  /**
   * Runs `compact` (the store's compaction; returns whether it compacted) keeping the ANN valid:
   * it is brought up to date first, and its keys are moved to the new file rows (compaction writes
   * the live rows in row order, so row r becomes file row r).
   */
  compact(compact: () => boolean): boolean {
    this.update();
    const n = this.store.size;
    const before = new Int32Array(n);
    for (let row = 0; row < n; row++) before[row] = this.keyOf[this.store.fileRowAt(row)]!;
    const done = compact();
    if (!done || this.store.generation === this.generation) return done;
    this.keyOf = before;
    this.fileRowOfKey.fill(-1);
    before.forEach((key, f) => {
      if (key >= 0) this.fileRowOfKey[key] = f;
    });
    this.generation = this.store.generation;
    this.covered = n;
    this.unsaved = -1;
    this.stateTag = "";
    return done;
  }

  /** Whether there are changes a `save` would write. */
  get dirty(): boolean {
    return this.ann !== undefined && this.unsaved !== 0;
  }

  /** Whether enough changed since the last save that readers would fall back to exact search. */
  get behind(): boolean {
    return this.ann !== undefined && (this.unsaved < 0 || this.unsaved >= MAX_BEHIND);
  }

  /** Saves the ANN beside the vectors (writer only), if it changed; see the header. */
  save(): void {
    const ann = this.ann;
    if (ann === undefined || this.unsaved === 0 || this.store.readOnly) return;
    const dir = this.store.dir;
    const id = `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
    const annFile = join(dir, `ann-${id}.usearch`);
    const keysFile = join(dir, `ann-${id}.keys`);
    try {
      ann.save(annFile);
      syncFile(annFile); // usearch writes it; ann.json must never name a file a crash can lose
      const keys = this.keyOf.slice(0, this.covered);
      const bytes = new Uint8Array(keys.buffer, 0, keys.byteLength);
      writeFileDurably(keysFile, bytes);
      const meta: AnnMeta = {
        format: FORMAT,
        version: VERSION,
        model: this.store.model,
        dim: this.store.dim,
        connectivity: this.parameters.connectivity,
        expansionAdd: this.parameters.expansionAdd,
        generation: this.generation,
        fileRows: this.covered,
        held: ann.size,
        nextKey: this.nextKey,
        file: `ann-${id}`,
        annBytes: statSync(annFile).size,
        annSha256: sha256OfFileSync(annFile).sha256,
        keysBytes: bytes.length,
        keysSha256: createHash("sha256").update(bytes).digest("hex"),
      };
      replaceFileAtomically(join(dir, META), Buffer.from(`${JSON.stringify(meta, null, 2)}\n`));
    } catch (error) {
      rmSync(annFile, { force: true });
      rmSync(keysFile, { force: true });
      throw ioError(dir, "save the ANN index", error);
    }
    this.unsaved = 0;
    this.removeOtherFiles(`ann-${id}`);
  }

  /**
   * The about-k best rows for `query`: the ANN's candidates (held rows that are still live) plus,
   * searched exactly, live rows it does not hold yet; all rescored exactly from the store's
   * float32 vectors. Call `usable()` (or `update()`) first.
   */
  search(query: Float32Array, k: number): AnnCandidates {
    const ann = this.ann;
    if (ann === undefined) throw new Error("AnnSync.search before update()");
    this.refresh();
    const store = this.store;
    const d = store.dim;
    const rows: number[] = [];
    if (ann.size > 0) {
      const m = ann.search(query, Math.min(ann.size, k + this.deadHeld));
      for (const key of m.keys) {
        const f = key < this.nextKey ? this.fileRowOfKey[key]! : -1;
        const row = f >= 0 && f < this.rowOfFileRow.length ? this.rowOfFileRow[f]! : -1;
        if (row >= 0) rows.push(row);
      }
    }
    rows.push(...this.tail);
    const vectors: Float32Array[] = [];
    const scores: number[] = [];
    const keep: number[] = [];
    for (const row of rows) {
      const v = store.vectorAt(row);
      if (!rowIsFinite(v, 0, d)) continue;
      let s = 0;
      for (let i = 0; i < d; i++) s += query[i]! * v[i]!;
      keep.push(row);
      vectors.push(v);
      scores.push(Math.fround(s));
    }
    const order = keep.map((_, i) => i);
    order.sort((a, b) => scores[b]! - scores[a]! || keep[a]! - keep[b]!);
    const n = Math.min(k, order.length);
    const out: AnnCandidates = {
      ids: new Int32Array(n),
      scores: new Float32Array(n),
      vectors: new Float32Array(n * d),
    };
    for (let j = 0; j < n; j++) {
      const i = order[j]!;
      out.ids[j] = keep[i]!;
      out.scores[j] = scores[i]!;
      out.vectors.set(vectors[i]!, j * d);
    }
    return out;
  }

  /** Drops the in-memory ANN (call `save` first to keep changes). */
  close(): void {
    this.ann?.release();
    this.ann = undefined;
  }

  // --- internals ---------------------------------------------------------------------------

  /** An empty ANN for the store's current generation. */
  private reset(): void {
    this.ann?.release();
    this.ann = AnnSearch.create(this.store.dim, this.parameters);
    this.generation = this.store.generation;
    this.covered = 0;
    this.keyOf = new Int32Array(0);
    this.fileRowOfKey = new Int32Array(0);
    this.nextKey = 0;
    this.unsaved = -1;
    this.stateTag = "";
  }

  /** Recomputes the per-store-state maps when the store's committed state changed. */
  private refresh(): void {
    const store = this.store;
    const tag = `${store.generation}:${store.fileRows}:${store.size}:${this.covered}:${this.held}`;
    if (tag === this.stateTag) return;
    const fileRows = store.fileRows;
    const rowOf = new Int32Array(Math.max(fileRows, this.covered)).fill(-1);
    const tail: number[] = [];
    for (let row = 0; row < store.size; row++) {
      const f = store.fileRowAt(row);
      rowOf[f] = row;
      if (f >= this.covered) tail.push(row);
    }
    let dead = 0;
    for (let f = 0; f < this.covered; f++) if (this.keyOf[f]! >= 0 && rowOf[f]! < 0) dead += 1;
    this.rowOfFileRow = rowOf;
    this.tail = tail;
    this.deadHeld = dead;
    this.stateTag = tag;
  }

  private growKeyOf(n: number): void {
    if (this.keyOf.length >= n) return;
    const grown = new Int32Array(Math.max(n, Math.ceil(this.keyOf.length * 1.5) + 1024)).fill(-1);
    grown.set(this.keyOf);
    this.keyOf = grown;
  }

  private growKeys(n: number): void {
    if (this.fileRowOfKey.length >= n) return;
    const grown = new Int32Array(Math.max(n, Math.ceil(this.fileRowOfKey.length * 1.5) + 1024));
    grown.fill(-1);
    grown.set(this.fileRowOfKey);
    this.fileRowOfKey = grown;
  }

  /** Reads and checks the saved ANN; anything wrong leaves it unloaded (to be rebuilt). */
  private load(): void {
    const store = this.store;
    const dir = store.dir;
    let meta: AnnMeta;
    try {
      meta = JSON.parse(readFileSync(join(dir, META), "utf8")) as AnnMeta;
    } catch (error) {
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
      this.loadState = missing ? "missing" : "corrupt";
      return;
    }
    const shapeOk =
      meta !== null &&
      typeof meta === "object" &&
      meta.format === FORMAT &&
      typeof meta.file === "string" &&
      /^ann-[0-9a-z-]+$/.test(meta.file) &&
      [
        meta.fileRows,
        meta.held,
        meta.nextKey,
        meta.annBytes,
        meta.keysBytes,
        meta.generation,
      ].every((v) => Number.isInteger(v) && v >= 0) &&
      meta.keysBytes === meta.fileRows * 4 &&
      meta.nextKey <= MAX_ANN_KEY;
    if (!shapeOk) {
      this.loadState = "corrupt";
      return;
    }
    const stale =
      meta.version !== VERSION ||
      meta.model !== store.model ||
      meta.dim !== store.dim ||
      meta.connectivity !== this.parameters.connectivity ||
      meta.expansionAdd !== this.parameters.expansionAdd ||
      meta.generation !== store.generation ||
      (!store.readOnly && meta.fileRows > store.fileRows);
    if (stale) {
      this.loadState = "stale";
      return;
    }
    const annFile = join(dir, `${meta.file}.usearch`);
    const keysFile = join(dir, `${meta.file}.keys`);
    let keyOf: Int32Array;
    try {
      if (
        statSync(annFile).size !== meta.annBytes ||
        sha256OfFileSync(annFile).sha256 !== meta.annSha256
      ) {
        this.loadState = "corrupt";
        return;
      }
      const bytes = readFileSync(keysFile);
      if (
        bytes.length !== meta.keysBytes ||
        createHash("sha256").update(bytes).digest("hex") !== meta.keysSha256
      ) {
        this.loadState = "corrupt";
        return;
      }
      keyOf = new Int32Array(meta.fileRows);
      new Uint8Array(keyOf.buffer).set(bytes);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      this.loadState = code === "ENOENT" ? "missing" : "corrupt";
      return;
    }
    // Each key at most once, below nextKey, as many as the graph holds.
    const fileRowOfKey = new Int32Array(meta.nextKey).fill(-1);
    let held = 0;
    for (let f = 0; f < keyOf.length; f++) {
      const key = keyOf[f]!;
      if (key === -1) continue;
      if (key < 0 || key >= meta.nextKey || fileRowOfKey[key] !== -1) {
        this.loadState = "corrupt";
        return;
      }
      fileRowOfKey[key] = f;
      held += 1;
    }
    let ann: AnnSearch;
    try {
      ann = AnnSearch.open(annFile, store.dim, this.parameters, store.readOnly ? "view" : "load");
    } catch {
      this.loadState = "corrupt";
      return;
    }
    if (held !== meta.held || ann.size !== held) {
      ann.release();
      this.loadState = "corrupt";
      return;
    }
    this.ann = ann;
    this.generation = meta.generation;
    this.covered = meta.fileRows;
    this.keyOf = keyOf;
    this.fileRowOfKey = fileRowOfKey;
    this.nextKey = meta.nextKey;
    this.unsaved = 0;
    this.loadState = "loaded";
  }

  /** Removes ANN files other than the current set (a reader may still map them: ignore errors). */
  private removeOtherFiles(current: string): void {
    let names: string[];
    try {
      names = readdirSync(this.store.dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!OWN.test(name) || name.startsWith(`${current}.`)) continue;
      try {
        rmSync(join(this.store.dir, name), { force: true });
      } catch {
        // left for the next save
      }
    }
  }
}
