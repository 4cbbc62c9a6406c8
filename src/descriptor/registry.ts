/**
 * The models superglobal knows by name, with what each expects and gives. `default` ships with
 * the npm package; the others are pulled on request (`superglobal models pull NAME`) into the
 * model cache, from the URLs below; any other model is a file a user provides (a CVNet
 * checkpoint, a saved model, an ONNX feature network).
 */
import type { InputConvention } from "../backbone/network.ts";
import type { ScaleSet } from "./options.ts";

/** Where a pulled model's file comes from and how it is checked. */
export interface ModelDownload {
  /** File name in the model cache (`<cache>/models/<file>`). */
  file: string;
  /** Download URLs, tried in order (a failure or a checksum mismatch moves on to the next). */
  urls: readonly string[];
  /** The page a person can open when no URL works (e.g. a Google Drive folder). */
  page?: string;
  /** Size in bytes, when known. */
  bytes?: number;
  /**
   * sha256 (hex) of the file when its publisher states one; absent: none is published, and the
   * file is checked by loading it (see `use`) and its sha256 recorded in the cache's manifest.
   */
  sha256?: string;
  /** Where the URLs and facts come from, for people. */
  provenance: string;
}

/** How a pulled file becomes a model. */
export type PulledKind =
  /** A CVNet `torch.save` checkpoint, used as `checkpoint`. */
  | { kind: "cvnet-checkpoint"; depth: 50 | 101 }
  /** An ONNX feature network, used as `model` + `feature`. */
  | { kind: "onnx-features"; feature: { output: string; input: InputConvention } };

export interface ModelEntry {
  name: string;
  description: string;
  network: string;
  input: InputConvention;
  /** Descriptor dimension. */
  dim: number;
  /** Extraction settings used unless the caller gives others. */
  /** `maxSide`: larger images are downscaled to this longer side first (null: used as given). */
  defaults: {
    scales: ScaleSet;
    rgem: boolean;
    gemp: boolean;
    sgem: boolean;
    maxSide: number | null;
  };
  /** Licence of the weights, and who publishes them. */
  licence?: string;
  /** Absent: the model ships with the npm package. */
  download?: ModelDownload;
  /** How the pulled file is used (with `download`). */
  use?: PulledKind;
}

/** Google Drive's direct-download form of a file id (large files answer a confirm page first). */
export const DRIVE_DOWNLOAD = "https://drive.google.com/uc?export=download&id=";

/** The Google Drive folder CVNet's README links for its checkpoints. */
const CVNET_FOLDER = "https://drive.google.com/drive/folders/1gMbZ8JlTyPlH2-6HW5NHRe58LmKfJybx";

function cvnetEntry(depth: 50 | 101, source: { urls: string[]; provenance: string }): ModelEntry {
  return {
    name: `cvnet-r${depth}`,
    description: `CVNet ResNet-${depth} (CVPR 2022, trained on GLDv2-clean) + SuperGlobal pooling; the paper's model`,
    network: `cvnet-r${depth}`,
    input: "bgr-imagenet",
    dim: 2048,
    defaults: { scales: 3, rgem: true, gemp: true, sgem: true, maxSide: null },
    licence: "no licence stated (Lee et al., github.com/sungonce/CVNet)",
    download: {
      file: `CVPR2022_CVNet_R${depth}.pyth`,
      urls: source.urls,
      page: CVNET_FOLDER,
      provenance: source.provenance,
    },
    use: { kind: "cvnet-checkpoint", depth },
  };
}

/** The registered model of that name, or undefined (then the name is a file path). */
export function registeredModel(name: string): ModelEntry | undefined {
  return Object.hasOwn(MODELS, name) ? MODELS[name] : undefined;
}

export const DEFAULT_MODEL = "default";

export const MODELS: Readonly<Record<string, ModelEntry>> = {
  [DEFAULT_MODEL]: {
    name: DEFAULT_MODEL,
    description:
      "MobileNetV2-1.4 (nsfwjs 4.3.0 weights, MIT; ships with npm) + SuperGlobal pooling + a whitening learned from real photos",
    network: "mobilenetv2-1.4-nsfwjs",
    input: "rgb-unit",
    dim: 1792,
    // Chosen by bench/default-model-study.ts (cross-validated, bench/results/default-model-*):
    // SuperGlobal's pooling at 3 scales, averaged after the whitening (its max lost 3-4 mAP).
    // 1 scale ties on multiview-dev (83.5-84.3 vs 83.8 mAP) but loses ~7 mAP on harsh copies
    // (thumbnails, colour, blur) for ~1/3 of the time per image; GeM p 3 or no Regional-GeM tie.
    defaults: { scales: 3, rgem: true, gemp: true, sgem: false, maxSide: 1024 },
    licence: "MIT (nsfwjs weights, in the npm package)",
  },
  "cvnet-r50": cvnetEntry(50, {
    urls: [
      `${DRIVE_DOWNLOAD}1TNMrFY65ZMre9bWoUvLLKnIYv34h0pLB`,
      "http://ptak.felk.cvut.cz/personal/sumapave/public/ames/networks/CVPR2022_CVNet_R50.pyth",
    ],
    provenance:
      "CVNet's README links a Google Drive folder; this file's id in it is the one other projects " +
      "download it by (e.g. `gdown 1TNMrFY65ZMre9bWoUvLLKnIYv34h0pLB` beside that folder link). " +
      "The second URL is the copy the AMES authors (CTU Prague) serve. No checksum is published.",
  }),
  "cvnet-r101": cvnetEntry(101, {
    urls: [],
    provenance:
      "CVNet's README links a Google Drive folder; no direct id of this file is published " +
      "outside it: open the folder, copy the file's link and pass it with --url. No checksum is " +
      "published.",
  }),
  "mobilenetv2-imagenet": {
    name: "mobilenetv2-imagenet",
    description:
      "MobileNetV2-1.0 ImageNet classifier (ONNX model zoo, int8), cut at its last 1280-channel " +
      "feature map + SuperGlobal pooling; identity FC (not retrieval-trained)",
    network: "mobilenetv2-imagenet",
    input: "rgb-imagenet",
    dim: 1280,
    defaults: { scales: 3, rgem: true, gemp: true, sgem: true, maxSide: null },
    licence: "Apache-2.0 (ONNX model zoo; weights from GluonCV)",
    download: {
      file: "mobilenetv2-12-int8.onnx",
      urls: [
        "https://huggingface.co/onnxmodelzoo/mobilenetv2-12-int8/resolve/main/mobilenetv2-12-int8.onnx",
        "https://github.com/onnx/models/raw/main/validated/vision/classification/mobilenet/model/mobilenetv2-12-int8.onnx",
      ],
      page: "https://github.com/onnx/models/tree/main/validated/vision/classification/mobilenet",
      bytes: 3_655_033,
      sha256: "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f",
      provenance:
        "github.com/onnx/models stores it in Git LFS (size and sha256 from its LFS pointer); the " +
        "zoo moved its downloads to huggingface.co/onnxmodelzoo, which is tried first.",
    },
    use: { kind: "onnx-features", feature: { output: "627_quantized", input: "rgb-imagenet" } },
  },
};
