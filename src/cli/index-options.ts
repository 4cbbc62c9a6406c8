/**
 * The model options of the index commands, declared once: which model a new index is built with
 * (an existing index brings its own; one given for it must match).
 */
import type { Command } from "commander";
import type { ModelSpec } from "../app/photo-index.ts";
import { choiceOption } from "./options.ts";

export interface IndexModelFlags {
  model?: string;
  checkpoint?: string;
  scales?: 1 | 3 | 5;
}

export function addIndexModelOptions(command: Command): Command {
  return command
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
}

/** The spec of the model the flags name; undefined when they name none (use the index's own). */
export function modelSpecFrom(flags: IndexModelFlags): ModelSpec | undefined {
  if (flags.model === undefined && flags.checkpoint === undefined && flags.scales === undefined) {
    return undefined;
  }
  return {
    ...(flags.model === undefined ? {} : { model: flags.model }),
    ...(flags.checkpoint === undefined ? {} : { checkpoint: flags.checkpoint }),
    ...(flags.scales === undefined ? {} : { scales: flags.scales }),
  };
}
