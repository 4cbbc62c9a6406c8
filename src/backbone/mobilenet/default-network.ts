/**
 * The default feature network: nsfwjs's MobileNetV2 (mobilenet_v2_mid) converted to ONNX at
 * first use, from the files of the installed nsfwjs package (nothing is downloaded, ever).
 */
import { convertMobilenet } from "./mobilenet-graph.ts";
import { nsfwjsPackage } from "./nsfwjs-package.ts";
import { readTfjsGraphModel } from "./tfjs-model.ts";

/** Bump when the converter's output changes, so stale cached models are not reused. */
export const CONVERTER_VERSION = "1";

/** ONNX bytes of the default network (see mobilenet-graph.ts), converted now. */
export function buildDefaultNetwork(): Uint8Array {
  const pkg = nsfwjsPackage();
  return convertMobilenet(readTfjsGraphModel(pkg.modelDir), {
    source: `nsfwjs@${pkg.version}`,
    converter: CONVERTER_VERSION,
  });
}
