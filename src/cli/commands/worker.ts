/**
 * `superglobal worker --queue redis://HOST:PORT`: describes images for `superglobal index
 * --queue` on this machine until stopped. SIGTERM or SIGINT finishes the running jobs and exits;
 * a second one exits at once (the jobs are then retried by other workers when their lock expires).
 */
import type { Command } from "commander";
import { DEFAULT_QUEUE_NAME } from "../../queue/connection.ts";
import { startWorker } from "../../queue/worker.ts";
import { addThreadsOption, intOption } from "../options.ts";

interface WorkerFlags {
  queue: string;
  queueName: string;
  concurrency: number;
  threads?: number;
  lockMs: number;
  stalledMs: number;
  maxStalled: number;
}

export function register(program: Command): void {
  const command = program
    .command("worker")
    .description(
      "describe images for `superglobal index --queue` (needs the images at the same paths as the indexing machine: a shared mount)",
    )
    .requiredOption("--queue <url>", "the job queue: redis://HOST:PORT")
    .option("--queue-name <name>", "the queue's name", DEFAULT_QUEUE_NAME)
    .option(
      "--concurrency <n>",
      "jobs at once; above 1, each in its own worker thread with its own copy of the model",
      intOption("--concurrency", 1, 256),
      1,
    )
    .option(
      "--lock-ms <ms>",
      "a job's lock, renewed while it runs: a killed worker's job is retried after at most this",
      intOption("--lock-ms", 100, 3_600_000),
      30_000,
    )
    .option(
      "--stalled-ms <ms>",
      "how often to look for jobs whose worker died",
      intOption("--stalled-ms", 100, 3_600_000),
      30_000,
    )
    .option(
      "--max-stalled <n>",
      "a job whose worker died more than this many times fails",
      intOption("--max-stalled", 0, 100),
      2,
    );
  addThreadsOption(command, "--concurrency");
  command.action(async (flags: WorkerFlags) => {
    await runWorker(flags);
  });
}

async function runWorker(flags: WorkerFlags): Promise<void> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const worker = await startWorker({
    url: flags.queue,
    name: flags.queueName,
    concurrency: flags.concurrency,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    lockMs: flags.lockMs,
    stalledMs: flags.stalledMs,
    maxStalled: flags.maxStalled,
    onEvent: (e) => {
      if (e.type === "start") log(`worker: describing ${e.path} (attempt ${e.attempt})`);
      else if (e.type === "failed") log(`worker: failed ${e.reason ?? e.path}`);
      else if (e.reason !== undefined) log(`worker: unusable image: ${e.reason}`);
    },
  });
  log(
    `worker: taking jobs from queue ${flags.queueName} at ${flags.queue}, ${flags.concurrency} at a time (images are read at the indexing machine's paths)`,
  );
  await new Promise<void>((done) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        log(`worker: ${signal} again: stopping now`);
        void worker.close(true).finally(done);
        return;
      }
      stopping = true;
      log(`worker: ${signal}: finishing the running jobs`);
      void worker.close().finally(done);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}
