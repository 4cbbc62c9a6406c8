/**
 * The persistent index's storage: one folder per index (e.g. `photos.sgi/`) holding, per image,
 * its path, size, mtime, sha256 and descriptor, plus the images that failed and why. Embedded,
 * crash-safe, one writer at a time, any number of readers.
 *
 * On disk (one "generation" of data files at a time, named by the manifest):
 *   manifest.json       model identity, dimension, storage type, creation time, generation
 *   vectors-<g>.f32     descriptors as raw little-endian float32 rows (or .f16: float16), append-only
 *   journal-<g>.log     metadata records with CRC-32s, in batches closed by COMMIT (see journal.ts)
 *   LOCK                the writer's lock (see writer-lock.ts)
 * Opening reads the journal (per-record parsing of metadata only) and, on first use of the
 * vectors, reads the live rows of the vector file straight into one Float32Array: no per-row
 * parsing, no second copy.
 *
 * Durability: `commit()` writes the batch's vectors and fdatasyncs them, then appends its journal
 * records and COMMIT and fdatasyncs those. A COMMIT on disk thus implies its vectors are on disk,
 * and a batch is visible only once its COMMIT is whole and checksum-valid. A crash at any point
 * leaves a committed prefix plus a torn tail, which readers ignore and the next writer trims.
 * Removals and replacements leave dead rows in the vector file (tombstones); `compact()` rewrites
 * the live rows into a new generation and switches to it with one atomic manifest rename.
 *
 * Concurrency: one writer (LOCK; a second gets BUSY), any number of readers (`readOnly`), each a
 * snapshot of the batches committed when it opened: it reads the journal up to its last whole
 * COMMIT and only the vector rows those name, and keeps its files open, so a compaction that
 * replaces them does not disturb it. (A reader may see a batch whose fdatasync has not returned
 * yet; if that fsync then fails, the writer rolls it back, so such a reader saw one batch more.)
 *
 * Rows: searchable entries are numbered 0..size-1 ("rows"): `matrix()` is exactly those rows,
 * dense (dead rows are never in it), and `entryAt(row)` names each. A commit may renumber rows
 * (a removed row's place is taken by the last row), so resolve search results before the next
 * commit.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  statSync,
  unlinkSync,
} from "node:fs";
import { endianness } from "node:os";
import { dirname, isAbsolute, join } from "node:path";
import type { Float32Matrix } from "../core/matrix.ts";
import {
  assertInteger,
  assertNumber,
  assertOneOf,
  badFile,
  invalidArgument,
  SuperglobalError,
} from "../errors.ts";
import { io, ioError, readFully, syncDir, writeFully } from "./durable-io.ts";
import { narrowToHalf, widenHalf } from "./float16.ts";
import {
  encodeHeader,
  encodeRecords,
  JOURNAL_HEADER_BYTES,
  type JournalRecord,
  MAX_REASON,
  NO_ROW,
  parseJournal,
} from "./journal.ts";
import {
  FORMAT,
  FORMAT_VERSION,
  journalName,
  type Manifest,
  manifestPath,
  readManifest,
  type VectorDtype,
  vectorsName,
  writeManifest,
} from "./manifest.ts";
import { WriterLock } from "./writer-lock.ts";

export type { VectorDtype } from "./manifest.ts";

/** A file as the caller sees it now: what `status()` compares. */
export interface FileState {
  /** Absolute path, as given (any Unicode; not normalised). */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Modification time in milliseconds (fs.Stats.mtimeMs). */
  mtimeMs: number;
}

/** A searchable image: its file state, content hash and (stored beside it) its descriptor. */
export interface IndexEntry extends FileState {
  /** sha256 of the file's bytes, lowercase hex. */
  hash: string;
}

/** An image that could not be described, and why. Never a search result. */
export interface FailedEntry extends FileState {
  /** sha256 of the file's bytes, or null when the file could not be read at all. */
  hash: string | null;
  reason: string;
}

/** What `status()` says of a file: skip it, or (re)describe it. */
export type FileStatus = "unchanged" | "changed" | "new";

export interface CreateIndexOptions {
  /** Opaque identity of the model whose descriptors the index holds, e.g. "cvnet-r50:sha256…:s3". */
  model: string;
  /** Descriptor dimension (2048 for CVNet). */
  dim: number;
  /** On-disk type of the vectors (default float32). float16 halves the disk; they are widened on load. */
  dtype?: VectorDtype;
  /** The caller's own JSON-serialisable metadata, kept in the manifest (`extra`, `readExtra`). */
  extra?: Record<string, unknown>;
}

export interface OpenIndexOptions {
  /** The caller's model identity; an index made with another is refused (MODEL_MISMATCH). */
  model?: string;
  /** Open a snapshot for reading (search, info): no lock, no writes. Default false. */
  readOnly?: boolean;
}

/** What `superglobal info` shows. */
export interface IndexInfo {
  dir: string;
  model: string;
  dim: number;
  dtype: VectorDtype;
  /** Searchable entries. */
  images: number;
  /** Failed entries, and each one's reason. */
  failed: number;
  failures: FailedEntry[];
  /** Vector rows no longer in use (replaced or removed) until the next compaction. */
  deadRows: number;
  /** Bytes of all files in the index folder. */
  bytes: number;
  /** ISO times of creation and of the last commit. */
  created: string;
  updated: string;
}

type PendingOp =
  | { type: "entry"; entry: IndexEntry }
  | { type: "failed"; entry: FailedEntry }
  | { type: "remove"; path: string };

/** Dead-row share above which `compactIfNeeded()` compacts. */
export const DEFAULT_MAX_DEAD_FRACTION = 0.25;
const OWN_FILE =
  /^(vectors-\d+\.f(16|32)|journal-\d+\.log|manifest\.json\.tmp|LOCK(\.break|\.\d+\.[0-9a-f]+)?)$/;

export class IndexStore {
  // Searchable entries by row, as columns (no object per entry: 1M entries open fast and small).
  private paths: string[] = [];
  private sizes: number[] = [];
  private mtimes: number[] = [];
  /** sha256 of row r at bytes [32r, 32r + 32) (capacity may be larger). */
  private hashes = new Uint8Array(0);
  /** Each row's row in the vector file. */
  private diskRows: number[] = [];
  /** path → row, built on first use (a reader that only searches never needs it). */
  private rowOfMap: Map<string, number> | undefined;
  private failed = new Map<string, FailedEntry>();
  /** Descriptors of rows 0..size-1 (capacity may be larger), once loaded. */
  private vectors: Float32Array | undefined;
  /** Rows in the vector file and bytes in the journal as of the last commit. */
  private diskRowCount = 0;
  private journalEnd = JOURNAL_HEADER_BYTES;
  private updatedMs: number;
  private pending: PendingOp[] = [];
  private pendingPaths = new Set<string>();
  private pendingVectors = new Uint8Array(0);
  private pendingRows = 0;
  private closed = false;
  /** Set when a failed commit could not be rolled back: reopen the index. */
  private broken: string | undefined;
  private readonly rowBytes: number;

  private constructor(
    /** The index folder. */
    readonly dir: string,
    private manifest: Manifest,
    private vectorFd: number,
    private journalFd: number | undefined,
    private readonly lock: WriterLock | undefined,
  ) {
    this.rowBytes = manifest.dim * (manifest.dtype === "float16" ? 2 : 4);
    this.updatedMs = Date.parse(manifest.created);
  }

  /** Creates a new, empty index in folder `dir` (made if missing; it must not hold anything else) and opens it for writing. */
  static create(dir: string, options: CreateIndexOptions): IndexStore {
    checkHost();
    const model = checkModel(options.model);
    const dim = assertInteger("dim", options.dim, 1, 1 << 20);
    const dtype = assertOneOf("dtype", options.dtype ?? "float32", ["float32", "float16"] as const);
    try {
      mkdirSync(dir, { recursive: true });
    } catch (error) {
      throw ioError(dir, "create the index folder", error);
    }
    const lock = WriterLock.acquire(dir);
    try {
      if (existsSync(manifestPath(dir))) {
        throw new SuperglobalError("INVALID_ARGUMENT", `${dir}: an index already exists there`, {
          input: dir,
        });
      }
      const foreign = readdirSync(dir).filter((name) => !OWN_FILE.test(name));
      if (foreign.length > 0) {
        throw new SuperglobalError(
          "INVALID_ARGUMENT",
          `${dir}: folder is not empty (it holds ${JSON.stringify(foreign[0])}); an index needs a folder of its own`,
          { input: dir },
        );
      }
      const manifest: Manifest = {
        format: FORMAT,
        version: FORMAT_VERSION,
        model,
        dim,
        dtype,
        created: new Date().toISOString(),
        generation: 1,
        ...(options.extra === undefined ? {} : { extra: checkExtra(options.extra) }),
      };
      try {
        writeGeneration(dir, manifest, 1, () => {}, []);
        writeManifest(dir, manifest);
        syncDir(dirname(dir));
      } catch (error) {
        throw ioError(dir, "create the index", error);
      }
      return IndexStore.load(dir, {}, lock);
    } catch (error) {
      lock.release();
      throw error;
    }
  }

  /**
   * Opens the index in folder `dir`: for writing (takes the writer lock; BUSY if another live
   * process holds it; a torn tail left by a crash is trimmed) or, with `readOnly`, as a snapshot
   * of what was committed when it opened. NOT_FOUND if `dir` holds no index.
   */
  static open(dir: string, options: OpenIndexOptions = {}): IndexStore {
    checkHost();
    if (options.model !== undefined) checkModel(options.model);
    if (options.readOnly === true) return IndexStore.load(dir, options, undefined);
    readManifest(dir); // NOT_FOUND before taking a lock in a folder that is no index
    const lock = WriterLock.acquire(dir);
    try {
      return IndexStore.load(dir, options, lock);
    } catch (error) {
      lock.release();
      throw error;
    }
  }

  /** Whether folder `dir` holds an index (a manifest; its data is checked only on open). */
  static exists(dir: string): boolean {
    return existsSync(manifestPath(dir));
  }

  /** The `extra` metadata given when the index in `dir` was created ({} if none); no lock needed. */
  static readExtra(dir: string): Record<string, unknown> {
    return readManifest(dir).extra ?? {};
  }

  /** Opens the index in `dir` for writing, creating it if there is none; its model and dim must match. */
  static openOrCreate(dir: string, options: CreateIndexOptions): IndexStore {
    if (!existsSync(manifestPath(dir))) {
      try {
        return IndexStore.create(dir, options);
      } catch (error) {
        // Another process created it meanwhile: open it instead.
        if (!(error instanceof SuperglobalError) || !existsSync(manifestPath(dir))) throw error;
      }
    }
    const store = IndexStore.open(dir, { model: options.model });
    if (store.dim !== options.dim) {
      store.close();
      throw new SuperglobalError(
        "MODEL_MISMATCH",
        `${dir}: index holds ${store.dim}-d descriptors, not ${options.dim}-d`,
        { input: dir },
      );
    }
    return store;
  }

  private static load(
    dir: string,
    options: OpenIndexOptions,
    lock: WriterLock | undefined,
  ): IndexStore {
    const writable = lock !== undefined;
    // A reader can race a compaction that deletes the files the manifest it read names: retry.
    for (let attempt = 0; ; attempt++) {
      const manifest = readManifest(dir);
      if (options.model !== undefined && manifest.model !== options.model) {
        throw new SuperglobalError(
          "MODEL_MISMATCH",
          `${dir}: index was made with model ${JSON.stringify(manifest.model)}, not ${JSON.stringify(options.model)}; use that model, or another index folder`,
          { input: dir },
        );
      }
      let journalFd: number | undefined;
      let vectorFd: number | undefined;
      try {
        journalFd = openSync(join(dir, journalName(manifest.generation)), writable ? "r+" : "r");
        vectorFd = openSync(
          join(dir, vectorsName(manifest, manifest.generation)),
          writable ? "r+" : "r",
        );
      } catch (error) {
        if (journalFd !== undefined) closeSync(journalFd);
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT" && !writable && attempt < 10) continue;
        if (code === "ENOENT")
          throw badFile(dir, `a data file of generation ${manifest.generation} is missing`);
        throw ioError(dir, "open the index", error);
      }
      const store = new IndexStore(dir, manifest, vectorFd, journalFd, lock);
      try {
        store.replay();
        if (!writable) {
          closeSync(journalFd);
          store.journalFd = undefined;
        }
      } catch (error) {
        closeSync(vectorFd);
        if (store.journalFd !== undefined) closeSync(store.journalFd);
        throw error;
      }
      return store;
    }
  }

  private get rowOf(): Map<string, number> {
    if (this.rowOfMap === undefined) {
      const map = new Map<string, number>();
      for (let row = 0; row < this.paths.length; row++) map.set(this.paths[row]!, row);
      this.rowOfMap = map;
    }
    return this.rowOfMap;
  }

  /** Model identity the index was made with. */
  get model(): string {
    return this.manifest.model;
  }

  get dim(): number {
    return this.manifest.dim;
  }

  get dtype(): VectorDtype {
    return this.manifest.dtype;
  }

  /** The `extra` metadata given at creation ({} if none). */
  get extra(): Record<string, unknown> {
    return this.manifest.extra ?? {};
  }

  get readOnly(): boolean {
    return this.lock === undefined;
  }

  /** Number of searchable entries (rows). */
  get size(): number {
    return this.paths.length;
  }

  /** Vector rows of replaced or removed entries, still on disk until a compaction. */
  get deadRows(): number {
    return this.diskRowCount - this.paths.length;
  }

  // --- for data derived from the vectors (the ANN index, app/ann-sync.ts) -----------------

  /** Data generation: a compaction starts a new one and renumbers the vector file's rows. */
  get generation(): number {
    return this.manifest.generation;
  }

  /** Rows in this generation's vector file, live and dead: each new vector takes the next one. */
  get fileRows(): number {
    return this.diskRowCount;
  }

  /** The vector-file row of `row`: fixed while the entry lives, within one generation. */
  fileRowAt(row: number): number {
    const f = this.diskRows[row];
    if (f === undefined) invalidArgument("row", `an integer between 0 and ${this.size - 1}`, row);
    return f;
  }

  /** The descriptor at `row` (a copy); reads just that row if vectors are not loaded. */
  vectorAt(row: number): Float32Array {
    this.checkOpen();
    const f = this.fileRowAt(row);
    const d = this.dim;
    if (this.vectors !== undefined) return this.vectors.slice(row * d, (row + 1) * d);
    const out = new Float32Array(d);
    this.readRows(f, 1, out, 0);
    return out;
  }

  /**
   * Whether the file at `file.path` needs describing: "unchanged" (an entry or a failure with the
   * same size and mtime: skip it), "changed" (replace it), or "new". Committed state only.
   */
  status(file: FileState): FileStatus {
    const row = this.rowOf.get(file.path);
    if (row !== undefined) {
      const same = this.sizes[row] === file.size && this.mtimes[row] === file.mtimeMs;
      return same ? "unchanged" : "changed";
    }
    const failed = this.failed.get(file.path);
    if (failed === undefined) return "new";
    return failed.size === file.size && failed.mtimeMs === file.mtimeMs ? "unchanged" : "changed";
  }

  /** The searchable entry of `path`, if any. */
  get(path: string): IndexEntry | undefined {
    const row = this.rowOf.get(path);
    return row === undefined ? undefined : this.entryAt(row);
  }

  /** The failure recorded for `path`, if any. */
  getFailed(path: string): FailedEntry | undefined {
    return this.failed.get(path);
  }

  /** The row of `path` in `matrix()`, if it is searchable. */
  rowOfPath(path: string): number | undefined {
    return this.rowOf.get(path);
  }

  /** The entry at `row` of `matrix()` (0 ≤ row < size). */
  entryAt(row: number): IndexEntry {
    const path = this.paths[row];
    if (path === undefined)
      invalidArgument("row", `an integer between 0 and ${this.size - 1}`, row);
    return {
      path,
      size: this.sizes[row]!,
      mtimeMs: this.mtimes[row]!,
      hash: Buffer.from(this.hashes.buffer, row * 32, 32).toString("hex"),
    };
  }

  /** Searchable entries in row order (each a new object). */
  *entries(): IterableIterator<IndexEntry> {
    for (let row = 0; row < this.paths.length; row++) yield this.entryAt(row);
  }

  /** Searchable paths in row order (a copy). */
  allPaths(): string[] {
    return [...this.paths];
  }

  /** Failed entries (a copy). */
  failures(): FailedEntry[] {
    return [...this.failed.values()];
  }

  /**
   * The descriptors of rows 0..size-1 as one dense [size, dim] matrix, loaded from disk on first
   * call (float16 widened). A view: valid, and not to be modified, until the next commit.
   */
  matrix(): Float32Matrix {
    this.checkOpen();
    const vectors = this.loadVectors();
    return { data: vectors.subarray(0, this.size * this.dim), rows: this.size, cols: this.dim };
  }

  /** The descriptor of `path` (a copy), or undefined; reads just that row if vectors are not loaded. */
  vector(path: string): Float32Array | undefined {
    this.checkOpen();
    const row = this.rowOf.get(path);
    if (row === undefined) return undefined;
    const d = this.dim;
    if (this.vectors !== undefined) return this.vectors.slice(row * d, (row + 1) * d);
    const out = new Float32Array(d);
    this.readRows(this.diskRows[row]!, 1, out, 0);
    return out;
  }

  /**
   * Stages an image entry with its descriptor (replacing any entry or failure of that path once
   * committed). Nothing is visible or durable before `commit()`.
   */
  put(entry: IndexEntry, descriptor: Float32Array): void {
    this.checkWritable();
    const e = checkEntry(entry);
    if (!(descriptor instanceof Float32Array) || descriptor.length !== this.dim) {
      invalidArgument("descriptor", `a Float32Array of ${this.dim} values`, descriptor);
    }
    for (let i = 0; i < descriptor.length; i++) {
      const v = descriptor[i]!;
      if (v - v !== 0) invalidArgument("descriptor", "finite values", `${v} at ${i}`);
    }
    const at = this.pendingRows * this.rowBytes;
    if (this.pendingVectors.length < at + this.rowBytes) {
      const grown = new Uint8Array(Math.max(at + this.rowBytes, this.pendingVectors.length * 2));
      grown.set(this.pendingVectors.subarray(0, at));
      this.pendingVectors = grown;
    }
    if (this.dtype === "float16") {
      const ok = narrowToHalf(
        descriptor,
        new Uint16Array(this.pendingVectors.buffer, at, this.dim),
      );
      if (!ok) invalidArgument("descriptor", "values within float16 range (±65504)", entry.path);
    } else {
      this.pendingVectors.set(
        new Uint8Array(descriptor.buffer, descriptor.byteOffset, this.rowBytes),
        at,
      );
    }
    this.pendingRows += 1;
    this.pending.push({ type: "entry", entry: e });
    this.pendingPaths.add(e.path);
  }

  /** Stages a failure (replacing any entry of that path once committed). */
  putFailed(entry: FailedEntry): void {
    this.checkWritable();
    const hash = entry.hash === null ? null : checkHash(entry.hash);
    if (typeof entry.reason !== "string") invalidArgument("reason", "a string", entry.reason);
    let reason = Buffer.from(entry.reason, "utf8").toString("utf8"); // lone surrogates → U+FFFD
    if (reason.length > MAX_REASON)
      reason = `${reason.slice(0, MAX_REASON - 3).replace(/[\ud800-\udbff]$/, "")}...`;
    const e: FailedEntry = { ...checkFileState(entry), hash, reason };
    this.pending.push({ type: "failed", entry: e });
    this.pendingPaths.add(e.path);
  }

  /** Stages the removal of `path` (entry or failure). */
  delete(path: string): void {
    this.checkWritable();
    if (typeof path !== "string") invalidArgument("path", "a string", path);
    this.pending.push({ type: "remove", path });
  }

  /**
   * Makes everything staged durable (fdatasync) and visible, as one atomic batch. On a write
   * error (e.g. disk full) nothing of the batch is kept, the staged changes are dropped, the index
   * stays as of the last commit, and an IO_ERROR is thrown.
   */
  commit(): void {
    this.checkWritable();
    if (this.pending.length === 0) return;
    const time = Date.now();
    const records: JournalRecord[] = [];
    let row = this.diskRowCount;
    // Each record names the vector row it supersedes: the path's state as of the ops before it.
    const overlay = new Map<string, number | "failed" | "none">();
    const before = (path: string): number | "failed" | "none" => {
      const o = overlay.get(path);
      if (o !== undefined) return o;
      const r = this.rowOf.get(path);
      if (r !== undefined) return this.diskRows[r]!;
      return this.failed.has(path) ? "failed" : "none";
    };
    for (const op of this.pending) {
      const path = op.type === "remove" ? op.path : op.entry.path;
      const was = before(path);
      const replaces = typeof was === "number" ? was : NO_ROW;
      if (op.type === "entry") {
        records.push({
          type: "entry",
          row,
          replaces,
          replacesFailure: was === "failed",
          ...op.entry,
        });
        overlay.set(path, row++);
      } else if (op.type === "failed") {
        records.push({ type: "failed", replaces, ...op.entry });
        overlay.set(path, "failed");
      } else if (was !== "none") {
        records.push({ type: "remove", row: replaces, path });
        overlay.set(path, "none");
      }
    }
    records.push({
      type: "commit",
      time,
      rows: row,
      batchStart: this.journalEnd,
      records: records.length,
    });
    const journalFd = this.journalFd!;
    const bytes = encodeRecords(records);
    try {
      if (this.pendingRows > 0) {
        const vectorBytes = this.pendingRows * this.rowBytes;
        writeFully(
          this.vectorFd,
          this.pendingVectors.subarray(0, vectorBytes),
          this.diskRowCount * this.rowBytes,
        );
        io.datasync(this.vectorFd);
      }
      writeFully(journalFd, bytes, this.journalEnd);
      io.datasync(journalFd);
    } catch (error) {
      try {
        ftruncateSync(this.vectorFd, this.diskRowCount * this.rowBytes);
        ftruncateSync(journalFd, this.journalEnd);
      } catch {
        this.broken = "a failed commit could not be rolled back";
      }
      this.clearPending();
      throw ioError(this.dir, "commit to the index (nothing of this batch was kept)", error);
    }
    const firstRow = this.diskRowCount;
    this.diskRowCount = row;
    this.journalEnd += bytes.length;
    this.updatedMs = time;
    let k = 0;
    for (const op of this.pending) {
      this.removePath(op.type === "remove" ? op.path : op.entry.path);
      if (op.type === "failed") this.failed.set(op.entry.path, op.entry);
      if (op.type === "entry") this.appendRow(op.entry, firstRow + k, k++);
    }
    this.clearPending();
  }

  /** Stages and commits one entry: durable when it returns. */
  add(entry: IndexEntry, descriptor: Float32Array): void {
    this.put(entry, descriptor);
    this.commit();
  }

  /** Stages and commits one failure: durable when it returns. */
  addFailed(entry: FailedEntry): void {
    this.putFailed(entry);
    this.commit();
  }

  /** Removes the entries and failures of `paths` (with anything staged), committed; returns how many existed. */
  remove(paths: Iterable<string>): number {
    this.checkWritable();
    let n = 0;
    for (const p of paths) {
      if (this.rowOf.has(p) || this.failed.has(p) || this.pendingPaths.has(p)) {
        this.delete(p);
        n += 1;
      }
    }
    this.commit();
    return n;
  }

  /**
   * Removes every entry and failure whose file is gone (`exists` false; default: fs.existsSync),
   * committed. Returns the removed paths.
   */
  prune(exists: (path: string) => boolean = existsSync): string[] {
    this.checkWritable();
    const gone = [...this.paths, ...this.failed.keys()].filter((p) => !exists(p));
    this.remove(gone);
    return gone;
  }

  /** Compacts when dead rows exceed `maxDeadFraction` of the vector file's rows; returns whether it did. */
  compactIfNeeded(maxDeadFraction = DEFAULT_MAX_DEAD_FRACTION): boolean {
    assertNumber("maxDeadFraction", maxDeadFraction, 0, 1);
    if (this.deadRows === 0 || this.deadRows <= maxDeadFraction * this.diskRowCount) return false;
    this.compact();
    return true;
  }

  /**
   * Rewrites the live rows (in row order) and the entries into a new generation of files,
   * fsyncs them, and switches to it by atomically replacing the manifest; then deletes the old
   * files. Commits anything staged first. A crash or error at any point leaves the old or the new
   * generation whole (an error leaves the old one and throws IO_ERROR).
   */
  compact(): void {
    this.commit();
    const dir = this.dir;
    const generation = this.manifest.generation + 1;
    const next: Manifest = { ...this.manifest, generation };
    const records: JournalRecord[] = [];
    for (let row = 0; row < this.paths.length; row++) {
      records.push({
        type: "entry",
        row,
        replaces: NO_ROW,
        replacesFailure: false,
        ...this.entryAt(row),
      });
    }
    for (const f of this.failed.values()) records.push({ type: "failed", replaces: NO_ROW, ...f });
    records.push({
      type: "commit",
      time: this.updatedMs,
      rows: this.paths.length,
      batchStart: JOURNAL_HEADER_BYTES,
      records: records.length,
    });
    let journalBytes = 0;
    try {
      journalBytes = writeGeneration(dir, next, generation, (fd) => this.copyLiveRows(fd), records);
    } catch (error) {
      removeGeneration(dir, next, generation);
      throw ioError(dir, "compact the index (it is unchanged)", error);
    }
    try {
      writeManifest(dir, next);
    } catch (error) {
      // Either manifest may be the one on disk: keep both generations' files (the next writer
      // to open deletes whichever is not current).
      let current = this.manifest.generation;
      try {
        current = readManifest(dir).generation;
      } catch {
        // unreadable: keep the old state
      }
      if (current !== generation) {
        removeGeneration(dir, next, generation);
        throw ioError(dir, "compact the index (it is unchanged)", error);
      }
      this.switchGeneration(next, journalBytes, false);
      throw ioError(dir, "make the compacted index durable", error);
    }
    this.switchGeneration(next, journalBytes, true);
  }

  /** Everything `superglobal info` shows. */
  info(): IndexInfo {
    let bytes = 0;
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch (error) {
      throw ioError(this.dir, "list the index folder", error);
    }
    for (const name of names) {
      try {
        bytes += statSync(join(this.dir, name)).size;
      } catch {
        // removed meanwhile
      }
    }
    return {
      dir: this.dir,
      model: this.model,
      dim: this.dim,
      dtype: this.dtype,
      images: this.size,
      failed: this.failed.size,
      failures: this.failures(),
      deadRows: this.deadRows,
      bytes,
      created: this.manifest.created,
      updated: new Date(this.updatedMs).toISOString(),
    };
  }

  /** Commits anything staged (writers), closes the files and releases the lock. Idempotent. */
  close(): void {
    if (this.closed) return;
    try {
      if (!this.readOnly && this.broken === undefined) this.commit();
    } finally {
      this.closed = true;
      closeSync(this.vectorFd);
      if (this.journalFd !== undefined) closeSync(this.journalFd);
      this.lock?.release();
      this.vectors = undefined;
    }
  }

  // --- internals ---------------------------------------------------------------------------

  /** Reads the journal, rebuilds the entries; writers trim a torn tail and stale files. */
  private replay(): void {
    const fd = this.journalFd!;
    const journalFile = join(this.dir, journalName(this.manifest.generation));
    const size = fstatSync(fd).size;
    const bytes = Buffer.allocUnsafe(size);
    if (readFully(fd, bytes, 0) !== size) throw badFile(journalFile, "shorter than it was");
    // Columns by vector-file row while replaying, then the rows no record superseded. Records
    // name the rows they supersede, so this needs no lookup by path.
    const paths: string[] = [];
    const sizes: number[] = [];
    const mtimes: number[] = [];
    let hashes = new Uint8Array(32 * 1024);
    let dead = new Uint8Array(1024);
    const failed = this.failed;
    const room = (rows: number) => {
      if (rows <= dead.length) return;
      const grown = new Uint8Array(Math.max(rows, dead.length * 2));
      grown.set(dead);
      dead = grown;
    };
    const kill = (row: number) => {
      room(row + 1);
      dead[row] = 1;
    };
    const parsed = parseJournal(journalFile, bytes, this.manifest.generation, {
      entry(row, replaces, replacesFailure, path, size, mtimeMs, from, hashAt) {
        if (replaces !== NO_ROW) dead[replaces] = 1; // replaces < row < dead.length
        if (replacesFailure) failed.delete(path);
        paths.push(path); // row === paths.length: the parser checked the order
        sizes.push(size);
        mtimes.push(mtimeMs);
        if (hashes.length < (row + 1) * 32) {
          const grown = new Uint8Array(hashes.length * 2);
          grown.set(hashes);
          hashes = grown;
        }
        for (let i = 0, at = row * 32; i < 32; i++) hashes[at + i] = from[hashAt + i]!;
        room(row + 1);
      },
      failed(r) {
        if (r.replaces !== NO_ROW) kill(r.replaces);
        const { path, size, mtimeMs, hash, reason } = r;
        failed.set(path, { path, size, mtimeMs, hash, reason });
      },
      remove(row, path) {
        if (row !== NO_ROW) kill(row);
        else failed.delete(path);
      },
    });
    this.diskRowCount = parsed.rows;
    this.journalEnd = parsed.end;
    if (parsed.time !== undefined && parsed.time > 0) this.updatedMs = parsed.time;
    let n = 0;
    for (let d = 0; d < parsed.rows; d++) {
      if (d < dead.length && dead[d] === 1) continue;
      if (n !== d) {
        paths[n] = paths[d]!;
        sizes[n] = sizes[d]!;
        mtimes[n] = mtimes[d]!;
        hashes.copyWithin(n * 32, d * 32, d * 32 + 32);
      }
      this.diskRows.push(d);
      n += 1;
    }
    paths.length = n;
    sizes.length = n;
    mtimes.length = n;
    this.paths = paths;
    this.sizes = sizes;
    this.mtimes = mtimes;
    this.hashes = hashes;
    const vectorBytes = fstatSync(this.vectorFd).size;
    const need = parsed.rows * this.rowBytes;
    if (vectorBytes < need) {
      throw badFile(
        join(this.dir, vectorsName(this.manifest, this.manifest.generation)),
        `${vectorBytes} bytes, but the journal has committed ${parsed.rows} rows (${need} bytes)`,
      );
    }
    if (this.readOnly) return;
    try {
      if (size > parsed.end) ftruncateSync(fd, parsed.end);
      if (vectorBytes > need) ftruncateSync(this.vectorFd, need);
      this.removeStaleFiles();
    } catch (error) {
      throw ioError(this.dir, "trim the torn tail of the index", error);
    }
  }

  /** Deletes data files of other generations and leftovers of dead processes (writer only). */
  private removeStaleFiles(): void {
    const keep = new Set([
      vectorsName(this.manifest, this.manifest.generation),
      journalName(this.manifest.generation),
    ]);
    for (const name of readdirSync(this.dir)) {
      const data = /^(vectors-\d+\.f(16|32)|journal-\d+\.log|manifest\.json\.tmp)$/.test(name);
      const lockTemp = /^LOCK\.(\d+)\.[0-9a-f]+$/.exec(name);
      const deadTemp = lockTemp !== null && !pidExists(Number(lockTemp[1]));
      if ((data && !keep.has(name)) || deadTemp) unlinkSync(join(this.dir, name));
    }
  }

  private loadVectors(): Float32Array {
    if (this.vectors !== undefined) return this.vectors;
    const n = this.paths.length;
    const d = this.dim;
    const vectors = new Float32Array(n * d);
    for (let row = 0; row < n; ) {
      let end = row + 1;
      while (end < n && this.diskRows[end] === this.diskRows[end - 1]! + 1) end++;
      this.readRows(this.diskRows[row]!, end - row, vectors, row);
      row = end;
    }
    this.vectors = vectors;
    return vectors;
  }

  /** Reads `count` consecutive vector-file rows from `diskRow` into out[row*dim...]. */
  private readRows(diskRow: number, count: number, out: Float32Array, row: number): void {
    const file = join(this.dir, vectorsName(this.manifest, this.manifest.generation));
    const d = this.dim;
    // In bounded chunks: a byte view of a whole 1M × 2048 matrix would exceed a typed array's length limit.
    const chunkRows = Math.max(1, Math.floor(io.chunkBytes / this.rowBytes));
    if (this.dtype === "float32") {
      for (let done = 0; done < count; done += chunkRows) {
        const rows = Math.min(chunkRows, count - done);
        const into = new Uint8Array(
          out.buffer,
          out.byteOffset + (row + done) * d * 4,
          rows * d * 4,
        );
        if (readFully(this.vectorFd, into, (diskRow + done) * this.rowBytes) !== into.length) {
          throw badFile(file, "ends before its committed rows");
        }
      }
      return;
    }
    const scratch = new Uint16Array(Math.min(count, chunkRows) * d);
    for (let done = 0; done < count; done += chunkRows) {
      const rows = Math.min(chunkRows, count - done);
      const view = new Uint8Array(scratch.buffer, 0, rows * this.rowBytes);
      if (readFully(this.vectorFd, view, (diskRow + done) * this.rowBytes) !== view.length) {
        throw badFile(file, "ends before its committed rows");
      }
      widenHalf(scratch.subarray(0, rows * d), out, (row + done) * d);
    }
  }

  /** Copies the live rows, in row order, from the vector file to `fd` (compaction). */
  private copyLiveRows(fd: number): void {
    const rb = this.rowBytes;
    const chunkRows = Math.max(1, Math.floor(io.chunkBytes / rb));
    const n = this.paths.length;
    const buffer = Buffer.allocUnsafe(Math.min(n, chunkRows) * rb);
    const file = join(this.dir, vectorsName(this.manifest, this.manifest.generation));
    for (let row = 0; row < n; ) {
      let end = row + 1;
      while (
        end < n &&
        end - row < chunkRows &&
        this.diskRows[end] === this.diskRows[end - 1]! + 1
      ) {
        end++;
      }
      const view = buffer.subarray(0, (end - row) * rb);
      if (readFully(this.vectorFd, view, this.diskRows[row]! * rb) !== view.length) {
        throw badFile(file, "ends before its committed rows");
      }
      writeFully(fd, view, row * rb);
      row = end;
    }
  }

  private switchGeneration(next: Manifest, journalBytes: number, removeOld: boolean): void {
    const old = this.manifest;
    let vectorFd: number | undefined;
    let journalFd: number;
    try {
      vectorFd = openSync(join(this.dir, vectorsName(next, next.generation)), "r+");
      journalFd = openSync(join(this.dir, journalName(next.generation)), "r+");
    } catch (error) {
      if (vectorFd !== undefined) closeSync(vectorFd);
      this.broken = "the compacted index could not be opened";
      throw ioError(this.dir, "open the compacted index", error);
    }
    closeSync(this.vectorFd);
    closeSync(this.journalFd!);
    this.manifest = next;
    this.vectorFd = vectorFd;
    this.journalFd = journalFd;
    for (let i = 0; i < this.diskRows.length; i++) this.diskRows[i] = i;
    this.diskRowCount = this.paths.length;
    this.journalEnd = journalBytes;
    if (removeOld) removeGeneration(this.dir, old, old.generation);
  }

  /** Removes `path`'s entry (its row taken by the last row) or failure, in memory. */
  private removePath(path: string): void {
    this.failed.delete(path);
    const row = this.rowOf.get(path);
    if (row === undefined) return;
    this.rowOf.delete(path);
    const last = this.paths.length - 1;
    if (row !== last) {
      const moved = this.paths[last]!;
      this.paths[row] = moved;
      this.sizes[row] = this.sizes[last]!;
      this.mtimes[row] = this.mtimes[last]!;
      this.diskRows[row] = this.diskRows[last]!;
      this.hashes.copyWithin(row * 32, last * 32, last * 32 + 32);
      this.rowOf.set(moved, row);
      const d = this.dim;
      this.vectors?.copyWithin(row * d, last * d, (last + 1) * d);
    }
    this.paths.pop();
    this.sizes.pop();
    this.mtimes.pop();
    this.diskRows.pop();
  }

  /** Appends a committed entry whose vector is staged row `k`, stored at `diskRow`. */
  private appendRow(entry: IndexEntry, diskRow: number, k: number): void {
    const row = this.paths.length;
    this.paths.push(entry.path);
    this.sizes.push(entry.size);
    this.mtimes.push(entry.mtimeMs);
    this.diskRows.push(diskRow);
    if (this.hashes.length < (row + 1) * 32) {
      const grown = new Uint8Array(Math.max(32 * 1024, this.hashes.length * 2));
      grown.set(this.hashes);
      this.hashes = grown;
    }
    Buffer.from(this.hashes.buffer, row * 32, 32).write(entry.hash, "hex");
    this.rowOf.set(entry.path, row);
    if (this.vectors === undefined) return;
    const d = this.dim;
    if (this.vectors.length < (row + 1) * d) {
      const grown = new Float32Array(Math.max(row + 1, Math.ceil(row * 1.25) + 16) * d);
      grown.set(this.vectors.subarray(0, row * d));
      this.vectors = grown;
    }
    const at = k * this.rowBytes;
    if (this.dtype === "float16") {
      widenHalf(new Uint16Array(this.pendingVectors.buffer, at, d), this.vectors, row * d);
    } else {
      this.vectors.set(new Float32Array(this.pendingVectors.buffer, at, d), row * d);
    }
  }

  private clearPending(): void {
    this.pending = [];
    this.pendingPaths.clear();
    this.pendingRows = 0;
    if (this.pendingVectors.length > io.chunkBytes) this.pendingVectors = new Uint8Array(0);
  }

  private checkOpen(): void {
    if (this.closed) throw new SuperglobalError("INVALID_ARGUMENT", `${this.dir}: index is closed`);
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) {
      throw new SuperglobalError("INVALID_ARGUMENT", `${this.dir}: index was opened read-only`, {
        input: this.dir,
      });
    }
    if (this.broken !== undefined) {
      throw new SuperglobalError(
        "IO_ERROR",
        `${this.dir}: ${this.broken}; close and reopen the index`,
        { input: this.dir },
      );
    }
  }
}

/**
 * Writes generation `generation`'s files whole and durably: the vectors (`fillVectors` writes
 * them), then the journal header and `records`, each fdatasynced, then the folder. Returns the
 * journal's length.
 */
function writeGeneration(
  dir: string,
  manifest: Manifest,
  generation: number,
  fillVectors: (fd: number) => void,
  records: JournalRecord[],
): number {
  const vectorFd = openSync(join(dir, vectorsName(manifest, generation)), "w");
  try {
    fillVectors(vectorFd);
    io.datasync(vectorFd);
  } finally {
    closeSync(vectorFd);
  }
  const header = encodeHeader(generation);
  const body = encodeRecords(records);
  const journalFd = openSync(join(dir, journalName(generation)), "w");
  try {
    writeFully(journalFd, header, 0);
    writeFully(journalFd, body, header.length);
    io.datasync(journalFd);
  } finally {
    closeSync(journalFd);
  }
  syncDir(dir);
  return header.length + body.length;
}

function removeGeneration(dir: string, manifest: Manifest, generation: number): void {
  for (const name of [vectorsName(manifest, generation), journalName(generation)]) {
    try {
      unlinkSync(join(dir, name));
    } catch {
      // not there
    }
  }
}

function checkHost(): void {
  if (endianness() !== "LE") {
    throw new SuperglobalError("UNSUPPORTED", "indexes are little-endian; this machine is not");
  }
}

function checkModel(model: unknown): string {
  if (typeof model !== "string" || model.length === 0) {
    invalidArgument("model", "a non-empty model identity string", model);
  }
  return model;
}

function checkExtra(extra: unknown): Record<string, unknown> {
  let copy: unknown;
  try {
    copy = JSON.parse(JSON.stringify(extra));
  } catch {
    copy = undefined;
  }
  if (copy === null || typeof copy !== "object" || Array.isArray(copy)) {
    invalidArgument("extra", "a JSON-serialisable object", extra);
  }
  return copy as Record<string, unknown>;
}

function checkFileState(f: FileState): FileState {
  if (f === null || typeof f !== "object") invalidArgument("entry", "an object", f);
  const path = f.path;
  if (
    typeof path !== "string" ||
    !isAbsolute(path) ||
    path.includes("\0") ||
    Buffer.from(path, "utf8").toString("utf8") !== path
  ) {
    invalidArgument("path", "an absolute path (well-formed Unicode, no NUL)", path);
  }
  return {
    path,
    size: assertInteger("size", f.size, 0),
    mtimeMs: assertNumber("mtimeMs", f.mtimeMs),
  };
}

function checkEntry(e: IndexEntry): IndexEntry {
  const f = checkFileState(e);
  return { ...f, hash: checkHash(e.hash) };
}

function checkHash(hash: unknown): string {
  if (typeof hash !== "string" || !/^[0-9a-fA-F]{64}$/.test(hash)) {
    invalidArgument("hash", "a sha256 as 64 hex digits", hash);
  }
  return hash.toLowerCase();
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
