/**
 * The seeded mutation fuzzer of every reader: checkpoints (zip and legacy), .npy files, ground
 * truths (.pkl and .json) and images. Cases run in a child process (fuzz-child.ts) so that a hang
 * is killed at its time limit and a crash is seen, both reported with the case that caused them
 * (reproducible from the seed and the case index); the run then goes on in a fresh child.
 * Used by test/fuzz-readers.test.ts (a few hundred cases) and the stress bench (thousands).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { writeNpy } from "../../src/io/npy.ts";
import type { CaseMessage, FuzzConfig, FuzzTarget } from "./fuzz-child.ts";
import { floats, Pickle, stateDictPickle, torchLegacy, torchZip } from "./hostile.ts";
import { assetsDir, fixture, hasShared } from "./shared.ts";

export type { FuzzTarget } from "./fuzz-child.ts";

const child = join(import.meta.dirname, "fuzz-child.ts");

export interface FuzzFailure {
  index: number;
  target: string;
  how: string;
  problem: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  /** Cases by outcome: "ok" or an error code. */
  outcomes: Record<string, number>;
  /** Cases by target. */
  targets: Record<string, number>;
  failures: FuzzFailure[];
  /** The slowest case. */
  maxMs: number;
  maxCase: string;
  /** Peak RSS of the child processes (MiB). */
  peakRssMiB: number;
  /** Child processes started (1 + one per hang or crash). */
  children: number;
}

export interface FuzzOptions {
  seed: number;
  cases: number;
  targets: FuzzTarget[];
  /** Scratch folder. */
  dir: string;
  /** A case taking longer is a hang: its child is killed (default 20 s). */
  caseLimitMs?: number;
  /** Called after every case (progress). */
  onCase?: (message: CaseMessage) => void;
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const limit = options.caseLimitMs ?? 20_000;
  mkdirSync(options.dir, { recursive: true });
  const report: FuzzReport = {
    seed: options.seed,
    cases: 0,
    outcomes: {},
    targets: {},
    failures: [],
    maxMs: 0,
    maxCase: "",
    peakRssMiB: 0,
    children: 0,
  };
  let next = 0;
  while (next < options.cases) {
    const config: FuzzConfig = {
      seed: options.seed,
      start: next,
      count: options.cases - next,
      targets: options.targets,
      dir: options.dir,
    };
    report.children += 1;
    next = await new Promise<number>((resolve) => {
      const proc = spawn(process.execPath, ["--import", "tsx", child], {
        stdio: ["ignore", "ignore", "pipe", "ipc"],
        env: { ...process.env, SUPERGLOBAL_FUZZ: JSON.stringify(config) },
      });
      let stderr = "";
      proc.stderr?.setEncoding("utf8");
      proc.stderr?.on("data", (chunk: string) => {
        stderr = (stderr + chunk).slice(-4000);
      });
      let current = config.start;
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      // Until "ready", the child is loading (a few seconds on a loaded machine).
      const arm = (ms: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          hung = true;
          proc.kill("SIGKILL");
        }, ms);
      };
      let hung = false;
      arm(limit + 30_000);
      proc.on(
        "message",
        (m: CaseMessage | { type: "ready" } | { type: "done"; maxRssMiB: number }) => {
          if (m.type === "ready") {
            arm(limit);
            return;
          }
          if (m.type === "done") {
            done = true;
            report.peakRssMiB = Math.max(report.peakRssMiB, m.maxRssMiB);
            return;
          }
          report.cases += 1;
          report.outcomes[m.outcome] = (report.outcomes[m.outcome] ?? 0) + 1;
          report.targets[m.target] = (report.targets[m.target] ?? 0) + 1;
          if (m.ms > report.maxMs) {
            report.maxMs = m.ms;
            report.maxCase = `${m.index} (${m.target}: ${m.how})`;
          }
          if (m.problem !== undefined) {
            report.failures.push({
              index: m.index,
              target: m.target,
              how: m.how,
              problem: m.problem,
            });
          }
          options.onCase?.(m);
          current = m.index + 1;
          arm(limit);
        },
      );
      proc.on("close", (code, signal) => {
        clearTimeout(timer);
        if (done && code === 0) {
          resolve(options.cases);
          return;
        }
        // A hang (killed here) or a crash: the case in flight is the culprit; go on after it.
        report.cases += 1;
        report.outcomes[hung ? "hang" : "crash"] =
          (report.outcomes[hung ? "hang" : "crash"] ?? 0) + 1;
        report.failures.push({
          index: current,
          target: "?",
          how: "see the seed and index",
          problem: hung
            ? `no result within ${limit} ms: killed`
            : `the child died (code ${code}, signal ${signal}): ${stderr.trim().slice(-1500)}`,
        });
        resolve(current + 1);
      });
    });
  }
  return report;
}

/**
 * The files to fuzz: the shared fixtures when present (checkpoints zip and legacy, .npy files,
 * the revisitop ground truths, the fixture images), and always seeds made here (a zip and a
 * legacy checkpoint with strided, offset and shared-storage tensors, .npy files of every dtype,
 * a small ground truth, images in every format), written into `dir`. `big` adds the 113 MB
 * checkpoint and the larger ground truth (stress runs).
 */
export async function fuzzTargets(dir: string, big = false): Promise<FuzzTarget[]> {
  mkdirSync(dir, { recursive: true });
  const targets: FuzzTarget[] = [];
  const made = (name: string, bytes: Uint8Array, t: Omit<FuzzTarget, "name" | "path">) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    targets.push({ name, path, ...t });
  };

  // Checkpoints: a float32 matrix, its transpose and a slice (one storage), an int64 vector and a
  // float64 scalar; the legacy one the same.
  const tensors = [
    { name: "w", key: "0", numel: 12, size: [3, 4], stride: [4, 1] },
    { name: "wt", key: "0", numel: 12, size: [4, 3], stride: [1, 4] },
    { name: "row", key: "0", numel: 12, offset: 4, size: [4], stride: [1] },
    { name: "ids", key: "1", storage: "LongStorage", numel: 3, size: [3], stride: [1] },
    { name: "bias", key: "2", storage: "DoubleStorage", numel: 1, size: [], stride: [] },
  ];
  const longs = new Uint8Array(new BigInt64Array([7n, -1n, 2n ** 40n]).buffer);
  const doubles = new Uint8Array(new Float64Array([0.25]).buffer);
  const pkl = stateDictPickle(tensors, (p: Pickle) => {
    p.str("epoch").global("numpy.core.multiarray", "scalar").str("x").tuple1().reduce().setitem();
  });
  made("made-zip.pth", torchZip(pkl, { "0": floats(12), "1": longs, "2": doubles }), {
    format: "zip",
    reader: "checkpoint",
  });
  made(
    "made-legacy.pth",
    torchLegacy(pkl, { "0": floats(12), "1": longs, "2": doubles }, { "1": 3, "2": 1 }),
    { format: "legacy", reader: "checkpoint" },
  );

  // .npy of every dtype, 1-D to 3-D.
  const npys: Array<[string, Parameters<typeof writeNpy>[1], number[]]> = [
    ["f32.npy", Float32Array.from({ length: 24 }, (_, i) => i / 3), [2, 3, 4]],
    ["f64.npy", Float64Array.from({ length: 10 }, (_, i) => i * 1e300), [10]],
    ["i32.npy", Int32Array.from({ length: 12 }, (_, i) => i - 6), [3, 4]],
    ["i64.npy", BigInt64Array.from({ length: 6 }, (_, i) => BigInt(i) * 2n ** 40n), [2, 3]],
    ["u8.npy", Uint8Array.from({ length: 48 }, (_, i) => i), [4, 4, 3]],
  ];
  for (const [name, data, shape] of npys) {
    const path = join(dir, name);
    writeNpy(path, data, shape);
    targets.push({ name, path, format: "npy", reader: "npy" });
  }

  // A small ground truth in both encodings.
  const gnd = {
    imlist: ["a", "b", "c", "d"],
    qimlist: ["q0", "q1"],
    gnd: [
      { bbx: [1.5, 2, 30, 40.25], easy: [0, 2], hard: [1], junk: [] },
      { bbx: [0, 0, 10, 10], easy: [3], hard: [], junk: [0, 1] },
    ],
  };
  made("gnd_made.json", Buffer.from(JSON.stringify(gnd)), { format: "json", reader: "gnd" });
  made("gnd_made.pkl", gndPickle(gnd), { format: "pickle", reader: "gnd" });

  // Images in every format the decoder reads.
  const px = Buffer.from(Array.from({ length: 24 * 16 * 3 }, (_, i) => (i * 37) & 0xff));
  const image = () => sharp(px, { raw: { width: 24, height: 16, channels: 3 } });
  made("made.png", await image().png().toBuffer(), { format: "png", reader: "image" });
  made("made.jpg", await image().jpeg().toBuffer(), { format: "jpeg", reader: "image" });
  made("made.webp", await image().webp().toBuffer(), { format: "image", reader: "image" });
  made("made.gif", await image().gif().toBuffer(), { format: "image", reader: "image" });
  made("made.tiff", await image().tiff().toBuffer(), { format: "image", reader: "image" });

  if (hasShared) {
    const shared = (name: string, path: string, t: Omit<FuzzTarget, "name" | "path">) => {
      if (existsSync(path)) targets.push({ name, path, ...t });
    };
    shared("zip_format_small.pth", fixture("zip_format_small.pth"), {
      format: "zip",
      reader: "checkpoint",
      weight: 3,
    });
    shared("legacy_format_small.pth", fixture("legacy_format_small.pth"), {
      format: "legacy",
      reader: "checkpoint",
      weight: 3,
    });
    for (const name of ["img0_desc32.npy", "img0_desc.npy", "img0_bgr.npy", "rerank0_ranks.npy"]) {
      shared(name, fixture(name), { format: "npy", reader: "npy" });
    }
    const gndDir = join(assetsDir, "revisitop-gnd");
    shared("gnd_roxford5k.pkl", join(gndDir, "gnd_roxford5k.pkl"), {
      format: "pickle",
      reader: "gnd",
      weight: 2,
    });
    shared("gnd_roxford5k.json", join(gndDir, "gnd_roxford5k.json"), {
      format: "json",
      reader: "gnd",
    });
    for (const [name, format] of [
      ["d_kite.jpg", "jpeg"],
      ["c_graf1_gray.png", "png"],
      ["a_leuvenA.png", "png"],
    ] as const) {
      shared(name, fixture(join("images", name)), { format, reader: "image" });
    }
    if (big) {
      shared("cvnet_r50_random.pyth", fixture("cvnet_r50_random.pyth"), {
        format: "zip",
        reader: "checkpoint",
        weight: 0.3,
      });
      shared("gnd_rparis6k.pkl", join(gndDir, "gnd_rparis6k.pkl"), {
        format: "pickle",
        reader: "gnd",
      });
    }
  }
  return targets;
}

/** A ground truth as protocol-2 pickle: dicts, lists of str, int and float. */
function gndPickle(gnd: {
  imlist: string[];
  qimlist: string[];
  gnd: Array<{ bbx: number[]; easy: number[]; hard: number[]; junk: number[] }>;
}): Uint8Array {
  const p = new Pickle().proto(2).emptyDict();
  const list = (xs: Array<string | number>) => {
    p.emptyList();
    if (xs.length === 0) return;
    p.mark();
    for (const x of xs) {
      if (typeof x === "string") p.str(x);
      else if (Number.isInteger(x)) p.int(x);
      else {
        const b = Buffer.alloc(8);
        b.writeDoubleBE(x);
        p.op(0x47).raw(b);
      }
    }
    p.appends();
  };
  p.str("imlist");
  list(gnd.imlist);
  p.setitem().str("qimlist");
  list(gnd.qimlist);
  p.setitem().str("gnd").emptyList().mark();
  for (const q of gnd.gnd) {
    p.emptyDict().mark();
    for (const key of ["bbx", "easy", "hard", "junk"] as const) {
      p.str(key);
      list(q[key]);
    }
    p.setitems();
  }
  return p.appends().setitem().stop().bytes();
}
