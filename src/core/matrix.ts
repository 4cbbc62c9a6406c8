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
  /** What errors call it (e.g. the file it came from); default: the argument's name. */
  name?: string;
}

/** Descriptors may be float32 (as stored) or float64 (e.g. exact test vectors). */
export type Vectors = Float32Array | Float64Array;

/** A dense row-major matrix of float32 or float64 descriptors. */
export interface VectorMatrix {
  data: Vectors;
  rows: number;
  cols: number;
  /** What errors call it (e.g. the file it came from); default: the argument's name. */
  name?: string;
}

/** What errors call matrix `m`, passed as argument `arg`: its own name if it has one. */
export function matrixLabel(arg: string, m: { name?: string | undefined }): string {
  return typeof m.name === "string" && m.name !== "" ? m.name : arg;
}

/** INVALID_ARGUMENT for queries whose dimension is not the database's, naming both. */
export function dimensionMismatch(
  db: { cols: number; name?: string | undefined },
  queries: { cols: number; name?: string | undefined },
): SuperglobalError {
  const input = matrixLabel("queries", queries);
  const message =
    db.name === undefined && queries.name === undefined
      ? `queries have ${queries.cols} dimensions but db rows have ${db.cols}`
      : `${input}: queries have ${queries.cols} dimensions but the database ${matrixLabel("db", db)} has ${db.cols}`;
  return new SuperglobalError("INVALID_ARGUMENT", message, { input });
}

/** Whether the `d` values from `offset` are all finite (no NaN, no ±Infinity). */
export function rowIsFinite(data: Vectors, offset: number, d: number): boolean {
  // 0·v is 0 for every finite v and NaN for NaN and ±Infinity: one comparison per row. Four
  // sums keep the loop from waiting on one chain of additions.
  let z0 = 0;
  let z1 = 0;
  let z2 = 0;
  let z3 = 0;
  const end = offset + d;
  const end4 = offset + (d & ~3);
  let i = offset;
  for (; i < end4; i += 4) {
    z0 += data[i]! * 0;
    z1 += data[i + 1]! * 0;
    z2 += data[i + 2]! * 0;
    z3 += data[i + 3]! * 0;
  }
  for (; i < end; i++) z0 += data[i]! * 0;
  return z0 + z1 + z2 + z3 === 0;
}

/** INVALID_ARGUMENT unless every query row is finite (a failed image's NaN row, say). */
export function assertFiniteRows(arg: string, m: VectorMatrix): void {
  for (let r = 0; r < m.rows; r++) {
    if (!rowIsFinite(m.data, r * m.cols, m.cols)) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${matrixLabel(arg, m)} row ${r} is not finite (NaN or infinite values: an image that failed to extract?)`,
        { input: matrixLabel(arg, m) },
      );
    }
  }
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
