/**
 * An append-only, crash-safe store of descriptors keyed by name: what long extraction jobs write
 * as they go, so an interrupted or killed run resumes where it stopped and loses nothing.
 *
 * On disk, in one folder: `vectors.f32` (raw float32 rows, appended), `keys.txt` (one key per
 * line, appended after its row is written) and `meta.json` (dimension and the settings that made
 * the vectors). A row counts only once both its vector and its key line are complete, so a
 * torn write at a crash is trimmed away on the next open.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { fileError, SuperglobalError } from "../errors.ts";

export class DescriptorStore {
  private readonly index = new Map<string, number>();
  private readonly keys: string[] = [];
  private vectorsFd: number;
  private keysFd: number;
  private pending = 0;

  private constructor(
    readonly dir: string,
    readonly dim: number,
    private rows: Float32Array,
  ) {
    this.vectorsFd = openFile(join(dir, "vectors.f32"));
    try {
      this.keysFd = openFile(join(dir, "keys.txt"));
    } catch (error) {
      closeSync(this.vectorsFd);
      throw error;
    }
  }

  /**
   * Opens (or creates) the store in `dir`. `settings` describe how the vectors were made; a store
   * made with other settings is refused rather than silently mixed.
   */
  static open(dir: string, dim: number, settings: Record<string, unknown>): DescriptorStore {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (cause) {
      throw fileError(dir, "cannot make the descriptor cache folder", cause);
    }
    const metaPath = join(dir, "meta.json");
    const meta = { dim, settings };
    if (existsSync(metaPath)) {
      const found = readMeta(metaPath);
      if (JSON.stringify(found) !== JSON.stringify(meta)) {
        throw new SuperglobalError(
          "BAD_FILE",
          `${dir}: descriptor cache was made with other settings (${JSON.stringify(found.settings)}); use another cache folder or delete it`,
          { input: dir },
        );
      }
    } else {
      try {
        writeFileSync(metaPath, `${JSON.stringify(meta, null, 2)}\n`);
      } catch (cause) {
        throw fileError(metaPath, "cannot write", cause);
      }
    }
    const store = new DescriptorStore(dir, dim, new Float32Array(0));
    store.recover();
    return store;
  }

  get size(): number {
    return this.keys.length;
  }

  has(key: string): boolean {
    return this.index.has(key);
  }

  /** The stored vector of `key` (a view; do not modify), or undefined. */
  get(key: string): Float32Array | undefined {
    const i = this.index.get(key);
    return i === undefined ? undefined : this.rows.subarray(i * this.dim, (i + 1) * this.dim);
  }

  /** Appends a vector. Durable once `flush()` ran (it runs every `syncEvery` adds). */
  add(key: string, vector: Float32Array, syncEvery = 16): void {
    if (key.includes("\n"))
      throw new SuperglobalError("INVALID_ARGUMENT", `key ${JSON.stringify(key)} has a newline`);
    if (vector.length !== this.dim) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `vector for ${key} has ${vector.length} values, expected ${this.dim}`,
      );
    }
    if (this.index.has(key)) return;
    writeAll(
      this.vectorsFd,
      new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength),
      join(this.dir, "vectors.f32"),
    );
    writeAll(this.keysFd, Buffer.from(`${key}\n`, "utf8"), join(this.dir, "keys.txt"));
    const n = this.keys.length;
    this.ensureCapacity(n + 1);
    this.rows.set(vector, n * this.dim);
    this.keys.push(key);
    this.index.set(key, n);
    this.pending += 1;
    if (this.pending >= syncEvery) this.flush();
  }

  flush(): void {
    if (this.pending === 0) return;
    try {
      fsyncSync(this.vectorsFd);
      fsyncSync(this.keysFd);
    } catch (cause) {
      throw fileError(this.dir, "cannot write the descriptor cache", cause);
    }
    this.pending = 0;
  }

  close(): void {
    this.flush();
    closeSync(this.vectorsFd);
    closeSync(this.keysFd);
  }

  /** Rows for `keys` in that order as one [keys.length, dim] matrix; every key must be present. */
  matrix(keys: readonly string[]): Float32Array {
    const out = new Float32Array(keys.length * this.dim);
    keys.forEach((k, i) => {
      const v = this.get(k);
      if (v === undefined)
        throw new SuperglobalError("NOT_FOUND", `${this.dir}: no descriptor for ${k}`, {
          input: k,
        });
      out.set(v, i * this.dim);
    });
    return out;
  }

  /** Reads what is on disk and trims a torn tail left by a crash. */
  private recover(): void {
    const rowBytes = this.dim * 4;
    const keysPath = join(this.dir, "keys.txt");
    let keyText: string;
    try {
      keyText = readFileSync(keysPath, "utf8");
    } catch (cause) {
      throw fileError(keysPath, "cannot read", cause);
    }
    const lines = keyText.split("\n");
    lines.pop(); // the part after the last newline is incomplete (or empty)
    const vectorBytes = fstatSync(this.vectorsFd).size;
    const count = Math.min(lines.length, Math.floor(vectorBytes / rowBytes));
    const keepKeys = lines.slice(0, count);
    ftruncateSync(this.vectorsFd, count * rowBytes);
    ftruncateSync(this.keysFd, Buffer.byteLength(keepKeys.map((k) => `${k}\n`).join(""), "utf8"));
    this.ensureCapacity(count);
    const bytes = new Uint8Array(this.rows.buffer, 0, count * rowBytes);
    let done = 0;
    while (done < bytes.length) {
      const got = readSync(this.vectorsFd, bytes, done, bytes.length - done, done);
      if (got === 0) break;
      done += got;
    }
    keepKeys.forEach((k, i) => {
      this.keys.push(k);
      this.index.set(k, i);
    });
  }

  private ensureCapacity(rows: number): void {
    if (this.rows.length >= rows * this.dim) return;
    const grown = new Float32Array(
      Math.max(rows, Math.ceil((this.rows.length / this.dim) * 1.5) + 64) * this.dim,
    );
    grown.set(this.rows);
    this.rows = grown;
  }
}

function writeAll(fd: number, bytes: Uint8Array, path: string): void {
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(fd, bytes, done);
  } catch (cause) {
    throw fileError(path, "cannot write", cause);
  }
}

function openFile(path: string): number {
  try {
    return openSync(path, "a+");
  } catch (cause) {
    throw fileError(path, "cannot open", cause);
  }
}

/** meta.json as written by `open`: `{ dim, settings }`, or BAD_FILE naming it. */
function readMeta(path: string): { dim: number; settings: Record<string, unknown> } {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw fileError(path, "cannot read", cause);
  }
  const bad = (why: string, cause?: unknown) =>
    new SuperglobalError("BAD_FILE", `${path}: not a descriptor cache's meta.json (${why})`, {
      input: path,
      cause,
    });
  let found: unknown;
  try {
    found = JSON.parse(text);
  } catch (cause) {
    throw bad((cause as Error).message, cause);
  }
  const meta = found as { dim?: unknown; settings?: unknown } | null;
  if (
    typeof meta !== "object" ||
    meta === null ||
    Array.isArray(meta) ||
    typeof meta.dim !== "number" ||
    typeof meta.settings !== "object" ||
    meta.settings === null
  ) {
    throw bad("expected an object with a number dim and an object settings");
  }
  return meta as { dim: number; settings: Record<string, unknown> };
}
