/**
 * The default network (nsfwjs's MobileNetV2 converted to ONNX): its output matches the original
 * tfjs graph run by @tensorflow/tfjs (cpu backend) up to the cut node, on real photos at sizes
 * that exercise TF's SAME padding (odd and even); bad model files are named in errors; the
 * converted model is cached, reused, and rebuilt when the cached file is corrupt.
 */
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import {
  buildDefaultNetwork,
  CONVERTER_VERSION,
} from "../src/backbone/mobilenet/default-network.ts";
import {
  CUT_NODE,
  convertMobilenet,
  FEATURE_CHANNELS,
  findNode,
  INPUT_NAME,
  MOBILENET_KIND,
  MOBILENET_METADATA,
  OUTPUT_NAME,
} from "../src/backbone/mobilenet/mobilenet-graph.ts";
import { nsfwjsPackage } from "../src/backbone/mobilenet/nsfwjs-package.ts";
import { decodeWeights, readTfjsGraphModel } from "../src/backbone/mobilenet/tfjs-model.ts";
import { SuperglobalError } from "../src/errors.ts";
import { readMetadata } from "../src/runtime/onnx-graph.ts";
import { OnnxSession } from "../src/runtime/session.ts";
import { assetsDir } from "./helpers/shared.ts";

const photosDir = join(assetsDir, "debian-photos", "darknet");
const photosOnly = existsSync(photosDir)
  ? {}
  : { skip: `test photos not found at ${photosDir} (set SUPERGLOBAL_SHARED)` };

const pkg = nsfwjsPackage();
let converted: Uint8Array | undefined;
function network(): Uint8Array {
  converted ??= buildDefaultNetwork();
  return converted;
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "superglobal-mobilenet-"));
}

/** `fn` must throw a SuperglobalError with this code whose message and input name `file`. */
function assertNames(fn: () => unknown, code: string, file: string, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SuperglobalError, String(e));
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.includes(file), e.message);
    assert.equal(e.input, file);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  });
}

test("the model files parse: 178 nodes, 108 uint8-quantised float32 weights", () => {
  const model = readTfjsGraphModel(pkg.modelDir);
  assert.equal(model.nodes.length, 178);
  assert.equal(model.weightSpecs.length, 108);
  assert.ok(model.weightSpecs.every((s) => s.quantization?.dtype === "uint8"));
  const weights = decodeWeights(model);
  // The [0,1] → [-1,1] rescale constants survive quantisation exactly (q=0, min=2 and 1).
  const y = (suffix: string) => [...weights].find(([name]) => name.endsWith(suffix))![1];
  assert.deepEqual([...y("hub_input/Mul/y").data], [2]);
  assert.deepEqual([...y("hub_input/Sub/y").data], [1]);
  assert.deepEqual(y("MobilenetV2/Conv_1/Conv2D_weights").shape, [1, 1, 448, 1792]);
});

test("the converted model records what it is", () => {
  const meta = readMetadata(network());
  assert.equal(meta[MOBILENET_METADATA.kind], MOBILENET_KIND);
  assert.equal(meta[MOBILENET_METADATA.source], `nsfwjs@${pkg.version}`);
  assert.equal(meta[MOBILENET_METADATA.cut], CUT_NODE);
  assert.equal(meta[MOBILENET_METADATA.channels], String(FEATURE_CHANNELS));
  assert.equal(meta[MOBILENET_METADATA.converter], CONVERTER_VERSION);
});

test(
  "onnxruntime on the converted graph matches tfjs on the original graph",
  photosOnly,
  async (t) => {
    const model = readTfjsGraphModel(pkg.modelDir);
    // tfjs checks inputs against the Placeholder's [-1,224,224,3]; let any size through.
    const json = structuredClone(model.json) as { modelTopology: { node: TfjsJsonNode[] } };
    for (const node of json.modelTopology.node) {
      if (node.op === "Placeholder")
        node.attr.shape.shape.dim = [-1, -1, -1, 3].map(String).map((size) => ({ size }));
    }
    await tf.setBackend("cpu");
    // tfjs dequantises the raw shard bytes itself, so this also checks decodeWeights.
    const reference = await tf.loadGraphModel({
      load: async () => ({
        format: "graph-model",
        modelTopology: json.modelTopology,
        weightSpecs: model.weightSpecs as tf.io.WeightsManifestEntry[],
        weightData: model.weightData.slice().buffer,
      }),
    });
    const cut = findNode(model, CUT_NODE).name;
    const session = await OnnxSession.create(network(), { threads: 2 });
    try {
      for (const [photo, width, height] of [
        ["dog.jpg", 160, 120],
        ["eagle.jpg", 97, 131],
        ["horses.jpg", 224, 224],
      ] as const) {
        const raw = await sharp(join(photosDir, photo))
          .resize(width, height, { fit: "fill" })
          .removeAlpha()
          .raw()
          .toBuffer();
        const nhwc = Float32Array.from(raw, (v) => v / 255);
        const plane = width * height;
        const nchw = new Float32Array(3 * plane);
        for (let i = 0; i < plane; i++)
          for (let c = 0; c < 3; c++) nchw[c * plane + i] = nhwc[3 * i + c];

        const input = tf.tensor4d(nhwc, [1, height, width, 3]);
        const expected = reference.execute(input, cut) as tf.Tensor;
        const want = expected.dataSync() as Float32Array;
        const [, h, w, channels] = expected.shape;
        tf.dispose([input, expected]);

        const out = (
          await session.run({ [INPUT_NAME]: { data: nchw, dims: [1, 3, height, width] } })
        )[OUTPUT_NAME];
        assert.deepEqual(out.dims, [
          1,
          FEATURE_CHANNELS,
          Math.ceil(height / 32),
          Math.ceil(width / 32),
        ]);
        assert.deepEqual([h, w, channels], [out.dims[2], out.dims[3], FEATURE_CHANNELS]);
        const got = out.data as Float32Array;
        let maxDiff = 0;
        let maxAbs = 0;
        for (let c = 0; c < channels; c++) {
          for (let i = 0; i < h * w; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(got[c * h * w + i] - want[i * channels + c]));
            maxAbs = Math.max(maxAbs, Math.abs(want[i * channels + c]));
          }
        }
        t.diagnostic(
          `${photo} ${width}x${height}: max |onnx - tfjs| = ${maxDiff.toExponential(2)} (max |tfjs| ${maxAbs})`,
        );
        assert.ok(maxAbs > 1, `${photo}: the features are not all near zero`);
        assert.ok(maxDiff <= 1e-4, `${photo} ${width}x${height}: max abs difference ${maxDiff}`);
      }
    } finally {
      await session.release();
      reference.dispose();
    }
  },
);

interface TfjsJsonNode {
  op: string;
  attr: { shape: { shape: { dim: { size: string }[] } } };
}

test("a missing or corrupt model file is named in the error", () => {
  const dir = tempDir();
  try {
    cpSync(pkg.modelDir, dir, { recursive: true });
    const shard1 = join(dir, "group1-shard1of2.min.js");
    const shard2 = join(dir, "group1-shard2of2.min.js");
    const modelFile = join(dir, "model.min.js");
    const original = readFileSync(shard2, "utf8");

    rmSync(shard2);
    assertNames(() => readTfjsGraphModel(dir), "NOT_FOUND", shard2);

    writeFileSync(shard2, original.slice(0, original.length >> 1)); // cut mid-string
    assertNames(() => readTfjsGraphModel(dir), "BAD_FILE", shard2, /malformed module literal/);

    writeFileSync(shard2, original.replace(/exports="[^"]{8}/, 'exports="')); // 6 bytes short
    assertNames(() => readTfjsGraphModel(dir), "BAD_FILE", modelFile, /group1-shard2of2\.min\.js/);

    writeFileSync(shard2, original.replace(/exports="[^"]{4}/, 'exports="%%%%'));
    assertNames(() => readTfjsGraphModel(dir), "BAD_FILE", shard2, /base64/);

    writeFileSync(shard2, original);
    writeFileSync(shard1, "not a module");
    assertNames(() => readTfjsGraphModel(dir), "BAD_FILE", shard1);

    rmSync(shard1);
    writeFileSync(
      modelFile,
      readFileSync(modelFile, "utf8").replace("modelTopology:", "modelTopology:{,"),
    );
    assertNames(() => readTfjsGraphModel(dir), "BAD_FILE", modelFile, /malformed module literal/);

    rmSync(modelFile);
    assertNames(() => readTfjsGraphModel(dir), "NOT_FOUND", modelFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an op kind the converter does not know is refused by name", () => {
  const model = readTfjsGraphModel(pkg.modelDir);
  const target = findNode(model, "MobilenetV2/expanded_conv_2/add").name;
  const altered = {
    ...model,
    nodes: model.nodes.map((n) => (n.name === target ? { ...n, op: "Maximum" } : n)),
  };
  assertNames(
    () => convertMobilenet(altered, { source: "test", converter: "test" }),
    "UNSUPPORTED",
    model.file,
    /op Maximum \(node .*expanded_conv_2\/add\)/,
  );
});
