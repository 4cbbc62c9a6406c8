/**
 * `superglobal index DIR... --index PATH`: describe every image under the folders into a
 * persistent index (new and changed files only; unchanged ones are skipped), with a progress
 * bar and a summary. Killed at any moment, it keeps what it committed and resumes on the next run.
 * With --queue, the images are described by `superglobal worker`s (queue/) and committed here.
 */
import type { Command } from "commander";
import { Index } from "../../app/photo-index.ts";
import { findImages } from "../../app/scan.ts";
import { indexOnQueue } from "../../queue/committer.ts";
import { DEFAULT_QUEUE_NAME } from "../../queue/connection.ts";
import { addIndexModelOptions, type IndexModelFlags, modelSpecFrom } from "../index-options.ts";
import { addJobsOption, addThreadsOption, intOption } from "../options.ts";
import { progress } from "../progress.ts";

interface IndexFlags extends IndexModelFlags {
  index: string;
  recursive: boolean;
  prune: boolean;
  threads?: number;
  jobs?: number;
  float16: boolean;
  queue?: string;
  queueName: string;
  attempts: number;
  backoffMs: number;
}

export function register(program: Command): void {
  const command = program
    .command("index")
    .description("index the images under folders (recursive; images found by content) for search")
    .argument("<paths...>", "folders (or single image files) to index")
    .requiredOption("--index <dir>", "the index folder (created if absent), e.g. photos.sgi")
    .option("--no-recursive", "only the folders' own files, not their sub-folders")
    .option("--prune", "also drop indexed images whose files are gone")
    .option("--float16", "store descriptors as float16 (half the disk; new index only)")
    .option(
      "--queue <url>",
      "describe the images on workers (`superglobal worker`) through the job queue at redis://HOST:PORT; workers must see the images at the same paths (a shared mount)",
    )
    .option("--queue-name <name>", "the queue's name (workers use the same)", DEFAULT_QUEUE_NAME)
    .option(
      "--attempts <n>",
      "with --queue: tries per image before it is listed as failed",
      intOption("--attempts", 1, 100),
      3,
    )
    .option(
      "--backoff-ms <ms>",
      "with --queue: delay before the first retry, doubled each time",
      intOption("--backoff-ms", 0, 3_600_000),
      1000,
    );
  addThreadsOption(command, "--jobs");
  addJobsOption(command);
  addIndexModelOptions(command);
  command.action(async (paths: string[], flags: IndexFlags) => {
    await runIndex(paths, flags);
  });
}

export async function runIndex(roots: string[], flags: IndexFlags): Promise<void> {
  const spec = modelSpecFrom(flags);
  const index = await Index.open(flags.index, {
    create: true,
    ...(spec === undefined ? {} : { model: spec }),
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    ...(flags.float16 ? { dtype: "float16" as const } : {}),
  });
  try {
    const files = findImages(
      roots,
      { recursive: flags.recursive, exclude: [index.path] },
      (path, why) => process.stderr.write(`superglobal: skipped ${path}: ${why}\n`),
    );
    const bar = progress("index", files.length);
    const summary = await (async () => {
      try {
        const onProgress = (e: { path: string }) => bar.tick(e.path);
        if (flags.queue === undefined) {
          return await index.add(files, {
            onProgress,
            ...(flags.jobs === undefined ? {} : { jobs: flags.jobs }),
          });
        }
        return await indexOnQueue(index, files, {
          url: flags.queue,
          name: flags.queueName,
          attempts: flags.attempts,
          backoffMs: flags.backoffMs,
          onProgress,
          onNotice: (message) => process.stderr.write(`\nsuperglobal: ${message}\n`),
        });
      } finally {
        bar.stop();
      }
    })();
    const removed = flags.prune ? await index.prune() : [];
    const lines = [
      `indexed ${files.length} image file(s) into ${flags.index}: ${summary.added} added, ` +
        `${summary.updated} updated, ${summary.unchanged} unchanged, ${removed.length} removed, ` +
        `${summary.failed.length} failed; ${index.size} searchable`,
      ...summary.failed.map(
        (f) => `  failed ${f.reason.includes(f.path) ? f.reason : `${f.path}: ${f.reason}`}`,
      ),
    ];
    process.stderr.write(`${lines.join("\n")}\n`);
    if (summary.failed.length > 0) process.exitCode = 1;
  } finally {
    await index.close();
  }
}
