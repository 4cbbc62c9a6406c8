/**
 * The default feature network: nsfwjs's MobileNetV2 (mobilenet_v2_mid) converted to ONNX from
 * the files of the installed nsfwjs package (mobilenet-graph.ts says what the model computes).
 * Nothing is downloaded, ever.
 *
 * Cost (2 vCPU, Node 20): converting takes ~0.2 s in a fresh process (~0.1 s to read and decode
 * the 5.7 MB of base64 shards, the rest to rearrange the filters and encode 17 MB of ONNX); the
 * assembled default model is cached by the descriptor layer (runtime/model-cache.ts), whose
 * cached file reads in ~0.01 s.
 */
import type { NetworkGraph } from "../network.ts";
import { convertMobilenet, mobilenetNetwork } from "./mobilenet-graph.ts";
import { NSFWJS_MODEL, nsfwjsPackage } from "./nsfwjs-package.ts";
import { readTfjsGraphModel } from "./tfjs-model.ts";

/** Bump when the converter's output changes, so stale cached models are not reused. */
export const CONVERTER_VERSION = "1";

/** The default network, converted now, as a graph to append a head to. */
export function defaultNetwork(): NetworkGraph {
  const pkg = nsfwjsPackage();
  return mobilenetNetwork(readTfjsGraphModel(pkg.modelDir), {
    source: sourceOf(pkg.version),
    converter: CONVERTER_VERSION,
  });
}

/** ONNX bytes of the bare default network (no head), converted now. */
export function buildDefaultNetwork(): Uint8Array {
  const pkg = nsfwjsPackage();
  return convertMobilenet(readTfjsGraphModel(pkg.modelDir), {
    source: sourceOf(pkg.version),
    converter: CONVERTER_VERSION,
  });
}

/** What identifies the converted network's source: the nsfwjs version, model and converter. */
export function defaultNetworkSource(): string {
  return `${sourceOf(nsfwjsPackage().version)}/${NSFWJS_MODEL}/c${CONVERTER_VERSION}`;
}

function sourceOf(version: string): string {
  return `nsfwjs@${version}`;
}
