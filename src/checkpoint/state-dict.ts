/**
 * The in-memory form of a PyTorch state dict: tensor names to typed arrays with shapes.
 * Readers (zip and legacy formats) produce it; the backbone and pooling read weights from it.
 */
import { SuperglobalError } from "../errors.ts";

export type TensorDtype = "float32" | "float64" | "float16" | "int64" | "int32" | "uint8" | "bool";

export interface Tensor {
  dtype: TensorDtype;
  shape: number[];
  /** C-order values; float16 tensors are widened to Float32Array, bool to Uint8Array. */
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;
}

/** Tensor names in the order the checkpoint stores them. */
export type StateDict = Map<string, Tensor>;

/**
 * The float32 values of `key`, checking the shape when given. Float64 tensors are narrowed.
 * `source` names the checkpoint in errors.
 */
export function getFloat32(
  sd: StateDict,
  key: string,
  shape?: readonly number[],
  source = "checkpoint",
): Float32Array {
  const t = sd.get(key);
  if (t === undefined) {
    throw new SuperglobalError("NOT_FOUND", `${source}: missing tensor ${key}`, { input: source });
  }
  if (
    shape !== undefined &&
    (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
  ) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${source}: tensor ${key} has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`,
      { input: source },
    );
  }
  if (t.data instanceof Float32Array) return t.data;
  if (t.data instanceof Float64Array) return Float32Array.from(t.data);
  throw new SuperglobalError(
    "BAD_FILE",
    `${source}: tensor ${key} is ${t.dtype}, expected a float tensor`,
    {
      input: source,
    },
  );
}

/** Throws one error naming every key in `keys` that `sd` lacks. */
export function requireKeys(sd: StateDict, keys: Iterable<string>, source = "checkpoint"): void {
  const missing = [...keys].filter((k) => !sd.has(k));
  if (missing.length > 0) {
    const shown = missing.slice(0, 10).join(", ");
    const more = missing.length > 10 ? ` and ${missing.length - 10} more` : "";
    throw new SuperglobalError(
      "NOT_FOUND",
      `${source}: missing ${missing.length} required tensor(s): ${shown}${more}`,
      { input: source },
    );
  }
}
