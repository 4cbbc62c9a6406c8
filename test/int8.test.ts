/**
 * int8 extraction and the speed presets: the quantised graph's structure, its agreement with
 * float32 (the golden checkpoint's random weights on small images; the default model on real
 * photos), identities, the CPU refusal, preset resolution and the caches.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import onnxProto from "onnx-proto";
import { Index } from "../src/app/photo-index.ts";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import { calibrateRanges, quantileRange } from "../src/descriptor/calibration.ts";
import { Extractor } from "../src/descriptor/extractor.ts";
import { CALIBRATION, int8Model, QUANTIZE } from "../src/descriptor/int8-model.ts";
import { buildModel } from "../src/descriptor/model.ts";
import { readModelInfo } from "../src/descriptor/model-metadata.ts";
import { resolveOptions } from "../src/descriptor/options.ts";
import { PRESET_SETTINGS } from "../src/descriptor/presets.ts";
import { SuperglobalError } from "../src/errors.ts";
import { assertInt8Supported, int8Shortfall, parseCpuFlags } from "../src/runtime/cpu-features.ts";
import {
  activationParams,
  quantizationPoints,
  quantizeModel,
} from "../src/runtime/quantize-graph.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { runCli } from "./helpers/cli.ts";
import { assetsDir, fixture, sharedOnly } from "./helpers/shared.ts";

const { onnx } = onnxProto;
// These tests exercise int8 on any CPU; the refusal itself is tested with injected flags.
process.env["SUPERGLOBAL_INT8"] = "force";

const temp = mkdtempSync(join(tmpdir(), "sg-int8-"));
after(() => rmSync(temp, { recursive: true, force: true }));
const cacheDir = join(temp, "cache");

const isCode = (code: string, message?: RegExp) => (e: unknown) =>
  e instanceof SuperglobalError &&
  e.code === code &&
  (message === undefined || message.test(e.message));

/** Photos for calibration and agreement: a few of the shared debian-photos and multiview-dev. */
function photos(folder: string, count: number): string[] {
  const root = join(assetsDir, folder);
  return readdirSync(root, { recursive: true })
    .map(String)
    .filter((f) => /\.jpe?g$/i.test(f))
    .sort()
    .slice(0, count)
    .map((f) => join(root, f));
}

let r50: Uint8Array | undefined;
function r50Model(): Uint8Array {
  r50 ??= buildModel(loadCheckpoint(fixture("cvnet_r50_random.pyth")), {
    head: { rgem: true, gemp: true },
  });
  return r50;
}

test(
  "quantised R50: every conv reads int8 per-channel weights, int32 biases and a DQ'd input",
  sharedOnly,
  async () => {
    const float = r50Model();
    const points = quantizationPoints(float, QUANTIZE);
    const ranges = await calibrateRanges(float, points, photos("debian-photos", 2), {
      input: "bgr-imagenet",
      maxSide: 160,
      scales: [1],
      quantile: 0.99999,
      threads: 2,
    });
    const model = onnx.ModelProto.decode(quantizeModel(float, ranges, QUANTIZE));
    // The decoded protobuf, seen through the fields this test reads.
    type Node = {
      opType: string;
      name: string;
      input: string[];
      output: string[];
      attribute: { name: string; i: number | { toString(): string } }[];
    };
    type Init = { name: string; dims: number[]; dataType: number; rawData: Uint8Array };
    const nodes = model.graph!.node as unknown as Node[];
    const inits = new Map((model.graph!.initializer as unknown as Init[]).map((t) => [t.name, t]));
    const producer = new Map(nodes.flatMap((n) => n.output.map((o) => [o, n] as const)));
    const convs = nodes.filter((n) => n.opType === "Conv");
    assert.equal(convs.length, 53); // stem + 16 blocks × 3 + 4 projections
    const T = onnx.TensorProto.DataType;
    for (const conv of convs) {
      const [x, w, b] = conv.input;
      assert.equal(producer.get(x!)?.opType, "DequantizeLinear", `${conv.name} input`);
      const wdq = producer.get(w!)!;
      assert.equal(wdq.opType, "DequantizeLinear");
      const [wq, ws, wz] = wdq.input.map((n) => inits.get(n)!);
      const channels = Number(wq!.dims[0]);
      assert.equal(wq!.dataType, T.INT8);
      assert.deepEqual(ws!.dims.map(Number), [channels], "one weight scale per output channel");
      assert.equal(wz!.dataType, T.INT8);
      assert.ok(
        wz!.rawData.every((v) => v === 0),
        "symmetric weights: zero points 0",
      );
      assert.equal(Number(wdq.attribute.find((a) => a.name === "axis")?.i), 0);
      const bdq = producer.get(b!)!;
      assert.equal(inits.get(bdq.input[0]!)!.dataType, T.INT32);
      // The conv's output is quantised (directly, or past its ReLU).
      const readers = nodes.filter((n) => n.input.includes(conv.output[0]!));
      const next = readers[0]!;
      assert.ok(
        next.opType === "QuantizeLinear" ||
          nodes.some((n) => n.opType === "QuantizeLinear" && n.input[0] === next.output[0]),
        `${conv.name} output quantised`,
      );
    }
    // No float conv filter (4-D) is left.
    assert.ok(![...inits.values()].some((t) => t.dims.length === 4 && t.dataType === T.FLOAT));
    assert.equal(readModelInfo(float, "r50").precision, undefined);
  },
);

test(
  "quantised R50 agrees with float32 on a photo (random weights, small image)",
  sharedOnly,
  async () => {
    const float = r50Model();
    const cal = photos("debian-photos", 3);
    const q = await int8Model(float, "r50", { images: cal }, { cacheDir, threads: 2 });
    const fs = await OnnxSession.create(float, { threads: 2 });
    const qs = await OnnxSession.create(q.model, { threads: 2 });
    try {
      const ex = await Extractor.create({
        checkpoint: fixture("cvnet_r50_random.pyth"),
        threads: 2,
      });
      const t = await ex.prepare(photos("multiview-dev", 1)[0]!);
      await ex.release();
      const feeds = { image: { data: t.data, dims: [1, 3, t.height, t.width] } };
      const a = (await fs.run(feeds, ["vector"]))["vector"]!.data as Float32Array;
      const b = (await qs.run(feeds, ["vector"]))["vector"]!.data as Float32Array;
      assert.ok(cosine(a, b) > 0.99, `cosine ${cosine(a, b)}`);
    } finally {
      await fs.release();
      await qs.release();
    }
  },
);

test(
  "int8 model: cached (the second make reads the file), calibration cached, info records it",
  sharedOnly,
  async () => {
    const float = r50Model();
    const cal = photos("debian-photos", 3);
    const first = await int8Model(float, "r50", { images: cal }, { cacheDir, threads: 2 });
    const second = await int8Model(float, "r50", { images: cal }, { cacheDir, threads: 2 });
    assert.equal(second.fromCache, true);
    assert.deepEqual(second.model, first.model);
    assert.ok(readdirSync(cacheDir).some((f) => /^calibration-[0-9a-f]{16}\.json$/.test(f)));
    const info = readModelInfo(second.model, "q");
    assert.equal(info.precision, "int8");
    assert.match(info.calibration ?? "", /^[0-9a-f]{64}$/);
    // Other photos: other ranges, another model file.
    const other = await int8Model(
      float,
      "r50",
      { images: cal.slice(0, 2) },
      { cacheDir, threads: 2 },
    );
    assert.equal(other.fromCache, false);
    assert.notEqual(readModelInfo(other.model, "q").calibration, info.calibration);
  },
);

test(
  "default model int8: descriptors agree with float32 on real photos, identity differs",
  sharedOnly,
  async () => {
    const f = await Extractor.create({ cacheDir, threads: 2 });
    const q = await Extractor.create({ precision: "int8", cacheDir, threads: 2 });
    try {
      assert.equal(q.options.precision, "int8");
      assert.equal(f.options.precision, "float32");
      assert.notEqual(q.identity, f.identity);
      assert.equal(q.dim, f.dim);
      const cos: number[] = [];
      for (const p of photos("multiview-dev", 4)) {
        cos.push(cosine(await f.extract(p), await q.extract(p)));
      }
      const mean = cos.reduce((a, b) => a + b) / cos.length;
      // Whitened 1792-d descriptors: the whitening magnifies quantisation noise (un-whitened the
      // agreement is 0.99+); retrieval quality is what int8 is held to (bench quality).
      assert.ok(mean > 0.6, `mean cosine ${mean} (${cos.map((c) => c.toFixed(3))})`);
    } finally {
      await f.release();
      await q.release();
    }
    // The pooled features themselves, before any whitening: int8 must agree closely.
    const fp = await Extractor.create({ whitening: null, scales: 1, cacheDir, threads: 2 });
    const qp = await Extractor.create({
      whitening: null,
      scales: 1,
      precision: "int8",
      cacheDir,
      threads: 2,
    });
    try {
      for (const p of photos("multiview-dev", 2)) {
        const c = cosine(await fp.extract(p), await qp.extract(p));
        assert.ok(c > 0.98, `un-whitened cosine ${c} on ${p}`);
      }
    } finally {
      await fp.release();
      await qp.release();
    }
  },
);

test(
  "an index records its preset: float queries on an int8 index are refused (MODEL_MISMATCH)",
  sharedOnly,
  async () => {
    const dir = join(temp, "fast.sgi");
    const index = await Index.open(dir, {
      create: true,
      model: { preset: "fast" },
      cacheDir,
      threads: 2,
    });
    assert.equal(index.info().modelSpec.preset, "fast");
    await index.close();
    await assert.rejects(
      Index.open(dir, { model: { precision: "float32" }, cacheDir, threads: 2 }),
      isCode("MODEL_MISMATCH"),
    );
    const reopened = await Index.open(dir, { readOnly: true, cacheDir, threads: 2 });
    assert.equal(reopened.info().modelSpec.preset, "fast");
    await reopened.close();
  },
);

test(
  "int8 for a CVNet checkpoint needs calibration photos; calibration needs int8",
  sharedOnly,
  async () => {
    await assert.rejects(
      Extractor.create({
        checkpoint: fixture("cvnet_r50_random.pyth"),
        precision: "int8",
        cacheDir,
      }),
      isCode("INVALID_ARGUMENT", /calibrat/),
    );
    await assert.rejects(
      Extractor.create({ calibration: temp, cacheDir }),
      isCode("INVALID_ARGUMENT", /int8/),
    );
  },
);

test(
  "build-model --precision int8 saves a quantised model that extract adopts (float32 refused)",
  sharedOnly,
  async () => {
    const out = join(temp, "r50-int8.onnx");
    const args = ["build-model", "--checkpoint", fixture("cvnet_r50_random.pyth"), "--out", out];
    const missing = runCli([...args, "--precision", "int8"], { SUPERGLOBAL_CACHE: cacheDir });
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /--calibrate/);
    const photo = photos("debian-photos", 1)[0] as string;
    const r = runCli([...args, "--precision", "int8", "--calibrate", photo], {
      SUPERGLOBAL_CACHE: cacheDir,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /int8/);
    const ex = await Extractor.create({ model: out, cacheDir, threads: 2 });
    assert.equal(ex.options.precision, "int8");
    assert.equal(ex.info.precision, "int8");
    await ex.release();
    await assert.rejects(
      Extractor.create({ model: out, precision: "float32", cacheDir }),
      isCode("INVALID_ARGUMENT", /int8 model/),
    );
  },
);

test("int8 is refused where the CPU lacks VNNI, naming what is missing; an override runs it", () => {
  const noVnni = { arch: "x64", platform: "linux", flags: ["sse4_2", "avx2", "avx512f"] };
  assert.throws(
    () => assertInt8Supported(noVnni, {}),
    isCode("UNSUPPORTED", /avx512_vnni.*avx_vnni|AVX-512 VNNI/),
  );
  assert.doesNotThrow(() => assertInt8Supported(noVnni, { SUPERGLOBAL_INT8: "force" }));
  assert.equal(int8Shortfall({ ...noVnni, flags: ["avx2", "avx512_vnni"] }), null);
  assert.equal(int8Shortfall({ ...noVnni, flags: ["avx2", "avx_vnni"] }), null);
  assert.match(int8Shortfall({ ...noVnni, flags: null }) ?? "", /could not be read/);
  assert.equal(int8Shortfall({ arch: "arm64", platform: "linux", flags: ["fp", "asimddp"] }), null);
  assert.match(int8Shortfall({ arch: "arm64", platform: "linux", flags: ["fp"] }) ?? "", /asimddp/);
  assert.deepEqual(parseCpuFlags("processor : 0\nflags\t\t: fpu avx512_vnni sse\n"), [
    "fpu",
    "avx512_vnni",
    "sse",
  ]);
});

test("presets resolve to their documented settings; explicit options win", () => {
  const fast = resolveOptions({ preset: "fast" });
  assert.deepEqual([fast.scales, fast.maxSide, fast.precision], [1, 1024, "int8"]);
  const balanced = resolveOptions({ preset: "balanced", checkpoint: "x.pyth" });
  assert.deepEqual([balanced.scales, balanced.maxSide, balanced.precision], [3, 1024, "int8"]);
  const exact = resolveOptions({ preset: "exact", checkpoint: "x.pyth" });
  assert.deepEqual([exact.scales, exact.maxSide, exact.precision], [3, null, "float32"]);
  const exactDefault = resolveOptions({ preset: "exact" });
  assert.deepEqual([exactDefault.scales, exactDefault.maxSide], [3, 1024]);
  const mixed = resolveOptions({ preset: "fast", scales: 3, precision: "float32", maxSide: 800 });
  assert.deepEqual([mixed.scales, mixed.maxSide, mixed.precision], [3, 800, "float32"]);
  assert.equal(resolveOptions({}).precision, undefined);
  assert.deepEqual(PRESET_SETTINGS.fast, { scales: 1, maxSide: 1024, precision: "int8" });
  assert.throws(() => resolveOptions({ preset: "turbo" as never }), isCode("INVALID_ARGUMENT"));
  assert.throws(() => resolveOptions({ precision: "int4" as never }), isCode("INVALID_ARGUMENT"));
  assert.throws(() => resolveOptions({ calibration: [] }), isCode("INVALID_ARGUMENT"));
});

test("activation parameters hold zero exactly; the quantile range ignores rare outliers", () => {
  assert.deepEqual(activationParams({ min: 0, max: 2.55 }), {
    scale: Math.fround(0.01),
    zeroPoint: 0,
  });
  const signed = activationParams({ min: -1, max: 1 });
  assert.ok(Math.abs(signed.zeroPoint - 127.5) === 0.5, `zero point ${signed.zeroPoint}`);
  assert.equal(activationParams({ min: 0, max: 0 }).zeroPoint, 0);
  const data = new Float32Array(100_000).map((_, i) => (i % 100) / 100);
  data[7] = 1000;
  const { low, high } = quantileRange(data, 0.9999);
  assert.equal(low, 0);
  assert.ok(high < 2, `high ${high}`);
  assert.equal(quantileRange(data, 1).high, 1000);
  assert.equal(CALIBRATION.scales.length, 1);
});

function cosine(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return d / Math.sqrt(na * nb);
}
