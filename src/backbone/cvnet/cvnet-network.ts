/**
 * A CVNet checkpoint as a feature network: its depth read from the tensors present (a ResNet-101
 * state dict built as a ResNet-50 would silently give a truncated network), the ResNet graph up to
 * conv5, a content hash of the weights used, and the head tensors (the learned FC and GeM p).
 */
import type { StateDict } from "../../checkpoint/state-dict.ts";
import { getFloat32, requireKeys } from "../../checkpoint/state-dict.ts";
import { hashWeights } from "../../core/hash.ts";
import { invalidArgument, SuperglobalError } from "../../errors.ts";
import type { NetworkGraph } from "../network.ts";
import {
  backboneKeys,
  backboneTensorShapes,
  buildBackboneGraph,
  DEPTHS,
  type Depth,
  OUTPUT_NAME,
  STAGE_BLOCKS,
} from "./resnet-graph.ts";

/** CVNet's descriptor dimension (conv5 channels and FC output). */
export const CVNET_DIM = 2048;

export const HEAD_KEYS = {
  fcWeight: "encoder_q.head.fc.weight",
  fcBias: "encoder_q.head.fc.bias",
  poolP: "encoder_q.head.pool.p",
} as const;

/** CVNet's head tensors; NOT_FOUND naming every missing key, BAD_FILE for a wrong shape. */
export function readHeadWeights(
  sd: StateDict,
  source = "checkpoint",
): { fcWeight: Float32Array; fcBias: Float32Array; poolP: number } {
  requireKeys(sd, Object.values(HEAD_KEYS), source);
  const fcWeight = getFloat32(sd, HEAD_KEYS.fcWeight, [CVNET_DIM, CVNET_DIM], source);
  const fcBias = getFloat32(sd, HEAD_KEYS.fcBias, [CVNET_DIM], source);
  const p = getFloat32(sd, HEAD_KEYS.poolP, undefined, source);
  if (p.length !== 1 || !(p[0] > 0) || !Number.isFinite(p[0])) {
    invalidArgument(`${source}: ${HEAD_KEYS.poolP}`, "one positive value", p);
  }
  return { fcWeight, fcBias, poolP: p[0] };
}

/**
 * The ResNet depth whose stage-3 blocks the state dict holds: 23 blocks → 101, 6 → 50. Stage 3 is
 * the only stage whose block count differs. BAD_FILE when it matches neither.
 */
export function detectDepth(sd: StateDict, source = "checkpoint"): Depth {
  const blocks = (depth: Depth) => STAGE_BLOCKS[depth][2] as number;
  const has = (block: number) => sd.has(`encoder_q.s3.b${block}.f.a.weight`);
  for (const depth of [...DEPTHS].sort((a, b) => blocks(b) - blocks(a))) {
    if (has(blocks(depth)) && !has(blocks(depth) + 1)) return depth;
  }
  throw new SuperglobalError(
    "BAD_FILE",
    `${source}: not a CVNet ResNet-50 or ResNet-101 checkpoint (its stage-3 blocks match neither)`,
    { input: source },
  );
}

/**
 * The CVNet feature network of a state dict. `depth`, when given, must be the one the tensors
 * show (INVALID_ARGUMENT otherwise); left out, it is detected.
 */
export function cvnetNetwork(
  sd: StateDict,
  options: { depth?: Depth | undefined; relup: boolean },
  source = "checkpoint",
): NetworkGraph & { depth: Depth } {
  const detected = detectDepth(sd, source);
  if (options.depth !== undefined && options.depth !== detected) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `depth ${options.depth} contradicts ${source}, a ResNet-${detected} checkpoint: leave depth out or give ${detected}`,
      { input: "depth" },
    );
  }
  const depth = detected;
  requireKeys(sd, backboneKeys(depth), source);
  const { graph } = buildBackboneGraph(sd, { depth, relup: options.relup }, source);
  const shapes = backboneTensorShapes(depth);
  const weights = hashWeights(
    [...shapes.keys(), ...Object.values(HEAD_KEYS)]
      .filter((name) => sd.has(name))
      .map((name) => {
        const data = getFloat32(sd, name, undefined, source);
        return { name, dims: sd.get(name)?.shape ?? [data.length], data };
      }),
  );
  return {
    graph,
    output: OUTPUT_NAME,
    channels: CVNET_DIM,
    network: `cvnet-r${depth}`,
    input: "bgr-imagenet",
    relup: options.relup,
    weights,
    depth,
  };
}
