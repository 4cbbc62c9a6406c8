/**
 * PCA-whitening of descriptors, learned from real photos (not the collection being searched):
 * centre on the training mean, rotate onto the covariance's eigenvectors, scale each component by
 * (eigenvalue + shrinkage · mean eigenvalue)^−1/2, keep every component, L2-normalise after. It
 * runs inside the descriptor head as its FC layer: W·x + b with b = −W·mean.
 *
 * Learned from n ≪ C samples, the covariance has rank ≤ n − 1: its eigenvectors come from the
 * n × n Gram matrix of the centred samples (the same non-zero eigenvalues), and every direction
 * outside their span shares the one scale shrinkage^−1/2. So the whitening is stored factored —
 * the k eigenvectors V, their scales a and the common scale b of the rest — and the C × C matrix
 * W = V·diag(a − b)·Vᵀ + b·I is made when a model is built.
 */
import { EigenvalueDecomposition, Matrix } from "ml-matrix";
import { assertInteger, assertNumber, badFile, invalidArgument } from "../errors.ts";
import { readNpy, writeNpy } from "../io/npy.ts";
import type { HeadWeights } from "./head-graph.ts";

export interface Whitening {
  /** Descriptor channels C. */
  channels: number;
  /** Training mean [C]. */
  mean: Float64Array;
  /** k eigenvectors of the training covariance, row-major [k, C] (unit rows). */
  vectors: Float64Array;
  /** Scale of each eigenvector's component [k]. */
  scales: Float64Array;
  /** Scale of every direction outside the eigenvectors' span. */
  rest: number;
}

export interface LearnWhiteningOptions {
  /** Regularisation, as a fraction of the mean eigenvalue (default 0.1). */
  shrinkage?: number;
}

/**
 * Learns a whitening from `rows` L2-normalised descriptors (row-major [n, channels]); n ≥ 2.
 * Eigenvalues below 1e-12 of the largest are treated as zero (outside the span).
 */
export function learnWhitening(
  data: Float32Array | Float64Array,
  rows: number,
  channels: number,
  options: LearnWhiteningOptions = {},
): Whitening {
  assertInteger("rows", rows, 2);
  assertInteger("channels", channels, 1);
  if (data.length !== rows * channels) {
    invalidArgument("data", `${rows} × ${channels} values`, data);
  }
  const shrinkage = assertNumber("shrinkage", options.shrinkage ?? 0.1, Number.MIN_VALUE);
  const mean = new Float64Array(channels);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < channels; c++) mean[c] += data[r * channels + c] as number;
  for (let c = 0; c < channels; c++) mean[c] = (mean[c] as number) / rows;
  const centred = new Float64Array(rows * channels);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) {
      centred[r * channels + c] = (data[r * channels + c] as number) - (mean[c] as number);
    }
  }
  // Covariance (1/n)·XᵀX shares its non-zero eigenvalues with the Gram (1/n)·XXᵀ; an eigenvector
  // u of the Gram gives Xᵀu / √(n·λ) for the covariance.
  const gram = new Matrix(rows, rows);
  for (let i = 0; i < rows; i++) {
    for (let j = i; j < rows; j++) {
      let s = 0;
      for (let c = 0; c < channels; c++)
        s += (centred[i * channels + c] as number) * (centred[j * channels + c] as number);
      gram.set(i, j, s / rows);
      gram.set(j, i, s / rows);
    }
  }
  const evd = new EigenvalueDecomposition(gram, { assumeSymmetric: true });
  const values = evd.realEigenvalues;
  const u = evd.eigenvectorMatrix;
  const largest = Math.max(...values);
  // The covariance has C eigenvalues: these, and zeros; their mean is the trace / C.
  const meanEigen = values.reduce((a, b) => a + Math.max(b, 0), 0) / channels;
  const floor = shrinkage * meanEigen;
  const kept = values.map((v, i) => [v, i] as const).filter(([v]) => v > 1e-12 * largest);
  const k = kept.length;
  const vectors = new Float64Array(k * channels);
  const scales = new Float64Array(k);
  kept.forEach(([value, index], row) => {
    scales[row] = 1 / Math.sqrt(value + floor);
    const norm = Math.sqrt(rows * value);
    for (let r = 0; r < rows; r++) {
      const weight = u.get(r, index) / norm;
      if (weight === 0) continue;
      for (let c = 0; c < channels; c++) {
        vectors[row * channels + c] += weight * (centred[r * channels + c] as number);
      }
    }
  });
  return { channels, mean, vectors, scales, rest: 1 / Math.sqrt(floor) };
}

/** The head's FC for a whitening: W = V·diag(a − b)·Vᵀ + b·I, bias −W·mean (float32). */
export function whiteningHead(w: Whitening): HeadWeights {
  const { channels: C, vectors, scales, rest, mean } = w;
  const k = scales.length;
  const full = new Float64Array(C * C);
  for (let i = 0; i < C; i++) full[i * C + i] = rest;
  for (let r = 0; r < k; r++) {
    const d = (scales[r] as number) - rest;
    const v = vectors.subarray(r * C, (r + 1) * C);
    for (let i = 0; i < C; i++) {
      const di = d * (v[i] as number);
      if (di === 0) continue;
      const row = i * C;
      for (let j = 0; j < C; j++) full[row + j] = (full[row + j] as number) + di * (v[j] as number);
    }
  }
  const bias = new Float32Array(C);
  for (let i = 0; i < C; i++) {
    let s = 0;
    for (let j = 0; j < C; j++) s += (full[i * C + j] as number) * (mean[j] as number);
    bias[i] = -s;
  }
  return { fcWeight: Float32Array.from(full), fcBias: bias, poolP: 3 };
}

/** Files of a whitening folder. */
const FILES = { mean: "mean.npy", vectors: "vectors.npy", scales: "scales.npy" } as const;

/**
 * Writes a whitening as three .npy files into `dir`: mean and scales in float64 (`rest` is the
 * last scale), the eigenvectors in float32 (half the size; the head's FC is float32 anyway, and
 * unit vectors lose ~1e-7 relative). `readWhitening` reads either precision.
 */
export function writeWhitening(dir: string, w: Whitening): void {
  writeNpy(`${dir}/${FILES.mean}`, w.mean, [w.channels]);
  writeNpy(`${dir}/${FILES.vectors}`, Float32Array.from(w.vectors), [w.scales.length, w.channels]);
  const scales = new Float64Array(w.scales.length + 1);
  scales.set(w.scales);
  scales[w.scales.length] = w.rest;
  writeNpy(`${dir}/${FILES.scales}`, scales, [scales.length]);
}

/** Reads a whitening written by `writeWhitening`; BAD_FILE naming the file on any mismatch. */
export function readWhitening(dir: string): Whitening {
  const mean = readNpy(`${dir}/${FILES.mean}`);
  const vectors = readNpy(`${dir}/${FILES.vectors}`);
  const scales = readNpy(`${dir}/${FILES.scales}`);
  const C = mean.shape[0] as number;
  const k = (scales.shape[0] as number) - 1;
  if (mean.shape.length !== 1 || scales.shape.length !== 1 || k < 0) {
    throw badFile(dir, "a whitening needs mean [C] and scales [k + 1]");
  }
  for (const [file, a] of [
    [FILES.mean, mean],
    [FILES.vectors, vectors],
    [FILES.scales, scales],
  ] as const) {
    if (a.dtype !== "float32" && a.dtype !== "float64") {
      throw badFile(`${dir}/${file}`, `expected float32 or float64 values, found ${a.dtype}`);
    }
  }
  if (vectors.shape.length !== 2 || vectors.shape[0] !== k || vectors.shape[1] !== C) {
    throw badFile(
      `${dir}/${FILES.vectors}`,
      `expected shape [${k}, ${C}], found [${vectors.shape}]`,
    );
  }
  const s = Float64Array.from(scales.data as ArrayLike<number>);
  return {
    channels: C,
    mean: Float64Array.from(mean.data as ArrayLike<number>),
    vectors: Float64Array.from(vectors.data as ArrayLike<number>),
    scales: s.subarray(0, k),
    rest: s[k] as number,
  };
}
