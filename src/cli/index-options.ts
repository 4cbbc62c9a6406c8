/**
 * The model options of the index commands, declared once: which model a new index is built with
 * (an existing index brings its own; one given for it must match).
 */
import type { Command } from "commander";
import type { ModelSpec } from "../app/photo-index.ts";
import type { Precision, Preset } from "../descriptor/presets.ts";
import { addSpeedOptions, choiceOption } from "./options.ts";

export interface IndexModelFlags {
  model?: string;
  checkpoint?: string;
  scales?: 1 | 3 | 5;
  preset?: Preset;
  precision?: Precision;
  calibrate?: string;
}

export function addIndexModelOptions(command: Command): Command {
  command
    .option(
      "--model <name|file>",
      "model for a new index: `default` (ships with superglobal), a name from `superglobal models`, or a saved .onnx model",
    )
    .option("--checkpoint <file>", "a CVNet checkpoint (.pyth) for a new index")
    .option(
      "--scales <n>",
      "scale set: 1, 3 or 5 (default: the model's)",
      choiceOption("--scales", [1, 3, 5] as const),
    );
  // A new index records them (its model spec); queries then use the same.
  return addSpeedOptions(command);
}

/** The spec of the model the flags name; undefined when they name none (use the index's own). */
export function modelSpecFrom(flags: IndexModelFlags): ModelSpec | undefined {
  const given = ["model", "checkpoint", "scales", "preset", "precision", "calibrate"] as const;
  if (given.every((k) => flags[k] === undefined)) return undefined;
  return {
    ...(flags.model === undefined ? {} : { model: flags.model }),
    ...(flags.checkpoint === undefined ? {} : { checkpoint: flags.checkpoint }),
    ...(flags.scales === undefined ? {} : { scales: flags.scales }),
    ...(flags.preset === undefined ? {} : { preset: flags.preset }),
    ...(flags.precision === undefined ? {} : { precision: flags.precision }),
    ...(flags.calibrate === undefined ? {} : { calibration: flags.calibrate }),
  };
}
