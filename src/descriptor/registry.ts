/**
 * The models superglobal knows by name, with what each expects and gives. `default` ships with
 * the npm package; the others are files a user provides (a CVNet checkpoint, a saved model).
 */
import type { InputConvention } from "../backbone/network.ts";
import type { ScaleSet } from "./options.ts";

export interface ModelEntry {
  name: string;
  description: string;
  network: string;
  input: InputConvention;
  /** Descriptor dimension. */
  dim: number;
  /** Extraction settings used unless the caller gives others. */
  defaults: { scales: ScaleSet; rgem: boolean; gemp: boolean };
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
    defaults: { scales: 3, rgem: true, gemp: true },
  },
};

/** The registered model of that name, or undefined (then the name is a file path). */
export function registeredModel(name: string): ModelEntry | undefined {
  return Object.hasOwn(MODELS, name) ? MODELS[name] : undefined;
}
