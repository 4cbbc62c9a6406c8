/**
 * The whole descriptor, end to end, against the official code's goldens (float64 run of the
 * random-weight CVNet R50 checkpoint): from the normalised input tensor, from decoded pixels,
 * from the files (the query through its bbox), per scale, for every ablation; small images; the
 * saved model; bad inputs. One extractor per configuration, built once and reused.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readHeadWeights } from "../src/backbone/cvnet/cvnet-network.ts";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import { DESCRIPTOR_DIM, Extractor } from "../src/descriptor/extractor.ts";
import { DescriptorModel } from "../src/descriptor/model.ts";
import type { ScaleSet } from "../src/descriptor/options.ts";
import { SuperglobalError } from "../src/errors.ts";
import { cropToBox } from "../src/image/crop.ts";
import { type BgrImage, decodeImage } from "../src/image/decode.ts";
import { readNpy } from "../src/io/npy.ts";
import { GEM_PLUS, gem } from "../src/pooling/reference/gem.ts";
import { regionalGem } from "../src/pooling/reference/regional-gem.ts";
import { scaleGemMax } from "../src/pooling/scale-gem.ts";
import { l2Normalize, linear } from "../src/pooling/vector.ts";
import { fixture, fixturesDir, manifest, sharedOnly } from "./helpers/shared.ts";

const CHECKPOINT = "cvnet_r50_random.pyth";
const TOL = 1e-4;
const dir = mkdtempSync(join(tmpdir(), "superglobal-extractor-"));

interface Config {
  gemp: boolean;
  rgem: boolean;
  sgem: boolean;
  scales: ScaleSet;
}
const DEFAULT: Config = { gemp: true, rgem: true, sgem: true, scales: 3 };

/** Milliseconds each checkpoint build took, for the save/load comparison. */
const buildMs: number[] = [];
const extractors = new Map<string, Promise<Extractor>>();
const savedModels = new Map<string, Promise<string>>();

/** The model for (gemp, rgem), built from the checkpoint once. */
function built(gemp: boolean, rgem: boolean): Promise<Extractor> {
  const key = `checkpoint gemp=${gemp} rgem=${rgem}`;
  let e = extractors.get(key);
  if (e === undefined) {
    const t = performance.now();
    e = Extractor.create({ checkpoint: fixture(CHECKPOINT), gemp, rgem, threads: 2 }).then((x) => {
      buildMs.push(performance.now() - t);
      return x;
    });
    extractors.set(key, e);
  }
  return e;
}

/** That model saved to the temporary folder, once. */
function saved(gemp: boolean, rgem: boolean): Promise<string> {
  const key = `gemp${Number(gemp)}_rgem${Number(rgem)}`;
  let p = savedModels.get(key);
  if (p === undefined) {
    const path = join(dir, `${key}.onnx`);
    p = built(gemp, rgem).then(async (x) => {
      await x.save(path);
      return path;
    });
    savedModels.set(key, p);
  }
  return p;
}

/**
 * An extractor for `config`. Scales and Scale-GeM are applied in TypeScript, so other values of
 * those reuse the saved model of the same (gemp, rgem).
 */
function extractorFor(config: Config): Promise<Extractor> {
  if (config.sgem && config.scales === 3) return built(config.gemp, config.rgem);
  const key = JSON.stringify(config);
  let e = extractors.get(key);
  if (e === undefined) {
    e = saved(config.gemp, config.rgem).then((model) =>
      Extractor.create({ model, scales: config.scales, sgem: config.sgem, threads: 2 }),
    );
    extractors.set(key, e);
  }
  return e;
}

after(async () => {
  for (const e of extractors.values()) await (await e).release();
  rmSync(dir, { recursive: true, force: true });
});

function maxAbs(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length);
  let m = 0;
  for (let i = 0; i < actual.length; i++) m = Math.max(m, Math.abs(actual[i] - expected[i]));
  return m;
}

function maxAbsValue(v: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]));
  return m;
}

function assertUnitFinite(d: Float32Array, label: string): void {
  assert.equal(d.length, DESCRIPTOR_DIM, label);
  let sum = 0;
  for (const v of d) {
    assert.ok(Number.isFinite(v), `${label}: non-finite value`);
    sum += v * v;
  }
  assert.ok(Math.abs(Math.sqrt(sum) - 1) < 1e-5, `${label}: norm ${Math.sqrt(sum)}`);
}

interface GoldenImage {
  image: string;
  bbx?: [number, number, number, number];
  decoded_bgr: { file: string; shape: number[] };
  input: { file: string; shape: number[] };
  per_scale: { scale: number; size: [number, number]; fc: { file: string } }[];
  descriptor: { file: string };
  ablations: Record<string, { file: string } | undefined>;
  official_crash_scales5?: unknown;
}

function goldenImages(): GoldenImage[] {
  const images = manifest().images as GoldenImage[];
  assert.ok(images.length >= 5);
  return images;
}

const golden = (name: string) => readNpy(fixture(name)).data as Float64Array;

function inputTensor(im: GoldenImage) {
  const t = readNpy(fixture(im.input.file));
  return {
    data: t.data as Float32Array,
    height: t.shape[2] as number,
    width: t.shape[3] as number,
  };
}

function decodedBgr(im: GoldenImage): BgrImage {
  const t = readNpy(fixture(im.decoded_bgr.file));
  return { data: t.data as Uint8Array, height: t.shape[0] as number, width: t.shape[1] as number };
}

test(
  "golden: descriptor from the input tensor, and every per-scale FC vector",
  sharedOnly,
  async (t) => {
    const extractor = await built(true, true);
    let worstDescriptor = 0;
    let worstFc = 0;
    for (const im of goldenImages()) {
      const { descriptor, scales } = await extractor.fromTensor(inputTensor(im));
      assertUnitFinite(descriptor, im.image);
      const err = maxAbs(descriptor, golden(im.descriptor.file));
      worstDescriptor = Math.max(worstDescriptor, err);
      assert.ok(err <= TOL, `${im.image}: descriptor max abs error ${err}`);
      assert.deepEqual(
        scales.map((s) => [s.scale, s.height, s.width]),
        im.per_scale.map((ps) => [ps.scale, ...ps.size]),
      );
      for (const [k, ps] of im.per_scale.entries()) {
        const expected = golden(ps.fc.file);
        const e = maxAbs(scales[k]?.vector as Float32Array, expected);
        const relative = e / maxAbsValue(expected);
        worstFc = Math.max(worstFc, relative);
        assert.ok(relative <= 1e-5, `${im.image} @${ps.scale}: fc relative error ${relative}`);
      }
      t.diagnostic(`${im.image}: descriptor max abs error ${err.toExponential(2)}`);
    }
    t.diagnostic(
      `worst: descriptor ${worstDescriptor.toExponential(2)}, per-scale fc (relative) ${worstFc.toExponential(2)}`,
    );
  },
);

test(
  "golden: from the decoded pixels, from the files, and the query through its bbox",
  sharedOnly,
  async (t) => {
    const extractor = await built(true, true);
    for (const im of goldenImages()) {
      const expected = golden(im.descriptor.file);
      const fromPixels = maxAbs(await extractor.extract(decodedBgr(im)), expected);
      const path = join(fixturesDir, "images", im.image);
      const fromFile = maxAbs(
        await extractor.extract(path, im.bbx === undefined ? {} : { bbox: im.bbx }),
        expected,
      );
      t.diagnostic(
        `${im.image}${im.bbx === undefined ? "" : " (bbox)"}: max abs error from pixels ` +
          `${fromPixels.toExponential(2)}, from the file ${fromFile.toExponential(2)}`,
      );
      assert.ok(fromPixels <= TOL, `${im.image}: from decoded pixels ${fromPixels}`);
      // JPEG decoders may differ by a level; sharp matches OpenCV here, but allow for it.
      const fileTol = im.image.endsWith(".jpg") ? 1e-2 : TOL;
      assert.ok(fromFile <= fileTol, `${im.image}: from the file ${fromFile}`);
    }
  },
);

/** "gemp=0,rgem=1,sgem=1" or "scales=5" → the configuration. */
function ablationConfig(key: string): Config {
  const config = { ...DEFAULT };
  for (const part of key.split(",")) {
    const [name, value] = part.split("=");
    if (name === "scales") config.scales = Number(value) as ScaleSet;
    else if (name === "gemp" || name === "rgem" || name === "sgem") config[name] = value === "1";
    else assert.fail(`unknown ablation ${key}`);
  }
  return config;
}

test("golden: every ablation of the manifest", sharedOnly, async (t) => {
  let count = 0;
  for (const im of goldenImages()) {
    const entries = Object.entries(im.ablations);
    assert.ok(entries.length >= 6, `${im.image}: ${entries.length} ablations`);
    const worst: string[] = [];
    for (const [key, entry] of entries) {
      const extractor = await extractorFor(ablationConfig(key));
      const descriptor = (await extractor.fromTensor(inputTensor(im))).descriptor;
      assertUnitFinite(descriptor, `${im.image} ${key}`);
      if (entry?.file === undefined) continue;
      const err = maxAbs(descriptor, golden(entry.file));
      assert.ok(err <= TOL, `${im.image} ${key}: max abs error ${err}`);
      worst.push(`${key} ${err.toExponential(1)}`);
      count++;
    }
    // Where the official code crashed with 5 scales, ours still gives a unit-norm descriptor.
    if (im.official_crash_scales5 !== undefined) {
      const extractor = await extractorFor({ ...DEFAULT, scales: 5 });
      assertUnitFinite((await extractor.fromTensor(inputTensor(im))).descriptor, im.image);
    }
    t.diagnostic(`${im.image}: ${worst.join(", ")}`);
  }
  assert.ok(count >= 30, `${count} ablation goldens compared`);
});

test(
  "small images never crash: finite unit-norm descriptors; small maps as the TS oracle pools them",
  sharedOnly,
  async (t) => {
    // Crops of a real photo (240×320): the official code crashes on those under 65 px at a scale.
    const photo = await decodeImage(join(fixturesDir, "images", "q_box_in_scene.png"));
    const sizes: [number, number][] = [
      [1, 1],
      [5, 300],
      [40, 40],
      [64, 64],
      [65, 65],
      [91, 91],
    ];
    const head = readHeadWeights(loadCheckpoint(fixture(CHECKPOINT)), CHECKPOINT);
    let worst = 0;
    for (const scales of [1, 3, 5] as const) {
      const extractor = await extractorFor({ ...DEFAULT, scales });
      for (const [h, w] of sizes) {
        const image = cropToBox(photo, [10, 20, 10 + w, 20 + h]);
        const label = `${h}x${w} at ${scales} scale(s)`;
        const { descriptor, scales: perScale } = await extractor.trace(image);
        assertUnitFinite(descriptor, label);
        assert.deepEqual(await extractor.extract(image), descriptor, label);
        // Each scale's vector is the float64 TS pooling of its s4 map (numpy-reflect padding).
        for (const s of perScale) {
          const s4 = s.s4;
          assert.ok(s4 !== undefined);
          assert.deepEqual(
            [s4.height, s4.width],
            [Math.ceil(s.height / 32), Math.ceil(s.width / 32)],
          );
          const pooled = gem(regionalGem(s4), GEM_PLUS.p, GEM_PLUS.eps);
          const expected = linear(head.fcWeight, head.fcBias, l2Normalize(pooled));
          const relative = maxAbs(s.vector, expected) / maxAbsValue(expected);
          worst = Math.max(worst, relative);
          assert.ok(relative <= 2e-6, `${label} @${s.scale}: relative error ${relative}`);
        }
        const combined = l2Normalize(scaleGemMax(perScale.map((s) => s.vector)));
        assert.ok(maxAbs(descriptor, combined) <= 1e-7, label);
      }
    }
    t.diagnostic(`worst per-scale relative error vs the TS oracle ${worst.toExponential(2)}`);
  },
);

test(
  "save → load: one self-contained file, bit-identical descriptors, recorded options enforced",
  sharedOnly,
  async (t) => {
    const builtDefault = await built(true, true);
    const path = await saved(true, true);
    let start = performance.now();
    const loaded = await Extractor.create({ model: path, threads: 2 });
    const loadMs = performance.now() - start;
    try {
      t.diagnostic(
        `checkpoint build ${buildMs.map((ms) => ms.toFixed(0)).join("/")} ms; saved-model load ` +
          `${loadMs.toFixed(0)} ms; file ${(statSync(path).size / 1e6).toFixed(1)} MB`,
      );
      assert.deepEqual(loaded.options, builtDefault.options);
      // The saved model is the same model: same identity as the one built from the checkpoint.
      assert.equal(loaded.identity, builtDefault.identity);
      for (const im of goldenImages().slice(0, 2)) {
        const a = await builtDefault.fromTensor(inputTensor(im));
        const b = await loaded.fromTensor(inputTensor(im));
        assert.deepEqual(b.descriptor, a.descriptor, im.image);
      }
      // Saving a loaded model writes the same model again.
      const again = join(dir, "again.onnx");
      await loaded.save(again);
      assert.equal(statSync(again).size, statSync(path).size);
    } finally {
      await loaded.release();
    }

    // The recorded options are adopted when left out, accepted when equal, refused when not.
    const ablated = await saved(false, true);
    start = performance.now();
    const adopted = await Extractor.create({ model: ablated, scales: 1, threads: 1 });
    try {
      assert.equal(adopted.options.gemp, false);
      assert.equal(adopted.options.rgem, true);
      assert.equal(adopted.options.scales, 1);
    } finally {
      await adopted.release();
    }
    const same = await Extractor.create({
      model: path,
      depth: 50,
      relup: true,
      gemp: true,
      rgem: true,
      sgem: false,
    });
    await same.release();
    for (const [model, option] of [
      [ablated, { gemp: true }],
      [path, { gemp: false }],
      [path, { rgem: false }],
      [path, { relup: false }],
      [path, { depth: 101 as const }],
    ] as const) {
      const name = Object.keys(option)[0] as string;
      await assert.rejects(
        Extractor.create({ model, ...option }),
        (e: unknown) =>
          e instanceof SuperglobalError &&
          e.code === "INVALID_ARGUMENT" &&
          e.input === name &&
          e.message.includes(model),
        name,
      );
    }
    // A model that ends at s4 cannot make descriptors.
    const bareModel = join(dir, "bare.onnx");
    const bare = await DescriptorModel.fromStateDict(
      loadCheckpoint(fixture(CHECKPOINT)),
      { depth: 50, threads: 1 },
      CHECKPOINT,
    );
    await bare.save(bareModel);
    await bare.release();
    await assert.rejects(
      Extractor.create({ model: bareModel }),
      (e: unknown) =>
        e instanceof SuperglobalError && e.code === "BAD_FILE" && e.message.includes("bare.onnx"),
    );
  },
);

test("bad inputs are named, and the extractor still works after them", sharedOnly, async () => {
  const extractor = await built(true, true);
  const good = join(fixturesDir, "images", "b_giraffe.png");
  const expected = await extractor.extract(good);
  const missing = join(dir, "no-such-image.jpg");
  await assert.rejects(
    extractor.extract(missing),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "NOT_FOUND" &&
      e.input === missing &&
      e.message.includes(missing),
  );
  const corrupt = join(dir, "corrupt.jpg");
  writeFileSync(corrupt, Buffer.from("\xff\xd8\xff\xe0 this is not really a JPEG", "latin1"));
  await assert.rejects(
    extractor.extract(corrupt),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_IMAGE" &&
      e.input === corrupt &&
      e.message.includes(corrupt),
  );
  await assert.rejects(
    extractor.extract(new Uint8Array([1, 2, 3, 4]), { name: "upload #7" }),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "BAD_IMAGE" && e.message.includes("upload #7"),
  );
  await assert.rejects(
    extractor.extract(42 as unknown as string),
    (e: unknown) => e instanceof SuperglobalError && e.input === "image",
  );
  await assert.rejects(
    extractor.extract(good, { bbox: [50, 50, 10, 10] }),
    (e: unknown) => e instanceof SuperglobalError && e.input === "box",
  );
  assert.deepEqual(await extractor.extract(good), expected);
  const stats = extractor.stats;
  assert.ok(stats.images > 0 && stats.backbone > 0 && stats.decode > 0);
  for (const v of Object.values(stats)) assert.ok(Number.isFinite(v) && v >= 0);
});

test("options are validated at the boundary", async () => {
  const invalid = (name: string) => (e: unknown) =>
    e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.input === name;
  // No model and no checkpoint is the default model: its CVNet-only options are refused.
  await assert.rejects(Extractor.create({ depth: 50 }), invalid("depth"));
  await assert.rejects(
    Extractor.create({ whitening: 3 as unknown as string }),
    invalid("whitening"),
  );
  await assert.rejects(
    Extractor.create({ checkpoint: "a.pyth", whitening: null }),
    invalid("whitening"),
  );
  await assert.rejects(
    Extractor.create({ checkpoint: "a.pyth", model: "b.onnx" }),
    invalid("options"),
  );
  await assert.rejects(
    Extractor.create({ checkpoint: "a.pyth", scales: 2 as ScaleSet }),
    invalid("scales"),
  );
  await assert.rejects(
    Extractor.create({ checkpoint: "a.pyth", gemp: "no" as unknown as boolean }),
    invalid("gemp"),
  );
  await assert.rejects(
    Extractor.create({ model: join(dir, "absent.onnx") }),
    (e: unknown) => e instanceof SuperglobalError && e.code === "NOT_FOUND",
  );
});
