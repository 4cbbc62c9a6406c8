/**
 * One `Index.add` in steps, so that the local run (photo-index.ts) and the job queue's committer
 * (queue/committer.ts) share them and behave alike: `plan` stats the files (unchanged ones are
 * done at once, unreadable ones recorded as failures), then each planned file gets its descriptor
 * (`put`) or its failure (`fail`), committed in batches, and every finished image is `report`ed.
 */
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { assertInteger, fileError } from "../errors.ts";
import type { FileState, IndexStore } from "../index/index-store.ts";

/** One image finished by `add`. */
export interface AddEvent {
  /** Images finished so far (including unchanged ones), 1..total. */
  done: number;
  total: number;
  path: string;
  status: "added" | "updated" | "unchanged" | "failed";
  /** Why it failed. */
  error?: string;
  /** Milliseconds this image took. */
  ms: number;
  /** Images durably committed so far: a killed job keeps at least these. */
  committed: number;
}

export interface AddOptions {
  onProgress?: (event: AddEvent) => void;
  signal?: AbortSignal;
  /** Commit at least every this many images (default 32) … */
  commitEvery?: number;
  /** … and at least every this many milliseconds (default 2000). */
  commitMs?: number;
  /**
   * Images in flight at once in a local run, each in its own worker thread with its own copy of
   * the model (default 1: one image at a time using every core). See ExtractorPool.
   */
  jobs?: number;
}

export interface AddSummary {
  added: number;
  updated: number;
  unchanged: number;
  failed: Array<{ path: string; reason: string }>;
}

/** A file's size and modification time, as the store compares them. */
export type FileStat = Omit<FileState, "path">;

/** A file that needs describing: new, or changed since the index last saw it. */
export interface PlannedFile extends FileStat {
  path: string;
  status: "new" | "changed";
}

export class AddRun {
  readonly summary: AddSummary = { added: 0, updated: 0, unchanged: 0, failed: [] };
  /** The files that need describing, in input order. */
  readonly todo: PlannedFile[] = [];
  private done = 0;
  private committedCount = 0;
  private pending = 0;
  private lastCommit = performance.now();
  private readonly commitEvery: number;
  private readonly commitMs: number;

  private constructor(
    private readonly store: IndexStore,
    /** The distinct absolute paths asked for. */
    readonly files: readonly string[],
    private readonly options: AddOptions,
  ) {
    this.commitEvery = assertInteger("commitEvery", options.commitEvery ?? 32, 1);
    this.commitMs = assertInteger("commitMs", options.commitMs ?? 2000, 0);
  }

  /** Stats every file: unchanged ones are done at once; unreadable ones fail without extraction. */
  static async plan(
    store: IndexStore,
    paths: readonly string[],
    options: AddOptions = {},
  ): Promise<AddRun> {
    const run = new AddRun(store, [...new Set(paths.map((p) => resolve(p)))], options);
    for (const path of run.files) {
      const since = performance.now();
      let state: FileStat;
      try {
        const s = await stat(path);
        state = { size: s.size, mtimeMs: s.mtimeMs };
        if (!s.isFile()) throw new Error("not a file");
      } catch (error) {
        const reason = fileError(path, "cannot read", error).message;
        run.fail({ path, size: 0, mtimeMs: 0 }, null, reason);
        run.report(path, "failed", performance.now() - since, reason);
        continue;
      }
      const status = store.status({ path, ...state });
      if (status === "unchanged") {
        run.summary.unchanged += 1;
        run.report(path, "unchanged", performance.now() - since);
      } else {
        run.todo.push({ path, ...state, status });
      }
    }
    return run;
  }

  /** Images durably committed so far. */
  get committed(): number {
    return this.committedCount;
  }

  /** Stages a planned file's descriptor (`hash`: the sha256 of the bytes it was made from). */
  put(file: PlannedFile, hash: string, descriptor: Float32Array): "added" | "updated" {
    this.store.put({ path: file.path, size: file.size, mtimeMs: file.mtimeMs, hash }, descriptor);
    const status = file.status === "changed" ? "updated" : "added";
    this.summary[status] += 1;
    this.staged();
    return status;
  }

  /** Records a failure in the index (retried only when the file changes) and in the summary. */
  fail(file: FileState, hash: string | null, reason: string): void {
    this.store.putFailed({ path: file.path, size: file.size, mtimeMs: file.mtimeMs, hash, reason });
    this.summary.failed.push({ path: file.path, reason });
    this.staged();
  }

  /** A failure in the summary only, not in the index, so the next run tries the file again. */
  failUnrecorded(path: string, reason: string): void {
    this.summary.failed.push({ path, reason });
  }

  /** Tells `onProgress` that one image is finished. */
  report(path: string, status: AddEvent["status"], ms: number, error?: string): void {
    this.done += 1;
    this.options.onProgress?.({
      done: this.done,
      total: this.files.length,
      path,
      status,
      ...(error === undefined ? {} : { error }),
      ms,
      committed: this.committedCount,
    });
  }

  /** Makes everything staged durable now. */
  commit(): void {
    this.store.commit();
    this.committedCount += this.pending;
    this.pending = 0;
    this.lastCommit = performance.now();
  }

  /** Commits what is left; the summary. */
  finish(): AddSummary {
    if (this.pending > 0) this.commit();
    return this.summary;
  }

  private staged(): void {
    this.pending += 1;
    if (this.pending >= this.commitEvery || performance.now() - this.lastCommit >= this.commitMs) {
      this.commit();
    }
  }
}
