/**
 * The per-scale descriptor head (spec §4.1–§4.3, §4.5) as float32 ONNX nodes appended to a
 * network's feature map: Regional-GeM → GeM+ (or a learned-p GeM) → L2 → FC. Running it inside
 * onnxruntime replaces ~10M scalar `Math.pow`s per image in JS with vectorised kernels. Scale-GeM
 * and the final L2 stay in TypeScript. The FC is CVNet's learned projection, or a whitening
 * (centring folded into the bias) for other networks.
 *
 * Overflow: x^4.6 overflows float32 once x passes ~2e8^(1/4.6)... in practice ResNet-101 conv5
 * activations reach ~4e7, whose 4.6th power (~1e35) summed over a map overflows. Each power is
 * therefore taken of the map divided by its per-channel maximum M and the root multiplied back:
 * (mean (x/M)^p)^(1/p)·M, equal in real arithmetic, and every power then lies in [0, 1].
 */
import { invalidArgument } from "../errors.ts";
import type { OnnxGraph } from "../runtime/onnx-graph.ts";
import { GEM_BASELINE_EPS, GEM_PLUS, NORMALIZE_EPS, RGEM } from "./constants.ts";

/** Which SuperGlobal pooling modules the head applies (both default on, as `SupG` does). */
export interface HeadOptions {
  /** Regional-GeM (p 2.5, 5×5, reflection padding); off: the raw feature map. */
  rgem: boolean;
  /** GeM+ (p 4.6, eps 1e-8); off: GeM with the network's learned p (`poolP`), eps 1e-6. */
  gemp: boolean;
}

/** The learned parts of the head. */
export interface HeadWeights {
  /** [out, channels], torch Linear layout (CVNet's FC, or a whitening projection). */
  fcWeight: Float32Array;
  /** [out]. */
  fcBias: Float32Array;
  /** The learned GeM p (CVNet's `encoder_q.head.pool.p`), used only with GeM+ off. */
  poolP: number;
}

export const VECTOR_OUTPUT = "vector";

/**
 * Appends the head to `graph`, reading the map `features` [1, channels, h, w]; declares and
 * returns the output `vector` [1, out] (the FC output of this scale). Any h, w ≥ 1 works (see
 * `reflectPad2`). The intermediates `rgem` (the map after Regional-GeM, when on) and `gem` (the
 * pooled [1, channels]) can be declared as extra outputs for inspection.
 *
 * Powers: x^2.5 is `x·x·√x` and other powers `exp(p·ln x)`. onnxruntime's `Pow` with a
 * non-integer exponent calls `std::pow` per element: on the 5.6M values of a 1024×768 image's three
 * maps it takes ~30 ms, `Log`+`Mul`+`Exp` ~12 ms and `Mul`+`Sqrt`+`Mul` ~5 ms (the whole head:
 * ~60 ms with these forms, ~100 ms with `Pow`). All stay within a few float32 ulps. Inputs are
 * non-negative (ReLU output), and ln 0 = −∞ gives exp(−∞) = 0 = 0^p, as onnxruntime computes it.
 */
export function appendDescriptorHead(
  graph: OnnxGraph,
  features: string,
  channels: number,
  weights: HeadWeights,
  options: HeadOptions,
): string {
  const out = weights.fcBias.length;
  if (out === 0 || weights.fcWeight.length !== out * channels) {
    invalidArgument(
      "weights.fcWeight",
      `${out}×${channels} values (fcBias has ${out})`,
      weights.fcWeight,
    );
  }
  const scalar = (name: string, v: number) => graph.floatInit(name, [], new Float32Array([v]));
  let x = features;
  if (options.rgem) x = regionalGem(graph, x, scalar);
  const [p, eps] = options.gemp ? [GEM_PLUS.p, GEM_PLUS.eps] : [weights.poolP, GEM_BASELINE_EPS];
  // GeM: (mean_hw clamp(x, eps)^p)^(1/p), scaled by the channel maximum (see the file doc).
  const clamped = graph.node("Clip", [x, scalar("gem.eps", eps)], {}, ["gem.clamped"])[0];
  const max = graph.node("ReduceMax", [clamped], { axes: [2, 3], keepdims: 1 }, ["gem.max"])[0];
  const ratio = graph.node("Div", [clamped, max], {}, ["gem.ratio"])[0];
  const powered = power(graph, ratio, p, "gem", scalar);
  const mean = graph.node("ReduceMean", [powered], { axes: [2, 3], keepdims: 1 }, ["gem.mean"])[0];
  const root = graph.node("Pow", [mean, scalar("gem.inv_p", 1 / p)], {}, ["gem.root"])[0];
  const scaled = graph.node("Mul", [root, max], {}, ["gem.scaled"])[0];
  const g = graph.node("Flatten", [scaled], { axis: 1 }, ["gem"])[0];
  // F.normalize: g / max(‖g‖, 1e-12).
  const norm = graph.node("ReduceL2", [g], { axes: [1], keepdims: 1 }, ["l2.norm"])[0];
  const clampedNorm = graph.node("Max", [norm, scalar("l2.eps", NORMALIZE_EPS)], {}, [
    "l2.clamped",
  ])[0];
  const unit = graph.node("Div", [g, clampedNorm], {}, ["l2"])[0];
  graph.node(
    "Gemm",
    [
      unit,
      graph.floatInit("fc.weight", [out, channels], weights.fcWeight),
      graph.floatInit("fc.bias", [out], weights.fcBias),
    ],
    { transB: 1 },
    [VECTOR_OUTPUT],
  );
  graph.output(VECTOR_OUTPUT, [1, out]);
  return VECTOR_OUTPUT;
}

type Scalar = (name: string, v: number) => string;

/**
 * `0.5 · (mean_{5×5} pad(x)^2.5)^(1/2.5) + 0.5 · x`. The official code divides by 25^(1/2.5)
 * before the LP pool and multiplies the average by 25 after it; the two cancel exactly in real
 * arithmetic, so they are left out. `0.5·a + 0.5·b` is computed as `0.5·(a + b)`, the same float32
 * value (halving is exact).
 */
function regionalGem(graph: OnnxGraph, x: string, scalar: Scalar): string {
  // Scaled by the channel maximum against overflow (see the file doc); the floor keeps an
  // all-zero channel at 0 instead of 0/0.
  const max = graph.node(
    "Max",
    [
      graph.node("ReduceMax", [x], { axes: [2, 3], keepdims: 1 }, ["rgem.max"])[0],
      scalar("rgem.tiny", 1e-30),
    ],
    {},
    ["rgem.scale"],
  )[0];
  const ratio = graph.node("Div", [x, max], {}, ["rgem.ratio"])[0];
  // The power is element-wise, so it commutes with the padding: taken first, on fewer values.
  const powered = power(graph, ratio, RGEM.p, "rgem", scalar);
  const padded = reflectPad2(graph, powered);
  const mean = graph.node(
    "AveragePool",
    [padded],
    { kernel_shape: [RGEM.size, RGEM.size], strides: [1, 1] },
    ["rgem.mean"],
  )[0];
  const root = power(graph, mean, 1 / RGEM.p, "rgem.root", scalar);
  const unscaled = graph.node("Mul", [root, max], {}, ["rgem.unscaled"])[0];
  const sum = graph.node("Add", [unscaled, x], {}, ["rgem.sum"])[0];
  return graph.node("Mul", [sum, scalar("rgem.half", 0.5)], {}, ["rgem"])[0];
}

/**
 * Reflection padding of H and W by 2 for every map size. torch's ReflectionPad2d (and ONNX `Pad`
 * mode reflect) need pad < side, i.e. maps of at least 3×3 (images of at least 65 px at every
 * scale); below that the official code crashes. Here a side is padded as numpy's
 * `pad(mode="reflect")` (and the TS `regionalGem`) pads it: reflection without repeating the edge,
 * reflected again while out of range, which equals torch wherever torch works. For a side n < 3
 * that is periodic: [a] → [a a a a a], [a b] → [a b a b a b], i.e. the side tiled 5 or 3 times. So
 * a `Tile` (repeats computed from the shape at run time: 5, 3 or 1) is followed by a reflect `Pad`
 * by 2 where n ≥ 3 and by 0 where the tiling already did it. In the usual case the Tile is a
 * copy, far cheaper than gathering the padded map (`Gather` on the last axis copies element by
 * element, 4x slower than `Pad`).
 */
function reflectPad2(graph: OnnxGraph, x: string): string {
  const int = (name: string, v: number) => graph.int64Init(name, [1], [v]);
  const shape = graph.node("Shape", [x], {}, ["rgem.shape"])[0];
  const zero = int("rgem.zero", 0);
  const one = int("rgem.one", 1);
  const two = int("rgem.two", 2);
  const three = int("rgem.three", 3);
  const repeats: string[] = [];
  const pads: string[] = [];
  for (const [axis, label] of [
    [2, "h"],
    [3, "w"],
  ] as const) {
    const v = (suffix: string) => `rgem.${label}_${suffix}`;
    const n = graph.node("Gather", [shape, int(v("axis"), axis)], { axis: 0 }, [v("n")])[0];
    // repeats = 1 + 2·max(0, 3 − n): 5, 3, then 1 from n = 3 on.
    const short = graph.node("Max", [graph.node("Sub", [three, n], {}, [v("3-n")])[0], zero], {}, [
      v("short"),
    ])[0];
    const twice = graph.node("Mul", [short, two], {}, [v("2short")])[0];
    repeats.push(graph.node("Add", [twice, one], {}, [v("repeats")])[0]);
    // pad = 2·min(1, max(0, n − 2)): 0 for n < 3, else 2.
    const over = graph.node("Max", [graph.node("Sub", [n, two], {}, [v("n-2")])[0], zero], {}, [
      v("over"),
    ])[0];
    const capped = graph.node("Min", [over, one], {}, [v("is_long")])[0];
    pads.push(graph.node("Mul", [capped, two], {}, [v("pad")])[0]);
  }
  const [rh, rw] = repeats as [string, string];
  const [ph, pw] = pads as [string, string];
  const tiled = graph.node(
    "Tile",
    [x, graph.node("Concat", [one, one, rh, rw], { axis: 0 }, ["rgem.repeats"])[0]],
    {},
    ["rgem.tiled"],
  )[0];
  // pads: begins then ends of N, C, H, W.
  const padAmounts = graph.node("Concat", [zero, zero, ph, pw, zero, zero, ph, pw], { axis: 0 }, [
    "rgem.pads",
  ])[0];
  return graph.node("Pad", [tiled, padAmounts], { mode: "reflect" }, ["rgem.padded"])[0];
}

/** x^p for x ≥ 0 (see `appendDescriptorHead` for the forms). */
function power(graph: OnnxGraph, x: string, p: number, name: string, scalar: Scalar): string {
  if (p === 2.5) {
    const sq = graph.node("Mul", [x, x], {}, [`${name}.sq`])[0];
    const root = graph.node("Sqrt", [x], {}, [`${name}.sqrt`])[0];
    return graph.node("Mul", [sq, root], {}, [`${name}.pow`])[0];
  }
  const log = graph.node("Log", [x], {}, [`${name}.log`])[0];
  const scaled = graph.node("Mul", [log, scalar(`${name}.p`, p)], {}, [`${name}.plog`])[0];
  return graph.node("Exp", [scaled], {}, [`${name}.pow`])[0];
}
