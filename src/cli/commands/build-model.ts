/**
 * `superglobal build-model`: the descriptor model (backbone + per-scale head) built once from a
 * CVNet checkpoint and written as one self-contained `.onnx`, which `extract --model` loads faster
 * than the checkpoint. The build options (depth, relup, rgem, gemp) are recorded in the file, and
 * with `--precision int8 --calibrate <dir>` the model is saved quantised (descriptor/int8-model.ts).
 */
import { writeFile } from "node:fs/promises";
import type { Command } from "commander";
import { detectDepth } from "../../backbone/cvnet/cvnet-network.ts";
import { loadCheckpoint } from "../../checkpoint/load.ts";
import { int8Model } from "../../descriptor/int8-model.ts";
import { buildModel } from "../../descriptor/model.ts";
import { resolveOptions } from "../../descriptor/options.ts";
import { fileError, SuperglobalError } from "../../errors.ts";
import { assertWritable } from "../../io/writable.ts";
import { assertInt8Supported } from "../../runtime/cpu-features.ts";
import { addModelOptions, type ModelFlags, modelOptionsFrom } from "../options.ts";

interface BuildModelFlags extends ModelFlags {
  checkpoint: string;
  out: string;
}

export function register(program: Command): void {
  const command = program
    .command("build-model")
    .description("build the descriptor model from a CVNet checkpoint into one .onnx file");
  addModelOptions(command, { build: true });
  command
    .requiredOption("--out <file>", "output .onnx")
    .action(async (flags: BuildModelFlags, command: Command) => {
      assertWritable(flags.out);
      await runBuildModel(flags, modelOptionsFrom(flags, command));
    });
}

export async function runBuildModel(
  flags: BuildModelFlags,
  given: ReturnType<typeof modelOptionsFrom>,
): Promise<void> {
  const start = performance.now();
  // The library's defaults for what the command line left out; the depth, unless given, is the
  // checkpoint's.
  const o = resolveOptions(given);
  const sd = loadCheckpoint(flags.checkpoint);
  const depth = o.depth ?? detectDepth(sd, flags.checkpoint);
  let model = buildModel(
    sd,
    { depth, relup: o.relup, head: { rgem: o.rgem, gemp: o.gemp } },
    flags.checkpoint,
  );
  if (o.precision === "int8") {
    assertInt8Supported();
    if (given.calibration === undefined) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        "--precision int8 needs --calibrate <dir>: photos like the ones to index",
        { input: "--calibrate" },
      );
    }
    const threads = o.threads === undefined ? {} : { threads: o.threads };
    model = (await int8Model(model, flags.checkpoint, { images: given.calibration }, threads))
      .model;
  }
  try {
    await writeFile(flags.out, model);
  } catch (cause) {
    throw fileError(flags.out, "cannot write the model", cause);
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  process.stderr.write(
    `superglobal: wrote ${flags.out} (R${depth}, relup ${o.relup}, rgem ${o.rgem}, ` +
      `gemp ${o.gemp}, ${o.precision ?? "float32"}; ${(model.byteLength / 1e6).toFixed(1)} MB) in ${seconds} s\n`,
  );
}
