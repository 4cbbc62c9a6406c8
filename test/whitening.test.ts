/**
 * The PCA-whitening (src/pooling/whitening.ts) against a direct float64 reference (the C×C
 * covariance's eigendecomposition, computed here with ml-matrix); its effect on the training data;
 * the head's W·x + b against the factored form; the .npy round trip and bad files; and the
 * whitening that ships with the default model, on a real photo.
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, rmSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { EigenvalueDecomposition, Matrix } from "ml-matrix";
import { DEFAULT_WHITENING_DIR } from "../src/descriptor/default-model.ts";
import { Extractor } from "../src/descriptor/extractor.ts";
import { SuperglobalError } from "../src/errors.ts";
import { writeNpy } from "../src/io/npy.ts";
import {
  learnWhitening,
  readWhitening,
  type Whitening,
  whiteningHead,
  writeWhitening,
} from "../src/pooling/whitening.ts";
import { mulberry32 as random } from "./helpers/random.ts";
import { assetsDir } from "./helpers/shared.ts";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "superglobal-whitening-"));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * `rows` L2-normalised non-negative descriptors of `channels` values with correlated channels
 * (as GeM vectors are): a few shared factors plus noise.
 */
function descriptors(rows: number, channels: number, seed: number): Float64Array {
  const next = random(seed);
  const factors = 3;
  const loadings = Array.from({ length: factors * channels }, () => next());
  const data = new Float64Array(rows * channels);
  for (let r = 0; r < rows; r++) {
    const f = Array.from({ length: factors }, () => next());
    let norm = 0;
    for (let c = 0; c < channels; c++) {
      let v = 0.3 * next();
      for (let k = 0; k < factors; k++) v += f[k]! * loadings[k * channels + c]!;
      data[r * channels + c] = v;
      norm += v * v;
    }
    for (let c = 0; c < channels; c++) data[r * channels + c]! /= Math.sqrt(norm);
  }
  return data;
}

interface Reference {
  mean: Float64Array;
  /** (1/n)·XcᵀXc. */
  cov: Matrix;
  /** W = E·diag((λ + s·mean λ)^−1/2)·Eᵀ over all C eigenpairs (λ < 0 from rounding taken as 0). */
  w: Matrix;
  /** The eigenvalues and eigenvectors (columns) of cov. */
  values: number[];
  vectors: Matrix;
}

/** The whitening computed directly on the C×C covariance, in float64. */
function reference(
  data: Float64Array,
  rows: number,
  channels: number,
  shrinkage: number,
): Reference {
  const mean = new Float64Array(channels);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < channels; c++) mean[c]! += data[r * channels + c]! / rows;
  const x = new Matrix(rows, channels);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) x.set(r, c, data[r * channels + c]! - mean[c]!);
  }
  const cov = x.transpose().mmul(x).div(rows);
  const evd = new EigenvalueDecomposition(cov, { assumeSymmetric: true });
  const values = evd.realEigenvalues.map((v) => Math.max(v, 0));
  const vectors = evd.eigenvectorMatrix;
  const floor = (shrinkage * values.reduce((a, b) => a + b, 0)) / channels;
  const scale = Matrix.diag(values.map((v) => 1 / Math.sqrt(v + floor)));
  const w = vectors.mmul(scale).mmul(vectors.transpose());
  return { mean, cov, w, values, vectors };
}

/** The full W of a factored whitening, in float64: V·diag(a − b)·Vᵀ + b·I. */
function fullMatrix(wh: Whitening): Matrix {
  const C = wh.channels;
  const m = Matrix.eye(C, C).mul(wh.rest);
  for (let r = 0; r < wh.scales.length; r++) {
    const d = wh.scales[r]! - wh.rest;
    for (let i = 0; i < C; i++) {
      for (let j = 0; j < C; j++) {
        m.set(i, j, m.get(i, j) + d * wh.vectors[r * C + i]! * wh.vectors[r * C + j]!);
      }
    }
  }
  return m;
}

function maxAbsDiff(a: Matrix, b: Matrix): number {
  let m = 0;
  for (let i = 0; i < a.rows; i++) {
    for (let j = 0; j < a.columns; j++) m = Math.max(m, Math.abs(a.get(i, j) - b.get(i, j)));
  }
  return m;
}

function maxAbs(m: Matrix): number {
  return Math.max(...m.to1DArray().map(Math.abs));
}

// n < C (the usual case: a few hundred photos, 1792 channels) and n > C.
for (const [rows, channels] of [
  [7, 12],
  [30, 8],
] as const) {
  for (const shrinkage of [0.1, 0.5]) {
    test(`learnWhitening equals the covariance's whitening (n ${rows}, C ${channels}, shrinkage ${shrinkage})`, () => {
      const data = descriptors(rows, channels, rows * 31 + channels);
      const wh = learnWhitening(data, rows, channels, { shrinkage });
      const ref = reference(data, rows, channels, shrinkage);
      assert.equal(wh.channels, channels);
      assert.deepEqual(
        Array.from(wh.mean, (v, c) => Math.abs(v - ref.mean[c]!) < 1e-15),
        new Array(channels).fill(true),
      );
      // The span holds min(n − 1, C) directions.
      assert.equal(wh.scales.length, Math.min(rows - 1, channels));
      const w = fullMatrix(wh);
      const diff = maxAbsDiff(w, ref.w);
      assert.ok(diff < 1e-9 * maxAbs(ref.w), `W differs by ${diff}`);
      // Eigenvectors: unit rows, orthogonal.
      for (let r = 0; r < wh.scales.length; r++) {
        for (let s = r; s < wh.scales.length; s++) {
          let dot = 0;
          for (let c = 0; c < channels; c++) {
            dot += wh.vectors[r * channels + c]! * wh.vectors[s * channels + c]!;
          }
          assert.ok(Math.abs(dot - (r === s ? 1 : 0)) < 1e-10, `V·Vᵀ[${r},${s}] = ${dot}`);
        }
      }
    });
  }
}

test("whitened training data: covariance E·diag(λ/(λ + s·mean λ))·Eᵀ, the identity on the span up to shrinkage", () => {
  const [rows, channels] = [9, 14];
  const data = descriptors(rows, channels, 5);
  for (const shrinkage of [0.1, 1e-6]) {
    const wh = learnWhitening(data, rows, channels, { shrinkage });
    const ref = reference(data, rows, channels, shrinkage);
    const w = fullMatrix(wh);
    const whitenedCov = w.mmul(ref.cov).mmul(w.transpose());
    const floor = (shrinkage * ref.values.reduce((a, b) => a + b, 0)) / channels;
    const expected = ref.vectors
      .mmul(Matrix.diag(ref.values.map((v) => v / (v + floor))))
      .mmul(ref.vectors.transpose());
    const diff = maxAbsDiff(whitenedCov, expected);
    assert.ok(diff < 1e-8, `shrinkage ${shrinkage}: whitened covariance differs by ${diff}`);
    // On the span of the centred data (the projector V·Vᵀ) the whitened covariance is the
    // identity but for the shrinkage: each component's variance is λ/(λ + floor) ≥ 1 − floor/λ.
    const v = new Matrix(wh.scales.length, channels);
    for (let r = 0; r < wh.scales.length; r++) {
      for (let c = 0; c < channels; c++) v.set(r, c, wh.vectors[r * channels + c]!);
    }
    const spanValues = ref.values.filter((x) => x > 1e-12 * Math.max(...ref.values));
    assert.equal(spanValues.length, wh.scales.length);
    const bound = floor / Math.min(...spanValues);
    const d = maxAbsDiff(whitenedCov, v.transpose().mmul(v));
    assert.ok(
      d <= bound + 1e-8,
      `shrinkage ${shrinkage}: ${d} from the identity on the span (bound ${bound})`,
    );
    if (shrinkage === 1e-6) assert.ok(d < 1e-3, `not the identity on the span: ${d}`);
    for (let r = 0; r < wh.scales.length; r++) {
      const e = Matrix.rowVector(v.getRow(r));
      const variance = e.mmul(whitenedCov).mmul(e.transpose()).get(0, 0);
      assert.ok(
        variance <= 1 + 1e-8 && variance >= 1 - bound - 1e-8,
        `component ${r}: ${variance}`,
      );
    }
  }
});

test("whiteningHead: W·x + b equals the factored form rest·(x − m) + Vᵀ((a − rest) ⊙ V(x − m))", () => {
  const [rows, channels] = [11, 16];
  const data = descriptors(rows, channels, 9);
  const wh = learnWhitening(data, rows, channels);
  const head = whiteningHead(wh);
  assert.equal(head.fcWeight.length, channels * channels);
  assert.equal(head.fcBias.length, channels);
  const probes = descriptors(4, channels, 77);
  for (let p = 0; p < 4; p++) {
    const x = probes.subarray(p * channels, (p + 1) * channels);
    const z = Array.from(x, (v, c) => v - wh.mean[c]!);
    const factored = z.map((v) => wh.rest * v);
    for (let r = 0; r < wh.scales.length; r++) {
      let dot = 0;
      for (let c = 0; c < channels; c++) dot += wh.vectors[r * channels + c]! * z[c]!;
      const f = (wh.scales[r]! - wh.rest) * dot;
      for (let c = 0; c < channels; c++) factored[c]! += f * wh.vectors[r * channels + c]!;
    }
    let scale = 0;
    for (const v of factored) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < channels; i++) {
      let y = head.fcBias[i]!;
      for (let j = 0; j < channels; j++) y += head.fcWeight[i * channels + j]! * x[j]!;
      // fcWeight and fcBias are float32: relative agreement to float32 rounding of W and W·m.
      assert.ok(
        Math.abs(y - factored[i]!) < 1e-5 * scale,
        `probe ${p}, row ${i}: ${y} vs ${factored[i]}`,
      );
    }
  }
});

test("learnWhitening refuses bad arguments", () => {
  const data = descriptors(5, 4, 1);
  const invalid = (e: unknown) => e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT";
  assert.throws(() => learnWhitening(data, 1, 4), invalid);
  assert.throws(() => learnWhitening(data, 5, 5), invalid);
  assert.throws(() => learnWhitening(data, 5, 4, { shrinkage: 0 }), invalid);
  assert.throws(() => learnWhitening(data, 5, 4, { shrinkage: Number.NaN }), invalid);
});

function sameBits(a: Float64Array, b: Float64Array, label: string): void {
  assert.equal(a.length, b.length, label);
  for (let i = 0; i < a.length; i++)
    assert.ok(Object.is(a[i], b[i]), `${label}[${i}]: ${a[i]} vs ${b[i]}`);
}

test("writeWhitening/readWhitening: an exact round trip", () => {
  const wh = learnWhitening(descriptors(10, 12, 3), 10, 12, { shrinkage: 0.1 });
  const dir = tempDir();
  writeWhitening(dir, wh);
  const back = readWhitening(dir);
  assert.equal(back.channels, wh.channels);
  assert.ok(Object.is(back.rest, wh.rest));
  sameBits(back.mean, wh.mean, "mean");
  sameBits(back.scales, wh.scales, "scales");
  // Vectors are stored as float32 (see whitening.ts): the stored values, exactly.
  sameBits(back.vectors, Float64Array.from(Float32Array.from(wh.vectors)), "vectors");
  // And a second trip changes nothing.
  const dir2 = tempDir();
  writeWhitening(dir2, back);
  const again = readWhitening(dir2);
  sameBits(again.vectors, back.vectors, "vectors (second trip)");
  sameBits(again.mean, back.mean, "mean (second trip)");
});

test("readWhitening: a missing, truncated or misshapen file is named in the error", () => {
  const wh = learnWhitening(descriptors(6, 5, 4), 6, 5);
  const good = tempDir();
  writeWhitening(good, wh);
  const copy = (): string => {
    const d = tempDir();
    for (const f of ["mean.npy", "vectors.npy", "scales.npy"])
      copyFileSync(join(good, f), join(d, f));
    return d;
  };
  const names = (file: string) => (e: unknown) =>
    e instanceof SuperglobalError && e.message.includes(file);

  const missing = copy();
  rmSync(join(missing, "vectors.npy"));
  assert.throws(() => readWhitening(missing), names(join(missing, "vectors.npy")));

  const truncated = copy();
  truncateSync(join(truncated, "mean.npy"), 70);
  assert.throws(() => readWhitening(truncated), names(join(truncated, "mean.npy")));

  const wrongVectors = copy();
  writeNpy(join(wrongVectors, "vectors.npy"), new Float32Array(5 * 4), [4, 5]);
  assert.throws(
    () => readWhitening(wrongVectors),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_FILE" &&
      e.message.includes(join(wrongVectors, "vectors.npy")),
  );

  const wrongMean = copy();
  writeNpy(join(wrongMean, "mean.npy"), new Float64Array(10), [2, 5]);
  assert.throws(
    () => readWhitening(wrongMean),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "BAD_FILE" && e.message.includes(wrongMean),
  );

  const wrongScales = copy();
  writeNpy(join(wrongScales, "scales.npy"), new Float64Array(3), [3]);
  assert.throws(() => readWhitening(wrongScales), names(wrongScales));

  const integers = copy();
  writeNpy(join(integers, "scales.npy"), new Int32Array(wh.scales.length + 1), [
    wh.scales.length + 1,
  ]);
  assert.throws(
    () => readWhitening(integers),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_FILE" &&
      e.message.includes(join(integers, "scales.npy")),
  );
});

test("the shipped whitening loads: 1792 channels, unit eigenvectors, positive scales", () => {
  const wh = readWhitening(DEFAULT_WHITENING_DIR);
  assert.equal(wh.channels, 1792);
  assert.ok(wh.scales.length > 0 && wh.scales.length < 1792);
  assert.ok(wh.mean.every(Number.isFinite));
  assert.ok(wh.scales.every((s) => Number.isFinite(s) && s > 0));
  assert.ok(Number.isFinite(wh.rest) && wh.rest > 0);
  for (let r = 0; r < wh.scales.length; r++) {
    let norm = 0;
    for (let c = 0; c < 1792; c++) norm += wh.vectors[r * 1792 + c]! ** 2;
    assert.ok(Math.abs(Math.sqrt(norm) - 1) < 1e-5, `eigenvector ${r}: norm ${Math.sqrt(norm)}`);
  }
});

const photo = join(assetsDir, "debian-photos", "darknet", "dog.jpg");
const photoOnly = existsSync(photo)
  ? {}
  : { skip: `test photo not found at ${photo} (set SUPERGLOBAL_SHARED)` };

test(
  "the default model with the shipped whitening: a finite unit-norm descriptor, not the unwhitened one",
  photoOnly,
  async () => {
    const cacheDir = tempDir();
    const whitened = await Extractor.create({ cacheDir, threads: 2 });
    const plain = await Extractor.create({ cacheDir, whitening: null, threads: 2 });
    try {
      const d = await whitened.extract(photo);
      const u = await plain.extract(photo);
      assert.equal(d.length, 1792);
      assert.equal(whitened.dim, 1792);
      let norm = 0;
      let dot = 0;
      for (let i = 0; i < d.length; i++) {
        assert.ok(Number.isFinite(d[i]), `value ${i} is not finite`);
        norm += d[i]! * d[i]!;
        dot += d[i]! * u[i]!;
      }
      assert.ok(Math.abs(Math.sqrt(norm) - 1) < 1e-5, `norm ${Math.sqrt(norm)}`);
      // The whitening rotates and rescales: far from the unwhitened descriptor.
      assert.ok(dot < 0.95, `cosine to the unwhitened descriptor ${dot}`);
      assert.notEqual(whitened.identity, plain.identity);
    } finally {
      await whitened.release();
      await plain.release();
    }
  },
);
