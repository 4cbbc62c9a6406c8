/**
 * Speed presets a user can pick without knowing the method: each fixes the scale set, the largest
 * image side and the precision. Options given explicitly win over the preset's. Measured images/s
 * and mAP of each are in the README ("Faster extraction") and bench/results/.
 */
import type { ScaleSet } from "./options.ts";

export type Precision = "float32" | "int8";
export const PRECISIONS: readonly Precision[] = ["float32", "int8"];

export type Preset = "exact" | "balanced" | "fast";
export const PRESETS: readonly Preset[] = ["exact", "balanced", "fast"];

export interface PresetSettings {
  /** null: the model's own (3 for every registered model). */
  scales: ScaleSet | null;
  /** undefined: the model's own (1024 for the default model, none for CVNet). */
  maxSide: number | null | undefined;
  precision: Precision;
}

export const PRESET_SETTINGS: Readonly<Record<Preset, Readonly<PresetSettings>>> = {
  // The method as published: the model's scales and sizes, float32.
  exact: { scales: null, maxSide: undefined, precision: "float32" },
  // Same scales, int8 backbone, photos brought down to 1024 px first.
  balanced: { scales: 3, maxSide: 1024, precision: "int8" },
  // One scale, int8, 1024 px: about 3.5x less work than three scales on top of int8.
  fast: { scales: 1, maxSide: 1024, precision: "int8" },
};
