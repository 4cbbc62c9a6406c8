/**
 * `superglobal extract`: SuperGlobal descriptors of images into a float32 [N, 2048] .npy, rows in
 * input order. A bad image is reported by name, its row is NaN, and the others are still done;
 * the exit code is 1 if any image failed. With --cache, descriptors are kept on disk as they are
 * made, so a long job that is interrupted resumes where it stopped.
 */

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { DESCRIPTOR_DIM, Extractor } from "../../descriptor/extractor.ts";
import type { Depth, ExtractorOptions, ScaleSet } from "../../descriptor/options.ts";
import { SuperglobalError } from "../../errors.ts";
import { DescriptorStore } from "../../index/store.ts";
import { writeNpy } from "../../io/npy.ts";
import { boxOption, choiceOption, intOption } from "../options.ts";
import { progress } from "../progress.ts";

interface ExtractFlags {
  checkpoint?: string;
  model?: string;
  depth: Depth;
  scales: ScaleSet;
  bbox?: [number, number, number, number];
  gemp: boolean;
  rgem: boolean;
  sgem: boolean;
  relup: boolean;
  threads?: number;
  cache?: string;
  list?: string;
  out: string;
}

/** Image paths from a list file: one per line; blank lines are skipped. */
function readList(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (cause) {
    throw new SuperglobalError(
      "NOT_FOUND",
      `${path}: cannot read the image list (${(cause as Error).message})`,
      {
        input: path,
        cause,
      },
    );
  }
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

export function register(program: Command): void {
  program
    .command("extract")
    .description("SuperGlobal descriptors of images, written as a float32 [N, 2048] .npy")
    .argument("[images...]", "image files (JPEG, PNG, WebP, TIFF, GIF)")
    .option(
      "--list <file>",
      "also read image paths from <file>, one per line (after the arguments)",
    )
    .option("--checkpoint <file>", "CVNet checkpoint (CVPR2022_CVNet_R50.pyth or R101)")
    .option("--model <file>", "a model saved with `superglobal build-model` (faster start-up)")
    .option(
      "--depth <n>",
      "ResNet depth of the checkpoint: 50 or 101",
      choiceOption("--depth", [50, 101] as const),
      50,
    )
    .option("--scales <n>", "scale set: 1, 3 or 5", choiceOption("--scales", [1, 3, 5] as const), 3)
    .option("--bbox <x1,y1,x2,y2>", "crop every image to this box first (query images)", boxOption)
    .option("--no-gemp", "GeM+ off: CVNet's GeM with the checkpoint's learned p")
    .option("--no-rgem", "Regional-GeM off")
    .option("--no-sgem", "Scale-GeM off: mean over scales")
    .option("--no-relup", "ReLU+ off in the backbone")
    .option(
      "--threads <n>",
      "onnxruntime threads (default: all cores)",
      intOption("--threads", 1, 1024),
    )
    .option(
      "--cache <dir>",
      "keep each descriptor in <dir> as it is made: a rerun after an interruption reuses them",
    )
    .requiredOption("--out <file>", "output .npy")
    .action(async (images: string[], flags: ExtractFlags, command: Command) => {
      // A saved model records depth, relup, gemp and rgem: pass on only those the user gave, so
      // that the defaults do not contradict the model.
      const given = new Set(
        MODEL_OPTIONS.filter((name) => command.getOptionValueSource(name) === "cli"),
      );
      await runExtract(
        [...images, ...(flags.list === undefined ? [] : readList(flags.list))],
        flags,
        given,
      );
    });
}

/** The options a saved model records. */
const MODEL_OPTIONS = ["depth", "relup", "gemp", "rgem"] as const;

/**
 * `given`: the model options set on the command line (default: all of them); with `--model`, the
 * others are left to the model.
 */
export async function runExtract(
  images: string[],
  flags: ExtractFlags,
  given: ReadonlySet<string> = new Set(MODEL_OPTIONS),
): Promise<void> {
  if (images.length === 0) {
    throw new SuperglobalError("INVALID_ARGUMENT", "no images: give image files or --list <file>", {
      input: "images",
    });
  }
  if ((flags.checkpoint === undefined) === (flags.model === undefined)) {
    throw new SuperglobalError("INVALID_ARGUMENT", "give exactly one of --checkpoint or --model", {
      input: "--checkpoint",
    });
  }
  const options: ExtractorOptions = {
    scales: flags.scales,
    sgem: flags.sgem,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
  };
  if (flags.model !== undefined) options.model = flags.model;
  else options.checkpoint = flags.checkpoint;
  for (const name of MODEL_OPTIONS) {
    if (flags.model === undefined || given.has(name))
      Object.assign(options, { [name]: flags[name] });
  }
  const extractor = await Extractor.create(options);
  const store =
    flags.cache === undefined
      ? undefined
      : DescriptorStore.open(flags.cache, DESCRIPTOR_DIM, { model: extractor.identity });
  const out = new Float32Array(images.length * DESCRIPTOR_DIM);
  const failures: string[] = [];
  const bar = progress("extract", images.length);
  try {
    for (const [i, path] of images.entries()) {
      try {
        const key =
          flags.bbox === undefined ? resolve(path) : `${resolve(path)} ${flags.bbox.join(",")}`;
        let d = store?.get(key);
        if (d === undefined) {
          d = await extractor.extract(path, flags.bbox === undefined ? {} : { bbox: flags.bbox });
          store?.add(key, d);
        }
        out.set(d, i * DESCRIPTOR_DIM);
      } catch (error) {
        if (!(error instanceof SuperglobalError)) throw error;
        out.fill(Number.NaN, i * DESCRIPTOR_DIM, (i + 1) * DESCRIPTOR_DIM);
        // Our messages name their input; the crop's name the box, so add the file there.
        failures.push(error.message.includes(path) ? error.message : `${path}: ${error.message}`);
      }
      bar.tick(path);
    }
  } finally {
    bar.stop();
    store?.close();
    await extractor.release();
  }
  writeNpy(flags.out, out, [images.length, DESCRIPTOR_DIM]);
  for (const f of failures) process.stderr.write(`superglobal: failed ${f}\n`);
  if (failures.length > 0) {
    process.stderr.write(
      `superglobal: ${failures.length} of ${images.length} image(s) failed; their rows in ${flags.out} are NaN\n`,
    );
    process.exitCode = 1;
  }
}
