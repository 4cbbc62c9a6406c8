/**
 * What an extractor computes: the model depth, the scale set and which SuperGlobal modules are on.
 * Validated once, at the boundary, so the pipeline below can trust it.
 */
import { DEPTHS, type Depth } from "../backbone/cvnet/resnet-graph.ts";
import { assertInteger, assertOneOf, invalidArgument } from "../errors.ts";

export type { Depth } from "../backbone/cvnet/resnet-graph.ts";

export type ScaleSet = 1 | 3 | 5;

/** The official scale lists (constants truncated as in the official code, not exact 1/√2 and √2). */
export const SCALE_SETS: Record<ScaleSet, readonly number[]> = {
  1: [1.0],
  // biome-ignore lint/suspicious/noApproximativeNumericConstant: the official truncated constant
  3: [0.7071, 1.0, 1.4142],
  // biome-ignore lint/suspicious/noApproximativeNumericConstant: the official truncated constant
  5: [0.5, 0.7071, 1.0, 1.4142, 2.0],
};

export interface ExtractorOptions {
  /** CVNet checkpoint (`CVPR2022_CVNet_R50.pyth` / `R101`), read directly. */
  checkpoint?: string;
  /**
   * A model saved with `Extractor.save()` or `superglobal build-model`: starts faster than a
   * checkpoint (no checkpoint parsing, no graph building). It records depth, relup, gemp and rgem;
   * leave them out (or give the recorded values: others are refused).
   */
  model?: string;
  /** ResNet depth of the checkpoint: 50 or 101; read from the checkpoint when left out. */
  depth?: Depth;
  /** Scale set: 1, 3 (default, [0.7071, 1, 1.4142]) or 5. */
  scales?: ScaleSet;
  /** GeM+ (p 4.6); off: CVNet's GeM with the checkpoint's learned p. Default on. Built into the model. */
  gemp?: boolean;
  /** Regional-GeM (p 2.5, 5x5); off: the raw conv5 map. Default on. Built into the model. */
  rgem?: boolean;
  /** Scale-GeM (max over L2-normalised scales); off: the mean of the raw per-scale vectors. Default on. */
  sgem?: boolean;
  /** ReLU+ floors (0.014) in the backbone. Default on. Built into the model. */
  relup?: boolean;
  /** onnxruntime intra-op threads; default: all cores. */
  threads?: number;
}

export interface ResolvedOptions {
  /** CVNet's depth (detected from the checkpoint when not given); undefined for other networks. */
  depth: Depth | undefined;
  scales: ScaleSet;
  gemp: boolean;
  rgem: boolean;
  sgem: boolean;
  relup: boolean;
  threads: number | undefined;
}

function flag(name: string, value: unknown): boolean {
  if (value === undefined) return true;
  if (typeof value !== "boolean") invalidArgument(name, "a boolean", value);
  return value;
}

export function resolveOptions(options: ExtractorOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null)
    invalidArgument("options", "an object", options);
  const hasCheckpoint = options.checkpoint !== undefined;
  const hasModel = options.model !== undefined;
  if (hasCheckpoint === hasModel) {
    invalidArgument("options", "exactly one of checkpoint or model", options);
  }
  if (hasCheckpoint && typeof options.checkpoint !== "string") {
    invalidArgument("checkpoint", "a file path", options.checkpoint);
  }
  if (hasModel && typeof options.model !== "string")
    invalidArgument("model", "a file path", options.model);
  return {
    depth: options.depth === undefined ? undefined : assertOneOf("depth", options.depth, DEPTHS),
    scales: assertOneOf("scales", options.scales ?? 3, [1, 3, 5] as const),
    gemp: flag("gemp", options.gemp),
    rgem: flag("rgem", options.rgem),
    sgem: flag("sgem", options.sgem),
    relup: flag("relup", options.relup),
    threads:
      options.threads === undefined
        ? undefined
        : assertInteger("threads", options.threads, 1, 1024),
  };
}
