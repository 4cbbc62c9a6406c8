/**
 * `superglobal info --index PATH [--json] [--failures]`: what an index holds: its model, how many
 * images are searchable and how many failed (with their reasons on request), the descriptor
 * dimension, its size on disk and when it was created and last updated.
 */
import type { Command } from "commander";
import { Index } from "../../app/photo-index.ts";

interface InfoFlags {
  index: string;
  json: boolean;
  failures: boolean;
}

export function register(program: Command): void {
  program
    .command("info")
    .description("what an index holds: model, images, failures, dimension, size, times")
    .requiredOption("--index <dir>", "the index folder")
    .option("--json", "one JSON object")
    .option("--failures", "list each failed image with its reason")
    .action(async (flags: InfoFlags) => {
      await runInfo(flags);
    });
}

export async function runInfo(flags: InfoFlags): Promise<void> {
  const index = await Index.open(flags.index, { readOnly: true });
  try {
    const info = index.info();
    const failures = info.failures.map((f) => ({ path: f.path, reason: f.reason }));
    if (flags.json) {
      const out = {
        index: info.dir,
        model: info.model,
        network: info.network,
        modelSpec: info.modelSpec,
        images: info.images,
        failed: info.failed,
        dim: info.dim,
        dtype: info.dtype,
        bytes: info.bytes,
        created: info.created,
        updated: info.updated,
        ...(flags.failures ? { failures } : {}),
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return;
    }
    const lines = [
      `index    ${info.dir}`,
      `model    ${info.model} (${info.network}; ${JSON.stringify(info.modelSpec)})`,
      `images   ${info.images} searchable, ${info.failed} failed`,
      `vectors  ${info.dim}-d ${info.dtype}`,
      `size     ${(info.bytes / 1e6).toFixed(1)} MB on disk`,
      `created  ${info.created}`,
      `updated  ${info.updated}`,
      ...(flags.failures
        ? failures.map(
            (f) => `failed   ${f.reason.includes(f.path) ? f.reason : `${f.path}: ${f.reason}`}`,
          )
        : []),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await index.close();
  }
}
