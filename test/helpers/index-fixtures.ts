/** Deterministic test data for the index store tests (shared with their child processes). */
import { createHash } from "node:crypto";

export { mulberry32 as seeded } from "./random.ts";

/** A descriptor that depends only on `path`: finite, varied float32 values. */
export function descriptorFor(path: string, dim: number): Float32Array {
  let seed = 2166136261;
  for (let i = 0; i < path.length; i++) seed = Math.imul(seed ^ path.charCodeAt(i), 16777619);
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) out[i] = Math.sin((seed >>> 0) * 1e-6 + i * 0.7) * (1 + (i % 7));
  return out;
}

/** The sha256 a test entry claims (of its path: no file needed). */
export function hashOf(path: string): string {
  return createHash("sha256").update(path).digest("hex");
}
