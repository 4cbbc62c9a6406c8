/**
 * Whether int8 inference pays off on this CPU. onnxruntime runs int8 convolutions everywhere, but
 * only with dot-product instructions (x86 AVX-512 VNNI or AVX-VNNI, Arm's dot product) are they
 * faster than float32; without them int8 is slower and less accurate, so it is refused with the
 * reason, unless SUPERGLOBAL_INT8=force says to run it anyway.
 */
import { readFileSync } from "node:fs";
import { SuperglobalError } from "../errors.ts";

/** The environment variable that overrides the refusal. */
export const INT8_OVERRIDE = "SUPERGLOBAL_INT8";

export interface CpuFacts {
  arch: string;
  platform: string;
  /** The CPU feature flags (Linux /proc/cpuinfo `flags` / `Features`); null: unknown. */
  flags: readonly string[] | null;
}

/** This machine's architecture, platform and CPU flags. */
export function cpuFacts(): CpuFacts {
  let flags: string[] | null = null;
  try {
    flags = parseCpuFlags(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    // not Linux: flags unknown
  }
  return { arch: process.arch, platform: process.platform, flags };
}

/** The flags of the first CPU in /proc/cpuinfo text (x86 `flags`, Arm `Features`). */
export function parseCpuFlags(cpuinfo: string): string[] {
  const line = /^(?:flags|Features)\s*:(.*)$/m.exec(cpuinfo);
  return line === null ? [] : (line[1] as string).trim().split(/\s+/);
}

/** null when int8 is fast here; otherwise why not, in words. */
export function int8Shortfall(facts: CpuFacts): string | null {
  const has = (f: string) => facts.flags?.includes(f) === true;
  if (facts.arch === "x64") {
    if (facts.flags === null)
      return "the CPU's instruction set could not be read (no /proc/cpuinfo)";
    if (has("avx512_vnni") || has("avx_vnni")) return null;
    return "this CPU has neither AVX-512 VNNI (avx512_vnni) nor AVX-VNNI (avx_vnni)";
  }
  if (facts.arch === "arm64") {
    // Every Apple silicon CPU has the dot-product instructions.
    if (facts.platform === "darwin") return null;
    if (facts.flags === null)
      return "the CPU's instruction set could not be read (no /proc/cpuinfo)";
    if (has("asimddp")) return null;
    return "this CPU lacks the Arm dot-product instructions (asimddp)";
  }
  return `int8 kernels are not tuned for ${facts.arch}`;
}

/** UNSUPPORTED naming what is missing, unless int8 is fast here or SUPERGLOBAL_INT8=force. */
export function assertInt8Supported(
  facts: CpuFacts = cpuFacts(),
  env: NodeJS.ProcessEnv = process.env,
): void {
  if (env[INT8_OVERRIDE] === "force") return;
  const shortfall = int8Shortfall(facts);
  if (shortfall === null) return;
  throw new SuperglobalError(
    "UNSUPPORTED",
    `precision int8: ${shortfall}, so int8 would run no faster than float32; use precision ` +
      `float32 (the exact preset), or set ${INT8_OVERRIDE}=force to run int8 anyway`,
    { input: "precision" },
  );
}
