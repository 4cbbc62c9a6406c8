/**
 * The CVNet ResNet-50/101 backbone (SuperGlobal `model/resnet.py`, spec §3) as an ONNX graph,
 * built from a CVNet state dict: normalised BGR image [1,3,h,w] → conv5 map `s4`
 * [1,2048,⌈h/32⌉,⌈w/32⌉]. BatchNorm is folded into the convolutions; the "ReLU+" floors (§4.6)
 * are `Relu` (floor 0) or `Clip` with a min, which onnxruntime fuses into the Conv before them.
 */

import type { StateDict } from "../../checkpoint/state-dict.ts";
import { getFloat32, requireKeys } from "../../checkpoint/state-dict.ts";
import { assertOneOf, invalidArgument } from "../../errors.ts";
import { OnnxGraph } from "../../runtime/onnx-graph.ts";
import { IMAGE_INPUT } from "../network.ts";
import { foldBatchNorm } from "./batchnorm.ts";

export type Depth = 50 | 101;

export const DEPTHS: readonly Depth[] = [50, 101];

/** Blocks per stage s1..s4 (`_IN_STAGE_DS`). */
export const STAGE_BLOCKS: Record<Depth, readonly number[]> = {
  50: [3, 4, 6, 3],
  101: [3, 4, 23, 3],
};

/** The ReLU+ clamp floor (`relup(0.014)`). */
export const RELUP_FLOOR = 0.014;

export const OUTPUT_NAME = "s4";

const PREFIX = "encoder_q.";

interface StageSpec {
  /** 1..4 */
  index: number;
  blocks: number;
  wIn: number;
  wOut: number;
  /** Bottleneck width. */
  wB: number;
  /** Stride of the first block (on its 3×3 conv and its projection). */
  stride: number;
}

function stages(depth: Depth): StageSpec[] {
  const [d1, d2, d3, d4] = STAGE_BLOCKS[depth];
  return [
    { index: 1, blocks: d1, wIn: 64, wOut: 256, wB: 64, stride: 1 },
    { index: 2, blocks: d2, wIn: 256, wOut: 512, wB: 128, stride: 2 },
    { index: 3, blocks: d3, wIn: 512, wOut: 1024, wB: 256, stride: 2 },
    { index: 4, blocks: d4, wIn: 1024, wOut: 2048, wB: 512, stride: 2 },
  ];
}

/**
 * The clamp floors of one stage's blocks (spec §4.6 table). `inner` is for a_relu/b_relu: 0.014 in
 * s1 whatever `relup` is, because `ResBlock` passes the imported class `relup` (truthy) instead of
 * its `relup_` flag to the transform (the official bug, reproduced). `out` follows the residual
 * add: 0.014 in s1..s3 when `relup`, and always 0 in s4 (`w_out == 2048` uses plain ReLU).
 */
export function stageFloors(stage: number, relup: boolean): { inner: number; out: number } {
  return {
    inner: stage === 1 ? RELUP_FLOOR : 0,
    out: relup && stage !== 4 ? RELUP_FLOOR : 0,
  };
}

const BN_SUFFIXES = ["weight", "bias", "running_mean", "running_var"];

interface ConvSpec {
  /** Key of the conv weight. */
  conv: string;
  /** Key prefix of its BatchNorm (`<bn>.weight` etc.). */
  bn: string;
  shape: number[];
}

function blockConvs(
  stage: StageSpec,
  block: number,
): Record<"a" | "b" | "c" | "proj", ConvSpec | null> {
  const p = `${PREFIX}s${stage.index}.b${block}.`;
  const wIn = block === 1 ? stage.wIn : stage.wOut;
  return {
    a: { conv: `${p}f.a.weight`, bn: `${p}f.a_bn`, shape: [stage.wB, wIn, 1, 1] },
    b: { conv: `${p}f.b.weight`, bn: `${p}f.b_bn`, shape: [stage.wB, stage.wB, 3, 3] },
    c: { conv: `${p}f.c.weight`, bn: `${p}f.c_bn`, shape: [stage.wOut, stage.wB, 1, 1] },
    // Every stage's b1 changes width (s1: 64→256) or stride, so it, and only it, has a projection.
    proj:
      block === 1
        ? { conv: `${p}proj.weight`, bn: `${p}bn`, shape: [stage.wOut, wIn, 1, 1] }
        : null,
  };
}

const STEM: ConvSpec = {
  conv: `${PREFIX}stem.conv.weight`,
  bn: `${PREFIX}stem.bn`,
  shape: [64, 3, 7, 7],
};

function allConvs(depth: Depth): ConvSpec[] {
  const convs = [STEM];
  for (const stage of stages(depth)) {
    for (let b = 1; b <= stage.blocks; b++) {
      for (const spec of Object.values(blockConvs(stage, b))) if (spec !== null) convs.push(spec);
    }
  }
  return convs;
}

/** Every state-dict tensor the backbone reads (conv weights, BN affine + running stats) and its shape. */
export function backboneTensorShapes(depth: Depth): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  for (const c of allConvs(depth)) {
    shapes.set(c.conv, c.shape);
    for (const s of BN_SUFFIXES) shapes.set(`${c.bn}.${s}`, [c.shape[0]]);
  }
  return shapes;
}

/** The keys of `backboneTensorShapes`. */
export function backboneKeys(depth: Depth): string[] {
  return [...backboneTensorShapes(depth).keys()];
}

export interface BackboneGraph {
  graph: OnnxGraph;
  /**
   * Intermediate activations, for inspection: `stem`, `s{S}.b{B}` (block output) and
   * `s{S}.b{B}.a` / `.b` (inner activations). The real activation is the tensor plus `offset`
   * (see `shiftFloors`). The model output is `s4` (offset 0).
   */
  tensors: Map<string, { name: string; offset: number }>;
}

export interface BuildOptions {
  depth: Depth;
  relup?: boolean;
  /**
   * How block outputs with floor 0.014 are formed. true (default): as `Relu(Add(sc, f − φ))` with
   * the tensor carrying the activation minus φ, and +φ folded into the biases of the 1×1 convs
   * that read it (exact, as those convs have no padding; identity shortcuts cancel the shift).
   * onnxruntime fuses Conv+Add+Relu but not Add+Clip, and an unfused Clip also forces layout
   * reorders around it. false: the literal `Clip(Add(sc, f), φ)`, kept as a test oracle.
   */
  shiftFloors?: boolean;
}

export function checkBackboneOptions(options: { depth: Depth; relup?: boolean }): {
  depth: Depth;
  relup: boolean;
} {
  if (typeof options !== "object" || options === null) {
    invalidArgument("options", "an object", options);
  }
  const depth = assertOneOf("options.depth", options.depth, DEPTHS);
  const relup = options.relup ?? true;
  if (typeof relup !== "boolean") invalidArgument("options.relup", "a boolean", relup);
  return { depth, relup };
}

/**
 * Builds the backbone graph with output `s4` declared. Throws NOT_FOUND naming every missing key,
 * BAD_FILE for a tensor of the wrong shape or type. `source` names the checkpoint in errors.
 */
export function buildBackboneGraph(
  sd: StateDict,
  options: BuildOptions,
  source = "checkpoint",
): BackboneGraph {
  const { depth, relup } = checkBackboneOptions(options);
  const shift = options.shiftFloors ?? true;
  requireKeys(sd, backboneKeys(depth), source);

  const graph = new OnnxGraph(`cvnet_resnet${depth}_s4`);
  const tensors = new Map<string, { name: string; offset: number }>();
  const floorNames = new Map<number, string>();

  const conv = (
    x: string,
    spec: ConvSpec,
    stride: number,
    name: string,
    fold: { inputOffset?: number; outputShift?: number } = {},
  ): string => {
    const w = getFloat32(sd, spec.conv, spec.shape, source);
    const c = spec.shape[0];
    const bn = (suffix: string) => getFloat32(sd, `${spec.bn}.${suffix}`, [c], source);
    const folded = foldBatchNorm(
      w,
      {
        weight: bn("weight"),
        bias: bn("bias"),
        runningMean: bn("running_mean"),
        runningVar: bn("running_var"),
      },
      fold,
    );
    const k = spec.shape[2];
    // An input offset folds exactly only where no zero padding mixes in.
    if ((fold.inputOffset ?? 0) !== 0 && k !== 1)
      throw new Error(`${name}: offset on a ${k}×${k} conv`);
    const pad = (k - 1) / 2;
    return graph.node(
      "Conv",
      [
        x,
        graph.floatInit(`${name}.weight`, spec.shape, folded.weight),
        graph.floatInit(`${name}.bias`, [c], folded.bias),
      ],
      { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad] },
      [name],
    )[0];
  };
  // clamp(min=floor): Relu for 0 (the form ORT fuses everywhere), else Clip with only a min.
  const act = (x: string, floor: number, name: string): string => {
    if (floor === 0) return graph.node("Relu", [x], {}, [name])[0];
    let floorName = floorNames.get(floor);
    if (floorName === undefined) {
      floorName = graph.floatInit(`floor_${floor}`, [], new Float32Array([floor]));
      floorNames.set(floor, floorName);
    }
    return graph.node("Clip", [x, floorName], {}, [name])[0];
  };

  let x = graph.input(IMAGE_INPUT, [1, 3, "h", "w"]);
  x = act(conv(x, STEM, 2, "stem.conv"), 0, "stem.relu");
  x = graph.node("MaxPool", [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, [
    "stem",
  ])[0];
  tensors.set("stem", { name: x, offset: 0 });
  // The real activation is x + xOffset (non-zero only with shiftFloors).
  let xOffset = 0;

  for (const stage of stages(depth)) {
    const floors = stageFloors(stage.index, relup);
    for (let b = 1; b <= stage.blocks; b++) {
      const id = `s${stage.index}.b${b}`;
      const specs = blockConvs(stage, b);
      const stride = b === 1 ? stage.stride : 1;
      const inOffset = { inputOffset: xOffset };
      const a = act(
        conv(x, specs.a as ConvSpec, 1, `${id}.f.a`, inOffset),
        floors.inner,
        `${id}.a`,
      );
      const m = act(conv(a, specs.b as ConvSpec, stride, `${id}.f.b`), floors.inner, `${id}.b`);
      const last = stage.index === 4 && b === stage.blocks;
      const outName = last ? OUTPUT_NAME : id;
      let sc: string;
      let f: string;
      if (shift) {
        // clamp(sc + f, φ_out) − φ_out = relu(sc + f − φ_out). The tensor x is the real input
        // minus φ_in: a projection gets +φ_in in its bias; an identity shortcut lacks it, so the
        // c bias adds it back.
        sc = specs.proj === null ? x : conv(x, specs.proj, stride, `${id}.proj`, inOffset);
        const cShift = (specs.proj === null ? xOffset : 0) - floors.out;
        f = conv(m, specs.c as ConvSpec, 1, `${id}.f.c`, { outputShift: cShift });
        x = act(graph.node("Add", [sc, f], {}, [`${id}.sum`])[0], 0, outName);
        xOffset = floors.out;
      } else {
        sc = specs.proj === null ? x : conv(x, specs.proj, stride, `${id}.proj`);
        f = conv(m, specs.c as ConvSpec, 1, `${id}.f.c`);
        x = act(graph.node("Add", [sc, f], {}, [`${id}.sum`])[0], floors.out, outName);
      }
      tensors.set(`${id}.a`, { name: a, offset: 0 });
      tensors.set(`${id}.b`, { name: m, offset: 0 });
      tensors.set(id, { name: x, offset: xOffset });
    }
  }
  graph.output(OUTPUT_NAME, [1, 2048, "s4_h", "s4_w"]);
  return { graph, tensors };
}

/** ONNX bytes of the backbone for this state dict; throws NOT_FOUND naming every missing key. */
export function buildBackboneModel(
  sd: StateDict,
  options: { depth: Depth; relup?: boolean },
  source?: string,
): Uint8Array {
  const { depth, relup } = checkBackboneOptions(options);
  return buildBackboneGraph(sd, { depth, relup }, source).graph.encode();
}
