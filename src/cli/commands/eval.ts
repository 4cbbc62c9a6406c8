/**
 * `superglobal eval`: the revisitop evaluation, in two forms — of a ranking made elsewhere
 * (--gnd, --ranks) or the whole protocol from a dataset folder (--dataset, --data-dir).
 */
import type { Command } from "commander";
import { SuperglobalError } from "../../errors.ts";
import { DATASETS } from "../../eval/protocol.ts";
import { choiceOption, intOption } from "../options.ts";
import { type EvalDatasetOptions, runEvalDataset } from "./eval-dataset.ts";
import { runEvalRanks } from "./eval-ranks.ts";

/** Both forms' flags: the dataset form's options (required ones optional here) plus --gnd/--ranks. */
type EvalFlags = Partial<Pick<EvalDatasetOptions, "dataset" | "dataDir">> &
  Omit<EvalDatasetOptions, "dataset" | "dataDir"> & { gnd?: string; ranks?: string };

export function register(program: Command): void {
  program
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
    )
    .option("--checkpoint <file>", "CVNet checkpoint, with --dataset")
    .option("--model <file>", "a model saved with `superglobal build-model`, with --dataset")
    .option(
      "--depth <n>",
      "ResNet depth of the checkpoint: 50 or 101",
      choiceOption("--depth", [50, 101] as const),
      50,
    )
    .option("--distractors <files...>", "extra distractor descriptors, .npy [n, 2048] each (+1M)")
    .option(
      "--cache-dir <dir>",
      "descriptor cache (default <data-dir>/<dataset>/superglobal-cache)",
    )
    .option(
      "--threads <n>",
      "onnxruntime threads (default: all cores)",
      intOption("--threads", 1, 1024),
    )
    .option("--json", "print unrounded fractions as JSON instead of the table")
    .action(async (flags: EvalFlags) => {
      if (flags.dataset !== undefined) {
        if (flags.dataDir === undefined) throw usage("--data-dir <dir> is required with --dataset");
        if ((flags.checkpoint === undefined) === (flags.model === undefined)) {
          throw usage("give exactly one of --checkpoint or --model with --dataset");
        }
        await runEvalDataset({
          ...flags,
          dataset: flags.dataset,
          dataDir: flags.dataDir,
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
