/**
 * Parsers for CLI option values, each failing with a message that names the option, and the
 * option groups several commands share, declared once: the model group and --threads.
 */
import { type Command, InvalidArgumentError } from "commander";
import type { ExtractorOptions } from "../descriptor/options.ts";
import { PRECISIONS, PRESETS, type Precision, type Preset } from "../descriptor/presets.ts";
import { SuperglobalError } from "../errors.ts";
import { checkBox } from "../image/crop.ts";

export function intOption(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer between ${min} and ${max}`);
    }
    return n;
  };
}

export function floatOption(name: string, min = -Infinity, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a number between ${min} and ${max}`);
    }
    return n;
  };
}

export function choiceOption<T extends number | string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    const found = choices.find((c) => String(c) === value.trim());
    if (found === undefined)
      throw new InvalidArgumentError(`${name} must be one of ${choices.join(", ")}`);
    return found;
  };
}

/** "x1,y1,x2,y2" → a box, checked once here by the library's rule rather than per image. */
export function boxOption(value: string): [number, number, number, number] {
  const parts = value.split(",").map((s) => (s.trim() === "" ? Number.NaN : Number(s.trim())));
  try {
    checkBox(parts);
  } catch (error) {
    if (!(error instanceof SuperglobalError)) throw error;
    throw new InvalidArgumentError(
      `--bbox must be four numbers x1,y1,x2,y2 with x1 < x2 and y1 < y2`,
    );
  }
  return parts as [number, number, number, number];
}

/** What the model group (and --threads) give, as commander parses them. */
export interface ModelFlags {
  checkpoint?: string;
  model?: string;
  depth?: 50 | 101;
  scales?: 1 | 3 | 5;
  gemp?: boolean;
  rgem?: boolean;
  sgem?: boolean;
  relup?: boolean;
  threads?: number;
  precision?: Precision;
  preset?: Preset;
  calibrate?: string;
}

/** The box rule, as --help states it (and README's extract section). */
export const BOX_RULE =
  "a box partly outside the image is clipped to the image (with a warning); a box that is empty " +
  "after clipping is refused";

/**
 * Declares the model group: --checkpoint, --model, --depth, --scales and the module switches.
 * `build: true` (build-model) declares what goes into a saved model only: a required
 * --checkpoint, --depth, --no-gemp, --no-rgem, --no-relup. No option has a commander default:
 * the library's defaults are the CLI's, and `modelOptionsFrom` passes on only what was given.
 */
export function addModelOptions(command: Command, { build = false } = {}): void {
  const checkpoint = "CVNet checkpoint (CVPR2022_CVNet_R50.pyth or R101)";
  if (build) {
    command.requiredOption("--checkpoint <file>", checkpoint);
  } else {
    command
      .option("--checkpoint <file>", checkpoint)
      .option(
        "--model <name|file>",
        "a registered model (`default`, which ships with the package, is used when neither --model nor --checkpoint is given) or a model saved with `superglobal build-model` (faster start-up)",
      );
  }
  command.option(
    "--depth <n>",
    "ResNet depth of the checkpoint: 50 or 101 (default: read from the checkpoint)",
    choiceOption("--depth", [50, 101] as const),
  );
  if (!build) {
    command.option(
      "--scales <n>",
      "scale set: 1, 3 (0.7071, 1, 1.4142) or 5 (default: the model's, 3 for CVNet)",
      choiceOption("--scales", [1, 3, 5] as const),
    );
  }
  command
    .option("--no-gemp", "GeM+ off: CVNet's GeM with the checkpoint's learned p")
    .option("--no-rgem", "Regional-GeM off");
  if (!build) command.option("--no-sgem", "Scale-GeM off: mean over scales");
  command.option("--no-relup", "ReLU+ off in the backbone");
  if (!build) addSpeedOptions(command);
  else {
    command
      .option(
        "--precision <p>",
        "float32 (default) or int8 (quantised with ranges calibrated on --calibrate photos)",
        choiceOption("--precision", PRECISIONS),
      )
      .option("--calibrate <dir>", "with --precision int8: photos to calibrate on");
  }
}

/** Declares --preset, --precision and --calibrate (the speed settings, README "Faster extraction"). */
export function addSpeedOptions(command: Command): Command {
  return command
    .option(
      "--preset <name>",
      "speed preset: exact (the model's scales and sizes, float32), balanced (3 scales, 1024 px, int8) or fast (1 scale, 1024 px, int8); explicit --scales/--precision win",
      choiceOption("--preset", PRESETS),
    )
    .option(
      "--precision <p>",
      "backbone precision: float32 (exact, default) or int8 (faster on CPUs with VNNI; refused on others unless SUPERGLOBAL_INT8=force)",
      choiceOption("--precision", PRECISIONS),
    )
    .option(
      "--calibrate <dir>",
      "with int8: photos to calibrate activation ranges on (needed for CVNet checkpoints; the default model ships its own)",
    );
}

/** Declares --threads (onnxruntime's intra-op threads); `jobsFlag`: the command's option for images in flight, if it has one. */
export function addThreadsOption(command: Command, jobsFlag?: string): void {
  command.option(
    "--threads <n>",
    jobsFlag === undefined
      ? "onnxruntime threads (default: all cores)"
      : `onnxruntime threads (per job with ${jobsFlag}; default: all cores, shared out among the jobs)`,
    intOption("--threads", 1, 1024),
  );
}

/** --ann-expansion: the ANN graph's search expansion (expansionSearch), for indexes past the ANN threshold. */
export function addAnnExpansionOption(command: Command): void {
  command.option(
    "--ann-expansion <n>",
    "with an ANN graph (indexes past 100,000 images): candidates a search keeps while walking it; more is better recall and slower (default 256; 512 for a million images or more, see the README)",
    intOption("--ann-expansion", 1, 65536),
  );
}

/** --jobs: images in flight at once, each in its own worker thread with its own model copy. */
export function addJobsOption(command: Command): void {
  command.option(
    "--jobs <n>",
    "images in flight at once, each in a worker thread with its own copy of the model (default 1: one image at a time on all cores, the faster on 2 cores)",
    intOption("--jobs", 1, 256),
  );
}

const PASSED_ON = [
  "depth",
  "scales",
  "gemp",
  "rgem",
  "sgem",
  "relup",
  "threads",
  "precision",
  "preset",
] as const;

/**
 * The extractor options of the model group: at most one of --checkpoint or --model (neither: the
 * library's default model), and only the options given on the command line (a saved model records
 * depth, relup, gemp and rgem, and each model has its own defaults: a CLI default must not
 * contradict them; the library's defaults are the CLI's).
 */
export function modelOptionsFrom(flags: ModelFlags, command: Command): ExtractorOptions {
  if (flags.checkpoint !== undefined && flags.model !== undefined) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      "give one of --checkpoint or --model, not both",
      {
        input: "--checkpoint",
      },
    );
  }
  const options: ExtractorOptions = {};
  if (flags.checkpoint !== undefined) options.checkpoint = flags.checkpoint;
  if (flags.model !== undefined) options.model = flags.model;
  if (flags.calibrate !== undefined) options.calibration = flags.calibrate;
  for (const name of PASSED_ON) {
    if (command.getOptionValueSource(name) === "cli")
      Object.assign(options, { [name]: flags[name] });
  }
  return options;
}
