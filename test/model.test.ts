import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { foldBatchNorm } from "../src/backbone/cvnet/batchnorm.ts";
import {
  CVNET_DIM as DESCRIPTOR_DIM,
  detectDepth,
  readHeadWeights,
} from "../src/backbone/cvnet/cvnet-network.ts";
import type { Depth } from "../src/backbone/cvnet/resnet-graph.ts";
import {
  backboneTensorShapes,
  buildBackboneGraph,
  buildBackboneModel,
} from "../src/backbone/cvnet/resnet-graph.ts";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import type { StateDict } from "../src/checkpoint/state-dict.ts";
import { buildModel, DescriptorModel } from "../src/descriptor/model.ts";
import { modelIdentity, readModelInfo } from "../src/descriptor/model-metadata.ts";
import { SuperglobalError } from "../src/errors.ts";
import { resizeBilinear } from "../src/image/resize.ts";
import { readNpy } from "../src/io/npy.ts";
import {
  appendDescriptorHead,
  type HeadOptions,
  type HeadWeights,
} from "../src/pooling/head-graph.ts";
import { type FeatureMap, GEM_BASELINE_EPS, GEM_PLUS, gem } from "../src/pooling/reference/gem.ts";
import { regionalGem } from "../src/pooling/reference/regional-gem.ts";
import { l2Normalize, linear } from "../src/pooling/vector.ts";
import { OnnxGraph } from "../src/runtime/onnx-graph.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { mulberry32 as prng } from "./helpers/random.ts";
import { fixture, manifest, sharedOnly } from "./helpers/shared.ts";

// ---------------------------------------------------------------------------------------------
// An independent float64 reference of the backbone (spec §3, floors from the §4.6 table), with
// BatchNorm applied literally, for synthetic random state dicts.

interface Map3 {
  data: Float64Array;
  c: number;
  h: number;
  w: number;
}

function conv2d(x: Map3, weight: Float32Array, out: number, k: number, stride: number): Map3 {
  const pad = (k - 1) / 2;
  const h = Math.floor((x.h + 2 * pad - k) / stride) + 1;
  const w = Math.floor((x.w + 2 * pad - k) / stride) + 1;
  const y = new Float64Array(out * h * w);
  for (let o = 0; o < out; o++) {
    for (let c = 0; c < x.c; c++) {
      for (let ky = 0; ky < k; ky++) {
        for (let kx = 0; kx < k; kx++) {
          const wv = weight[((o * x.c + c) * k + ky) * k + kx];
          const x0 = Math.max(0, Math.ceil((pad - kx) / stride));
          const x1 = Math.min(w - 1, Math.floor((x.w - 1 + pad - kx) / stride));
          for (let oy = 0; oy < h; oy++) {
            const iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= x.h) continue;
            const rowIn = (c * x.h + iy) * x.w - pad + kx;
            const rowOut = (o * h + oy) * w;
            for (let ox = x0; ox <= x1; ox++) y[rowOut + ox] += wv * x.data[rowIn + ox * stride];
          }
        }
      }
    }
  }
  return { data: y, c: out, h, w };
}

/** BN in inference mode; with `calibrate`, first sets the running stats near this batch's. */
function batchNorm(sd: StateDict, prefix: string, x: Map3, calibrate?: () => number): Map3 {
  const get = (s: string) => sd.get(`${prefix}.${s}`)?.data as Float32Array;
  const [gamma, beta, mean, variance] = [
    get("weight"),
    get("bias"),
    get("running_mean"),
    get("running_var"),
  ];
  const n = x.h * x.w;
  const y = new Float64Array(x.data.length);
  for (let c = 0; c < x.c; c++) {
    const plane = x.data.subarray(c * n, (c + 1) * n);
    if (calibrate !== undefined) {
      let m = 0;
      for (const v of plane) m += v;
      m /= n;
      let v2 = 0;
      for (const v of plane) v2 += (v - m) ** 2;
      v2 /= n;
      // The second moment, not the variance: a channel with a large mean and a tiny spread over
      // these few pixels would otherwise amplify rounding errors (an ill-conditioned test net).
      mean[c] = m + 0.2 * Math.sqrt(v2) * (calibrate() - 0.5);
      variance[c] = (v2 + m * m) * (0.8 + 0.4 * calibrate()) + 1e-3;
    }
    const inv = 1 / Math.sqrt(variance[c] + 1e-5);
    for (let i = 0; i < n; i++) y[c * n + i] = (plane[i] - mean[c]) * inv * gamma[c] + beta[c];
  }
  return { ...x, data: y };
}

function clampMin(x: Map3, floor: number): Map3 {
  return { ...x, data: x.data.map((v) => Math.max(v, floor)) };
}

function maxPool(x: Map3): Map3 {
  const h = Math.floor((x.h - 1) / 2) + 1;
  const w = Math.floor((x.w - 1) / 2) + 1;
  const y = new Float64Array(x.c * h * w).fill(-Infinity);
  for (let c = 0; c < x.c; c++) {
    for (let oy = 0; oy < h; oy++) {
      for (let ox = 0; ox < w; ox++) {
        let m = -Infinity;
        for (let iy = 2 * oy - 1; iy <= 2 * oy + 1; iy++) {
          for (let ix = 2 * ox - 1; ix <= 2 * ox + 1; ix++) {
            if (iy >= 0 && iy < x.h && ix >= 0 && ix < x.w) {
              m = Math.max(m, x.data[(c * x.h + iy) * x.w + ix]);
            }
          }
        }
        y[(c * h + oy) * w + ox] = m;
      }
    }
  }
  return { data: y, c: x.c, h, w };
}

const STAGES = [
  { wOut: 256, wB: 64, stride: 1 },
  { wOut: 512, wB: 128, stride: 2 },
  { wOut: 1024, wB: 256, stride: 2 },
  { wOut: 2048, wB: 512, stride: 2 },
];
const BLOCKS: Record<Depth, number[]> = { 50: [3, 4, 6, 3], 101: [3, 4, 23, 3] };

/** The §4.6 table, written out again (independently of the builder). */
function floorsOf(stage: number, relup: boolean): { inner: number; out: number } {
  const inner = stage === 1 ? 0.014 : 0; // the s1 bug: 0.014 whatever relup is
  const out = relup && stage <= 3 ? 0.014 : 0;
  return { inner, out };
}

/** Float64 forward pass; returns s4 and every block's activations by name. */
function reference(
  sd: StateDict,
  depth: Depth,
  relup: boolean,
  image: Map3,
  calibrate?: () => number,
): Map<string, Map3> {
  const w = (key: string) => sd.get(`encoder_q.${key}`)?.data as Float32Array;
  const bn = (key: string, x: Map3) => batchNorm(sd, `encoder_q.${key}`, x, calibrate);
  const acts = new Map<string, Map3>();
  let x = maxPool(clampMin(bn("stem.bn", conv2d(image, w("stem.conv.weight"), 64, 7, 2)), 0));
  acts.set("stem", x);
  STAGES.forEach((st, si) => {
    const floors = floorsOf(si + 1, relup);
    for (let b = 1; b <= BLOCKS[depth][si]; b++) {
      const p = `s${si + 1}.b${b}`;
      const stride = b === 1 ? st.stride : 1;
      const a = clampMin(
        bn(`${p}.f.a_bn`, conv2d(x, w(`${p}.f.a.weight`), st.wB, 1, 1)),
        floors.inner,
      );
      const m = clampMin(
        bn(`${p}.f.b_bn`, conv2d(a, w(`${p}.f.b.weight`), st.wB, 3, stride)),
        floors.inner,
      );
      const f = bn(`${p}.f.c_bn`, conv2d(m, w(`${p}.f.c.weight`), st.wOut, 1, 1));
      const sc = b === 1 ? bn(`${p}.bn`, conv2d(x, w(`${p}.proj.weight`), st.wOut, 1, stride)) : x;
      x = clampMin({ ...f, data: f.data.map((v, i) => sc.data[i] + v) }, floors.out);
      acts.set(`${p}.a`, a);
      acts.set(`${p}.b`, m);
      acts.set(p, x);
    }
  });
  acts.set("s4", x);
  return acts;
}

/**
 * Random CVNet-layout backbone weights, BN stats then calibrated on `image` (so activations are
 * O(1)); also returns the relup=true activations of that calibration pass, which is the reference
 * forward pass of the final state dict on `image`. `residualScale` is the range of the last BN's
 * γ in each block: small, as in trained ResNets, so blocks stay near the identity and float32
 * rounding is not amplified from block to block as in a generic random net.
 */
function syntheticStateDict(
  depth: Depth,
  seed: number,
  image: Map3,
  residualScale: number,
): { sd: StateDict; acts: Map<string, Map3> } {
  const rnd = prng(seed);
  const sd: StateDict = new Map();
  for (const [key, shape] of backboneTensorShapes(depth)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (shape.length === 4) {
      const bound = Math.sqrt(3 / (n / shape[0]));
      for (let i = 0; i < n; i++) data[i] = (2 * rnd() - 1) * bound;
    } else if (key.endsWith("c_bn.weight")) {
      for (let i = 0; i < n; i++) data[i] = residualScale * (0.25 + 0.75 * rnd());
    } else if (key.endsWith(".weight")) {
      for (let i = 0; i < n; i++) data[i] = 0.5 + rnd();
    } else if (key.endsWith(".bias")) {
      for (let i = 0; i < n; i++) data[i] = rnd() - 0.6;
    } else if (key.endsWith(".running_var")) {
      data.fill(1);
    }
    sd.set(key, { dtype: "float32", shape, data });
  }
  const acts = reference(sd, depth, true, image, calibrate(seed));
  return { sd, acts };
}

function calibrate(seed: number): () => number {
  return prng(seed + 1000);
}

function randomImage(h: number, w: number, seed: number): Map3 {
  const rnd = prng(seed);
  const data = new Float64Array(3 * h * w);
  for (let i = 0; i < data.length; i++) data[i] = Math.fround(4 * rnd() - 2);
  return { data, c: 3, h, w };
}

function compare(
  actual: Float32Array,
  expected: ArrayLike<number>,
): { maxAbs: number; scale: number } {
  assert.equal(actual.length, expected.length);
  let maxAbs = 0;
  let scale = 0;
  for (let i = 0; i < actual.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return { maxAbs, scale };
}

/** Runs a graph with extra outputs for the named intermediate activations (offsets added back). */
async function runWithIntermediates(
  sd: StateDict,
  options: { depth: Depth; relup: boolean; shiftFloors: boolean },
  image: Map3,
  names: string[],
): Promise<Map<string, Float32Array>> {
  const { graph, tensors } = buildBackboneGraph(sd, options);
  for (const n of names) {
    const t = tensors.get(n);
    assert.ok(t !== undefined, n);
    if (t.name !== "s4") graph.output(t.name, [1, "c", `h_${n}`, `w_${n}`]);
  }
  const session = await OnnxSession.create(graph.encode(), { threads: 2 });
  try {
    const out = await session.run({
      image: { data: Float32Array.from(image.data), dims: [1, 3, image.h, image.w] },
    });
    const result = new Map<string, Float32Array>();
    for (const n of names) {
      const t = tensors.get(n);
      const data = out[t?.name ?? ""]?.data as Float32Array;
      result.set(n, t?.offset ? data.map((v) => v + (t.offset as number)) : data);
    }
    result.set("s4", out["s4"]?.data as Float32Array);
    return result;
  } finally {
    await session.release();
  }
}

const IMAGE = randomImage(67, 53, 7);
const R50 = syntheticStateDict(50, 1, IMAGE, 0.25);
const SD50 = R50.sd;
const REF = new Map<boolean, Map<string, Map3>>([
  [true, R50.acts],
  [false, reference(SD50, 50, false, IMAGE)],
]);
const BLOCK_NAMES = STAGES.flatMap((_, si) =>
  Array.from({ length: BLOCKS[50][si] }, (_, b) => `s${si + 1}.b${b + 1}`),
);
const INSPECTED = ["stem", ...BLOCK_NAMES.flatMap((n) => [`${n}.a`, `${n}.b`, n])];
/**
 * Max abs error allowed, relative to the largest |value|: float32 vs float64 (the worst block
 * here is ~2e-5; relup=true vs false differs by ~1, so the floors are well inside what is tested).
 */
const TOL = 1e-4;

// ---------------------------------------------------------------------------------------------

test("foldBatchNorm equals conv then BN, with input offset and output shift", () => {
  const rnd = prng(3);
  const [out, inp] = [5, 4];
  const weight = Float32Array.from({ length: out * inp }, () => rnd() - 0.5);
  const vec = (f: () => number) => Float32Array.from({ length: out }, f);
  const bn = {
    weight: vec(() => 0.5 + rnd()),
    bias: vec(() => rnd() - 0.5),
    runningMean: vec(() => rnd() - 0.5),
    runningVar: vec(() => 0.1 + rnd()),
  };
  const x = Array.from({ length: inp }, () => 4 * rnd() - 2);
  const offset = 0.014;
  const shift = -0.25;
  const folded = foldBatchNorm(weight, bn, { inputOffset: offset, outputShift: shift });
  for (let o = 0; o < out; o++) {
    let conv = 0;
    let convFolded = folded.bias[o];
    for (let i = 0; i < inp; i++) {
      conv += weight[o * inp + i] * (x[i] + offset);
      convFolded += folded.weight[o * inp + i] * x[i];
    }
    const expected =
      ((conv - bn.runningMean[o]) / Math.sqrt(bn.runningVar[o] + 1e-5)) * bn.weight[o] +
      bn.bias[o] +
      shift;
    assert.ok(Math.abs(convFolded - expected) < 1e-6, `channel ${o}: ${convFolded} vs ${expected}`);
  }
});

/** Every inspected activation within TOL of the reference; returns the worst relative error. */
function assertMatches(got: Map<string, Float32Array>, ref: Map<string, Map3>): number {
  const bad: string[] = [];
  let worst = 0;
  for (const name of [...INSPECTED, "s4"]) {
    const { maxAbs, scale } = compare(got.get(name) as Float32Array, (ref.get(name) as Map3).data);
    worst = Math.max(worst, maxAbs / scale);
    if (!(maxAbs <= TOL * scale)) bad.push(`${name}: max abs error ${maxAbs} (max ${scale})`);
  }
  assert.deepEqual(bad, []);
  return worst;
}

/** The floor of each inspected activation by the §4.6 table, as float32. */
function expectedFloor(name: string, relup: boolean): number {
  if (name === "stem") return 0;
  const floors = floorsOf(Number(name[1]), relup);
  const inner = name.endsWith(".a") || name.endsWith(".b");
  return Math.fround(inner ? floors.inner : floors.out);
}

for (const relup of [true, false]) {
  test(`R50 relup=${relup}: literal and shifted floors`, async (t) => {
    const ref = REF.get(relup) as Map<string, Map3>;
    const literal = await runWithIntermediates(
      SD50,
      { depth: 50, relup, shiftFloors: false },
      IMAGE,
      INSPECTED,
    );
    await t.test("literal Clip graph: every block matches the float64 reference", (t) => {
      t.diagnostic(`worst relative error ${assertMatches(literal, ref).toExponential(2)}`);
    });
    await t.test("the §4.6 floors, exactly (the clamp acts at each)", () => {
      for (const name of INSPECTED) {
        const floor = expectedFloor(name, relup);
        let min = Infinity;
        let atFloor = 0;
        for (const v of literal.get(name) as Float32Array) {
          if (v < min) min = v;
          if (v === floor) atFloor++;
        }
        assert.equal(min, floor, `${name}: minimum ${min}, expected floor ${floor}`);
        assert.ok(atFloor > 0, `${name}: the clamp never acted`);
      }
    });
    const shifted = await runWithIntermediates(
      SD50,
      { depth: 50, relup, shiftFloors: true },
      IMAGE,
      INSPECTED,
    );
    await t.test("shifted graph (the default): every block matches the float64 reference", (t) => {
      t.diagnostic(`worst relative error ${assertMatches(shifted, ref).toExponential(2)}`);
    });
  });
}

test("the reference's relup=true and relup=false outputs differ far beyond the tolerance", () => {
  // So the comparisons above do test the floors.
  const t = (REF.get(true) as Map<string, Map3>).get("s4") as Map3;
  const f = (REF.get(false) as Map<string, Map3>).get("s4") as Map3;
  const { maxAbs, scale } = compare(Float32Array.from(f.data), t.data);
  assert.ok(maxAbs > 100 * (TOL * scale), `relup changes s4 by only ${maxAbs}`);
});

test("DescriptorModel: output sizes are ceil(h/32) × ceil(w/32) for odd and tiny inputs", async () => {
  const backbone = await DescriptorModel.fromStateDict(SD50, { depth: 50, threads: 2 });
  try {
    assert.equal(backbone.depth, 50);
    assert.equal(backbone.relup, true);
    for (const [h, w] of [
      [1, 1],
      [2, 3],
      [31, 32],
      [33, 65],
      [127, 169],
    ]) {
      const img = randomImage(h, w, h * 1000 + w);
      const out = await backbone.run({ data: Float32Array.from(img.data), height: h, width: w });
      assert.deepEqual(
        [out.channels, out.height, out.width],
        [2048, Math.ceil(h / 32), Math.ceil(w / 32)],
        `${h}x${w}`,
      );
      assert.equal(out.data.length, 2048 * out.height * out.width);
      assert.ok(
        out.data.every((v) => Number.isFinite(v) && v >= 0),
        `${h}x${w}: non-finite or negative`,
      );
    }
    // The production model (shifted floors, no extra outputs) against the reference.
    const out = await backbone.run({ data: Float32Array.from(IMAGE.data), height: 67, width: 53 });
    const { maxAbs, scale } = compare(
      out.data,
      ((REF.get(true) as Map<string, Map3>).get("s4") as Map3).data,
    );
    assert.ok(maxAbs <= TOL * scale, `s4: max abs error ${maxAbs} (max ${scale})`);
  } finally {
    await backbone.release();
  }
});

test("save/load round-trips the model, depth and relup", async () => {
  const dir = mkdtempSync(join(tmpdir(), "superglobal-backbone-"));
  try {
    const built = await DescriptorModel.fromStateDict(SD50, {
      depth: 50,
      relup: false,
      threads: 2,
    });
    const input = { data: Float32Array.from(IMAGE.data), height: IMAGE.h, width: IMAGE.w };
    const expected = await built.run(input);
    const path = join(dir, "r50.onnx");
    await built.save(path);
    await built.release();
    const loaded = await DescriptorModel.load(path, { threads: 1 });
    try {
      assert.equal(loaded.depth, 50);
      assert.equal(loaded.relup, false);
      const got = await loaded.run(input);
      assert.deepEqual([got.height, got.width], [expected.height, expected.width]);
      const { maxAbs, scale } = compare(got.data, expected.data);
      assert.ok(maxAbs <= 1e-6 * scale, `loaded model differs by ${maxAbs}`);
      // The saved file is a plain ONNX model: the same bytes save again.
      const again = join(dir, "again.onnx");
      await loaded.save(again);
      assert.ok(readFileSync(again).equals(readFileSync(path)));
    } finally {
      await loaded.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("R101: 23 blocks in s3; matches the float64 reference", async () => {
  const image = randomImage(40, 36, 11);
  const { sd, acts } = syntheticStateDict(101, 2, image, 0.05);
  const ref = acts.get("s4") as Map3;
  const backbone = await DescriptorModel.fromStateDict(sd, { depth: 101, threads: 2 });
  try {
    assert.equal(backbone.depth, 101);
    const out = await backbone.run({ data: Float32Array.from(image.data), height: 40, width: 36 });
    assert.deepEqual([out.height, out.width], [2, 2]);
    const { maxAbs, scale } = compare(out.data, ref.data);
    assert.ok(maxAbs <= TOL * scale, `s4: max abs error ${maxAbs} (max ${scale})`);
  } finally {
    await backbone.release();
  }
  // An R50 state dict lacks the extra s3 blocks.
  assert.throws(
    () => buildBackboneModel(SD50, { depth: 101 }, "r50.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "NOT_FOUND" &&
      /r50\.pyth: missing 255 required tensor\(s\): encoder_q\.s3\.b7\.f\.a\.weight/.test(
        e.message,
      ),
  );
});

test("depth is read from the checkpoint: an R101 state dict is never built as R50", async () => {
  const { sd } = syntheticStateDict(101, 2, randomImage(40, 36, 11), 0.05);
  assert.equal(detectDepth(sd, "r101.pyth"), 101);
  assert.equal(detectDepth(SD50, "r50.pyth"), 50);
  // Built with depth 50 it used to give a truncated network silently.
  assert.throws(
    () => buildModel(sd, { depth: 50 }, "r101.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "INVALID_ARGUMENT" &&
      /depth 50 contradicts r101\.pyth, a ResNet-101 checkpoint/.test(e.message),
  );
  const detected = await DescriptorModel.fromStateDict(sd, { threads: 1 });
  try {
    assert.equal(detected.depth, 101);
  } finally {
    await detected.release();
  }
  const partial: StateDict = new Map(sd);
  for (const key of [...partial.keys()])
    if (key.startsWith("encoder_q.s3.b23.")) partial.delete(key);
  assert.throws(
    () => detectDepth(partial, "odd.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "BAD_FILE" && /odd\.pyth/.test(e.message),
  );
});

test("a model is identified by its weights' content, not its file name or size", () => {
  const info = (sd: StateDict) => readModelInfo(buildModel(sd, { head: {} }, "a.pyth"), "a.pyth");
  const withHead = (seed: number): StateDict => {
    const weights = syntheticHead(seed);
    const sd: StateDict = new Map(SD50);
    sd.set("encoder_q.head.fc.weight", {
      dtype: "float32",
      shape: [2048, 2048],
      data: weights.fcWeight,
    });
    sd.set("encoder_q.head.fc.bias", { dtype: "float32", shape: [2048], data: weights.fcBias });
    sd.set("encoder_q.head.pool.p", { dtype: "float32", shape: [1], data: new Float32Array([3]) });
    return sd;
  };
  const a = info(withHead(1));
  // Same shapes and byte counts (a file of the same name and size), one weight changed.
  const changed = withHead(1);
  const w = changed.get("encoder_q.s4.b3.f.c.weight") as { data: Float32Array };
  const copy = Float32Array.from(w.data);
  copy[0] = (copy[0] as number) + 1e-3;
  changed.set("encoder_q.s4.b3.f.c.weight", {
    ...(changed.get("encoder_q.s4.b3.f.c.weight") as object),
    data: copy,
  } as never);
  assert.notEqual(info(changed).weights, a.weights);
  assert.notEqual(info(withHead(2)).weights, a.weights);
  assert.equal(info(withHead(1)).weights, a.weights);
  const identity = (i: typeof a, scales: number) => modelIdentity(i, { scales, sgem: true });
  assert.notEqual(identity(a, 3), identity(a, 1));
  assert.equal(identity(a, 3), identity(info(withHead(1)), 3));
});

test("GeM+ and Regional-GeM cannot overflow float32: activations of 2e8 give the float64 result", async () => {
  const weights = syntheticHead(5);
  const channels = 2048;
  const [h, w] = [16, 16];
  const data = new Float32Array(channels * h * w);
  for (let i = 0; i < data.length; i++) data[i] = 2e8 * (0.25 + 0.75 * Math.abs(Math.sin(i * 0.7)));
  const map: FeatureMap = { data, channels, height: h, width: w };
  for (const options of [
    { rgem: true, gemp: true },
    { rgem: false, gemp: true },
  ]) {
    const session = await headSession(weights, options);
    try {
      const out = await session.run({ s4: { data, dims: [1, channels, h, w] } });
      const vector = out["vector"]?.data as Float32Array;
      assert.ok(vector.every(Number.isFinite), `${JSON.stringify(options)}: not finite`);
      const ref = headReference(map, weights, options);
      assert.ok(relativeError(vector, ref.vector) <= 2e-6, JSON.stringify(options));
    } finally {
      await session.release();
    }
  }
});

test("errors name the missing key, the bad tensor, the bad argument and the bad file", async () => {
  const sd: StateDict = new Map(SD50);
  sd.delete("encoder_q.s2.b3.f.b_bn.running_var");
  sd.delete("encoder_q.stem.conv.weight");
  assert.throws(
    () => buildBackboneModel(sd, { depth: 50 }, "ck.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "NOT_FOUND" &&
      e.message.includes("missing 2 required") &&
      e.message.includes("encoder_q.stem.conv.weight") &&
      e.message.includes("encoder_q.s2.b3.f.b_bn.running_var"),
  );
  const wrong: StateDict = new Map(SD50);
  wrong.set("encoder_q.s1.b1.f.a.weight", {
    dtype: "float32",
    shape: [64, 64],
    data: new Float32Array(4096),
  });
  assert.throws(
    () => buildBackboneModel(wrong, { depth: 50 }, "ck.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_FILE" &&
      e.message.includes("s1.b1.f.a.weight"),
  );
  const invalid = (name: string) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.input === name;
  assert.throws(() => buildBackboneModel(SD50, { depth: 34 as Depth }), invalid("options.depth"));
  assert.throws(
    () => buildBackboneModel(SD50, { depth: 50, relup: "yes" as unknown as boolean }),
    invalid("options.relup"),
  );
  await assert.rejects(
    DescriptorModel.fromStateDict(SD50, { depth: 50, threads: 0 }),
    invalid("options.threads"),
  );

  const dir = mkdtempSync(join(tmpdir(), "superglobal-backbone-"));
  try {
    await assert.rejects(
      DescriptorModel.load(join(dir, "absent.onnx")),
      (e: unknown) =>
        e instanceof SuperglobalError &&
        e.code === "NOT_FOUND" &&
        e.message.includes("absent.onnx"),
    );
    // A valid ONNX model that is not a backbone.
    const other = new OnnxGraph("identity");
    other.node("Identity", [other.input("x", [1])], {}, ["y"]);
    other.output("y", [1]);
    writeFileSync(join(dir, "other.onnx"), other.encode());
    await assert.rejects(
      DescriptorModel.load(join(dir, "other.onnx")),
      (e: unknown) =>
        e instanceof SuperglobalError && e.code === "BAD_FILE" && e.message.includes("other.onnx"),
    );
    writeFileSync(join(dir, "junk.onnx"), "not a model at all");
    await assert.rejects(
      DescriptorModel.load(join(dir, "junk.onnx")),
      (e: unknown) => e instanceof SuperglobalError && e.code === "BAD_FILE",
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("run() validates its input", async () => {
  const backbone = await DescriptorModel.fromStateDict(SD50, { depth: 50, threads: 1 });
  const invalid = (name: string) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.input === name;
  try {
    await assert.rejects(
      backbone.run({ data: new Float32Array(3 * 4 * 5 - 1), height: 4, width: 5 }),
      invalid("input.data"),
    );
    await assert.rejects(
      backbone.run({ data: new Float32Array(0), height: 0, width: 5 }),
      invalid("input.height"),
    );
    await assert.rejects(
      backbone.run({ data: new Float32Array(30), height: 2.5, width: 4 }),
      invalid("input.height"),
    );
    await assert.rejects(
      backbone.run({ data: new Float64Array(60) as unknown as Float32Array, height: 4, width: 5 }),
      invalid("input.data"),
    );
  } finally {
    await backbone.release();
  }
  await assert.rejects(
    backbone.run({ data: new Float32Array(60), height: 4, width: 5 }),
    SuperglobalError,
  );
});

// ---------------------------------------------------------------------------------------------
// Golden: the official code's s4 maps (float64 run) for the random-weight CVNet R50 checkpoint.

let golden: Promise<DescriptorModel> | undefined;
function goldenBackbone(): Promise<DescriptorModel> {
  golden ??= DescriptorModel.fromStateDict(
    loadCheckpoint(fixture("cvnet_r50_random.pyth")),
    { depth: 50, relup: true, threads: 2 },
    "cvnet_r50_random.pyth",
  );
  return golden;
}
after(async () => {
  if (golden !== undefined) await (await golden).release();
});

/** The manifest; Python's json writes bare NaN (in the mAP goldens), read here as null. */
function goldenManifest() {
  const text = readFileSync(fixture("manifest.json"), "utf8");
  return JSON.parse(text.replace(/(?<=[[:,]\s*)NaN(?=\s*[,\]}])/g, "null"));
}

interface ScaleGolden {
  scale: number;
  size: [number, number];
  s4: { file: string; shape: number[] };
}

test(
  "golden: s4 of the CVNet R50 checkpoint matches the official code at every scale",
  sharedOnly,
  async (t) => {
    const backbone = await goldenBackbone();
    const images = goldenManifest().images as {
      image: string;
      input: { file: string; shape: number[] };
      per_scale: ScaleGolden[];
    }[];
    assert.ok(images.length >= 5);
    for (const im of images) {
      const input = readNpy(fixture(im.input.file));
      const [, , height, width] = input.shape;
      const tensor = { data: input.data as Float32Array, height, width };
      for (const ps of im.per_scale) {
        // Scale 1 is the input itself; the others need the official bilinear resize first.
        const scaled = ps.scale === 1 ? tensor : resizeBilinear(tensor, ps.size[0], ps.size[1]);
        const out = await backbone.run(scaled);
        assert.deepEqual([1, out.channels, out.height, out.width], ps.s4.shape);
        const expected = readNpy(fixture(ps.s4.file)).data as Float32Array;
        const { maxAbs, scale } = compare(out.data, expected);
        t.diagnostic(
          `${im.image} @${ps.scale} ${ps.size.join("x")}: max abs ${maxAbs.toExponential(2)}, ` +
            `relative to max |s4| ${scale.toFixed(1)}: ${(maxAbs / scale).toExponential(2)}`,
        );
        assert.ok(
          maxAbs <= 1e-5 * scale,
          `${im.image} @${ps.scale}: max abs ${maxAbs} (max ${scale})`,
        );
      }
    }
  },
);

// ---------------------------------------------------------------------------------------------
// The descriptor head (Regional-GeM → GeM → L2 → FC) in the graph, against the float64 TS pooling
// (itself checked against the official modules in pooling.test.ts) and the official goldens.

/** Random head weights: FC scaled like a trained layer, the learned GeM p as CVNet's is (~3). */
function syntheticHead(seed: number, poolP = 3.2): HeadWeights {
  const rnd = prng(seed);
  const n = DESCRIPTOR_DIM;
  const bound = Math.sqrt(3 / n);
  return {
    fcWeight: Float32Array.from({ length: n * n }, () => (2 * rnd() - 1) * bound),
    fcBias: Float32Array.from({ length: n }, () => 0.1 * (rnd() - 0.5)),
    poolP,
  };
}

/** A graph from an s4 input through the head, with the intermediates as extra outputs. */
async function headSession(weights: HeadWeights, options: HeadOptions): Promise<OnnxSession> {
  const graph = new OnnxGraph("head");
  appendDescriptorHead(graph, graph.input("s4", [1, 2048, "h", "w"]), 2048, weights, options);
  if (options.rgem) graph.output("rgem", [1, 2048, "h", "w"]);
  graph.output("gem", [1, 2048]);
  return OnnxSession.create(graph.encode(), { threads: 2 });
}

/** The TS float64 pooling path of one scale: the oracle. */
function headReference(map: FeatureMap, weights: HeadWeights, options: HeadOptions) {
  const pooledMap = options.rgem ? regionalGem(map) : map;
  const g = options.gemp
    ? gem(pooledMap, GEM_PLUS.p, GEM_PLUS.eps)
    : gem(pooledMap, weights.poolP, GEM_BASELINE_EPS);
  return {
    rgem: pooledMap,
    gem: g,
    vector: linear(weights.fcWeight, weights.fcBias, l2Normalize(g)),
  };
}

function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length);
  let maxAbs = 0;
  let scale = 0;
  for (let i = 0; i < actual.length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return maxAbs / scale;
}

const HEAD_CONFIGS: HeadOptions[] = [
  { rgem: true, gemp: true },
  { rgem: true, gemp: false },
  { rgem: false, gemp: true },
  { rgem: false, gemp: false },
];

test("head: every map size, 1×1 up, equals the float64 TS pooling (numpy-reflect padding)", async (t) => {
  const weights = syntheticHead(5);
  const rnd = prng(6);
  // Sides under 3 are where torch's reflection padding fails and ours reflects again.
  const sizes = [
    [1, 1],
    [1, 2],
    [2, 1],
    [2, 2],
    [2, 7],
    [1, 9],
    [3, 3],
    [4, 5],
    [6, 2],
    [9, 12],
  ];
  for (const options of HEAD_CONFIGS) {
    const session = await headSession(weights, options);
    try {
      let worst = 0;
      for (const [h, w] of sizes) {
        // ReLU-like maps: about a third exact zeros (Log(0) = −∞ must give 0^p = 0).
        const data = Float32Array.from({ length: 2048 * h * w }, () =>
          rnd() < 0.3 ? 0 : 3 * rnd() ** 2,
        );
        const map = { data, channels: 2048, height: h, width: w };
        const ref = headReference(map, weights, options);
        const out = await session.run({ s4: { data, dims: [1, 2048, h, w] } });
        const label = `${JSON.stringify(options)} ${h}x${w}`;
        assert.deepEqual(out["vector"]?.dims, [1, 2048], label);
        const errors = {
          vector: relativeError(out["vector"]?.data as Float32Array, ref.vector),
          gem: relativeError(out["gem"]?.data as Float32Array, ref.gem),
          ...(options.rgem
            ? { rgem: relativeError(out["rgem"]?.data as Float32Array, ref.rgem.data) }
            : {}),
        };
        for (const [name, e] of Object.entries(errors)) {
          assert.ok(e <= 2e-6, `${label} ${name}: relative error ${e}`);
          worst = Math.max(worst, e);
        }
      }
      t.diagnostic(`${JSON.stringify(options)}: worst relative error ${worst.toExponential(2)}`);
    } finally {
      await session.release();
    }
  }
});

test("head: small maps are padded like numpy 'reflect', by hand", async () => {
  // Independent of the TS pooling: R(i,j) = (mean of the 5×5 window of pad(x)^2.5)^0.4 with the
  // padded indices written out. A 2×4 map: rows of 2 pad to [a b a b a b] (torch would fail),
  // columns of 4 as torch pads them, [c b a b c d c b]. A 1×1 map comes back unchanged.
  const session = await headSession(syntheticHead(8), { rgem: true, gemp: true });
  try {
    const x = [0.5, 1, 4, 9, 2, 0, 3, 7]; // [[0.5, 1, 4, 9], [2, 0, 3, 7]]
    const data = new Float32Array(2048 * 8);
    data.set(x);
    const out = await session.run({ s4: { data, dims: [1, 2048, 2, 4] } });
    const rgemOut = out["rgem"]?.data as Float32Array;
    const rgemAt = (y: number, c: number, rows: number[], cols: number[]) => {
      let s = 0;
      for (let dy = 0; dy < 5; dy++) {
        for (let dx = 0; dx < 5; dx++) {
          const r = rows[y + dy] as number;
          const k = cols[c + dx] as number;
          s += r < 0 || k < 0 ? 0 : (x[r * 4 + k] as number) ** 2.5;
        }
      }
      return 0.5 * (s / 25) ** 0.4 + 0.5 * (x[y * 4 + c] as number);
    };
    const reflectRows = [0, 1, 0, 1, 0, 1];
    const reflectCols = [2, 1, 0, 1, 2, 3, 2, 1];
    for (let y = 0; y < 2; y++) {
      for (let c = 0; c < 4; c++) {
        const expected = rgemAt(y, c, reflectRows, reflectCols);
        const got = rgemOut[y * 4 + c] as number;
        assert.ok(
          Math.abs(got - expected) <= 1e-6 * expected,
          `(${y},${c}): ${got} vs ${expected}`,
        );
      }
    }
    // Other paddings (edge columns; zero rows) give clearly different values: the check has teeth.
    const edge = rgemAt(0, 0, reflectRows, [0, 0, 0, 1, 2, 3, 3, 3]);
    const zeros = rgemAt(0, 0, [-1, -1, 0, 1, -1, -1], reflectCols);
    for (const other of [edge, zeros]) assert.ok(Math.abs((rgemOut[0] as number) - other) > 0.05);

    const single = new Float32Array(2048).map((_, c) => (c % 7) * 0.25);
    const one = await session.run({ s4: { data: single, dims: [1, 2048, 1, 1] } });
    const kept = one["rgem"]?.data as Float32Array;
    for (let c = 0; c < 2048; c++) {
      assert.ok(Math.abs(kept[c] - single[c]) <= 1e-6 * single[c], `1×1 channel ${c}`);
    }
  } finally {
    await session.release();
  }
});

test("DescriptorModel with head: embed() gives the head's vector; save/load keeps head and options", async () => {
  const weights = syntheticHead(7);
  const sd: StateDict = new Map(SD50);
  sd.set("encoder_q.head.fc.weight", {
    dtype: "float32",
    shape: [2048, 2048],
    data: weights.fcWeight,
  });
  sd.set("encoder_q.head.fc.bias", { dtype: "float32", shape: [2048], data: weights.fcBias });
  sd.set("encoder_q.head.pool.p", {
    dtype: "float32",
    shape: [1],
    data: new Float32Array([weights.poolP]),
  });
  const input = { data: Float32Array.from(IMAGE.data), height: IMAGE.h, width: IMAGE.w };
  const dir = mkdtempSync(join(tmpdir(), "superglobal-backbone-"));
  try {
    const built = await DescriptorModel.fromStateDict(sd, {
      depth: 50,
      relup: false,
      head: { gemp: false },
      threads: 2,
    });
    assert.deepEqual(built.options, {
      depth: 50,
      relup: false,
      head: { rgem: true, gemp: false },
    });
    const { vector, s4 } = await built.embed(input, { s4: true });
    assert.ok(s4 !== undefined);
    assert.equal((await built.embed(input)).s4, undefined);
    // The vector is the head applied to this s4, and s4 is what run() gives.
    const ref = headReference(
      { data: s4.data, channels: 2048, height: s4.height, width: s4.width },
      weights,
      { rgem: true, gemp: false },
    );
    assert.ok(relativeError(vector, ref.vector) <= 2e-6);
    assert.deepEqual((await built.run(input)).data, s4.data);
    const path = join(dir, "with-head.onnx");
    await built.save(path);
    await built.release();
    const loaded = await DescriptorModel.load(path, { threads: 1 });
    try {
      assert.deepEqual(loaded.options, {
        depth: 50,
        relup: false,
        head: { rgem: true, gemp: false },
      });
      const again = await loaded.embed(input);
      assert.ok(relativeError(again.vector, vector) <= 1e-6);
    } finally {
      await loaded.release();
    }
    // The metadata records it all.
    const info = readModelInfo(readFileSync(path), path);
    assert.deepEqual(
      { ...info, weights: info.weights.length },
      {
        network: "cvnet-r50",
        input: "bgr-imagenet",
        channels: 2048,
        dim: 2048,
        relup: false,
        head: { rgem: true, gemp: false },
        weights: 64,
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Without a head there is no vector; a head needs its keys.
  const bare = await DescriptorModel.fromStateDict(SD50, { depth: 50, threads: 1 });
  try {
    assert.equal(bare.head, null);
    await assert.rejects(
      bare.embed(input),
      (e: unknown) => e instanceof SuperglobalError && e.code === "UNSUPPORTED",
    );
  } finally {
    await bare.release();
  }
  assert.throws(
    () => buildModel(SD50, { depth: 50, head: {} }, "nohead.pyth"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "NOT_FOUND" &&
      e.message.includes("nohead.pyth") &&
      e.message.includes("encoder_q.head.fc.weight") &&
      e.message.includes("encoder_q.head.pool.p"),
  );
  assert.throws(
    () => buildModel(SD50, { depth: 50, head: { rgem: 1 as unknown as boolean } }),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "INVALID_ARGUMENT" &&
      e.input === "options.head.rgem",
  );
});

test(
  "golden: the head on the official s4 maps gives the official rgem, gemp and fc",
  sharedOnly,
  async (t) => {
    const weights = readHeadWeights(
      loadCheckpoint(fixture("cvnet_r50_random.pyth")),
      "cvnet_r50_random.pyth",
    );
    const session = await headSession(weights, { rgem: true, gemp: true });
    try {
      const worst = { rgem: 0, gem: 0, vector: 0 };
      for (const im of manifest().images) {
        for (const ps of im.per_scale) {
          const s4 = readNpy(fixture(ps.s4.file));
          const out = await session.run({ s4: { data: s4.data as Float32Array, dims: s4.shape } });
          const errors = {
            rgem: relativeError(
              out["rgem"]?.data as Float32Array,
              readNpy(fixture(ps.rgem.file)).data as Float32Array,
            ),
            gem: relativeError(
              out["gem"]?.data as Float32Array,
              readNpy(fixture(ps.gemp.file)).data as Float64Array,
            ),
            vector: relativeError(
              out["vector"]?.data as Float32Array,
              readNpy(fixture(ps.fc.file)).data as Float64Array,
            ),
          };
          for (const [name, e] of Object.entries(errors)) {
            const key = name as keyof typeof worst;
            worst[key] = Math.max(worst[key], e);
            assert.ok(e <= 2e-6, `${im.image} @${ps.scale} ${name}: relative error ${e}`);
          }
        }
      }
      t.diagnostic(
        `worst relative error: rgem ${worst.rgem.toExponential(2)}, gemp ${worst.gem.toExponential(2)}, fc ${worst.vector.toExponential(2)}`,
      );
    } finally {
      await session.release();
    }
  },
);
