/**
 * The enqueuing side of distributed indexing: plans like a local `add` (unchanged files skipped,
 * unreadable ones recorded), puts one job per image to describe on the queue, and commits the
 * workers' results into the index as they arrive. Only this process opens the index for writing.
 *
 * Exactly once: a job's id is derived from (model, path, size, mtime), so a restarted enqueuer
 * adds the same ids again and BullMQ keeps one job each. A result stays in Redis (the completed
 * set) until it is committed durably; only then is its job removed. Killed between the two, the
 * restarted run finds the file unchanged in the index and drops the leftover result; killed
 * before the commit, it finds the result still there and commits it. Retries, stalled jobs (a
 * worker killed mid-job) and backoff are BullMQ's; a job that fails every attempt stays in the
 * failed list and is shown in the summary (not recorded in the index, so the next run tries the
 * file again; an earlier run's failed jobs are retried then).
 *
 * Bounds: at most `window` jobs of this run are in Redis at once (more are added as results are
 * committed), and at most `batch` results are held in memory (fetched, committed, removed).
 *
 * One index per queue name at a time: the first enqueuer claims the name (a Redis key naming its
 * host and index) and releases it when none of its jobs are left but failed ones.
 */
import { hostname } from "node:os";
import { Queue } from "bullmq";
import type { AddOptions, AddSummary, PlannedFile } from "../app/add-run.ts";
import type { Index } from "../app/photo-index.ts";
import { fileError, SuperglobalError } from "../errors.ts";
import { sha256OfFile } from "../io/file-sha256.ts";
import {
  bullConnection,
  checkQueueName,
  connectRedis,
  DEFAULT_QUEUE_NAME,
  parseQueueUrl,
} from "./connection.ts";
import {
  checkPayload,
  checkResult,
  decodeDescriptor,
  JOB_NAME,
  type JobPayload,
  jobIdOf,
  jobOptions,
  positive,
  type RetrySettings,
} from "./jobs.ts";

export interface QueueIndexOptions
  extends RetrySettings,
    Pick<AddOptions, "onProgress" | "signal"> {
  /** redis://HOST:PORT */
  url: string;
  /** Queue name (default `superglobal`); the workers must use the same. */
  name?: string;
  /** Most jobs of this run in Redis at once (default 256). */
  window?: number;
  /** Most results fetched, held and committed at once (default 32). */
  batch?: number;
  /** How long to wait between looks at the queue when nothing came (ms, default 200). */
  pollMs?: number;
  /** Things the user should know while waiting (no worker connected yet). */
  onNotice?: (message: string) => void;
}

/** Redis key of the queue's claim (outside BullMQ's own keys). */
export function claimKey(name: string): string {
  return `superglobal:${name}:owner`;
}

/** Adds images to `index` through the queue's workers; the summary of a local `add`. */
export async function indexOnQueue(
  index: Index,
  paths: readonly string[],
  options: QueueIndexOptions,
): Promise<AddSummary> {
  const address = parseQueueUrl(options.url);
  const name = checkQueueName(options.name ?? DEFAULT_QUEUE_NAME);
  const window = positive("window", options.window, 256);
  const batch = positive("batch", options.batch, 32, 10_000);
  const pollMs = positive("pollMs", options.pollMs, 200, 60_000);
  const perJob = jobOptions(options);
  const model = index.extractor.identity;
  const dim = index.extractor.dim;
  const redis = await connectRedis(address);
  const queue = new Queue(name, { connection: bullConnection(address) });
  queue.on("error", () => {}); // connection trouble is retried by BullMQ; commands still fail loudly
  const owner = `${hostname()}:${index.path}`;
  let run: Awaited<ReturnType<Index["planAdd"]>> | undefined;
  try {
    const claimed = await redis.set(claimKey(name), owner, "NX");
    const holder = claimed === "OK" ? owner : await redis.get(claimKey(name));
    if (holder !== owner) {
      throw new SuperglobalError(
        "BUSY",
        `queue ${name} at ${address.display} is in use by the index ${holder}; give this index another --queue-name (workers too), or, if that run is abandoned, delete the Redis key ${claimKey(name)}`,
        { input: name },
      );
    }
    run = await index.planAdd(paths, {
      commitEvery: batch,
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    });
    const wanted = new Map<string, PlannedFile>(run.todo.map((f) => [jobIdOf(model, f), f]));
    const order = [...wanted.keys()];
    let next = 0;
    /** Jobs of this run in Redis, not yet committed or failed for good. */
    const outstanding = new Set<string>();
    const resolved = new Set<string>();

    // An earlier run's jobs that failed for good: ours are tried again, others are dropped.
    for (const job of await queue.getFailed(0, -1)) {
      if (job.id !== undefined && wanted.has(job.id)) {
        await job.retry("failed");
        outstanding.add(job.id);
      } else {
        await job.remove();
      }
    }
    let failedCount = -1;
    let noticed = false;

    while (next < order.length || outstanding.size > 0) {
      options.signal?.throwIfAborted();
      let progressed = false;

      // Enqueue up to the window, a batch at a time so workers start early (the file's hash is read
      // here: workers check their copy against it).
      const adds: Array<{ name: string; data: JobPayload; opts: object }> = [];
      while (
        outstanding.size + adds.length < window &&
        adds.length < batch &&
        next < order.length
      ) {
        const id = order[next++]!;
        if (outstanding.has(id) || resolved.has(id)) continue;
        const file = wanted.get(id)!;
        let hash: string;
        try {
          hash = (await sha256OfFile(file.path)).sha256;
        } catch (cause) {
          const reason = fileError(file.path, "cannot read the image", cause, "BAD_IMAGE").message;
          run.fail(file, null, reason);
          run.report(file.path, "failed", 0, reason);
          resolved.add(id);
          continue;
        }
        const { path, size, mtimeMs } = file;
        adds.push({
          name: JOB_NAME,
          data: { path, size, mtimeMs, hash, model, spec: index.modelSpec },
          opts: { jobId: id, ...perJob, removeOnComplete: false, removeOnFail: false },
        });
      }
      if (adds.length > 0) {
        await queue.addBulk(adds);
        for (const a of adds) outstanding.add((a.opts as { jobId: string }).jobId);
        progressed = true;
        if (!noticed) {
          noticed = true;
          // Without a worker nothing happens: say so once (CLIENT LIST may be refused: then skip).
          const workers = await queue.getWorkersCount().catch(() => -1);
          if (workers === 0) {
            options.onNotice?.(
              `no worker is connected to queue ${name} at ${address.display} yet: start \`superglobal worker --queue ${address.display}${name === DEFAULT_QUEUE_NAME ? "" : ` --queue-name ${name}`}\` on machines that see the images at the same paths`,
            );
          }
        }
      }

      // Results: commit a batch durably, then remove its jobs; leftovers of other runs are dropped.
      const done = await queue.getJobs(["completed"], 0, batch - 1, true); // oldest first
      if (done.length > 0) {
        const finished: Array<{
          path: string;
          status: "added" | "updated" | "failed";
          ms: number;
          reason?: string;
        }> = [];
        for (const job of done) {
          const id = job.id ?? "";
          const file = wanted.get(id);
          if (file === undefined || resolved.has(id)) continue;
          const data = checkPayload(job.data, id);
          const result = checkResult(job.returnvalue, id);
          const ms = (job.finishedOn ?? 0) - (job.processedOn ?? 0);
          if (result.ok) {
            const status = run.put(file, data.hash, decodeDescriptor(result.descriptor, dim, id));
            finished.push({ path: file.path, status, ms });
          } else {
            run.fail(file, data.hash, result.reason);
            finished.push({ path: file.path, status: "failed", ms, reason: result.reason });
          }
          resolved.add(id);
          outstanding.delete(id);
        }
        run.commit();
        await Promise.all(done.map((job) => job.remove()));
        for (const f of finished) run.report(f.path, f.status, f.ms, f.reason);
        progressed = true;
      }

      // Jobs that failed every attempt (or were refused): in the summary, kept in the failed list.
      const failed = await queue.getFailedCount();
      if (failed !== failedCount) {
        failedCount = failed;
        for (const job of await queue.getFailed(0, -1)) {
          const id = job.id ?? "";
          const file = wanted.get(id);
          if (file === undefined || !outstanding.has(id)) continue;
          const reason = job.failedReason || "failed";
          run.failUnrecorded(file.path, reason);
          run.report(file.path, "failed", 0, reason);
          resolved.add(id);
          outstanding.delete(id);
        }
      }

      if (!progressed && (next < order.length || outstanding.size > 0)) {
        await new Promise((done) => setTimeout(done, pollMs));
      }
    }

    const summary = run.finish();
    index.afterAdd();
    // Nothing of ours left but failed jobs: the queue name is free for another index.
    const left = await queue.getJobCounts(
      "waiting",
      "active",
      "delayed",
      "prioritized",
      "completed",
    );
    if (Object.values(left).every((n) => n === 0) && (await redis.get(claimKey(name))) === owner) {
      await redis.del(claimKey(name));
    }
    return summary;
  } finally {
    run?.finish(); // whatever was staged before an error is kept
    await queue.close();
    redis.disconnect();
  }
}
