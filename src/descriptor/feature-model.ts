/**
 * Descriptor models from foreign ONNX feature networks (`Extractor.create({ model: "x.onnx",
 * feature: { input } })`, and `mobilenetv2-imagenet` once pulled): the model is cut at its
 * feature map, the SuperGlobal head with an identity FC is appended, and the record says what it
 * is. The recorded weight hash covers the file's bytes (sha256) and the feature tensor's name,
 * so the identity changes with either, never with the file's name.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { INPUT_CONVENTIONS } from "../backbone/network.ts";
import { type FeatureSpec, onnxFeatureNetwork } from "../backbone/onnx-feature-network.ts";
import { fileError, invalidArgument } from "../errors.ts";
import type { HeadOptions, HeadWeights } from "../pooling/head-graph.ts";
import { assembleModel } from "./model.ts";
import { MODELS } from "./registry.ts";

export type { FeatureSpec } from "../backbone/onnx-feature-network.ts";

/** The GeM p of the identity head when GeM+ is off (the usual GeM of retrieval papers). */
export const FEATURE_GEM_P = 3;

/** INVALID_ARGUMENT unless `feature` is `{ input, output? }` with a known input convention. */
export function checkFeatureSpec(feature: unknown): FeatureSpec {
  if (typeof feature !== "object" || feature === null) {
    invalidArgument("feature", "an object { input, output? }", feature);
  }
  const f = feature as Record<string, unknown>;
  if (!INPUT_CONVENTIONS.includes(f["input"] as never)) {
    invalidArgument("feature.input", `one of ${INPUT_CONVENTIONS.join(", ")}`, f["input"]);
  }
  if (f["output"] !== undefined && (typeof f["output"] !== "string" || f["output"] === "")) {
    invalidArgument("feature.output", "a tensor name", f["output"]);
  }
  return f as unknown as FeatureSpec;
}

/**
 * The ONNX bytes of the descriptor model made from the ONNX file at `path`: its feature map,
 * the head (`head` options, identity FC, GeM p 3 when GeM+ is off) and the record.
 */
export async function featureModel(
  path: string,
  feature: FeatureSpec,
  head: HeadOptions,
): Promise<Uint8Array> {
  const spec = checkFeatureSpec(feature);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    throw fileError(path, "cannot read the model", cause);
  }
  const fileSha = createHash("sha256").update(bytes).digest("hex");
  const network = await onnxFeatureNetwork(bytes, spec, {
    source: path,
    network: networkName(fileSha),
    weights: (tensor) =>
      createHash("sha256")
        .update(JSON.stringify({ file: fileSha, output: tensor }))
        .digest("hex"),
  });
  return assembleModel(network, { options: head, weights: identityHead(network.channels) });
}

/** A registered model's name when the file is its known download, else `onnx-<sha256 prefix>`. */
function networkName(fileSha: string): string {
  for (const entry of Object.values(MODELS)) {
    if (entry.download?.sha256 === fileSha) return entry.name;
  }
  return `onnx-${fileSha.slice(0, 12)}`;
}

function identityHead(channels: number): HeadWeights {
  const fcWeight = new Float32Array(channels * channels);
  for (let i = 0; i < channels; i++) fcWeight[i * channels + i] = 1;
  return { fcWeight, fcBias: new Float32Array(channels), poolP: FEATURE_GEM_P };
}
