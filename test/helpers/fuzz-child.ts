/**
 * The reader fuzzer's child process (see fuzz.ts): `node --import tsx fuzz-child.ts` with the run
 * in $SUPERGLOBAL_FUZZ (JSON). Once loaded it sends { type: "ready" }, then runs cases
 * start..start+count-1, sending one IPC message per case ({ type: "case", index, target, how,
 * outcome, ms, problem? }), then { type: "done", maxRssMiB }.
 * The parent kills it when a case outlives its time limit, and starts another after it.
 *
 * Allocation guard: before any reader is imported, the typed-array and ArrayBuffer constructors
 * are replaced by subclasses that refuse (and record) any single allocation above the case's
 * limit, derived from its file size: a reader that sizes memory from a header it did not check
 * against the file trips it, even when it would catch the error itself.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { caseSeed, type Format, mutate } from "./mutate.ts";

export interface FuzzTarget {
  /** A name for reports. */
  name: string;
  path: string;
  format: Format;
  /** The `probe-*` readers test the harness itself: they allocate too much, hang, or crash. */
  reader: "checkpoint" | "npy" | "gnd" | "image" | "probe-alloc" | "probe-hang" | "probe-crash";
  /** Relative weight in the case mix (default 1). */
  weight?: number;
}

export interface FuzzConfig {
  seed: number;
  start: number;
  count: number;
  targets: FuzzTarget[];
  /** Scratch folder for mutated files. */
  dir: string;
}

export interface CaseMessage {
  type: "case";
  index: number;
  target: string;
  how: string;
  /** "ok", or the SuperglobalError code. */
  outcome: string;
  ms: number;
  /** Set when the case failed: another exception, a broken success, or the allocation guard. */
  problem?: string;
}

// --- the allocation guard ---------------------------------------------------------------------

const guard = { limit: Number.POSITIVE_INFINITY, tripped: "" };

type AnyCtor = { new (...args: unknown[]): object; BYTES_PER_ELEMENT?: number; name: string };
const g = globalThis as unknown as Record<string, AnyCtor>;
for (const name of [
  "Int8Array",
  "Uint8Array",
  "Uint8ClampedArray",
  "Int16Array",
  "Uint16Array",
  "Int32Array",
  "Uint32Array",
  "Float32Array",
  "Float64Array",
  "BigInt64Array",
  "BigUint64Array",
  "ArrayBuffer",
]) {
  const Base = g[name]!;
  const size = Base.BYTES_PER_ELEMENT ?? 1;
  const Guarded = class extends Base {
    constructor(...args: unknown[]) {
      const n = args[0];
      if (typeof n === "number" && n * size > guard.limit) {
        guard.tripped ||= `new ${name}(${n}): ${n * size} bytes, over the case's limit of ${guard.limit}`;
        throw new RangeError(`allocation guard: ${guard.tripped}`);
      }
      super(...args);
    }
    static override [Symbol.hasInstance](value: unknown): boolean {
      return value instanceof Base;
    }
  };
  Object.defineProperty(Guarded, "name", { value: name });
  g[name] = Guarded as unknown as AnyCtor;
}

// --- the run ----------------------------------------------------------------------------------

const { SuperglobalError } = await import("../../src/errors.ts");
const { loadCheckpoint, loadCheckpointFromBytes } = await import("../../src/checkpoint/load.ts");
const { readNpy } = await import("../../src/io/npy.ts");
const { readGroundTruth } = await import("../../src/eval/ground-truth.ts");
const { decodeImage, MAX_IMAGE_PIXELS } = await import("../../src/image/decode.ts");
const { readFileSync } = await import("node:fs");

const config = JSON.parse(process.env["SUPERGLOBAL_FUZZ"] ?? "{}") as FuzzConfig;
const seeds = new Map(config.targets.map((t) => [t.path, new Uint8Array(readFileSync(t.path))]));
const weights = config.targets.map((t) => t.weight ?? 1);
const total = weights.reduce((a, b) => a + b, 0);

/** The target of case `index`: a weighted choice from its own seed. */
function targetOf(index: number): FuzzTarget {
  let x = (caseSeed(config.seed ^ 0x5bd1e995, index) / 2 ** 32) * total;
  for (const [i, t] of config.targets.entries()) {
    x -= weights[i]!;
    if (x < 0) return t;
  }
  return config.targets.at(-1)!;
}

const product = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Throws unless a successful read is whole: sizes agree with shapes, nothing missing. */
function checkSuccess(target: FuzzTarget, value: unknown): void {
  if (target.reader === "checkpoint") {
    const sd = value as Map<string, { shape: number[]; data: ArrayLike<unknown> }>;
    if (!(sd instanceof Map) || sd.size === 0) throw new Error("not a non-empty state dict");
    for (const [k, t] of sd) {
      if (!ArrayBuffer.isView(t.data) || t.data.length !== product(t.shape)) {
        throw new Error(`tensor ${k}: data of ${t.data?.length} for shape [${t.shape}]`);
      }
    }
  } else if (target.reader === "npy") {
    const a = value as { shape: number[]; data: ArrayLike<unknown> };
    if (a.data.length !== product(a.shape))
      throw new Error(`npy data of ${a.data.length} for [${a.shape}]`);
  } else if (target.reader.startsWith("probe-")) {
    return;
  } else if (target.reader === "gnd") {
    const gt = value as { imlist: unknown[]; qimlist: unknown[]; gnd: unknown[] };
    if (gt.gnd.length !== gt.qimlist.length) throw new Error("gnd and qimlist differ in length");
  } else {
    const im = value as { width: number; height: number; data: Uint8Array };
    if (im.width < 1 || im.height < 1 || im.width * im.height > MAX_IMAGE_PIXELS) {
      throw new Error(`image of ${im.width}x${im.height}`);
    }
    if (im.data.length !== im.width * im.height * 3) throw new Error("BGR data of the wrong size");
  }
}

async function read(target: FuzzTarget, bytes: Uint8Array, index: number): Promise<unknown> {
  const path = join(config.dir, `case-${index}-${target.name}`);
  switch (target.reader) {
    case "checkpoint":
      // From memory for the big one, through a file (fd reads) for the others.
      if (bytes.length > 8 << 20 || index % 2 === 0) return loadCheckpointFromBytes(bytes, path);
      writeFileSync(path, bytes);
      return loadCheckpoint(path);
    case "npy":
      writeFileSync(path, bytes);
      return readNpy(path);
    case "gnd":
      writeFileSync(path, bytes);
      return readGroundTruth(path);
    case "image":
      return decodeImage(bytes, path);
    case "probe-alloc":
      // Caught and wrapped, as a reader would: the guard still reports it.
      try {
        return new Float64Array(guard.limit);
      } catch {
        throw new SuperglobalError("BAD_FILE", `${path}: probe`);
      }
    case "probe-hang":
      for (;;) {
        // a reader that never returns
      }
    case "probe-crash":
      process.exit(70); // as a native crash would end it: no "done"
  }
}

process.send?.({ type: "ready" });
for (let index = config.start; index < config.start + config.count; index++) {
  const target = targetOf(index);
  const { bytes, how } = mutate(
    seeds.get(target.path)!,
    target.format,
    caseSeed(config.seed, index),
  );
  guard.limit =
    target.reader === "image" ? MAX_IMAGE_PIXELS * 4 + (64 << 20) : 16 * bytes.length + (64 << 20);
  guard.tripped = "";
  const started = performance.now();
  let outcome = "ok";
  let problem: string | undefined;
  try {
    checkSuccess(target, await read(target, bytes, index));
  } catch (error) {
    if (error instanceof SuperglobalError) {
      outcome = error.code;
      if (!error.message.includes(join(config.dir, `case-${index}`))) {
        problem = `the error does not name the file: ${error.message}`;
      }
    } else {
      outcome = "exception";
      problem = error instanceof Error ? (error.stack ?? error.message) : String(error);
    }
  }
  if (guard.tripped !== "") problem = `unbounded allocation: ${guard.tripped}`;
  guard.limit = Number.POSITIVE_INFINITY;
  const message: CaseMessage = {
    type: "case",
    index,
    target: target.name,
    how,
    outcome,
    ms: performance.now() - started,
    ...(problem === undefined ? {} : { problem }),
  };
  process.send?.(message);
}
process.send?.({ type: "done", maxRssMiB: process.resourceUsage().maxRSS / 1024 });
process.disconnect?.();
