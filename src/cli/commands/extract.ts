/**
 * `superglobal extract`: SuperGlobal descriptors of images into a float32 [N, 2048] .npy, rows in
 * input order. A bad image is reported by name, its row is NaN, and the others are still done;
 * the exit code is 1 if any image failed. With --cache, descriptors are kept on disk as they are
 * made, so a long job that is interrupted resumes where it stopped. The loop is the library's
 * `extractMany`; this command adds the files, the progress bar and the messages.
 */

import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { extractMany } from "../../descriptor/extract-many.ts";
import { ExtractorPool } from "../../descriptor/extract-pool.ts";
import { Extractor } from "../../descriptor/extractor.ts";
import type { ExtractorOptions } from "../../descriptor/options.ts";
import { fileError, SuperglobalError } from "../../errors.ts";
import { DescriptorStore } from "../../index/store.ts";
import { writeNpy } from "../../io/npy.ts";
import { assertWritable } from "../../io/writable.ts";
import {
  addJobsOption,
  addModelOptions,
  addThreadsOption,
  BOX_RULE,
  boxOption,
  type ModelFlags,
  modelOptionsFrom,
} from "../options.ts";
import { progress } from "../progress.ts";

interface ExtractFlags extends ModelFlags {
  bbox?: [number, number, number, number];
  jobs?: number;
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
    throw fileError(path, "cannot read the image list", cause);
  }
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

export function register(program: Command): void {
  const command = program
    .command("extract")
    .description(
      "SuperGlobal descriptors of images, written as a float32 [N, D] .npy (D: the model's dimension, 2048 for CVNet)",
    )
    .argument("[images...]", "image files (JPEG, PNG, WebP, TIFF, GIF)")
    .option(
      "--list <file>",
      "also read image paths from <file>, one per line (after the arguments)",
    );
  addModelOptions(command);
  command.option(
    "--bbox <x1,y1,x2,y2>",
    `crop every image to this box first (query images): ${BOX_RULE}`,
    boxOption,
  );
  addThreadsOption(command, "--jobs");
  addJobsOption(command);
  command
    .option(
      "--cache <dir>",
      "keep each descriptor in <dir> as it is made: a rerun after an interruption reuses them",
    )
    .requiredOption("--out <file>", "output .npy")
    .action(async (images: string[], flags: ExtractFlags, command: Command) => {
      assertWritable(flags.out); // before any work: an hour of extraction is not lost at the end
      const all = [...images, ...(flags.list === undefined ? [] : readList(flags.list))];
      if (all.length === 0) {
        throw new SuperglobalError(
          "INVALID_ARGUMENT",
          "no images: give image files or --list <file>",
          { input: "images" },
        );
      }
      await runExtract(all, flags, modelOptionsFrom(flags, command));
    });
}

export async function runExtract(
  images: string[],
  flags: ExtractFlags,
  options: ExtractorOptions,
): Promise<void> {
  const jobs = flags.jobs ?? 1;
  const extractor =
    jobs > 1 ? await ExtractorPool.create(options, jobs) : await Extractor.create(options);
  const dim = extractor.dim;
  let store: DescriptorStore | undefined;
  const warnings: string[] = [];
  let result: Awaited<ReturnType<typeof extractMany>>;
  try {
    store =
      flags.cache === undefined
        ? undefined
        : DescriptorStore.open(flags.cache, dim, { model: extractor.identity });
    const bar = progress("extract", images.length);
    try {
      result = await extractMany(
        images.map((path) => (flags.bbox === undefined ? path : { path, bbox: flags.bbox })),
        extractor,
        {
          dim,
          ...(store === undefined ? {} : { cache: store }),
          // Two per worker: each has its next image waiting while it runs one.
          ...(jobs > 1 ? { concurrency: 2 * jobs } : {}),
          onProgress: (event) => bar.tick(event.path),
          onWarning: (message) => warnings.push(message),
        },
      );
    } finally {
      bar.stop();
    }
  } finally {
    store?.close();
    await extractor.release();
  }
  writeNpy(flags.out, result.descriptors, [images.length, result.dim]);
  for (const w of warnings) process.stderr.write(`superglobal: warning: ${w}\n`);
  for (const f of result.failures) process.stderr.write(`superglobal: failed ${f.message}\n`);
  if (result.failures.length > 0) {
    process.stderr.write(
      `superglobal: ${result.failures.length} of ${images.length} image(s) failed; their rows in ${flags.out} are NaN\n`,
    );
    process.exitCode = 1;
  }
}
