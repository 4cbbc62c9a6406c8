/** What every benchmark result records about where it ran. */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  onnxruntime: string;
  os: string;
  date: string;
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
  };
}

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), "results");

/** Writes `bench/results/<name>.json` (full record) and `<name>.md` (the human summary). */
export function saveResult(name: string, record: object, summary: string): void {
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
  writeFileSync(join(resultsDir, `${name}.md`), `${summary}\n`);
  mkdirSync(dirname(file), { recursive: true });
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
