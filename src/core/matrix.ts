/**
 * Dense row-major matrices of descriptors, the one shape every stage passes vectors in, and the
 * one check of a matrix argument.
 */
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";

/** A dense row-major float32 matrix. */
export interface Float32Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

/** Descriptors may be float32 (as stored) or float64 (e.g. exact test vectors). */
export type Vectors = Float32Array | Float64Array;

/** A dense row-major matrix of float32 or float64 descriptors. */
export interface VectorMatrix {
  data: Vectors;
  rows: number;
  cols: number;
}

/**
 * Validates a matrix argument: its type, data length and positive dimensions. Float64 data is
 * accepted only where the caller says so (the reranker takes exact float64 test vectors).
 */
export function checkMatrix(
  name: string,
  m: { data: Float32Array | Float64Array; rows: number; cols: number },
  minRows = 0,
  allowFloat64 = false,
): void {
  const typeOk =
    m !== null &&
    typeof m === "object" &&
    (m.data instanceof Float32Array || (allowFloat64 && m.data instanceof Float64Array));
  if (!typeOk) {
    invalidArgument(
      name,
      `a matrix { data: Float32Array${allowFloat64 ? " | Float64Array" : ""}, rows, cols }`,
      m,
    );
  }
  assertInteger(`${name}.rows`, m.rows, minRows);
  assertInteger(`${name}.cols`, m.cols, 1);
  if (m.data.length !== m.rows * m.cols) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${name}.data has ${m.data.length} values but ${name} is ${m.rows}×${m.cols} (${m.rows * m.cols})`,
      { input: name },
    );
  }
}
