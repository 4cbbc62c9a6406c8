/**
 * What every feature network hands to the rest of the pipeline: an ONNX graph from the image
 * tensor `image` [1, 3, h, w] to a feature map [1, channels, h', w'], and the facts the
 * descriptor model records about it. CVNet's ResNets and the default MobileNetV2 both produce one.
 */
import type { OnnxGraph } from "../runtime/onnx-graph.ts";

/** The graph input every network reads. */
export const IMAGE_INPUT = "image";

/** How an image becomes the network's input tensor. */
export type InputConvention =
  /** CVNet: BGR, `(x/255 − mean)/std` with ImageNet statistics (spec §2.3). */
  | "bgr-imagenet"
  /** RGB, x/255 in [0, 1] (networks that rescale inside their graph). */
  | "rgb-unit"
  /** RGB, `(x/255 − mean)/std` with ImageNet statistics (torchvision / ONNX model zoo models). */
  | "rgb-imagenet";

export const INPUT_CONVENTIONS: readonly InputConvention[] = [
  "bgr-imagenet",
  "rgb-unit",
  "rgb-imagenet",
];

export interface NetworkGraph {
  /** The graph, its feature map declared as an output. */
  graph: OnnxGraph;
  /** Name of the feature map tensor. */
  output: string;
  channels: number;
  /** e.g. `cvnet-r50`. */
  network: string;
  input: InputConvention;
  /** CVNet's ReLU+ floors; null for other networks. */
  relup: boolean | null;
  /** sha256 (hex) of the network's weights as read. */
  weights: string;
  /** Where the weights came from, for people (e.g. `nsfwjs@4.3.0, …`); not part of the identity. */
  source?: string;
}
