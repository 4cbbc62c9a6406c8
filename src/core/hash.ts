/** Content hashes that identify weights, so a model is known by what it computes, not its file name. */
import { createHash } from "node:crypto";

/** sha256 of named float32 tensors, in the order given (names and shapes included). */
export function hashWeights(
  tensors: Iterable<{ name: string; dims: readonly number[]; data: Float32Array }>,
): string {
  const hash = createHash("sha256");
  for (const t of tensors) {
    hash.update(`${t.name}:${t.dims.join("x")};`);
    hash.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return hash.digest("hex");
}
