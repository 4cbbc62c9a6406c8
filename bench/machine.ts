/** What every benchmark result records about where it ran. */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { cpuFacts, int8Shortfall } from "../src/runtime/cpu-features.ts";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  onnxruntime: string;
  os: string;
  date: string;
  /** The CPU's vector-instruction flags (/proc/cpuinfo: SSE/AVX/AMX/FMA, Arm SIMD; empty where unreadable). */
  cpuFlags: string[];
  /** Whether int8 runs fast here (VNNI / dot product), or why not. */
  int8: string;
}

export function machine(): Machine {
  let os: string = process.platform;
  try {
    os = execFileSync("uname", ["-sr"], { encoding: "utf8" }).trim();
  } catch {
    // keep the platform name
  }
  return {
    cpu: cpus()[0]?.model ?? "unknown",
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    onnxruntime: "1.30.0",
    os,
    date: new Date().toISOString(),
    cpuFlags: (cpuFacts().flags ?? []).filter((f) =>
      /^(sse|ssse|avx|amx|fma|f16c|asimd|sve|i8mm|bf16)/.test(f),
    ),
    int8: int8Shortfall(cpuFacts()) ?? "fast (VNNI / dot product)",
  };
}

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results");

/** Writes `bench/results/<name>.json` (full record) and `<name>.md` (the human summary). */
export function saveResult(name: string, record: object, summary: string): void {
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  const md = join(resultsDir, `${name}.md`);
  writeFileSync(md, `${summary}\n`);
  // Format both as the repository's linter wants them (`npm run lint` checks bench/).
  const biome = join(dirname(resultsDir), "..", "node_modules", ".bin", "biome");
  try {
    execFileSync(biome, ["format", "--write", file, md], { stdio: "ignore" });
  } catch {
    process.stdout.write("(results not formatted: biome not found or failed)\n");
  }
  process.stdout.write(`\nresults: ${file}\n`);
}

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Runs a Python peer with Debian's system python3 (where python3-torch/faiss live). */
export function python(script: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  return execFileSync("/usr/bin/python3", [script, ...args], {
    encoding: "utf8",
    maxBuffer: 1 << 28,
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
}

/** Seeded pseudo-random numbers (mulberry32), so bench data is the same from run to run. */
export class SeededRandom {
  private state: number;
  private spare = Number.NaN;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = Math.imul(this.state ^ (this.state >>> 15), 1 | this.state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal (Box-Muller; the second value of each pair serves the next call). */
  normal(): number {
    if (!Number.isNaN(this.spare)) {
      const v = this.spare;
      this.spare = Number.NaN;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.uniform()));
    const a = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }

  /** Fills rows [from, to) of a row-major matrix with random unit vectors (uniform directions). */
  unitRows(out: Float32Array, cols: number, from = 0, to = out.length / cols): void {
    for (let r = from; r < to; r++) {
      let norm = 0;
      for (let i = r * cols; i < (r + 1) * cols; i++) {
        const v = this.normal();
        out[i] = v;
        norm += v * v;
      }
      normalizeRow(out, r, cols, Math.sqrt(norm));
    }
  }
}

/** Divides row r by `norm` (its L2 norm; recomputed when omitted). */
export function normalizeRow(data: Float32Array, r: number, cols: number, norm?: number): void {
  let n = norm;
  if (n === undefined) {
    n = 0;
    for (let i = r * cols; i < (r + 1) * cols; i++) n += data[i]! * data[i]!;
    n = Math.sqrt(n);
  }
  for (let i = r * cols; i < (r + 1) * cols; i++) data[i] = data[i]! / n;
}

/** Peak resident memory of this process so far, in MiB (Linux reports KiB, like Python's ru_maxrss). */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** Seconds all CPUs spent in all states, busy (user, nice, system, irq) and stolen, from /proc/stat. */
export interface CpuTimes {
  total: number;
  busy: number;
  steal: number;
}

export function cpuTimes(): CpuTimes {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1);
    const v = f.map((x) => Number(x) / 100); // USER_HZ is 100 on Linux
    const at = (i: number) => v[i] ?? 0;
    return {
      total: v.reduce((a, b) => a + b, 0),
      busy: at(0) + at(1) + at(2) + at(5) + at(6),
      steal: at(7),
    };
  } catch {
    return { total: 0, busy: 0, steal: 0 };
  }
}

/**
 * How disturbed a measured phase was: CPU seconds that other processes used while it ran (all
 * busy time minus `ownCpuS`, what the measured process reports for itself), and the share of
 * time the hypervisor stole. Benchmarks on this shared 2-core VM are only as good as these.
 */
export function contention(
  before: CpuTimes,
  after: CpuTimes,
  ownCpuS: number,
): { otherCpuS: number; stealShare: number } {
  const total = after.total - before.total;
  return {
    otherCpuS: Math.max(0, after.busy - before.busy - ownCpuS),
    stealShare: total > 0 ? (after.steal - before.steal) / total : 0,
  };
}

/** CPU seconds (user + system, all threads) this process used so far. */
export function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
