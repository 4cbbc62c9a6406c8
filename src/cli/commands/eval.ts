/**
 * `superglobal eval`: the revisitop evaluation, in two forms — of a ranking made elsewhere
 * (--gnd, --ranks) or the whole protocol from a dataset folder (--dataset, --data-dir).
 */
import type { Command } from "commander";
import { SuperglobalError } from "../../errors.ts";
import { DATASETS, type Dataset } from "../../eval/protocol.ts";
import {
  addModelOptions,
  addThreadsOption,
  choiceOption,
  type ModelFlags,
  modelOptionsFrom,
} from "../options.ts";
import { runEvalDataset } from "./eval-dataset.ts";
import { runEvalRanks } from "./eval-ranks.ts";

/** Both forms' flags. */
interface EvalFlags extends ModelFlags {
  gnd?: string;
  ranks?: string;
  dataset?: Dataset;
  dataDir?: string;
  distractors?: string[];
  cacheDir?: string;
  json?: boolean;
}

export function register(program: Command): void {
  const command = program
    .command("eval")
    .description(
      "Revisited Oxford/Paris evaluation (revisitop protocol): mAP and mP@1/5/10 for Easy, Medium and Hard",
    )
    .option("--gnd <file>", "ground truth gnd_<dataset>.pkl (or its .json twin), with --ranks")
    .option("--ranks <file>", "ranking .npy, int32/int64 [nq, N], query-major, best first")
    .option(
      "--dataset <name>",
      "run the whole protocol: roxford5k or rparis6k",
      choiceOption("--dataset", DATASETS),
    )
    .option(
      "--data-dir <dir>",
      "revisitop folder holding <dataset>/jpg/ and <dataset>/gnd_<dataset>.pkl",
    );
  // With --dataset: the model that makes the descriptors, as `extract` takes it.
  addModelOptions(command);
  addThreadsOption(command);
  command
    .option("--distractors <files...>", "extra distractor descriptors, .npy [n, 2048] each (+1M)")
    .option(
      "--cache-dir <dir>",
      "descriptor cache (default <data-dir>/<dataset>/superglobal-cache)",
    )
    .option("--json", "print unrounded fractions as JSON instead of the table")
    .action(async (flags: EvalFlags, command: Command) => {
      if (flags.dataset !== undefined) {
        if (flags.dataDir === undefined) throw usage("--data-dir <dir> is required with --dataset");
        await runEvalDataset({
          dataset: flags.dataset,
          dataDir: flags.dataDir,
          extractor: modelOptionsFrom(flags, command),
          ...(flags.distractors === undefined ? {} : { distractors: flags.distractors }),
          ...(flags.cacheDir === undefined ? {} : { cacheDir: flags.cacheDir }),
          json: flags.json === true,
        });
        return;
      }
      if (flags.gnd === undefined || flags.ranks === undefined) {
        throw usage(
          "give --gnd and --ranks (a ranking made elsewhere) or --dataset and --data-dir (the whole protocol)",
        );
      }
      runEvalRanks({ gnd: flags.gnd, ranks: flags.ranks, json: flags.json === true });
    });
}

function usage(message: string): SuperglobalError {
  return new SuperglobalError("INVALID_ARGUMENT", `eval: ${message}`, { input: "eval" });
}
