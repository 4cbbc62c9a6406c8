/**
 * `superglobal build-model`: the descriptor model (backbone + per-scale head) built once from a
 * CVNet checkpoint and written as one self-contained `.onnx`, which `extract --model` loads faster
 * than the checkpoint. The build options (depth, relup, rgem, gemp) are recorded in the file.
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { loadCheckpoint } from "../../checkpoint/load.ts";
import { buildModel } from "../../descriptor/model.ts";
import type { Depth } from "../../descriptor/options.ts";
import { SuperglobalError } from "../../errors.ts";
import { choiceOption } from "../options.ts";

interface BuildModelFlags {
  checkpoint: string;
  depth: Depth;
  gemp: boolean;
  rgem: boolean;
  relup: boolean;
  out: string;
}

export function register(program: Command): void {
  program
    .command("build-model")
    .description("build the descriptor model from a CVNet checkpoint into one .onnx file")
    .requiredOption("--checkpoint <file>", "CVNet checkpoint (CVPR2022_CVNet_R50.pyth or R101)")
    .option(
      "--depth <n>",
      "ResNet depth of the checkpoint: 50 or 101",
      choiceOption("--depth", [50, 101] as const),
      50,
    )
    .option("--no-gemp", "GeM+ off: CVNet's GeM with the checkpoint's learned p")
    .option("--no-rgem", "Regional-GeM off")
    .option("--no-relup", "ReLU+ off in the backbone")
    .requiredOption("--out <file>", "output .onnx")
    .action(async (flags: BuildModelFlags) => {
      await runBuildModel(flags);
    });
}

export async function runBuildModel(flags: BuildModelFlags): Promise<void> {
  const start = performance.now();
  const model = buildModel(
    loadCheckpoint(flags.checkpoint),
    {
      depth: flags.depth,
      relup: flags.relup,
      head: { rgem: flags.rgem, gemp: flags.gemp },
    },
    flags.checkpoint,
  );
  try {
    await writeFile(flags.out, model);
  } catch (cause) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${flags.out}: cannot write the model (${(cause as Error).message})`,
      { input: flags.out, cause },
    );
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  process.stderr.write(
    `superglobal: wrote ${flags.out} (R${flags.depth}, relup ${flags.relup}, rgem ${flags.rgem}, ` +
      `gemp ${flags.gemp}; ${(model.byteLength / 1e6).toFixed(1)} MB) in ${seconds} s\n`,
  );
}
