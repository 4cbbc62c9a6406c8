/**
 * `superglobal models [--json]`: every model a user can name (with `--model NAME`, or
 * `Extractor.create({ model: NAME })`): what it is, its licence, input convention, descriptor
 * size, whether it is on this machine and how to get it. `superglobal models pull NAME`
 * downloads one into the model cache (progress on stderr, the file's path on stdout).
 */
import type { Command } from "commander";
import { modelStatuses, modelsDir, pullModel } from "../../descriptor/pull.ts";
import { SuperglobalError } from "../../errors.ts";
import { byteProgress } from "../progress.ts";

interface ListFlags {
  json?: boolean;
  dir?: string;
}

interface PullFlags {
  url?: string;
  dir?: string;
  force?: boolean;
}

export function register(program: Command): void {
  const models = program
    .command("models")
    .description("list the models you can name (and `models pull NAME` to download one)")
    .option("--json", "machine-readable output")
    .option("--dir <folder>", "models folder (default: <cache>/models)")
    .action((flags: ListFlags) => {
      runList(flags);
    });
  models
    .command("pull")
    .description("download a model into the model cache (resumes an interrupted download)")
    .argument("<name>", "model name, e.g. cvnet-r50")
    .option("--url <url>", "download from this URL (a Google Drive share link works too)")
    .option("--dir <folder>", "download into this folder (default: <cache>/models)")
    .option("--force", "download again even when the file is there")
    .action(async (name: string, flags: PullFlags) => {
      await runPull(name, flags);
    });
}

export function runList(flags: ListFlags): void {
  const dir = flags.dir ?? modelsDir();
  const statuses = modelStatuses(dir);
  if (flags.json === true) {
    process.stdout.write(`${JSON.stringify({ modelsDir: dir, models: statuses }, null, 2)}\n`);
    return;
  }
  const lines: string[] = [`models folder: ${dir}`, ""];
  for (const m of statuses) {
    const where =
      m.delivery === "package"
        ? "ships with the npm package"
        : m.available
          ? `pulled: ${m.path}`
          : "not pulled";
    lines.push(`${m.name.padEnd(22)}${`${m.dim}-d`.padEnd(8)}${m.input.padEnd(14)}${where}`);
    lines.push(`  ${m.description}`);
    if (m.licence !== null) lines.push(`  licence: ${m.licence}`);
    if (m.delivery === "pull") {
      const size = m.bytes === null ? "" : `${(m.bytes / 1e6).toFixed(1)} MB, `;
      const sha =
        m.sha256 === null
          ? "no sha256 published: checked by loading it, sha256 recorded at download"
          : `sha256 ${m.sha256}${m.sha256Published ? "" : " (recorded at download)"}`;
      lines.push(`  file: ${m.file} (${size}${sha})`);
      if (!m.available) lines.push(`  get: ${m.get}`);
    }
    lines.push("");
  }
  process.stdout.write(lines.join("\n"));
}

export async function runPull(name: string, flags: PullFlags): Promise<void> {
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.once("SIGINT", onInterrupt);
  const bar = byteProgress(`pull ${name}`);
  try {
    const result = await pullModel(name, {
      ...(flags.dir === undefined ? {} : { dir: flags.dir }),
      ...(flags.url === undefined ? {} : { url: flags.url }),
      force: flags.force === true,
      signal: controller.signal,
      onProgress: ({ received, total }) => bar.update(received, total),
      onFallback: (_url, error) => {
        bar.stop();
        process.stderr.write(`superglobal: ${error.message}; trying the next URL\n`);
      },
    });
    bar.stop();
    if (result.present) {
      process.stderr.write(
        `superglobal: ${name} is already there (${result.path}); --force downloads it again\n`,
      );
    } else {
      process.stderr.write(
        `superglobal: ${name}: ${(result.bytes / 1e6).toFixed(1)} MB from ${result.url}` +
          `${result.resumed ? " (resumed)" : ""}; sha256 ${result.sha256}; checked: ${result.checked}\n`,
      );
    }
    process.stdout.write(`${result.path}\n`);
  } catch (error) {
    bar.stop();
    if (controller.signal.aborted) {
      throw new SuperglobalError(
        "IO_ERROR",
        `${name}: interrupted; the partial download is kept: run the same command again to resume`,
        { input: name },
      );
    }
    throw error;
  } finally {
    process.removeListener("SIGINT", onInterrupt);
  }
}
