/**
 * The SuperGlobal pooling head against the official modules: spec Appendix A, torch values, and
 * the per-scale goldens (s4 → rgem → gemp → fc → descriptor) with their ablations.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { loadCheckpoint } from "../src/checkpoint/load.ts";
import { getFloat32 } from "../src/checkpoint/state-dict.ts";
import { SuperglobalError } from "../src/errors.ts";
import { readNpy } from "../src/io/npy.ts";
import { type FeatureMap, GEM_BASELINE_EPS, GEM_PLUS, gem } from "../src/pooling/reference/gem.ts";
import { regionalGem } from "../src/pooling/reference/regional-gem.ts";
import { scaleGemFinite, scaleGemMax, scaleMean } from "../src/pooling/scale-gem.ts";
import { elementwiseMax, elementwiseMean, l2Normalize, linear } from "../src/pooling/vector.ts";
import { fixture, sharedOnly } from "./helpers/shared.ts";

// The manifest holds NaN (per-query AP of queries without positives), which JSON.parse refuses.
// biome-ignore lint/suspicious/noExplicitAny: the manifest is test data with a loose schema
function loadManifest(): any {
  return JSON.parse(readFileSync(fixture("manifest.json"), "utf8").replace(/\bNaN\b/g, "null"));
}

function mapOf(values: number[][][]): FeatureMap {
  return {
    data: Float64Array.from(values.flat(2)),
    channels: values.length,
    height: values[0].length,
    width: values[0][0].length,
  };
}

function goldenMap(file: string): FeatureMap {
  const a = readNpy(fixture(file));
  const [, channels, height, width] = a.shape;
  return { data: a.data as Float32Array, channels, height, width };
}

function golden(file: string): Float64Array {
  return readNpy(fixture(file)).data as Float64Array;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what = "",
) {
  const d = maxAbsDiff(actual, expected);
  assert.ok(d <= tol, `${what} max abs diff ${d} > ${tol}`);
}

/** Largest |a − b| / |b| over b ≠ 0; where b = 0, a must be 0 too. */
function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    if (b[i] === 0) assert.equal(a[i], 0, `element ${i}`);
    else m = Math.max(m, Math.abs(a[i] - b[i]) / Math.abs(b[i]));
  }
  return m;
}

function throwsInvalid(fn: () => unknown, name: string) {
  assert.throws(
    fn,
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.message.includes(name),
  );
}

// --- spec Appendix A and torch values -----------------------------------------------------------

// x[c,h,w] = ((7c + 3h + 5w) mod 11) / 10, shape 2x4x5.
const APPENDIX_X = mapOf(
  [0, 1].map((c) =>
    [0, 1, 2, 3].map((h) => [0, 1, 2, 3, 4].map((w) => ((7 * c + 3 * h + 5 * w) % 11) / 10)),
  ),
);
const APPENDIX_RGEM = [
  [0.2839915096, 0.560705331, 0.8050008797, 0.5399677118, 0.790931476],
  [0.4582028552, 0.7107333207, 0.4093402683, 0.6719884817, 0.3783049195],
  [0.5980771514, 0.3079984144, 0.5674663548, 0.8349767017, 0.5510997488],
  [0.7274951269, 0.4607477751, 0.7011290637, 0.4239973192, 0.6704032475],
  [0.6691982259, 0.3500630971, 0.6050960272, 0.2724972567, 0.5376946638],
  [0.8420336624, 0.530812083, 0.777146025, 0.4538684295, 0.7089473565],
  [0.4134738399, 0.6669996371, 0.3483437412, 0.5940080987, 0.2798486302],
  [0.5901900616, 0.8370370835, 0.5247309407, 0.7623367425, 0.4561204804],
].flat();

test("regionalGem reproduces spec Appendix A", () => {
  const out = regionalGem(APPENDIX_X);
  assert.deepEqual([out.channels, out.height, out.width], [2, 4, 5]);
  assertClose(out.data, APPENDIX_RGEM, 1e-9, "rgem");
});

test("gem with GeM+ constants reproduces spec Appendix A on rgem(x)", () => {
  const g = gem(regionalGem(APPENDIX_X), GEM_PLUS.p, GEM_PLUS.eps);
  assertClose(g, [0.6401804390386812, 0.6389256689488682], 1e-14, "gem+");
});

test("scaleGemMax and the finite Scale-GeM branch reproduce spec Appendix A", () => {
  const v = [
    [0.3, -0.2, 0.9],
    [0.1, 0.5, 0.4],
    [-0.7, 0.2, 0.2],
  ];
  assertClose(scaleGemMax(v), [0.309426373877638, 0.7715167498104595, 0.928279121632914], 1e-15);
  assertClose(
    scaleGemFinite(v),
    [0.20514324347519508, 0.3810726698263125, 0.7373244074607579],
    1e-15,
  );
  // The ablation: a plain mean of the unnormalised vectors.
  assertClose(scaleMean(v), [-0.1, 0.5 / 3, 0.5], 1e-16);
});

test("regionalGem matches torch at the smallest map torch accepts (3x4)", () => {
  // torch 1.13 float64: 0.5·LPPool2d(2.5, 5, 1)(ReflectionPad2d(2)(x / 25^0.4)) + 0.5·x.
  const x = mapOf(
    [0, 1].map((c) => [0, 1, 2].map((h) => [0, 1, 2, 3].map((w) => ((2 * h + 3 * w + c) % 5) / 4))),
  );
  const expected = [
    0.2833877939809697, 0.6768142322039781, 0.4296066437301521, 0.7773525951680293,
    0.5295523546371863, 0.2812329709933349, 0.6713362529167378, 0.40551735377415793,
    0.7773525951680293, 0.5546066437301521, 0.3026748442421492, 0.6742055279219092,
    0.4653566593420754, 0.841978658321457, 0.5948248313711024, 0.35880199170385585,
    0.7359615084210829, 0.46299641243602246, 0.860301195259568, 0.6114522093353594,
    0.3588019917038559, 0.7198248313711024, 0.4675107001587407, 0.8629350389033734,
  ];
  assertClose(regionalGem(x).data, expected, 1e-14, "rgem 3x4");
});

// --- maps smaller than torch accepts ------------------------------------------------------------

/** Regional-GeM written plainly with numpy-style repeated reflection, for any map size. */
function referenceRegionalGem(map: FeatureMap): number[] {
  const reflect = (i: number, n: number) => {
    if (n === 1) return 0;
    const period = 2 * (n - 1);
    const m = ((i % period) + period) % period;
    return m < n ? m : period - m;
  };
  const { channels, height, width, data } = map;
  const out: number[] = [];
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let s = 0;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) {
            const v = data[(c * height + reflect(y + dy, height)) * width + reflect(x + dx, width)];
            s += v ** 2.5;
          }
        }
        out.push(0.5 * (s / 25) ** 0.4 + 0.5 * data[(c * height + y) * width + x]);
      }
    }
  }
  return out;
}

test("the plain reference agrees with Appendix A, so it can judge the small maps", () => {
  assertClose(referenceRegionalGem(APPENDIX_X), APPENDIX_RGEM, 1e-9);
});

test("regionalGem on maps under 3x3 reflects back and forth instead of crashing", () => {
  // 1x1: every window is the single value, so the map comes back (up to rounding).
  const one = mapOf([[[0.7]], [[0]], [[2.5]]]);
  assertClose(regionalGem(one).data, [0.7, 0, 2.5], 1e-15, "1x1");

  // 2x2 [[a, b], [c, d]]: padded indices −2…3 → 0,1,0,1,0,1, so the window of (0,0) holds
  // a nine times, b and c six times, d four times: R = ((9a' + 6b' + 6c' + 4d') / 25)^0.4.
  const [a, b, c, d] = [0.2, 0.9, 0.4, 0.6];
  const p = (v: number) => v ** 2.5;
  const r00 = ((9 * p(a) + 6 * p(b) + 6 * p(c) + 4 * p(d)) / 25) ** 0.4;
  const r11 = ((4 * p(a) + 6 * p(b) + 6 * p(c) + 9 * p(d)) / 25) ** 0.4;
  const two = regionalGem(
    mapOf([
      [
        [a, b],
        [c, d],
      ],
    ]),
  );
  assert.ok(Math.abs(two.data[0] - (0.5 * r00 + 0.5 * a)) < 1e-15);
  assert.ok(Math.abs(two.data[3] - (0.5 * r11 + 0.5 * d)) < 1e-15);

  for (const values of [
    [[[0.1, 0.8, 0.3, 0.0, 1.2]]], // 1x5: torch's reflection along W, repetition along H
    [[[0.1], [0.8], [0.3], [0.0], [1.2]]], // 5x1
    [
      [
        [0.5, 0.25],
        [1, 0],
        [0.75, 2],
      ],
    ], // 3x2
    [
      [
        [0.2, 0.9],
        [0.4, 0.6],
      ],
      [
        [1, 0],
        [0, 1],
      ],
    ],
  ]) {
    const map = mapOf(values);
    const out = regionalGem(map);
    assert.deepEqual([out.channels, out.height, out.width], [map.channels, map.height, map.width]);
    assert.ok(Array.from(out.data).every(Number.isFinite));
    assertClose(out.data, referenceRegionalGem(map), 1e-14, JSON.stringify(values));
  }
});

test("gem on tiny maps: a 1x1 map pools to its values, clamped at eps", () => {
  const g = gem(mapOf([[[0.7]], [[0]], [[-3]]]), GEM_PLUS.p, GEM_PLUS.eps);
  assertClose(g, [0.7, 1e-8, 1e-8], 1e-15);
  const row = gem(mapOf([[[1, 2, 3, 4, 5]]]), 3, GEM_BASELINE_EPS);
  assertClose(row, [(225 / 5) ** (1 / 3)], 1e-14);
});

test("negative inputs give NaN in regionalGem, as torch's pow does", () => {
  const out = regionalGem(
    mapOf([
      [
        [0.5, -0.5, 0.5],
        [0.5, 0.5, 0.5],
        [0.5, 0.5, 0.5],
      ],
    ]),
  );
  assert.ok(Number.isNaN(out.data[1]));
});

test("pooling arguments are validated", () => {
  const ok = mapOf([
    [
      [1, 2],
      [3, 4],
    ],
  ]);
  throwsInvalid(() => regionalGem({ ...ok, data: new Float32Array(3) }), "map.data");
  throwsInvalid(() => regionalGem({ ...ok, height: 0 }), "map.height");
  throwsInvalid(() => regionalGem(ok, 2.5, 4), "size");
  throwsInvalid(() => regionalGem(ok, 0), "p");
  throwsInvalid(() => gem(ok, -1, 1e-8), "p");
  throwsInvalid(() => gem({ ...ok, channels: 2 }, 4.6, 1e-8), "map.data");
  throwsInvalid(() => scaleGemMax([]), "perScale");
  throwsInvalid(() => scaleMean([[1, 2], [1]]), "perScale[1]");
  throwsInvalid(() => linear(new Float32Array(5), new Float32Array(2), [1, 2]), "weight");
});

// --- vectors ------------------------------------------------------------------------------------

test("l2Normalize has F.normalize semantics, linear is W x + b", () => {
  assertClose(l2Normalize([3, 4]), [0.6, 0.8], 1e-16);
  // Below eps the vector is divided by eps, not by its norm.
  assertClose(l2Normalize([3e-13, 4e-13]), [0.3, 0.4], 1e-16);
  assert.deepEqual([...l2Normalize([0, 0])], [0, 0]);
  const w = Float32Array.from([1, 2, 3, 4, 5, 6]); // [2, 3] row-major
  assert.deepEqual([...linear(w, Float32Array.from([0.5, -1]), [1, 0, -1])], [-1.5, -3]);
  assert.deepEqual(
    [
      ...elementwiseMax([
        [1, 5],
        [3, 2],
      ]),
    ],
    [3, 5],
  );
  assert.deepEqual(
    [
      ...elementwiseMean([
        [1, 5],
        [3, 2],
      ]),
    ],
    [2, 3.5],
  );
});

// --- the golden per-scale chain -----------------------------------------------------------------

test("regionalGem and gem reproduce the golden rgem and gemp maps", sharedOnly, (t) => {
  let rgemRel = 0;
  let rgemAbs = 0;
  let gemRel = 0;
  for (const im of loadManifest().images) {
    for (const ps of im.per_scale) {
      const r = regionalGem(goldenMap(ps.s4.file));
      const expected = goldenMap(ps.rgem.file);
      // The goldens are float32 roundings of float64 maps: ~1e-7 relative is all that is left.
      rgemRel = Math.max(rgemRel, maxRelDiff(r.data, expected.data));
      rgemAbs = Math.max(rgemAbs, maxAbsDiff(r.data, expected.data));
      const g = gem(expected, GEM_PLUS.p, GEM_PLUS.eps);
      gemRel = Math.max(gemRel, maxRelDiff(g, golden(ps.gemp.file)));
    }
  }
  t.diagnostic(`rgem max rel ${rgemRel.toExponential(2)}, max abs ${rgemAbs.toExponential(2)}`);
  t.diagnostic(`gem(golden rgem) vs gemp max rel ${gemRel.toExponential(2)}`);
  assert.ok(rgemRel < 2.5e-7, `rgem rel ${rgemRel}`);
  assert.ok(gemRel < 2.5e-7, `gemp rel ${gemRel}`);
});

test(
  "the FC head, Scale-GeM and the reconstructible ablations match the goldens",
  sharedOnly,
  (t) => {
    const m = loadManifest();
    const sd = loadCheckpoint(fixture(m.checkpoint));
    const weight = getFloat32(sd, "encoder_q.head.fc.weight", [2048, 2048]);
    const bias = getFloat32(sd, "encoder_q.head.fc.bias", [2048]);
    const learnedP = getFloat32(sd, "encoder_q.head.pool.p", [1])[0];
    const head = (pooled: Float64Array) => linear(weight, bias, l2Normalize(pooled));
    const err: Record<string, number> = {};
    const note = (key: string, v: number) => {
      err[key] = Math.max(err[key] ?? 0, v);
    };

    for (const im of m.images) {
      const fc = im.per_scale.map((ps: { fc: { file: string } }) => golden(ps.fc.file));
      im.per_scale.forEach((ps: { gemp: { file: string } }, s: number) => {
        note("fc", maxAbsDiff(head(golden(ps.gemp.file)), fc[s]));
      });
      const descriptor = golden(im.descriptor.file);
      note("descriptor", maxAbsDiff(l2Normalize(scaleGemMax(fc)), descriptor));
      const abl = (key: string) => golden(im.ablations[key].file);
      note("sgem=0", maxAbsDiff(l2Normalize(scaleMean(fc)), abl("gemp=1,rgem=1,sgem=0")));
      note("scales=1", maxAbsDiff(l2Normalize(scaleGemMax([fc[1]])), abl("scales=1")));

      // From the float32 s4 goldens down: the float32 storage bounds these to ~1e-9.
      const s4 = im.per_scale.map((ps: { s4: { file: string } }) => goldenMap(ps.s4.file));
      const run = (rgem: boolean, gemPlus: boolean, sgem: boolean) => {
        const perScale = s4.map((x: FeatureMap) => {
          const map = rgem ? regionalGem(x) : x;
          return head(gemPlus ? gem(map, GEM_PLUS.p, GEM_PLUS.eps) : gem(map, learnedP, 1e-6));
        });
        return l2Normalize(sgem ? scaleGemMax(perScale) : scaleMean(perScale));
      };
      note("from s4", maxAbsDiff(run(true, true, true), descriptor));
      note("from s4 rgem=0", maxAbsDiff(run(false, true, true), abl("gemp=1,rgem=0,sgem=1")));
      note("from s4 gemp=0", maxAbsDiff(run(true, false, true), abl("gemp=0,rgem=1,sgem=1")));
      note("from s4 all off", maxAbsDiff(run(false, false, false), abl("gemp=0,rgem=0,sgem=0")));
      note(
        "vs official float32",
        maxAbsDiff(run(true, true, true), golden(im.descriptor_official_float32.file)),
      );
    }
    t.diagnostic(
      Object.entries(err)
        .map(([k, v]) => `${k}: ${v.toExponential(2)}`)
        .join(", "),
    );
    assert.ok(err["fc"] < 1e-13, `fc ${err["fc"]}`);
    assert.ok(err["descriptor"] < 1e-14, `descriptor ${err["descriptor"]}`);
    assert.ok(err["sgem=0"] < 1e-14, `sgem=0 ${err["sgem=0"]}`);
    assert.ok(err["scales=1"] < 1e-14, `scales=1 ${err["scales=1"]}`);
    for (const key of ["from s4", "from s4 rgem=0", "from s4 gemp=0", "from s4 all off"]) {
      assert.ok(err[key] < 2e-9, `${key} ${err[key]}`);
    }
    assert.ok(err["vs official float32"] < 1e-7, `float32 run ${err["vs official float32"]}`);
    assert.equal(learnedP, 3); // the random checkpoint's head.pool.p
  },
);
