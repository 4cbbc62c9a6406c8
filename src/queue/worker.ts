/**
 * The worker side of distributed indexing: takes `describe` jobs from the queue, builds the model
 * the job names (once per spec), checks it is the index's model, reads the image at the job's
 * path (the same path as on the enqueuing machine: workers need a shared mount) and returns its
 * descriptor. Workers never open the index; the enqueuer commits what they return.
 *
 * Failures: a missing or unreadable path, or a file whose bytes differ from the enqueuer's, fails
 * the job (retried with backoff, then the failed list), naming the path and this host; a worker
 * whose model differs refuses the job at once (retrying elsewhere cannot make it match by
 * chance); an image that cannot be described (corrupt, not finite) is a result, not a failure,
 * recorded in the index like a local run records it.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { ModelSpec } from "../app/photo-index.ts";
import {
  type BatchExtractor,
  extractMany,
  type StagedExtractor,
} from "../descriptor/extract-many.ts";
import { ExtractorPool } from "../descriptor/extract-pool.ts";
import { Extractor } from "../descriptor/extractor.ts";
import { fileError } from "../errors.ts";
import type { ImageTensor } from "../image/normalize.ts";
import {
  bullConnection,
  checkQueueName,
  connectRedis,
  DEFAULT_QUEUE_NAME,
  parseQueueUrl,
} from "./connection.ts";
import {
  checkPayload,
  encodeDescriptor,
  type JobResult,
  positive,
  type StalledSettings,
  workerLockOptions,
} from "./jobs.ts";

export interface WorkerOptions extends StalledSettings {
  /** redis://HOST:PORT */
  url: string;
  /** Queue name (default `superglobal`). */
  name?: string;
  /**
   * Jobs at once in this process (default 1). Above 1 they run in worker threads, each with its
   * own copy of the model (an ExtractorPool), since onnxruntime runs a model on the calling thread.
   */
  concurrency?: number;
  /** onnxruntime threads per job (default: all cores, shared out among the jobs). */
  threads?: number;
  cacheDir?: string;
  /** Each job as it starts and ends (for logs). */
  onEvent?: (event: WorkerEvent) => void;
}

export interface WorkerEvent {
  type: "start" | "done" | "failed";
  path: string;
  /** 1 on the first try. */
  attempt: number;
  /** Why it failed (for `failed`), or why the image is unusable (a `done` that is not ok). */
  reason?: string;
}

export interface QueueWorker {
  /** Stops taking jobs; waits for the running ones unless `force` (they are then retried elsewhere once their lock expires). */
  close(force?: boolean): Promise<void>;
}

/** Starts a worker; it runs until `close()`. IO_ERROR when Redis cannot be reached. */
export async function startWorker(options: WorkerOptions): Promise<QueueWorker> {
  const address = parseQueueUrl(options.url);
  const name = checkQueueName(options.name ?? DEFAULT_QUEUE_NAME);
  const concurrency = positive("concurrency", options.concurrency, 1, 256);
  const lock = workerLockOptions(options);
  (await connectRedis(address)).disconnect(); // fail fast and clearly when it is unreachable
  const host = hostname();
  // onnxruntime runs a model on the thread that calls it: with concurrency > 1 the jobs run in
  // an ExtractorPool's worker threads, or they would only take turns on this one.
  const models = new Map<string, Promise<JobModel>>();
  const modelFor = (spec: ModelSpec): Promise<JobModel> => {
    const key = JSON.stringify(spec);
    let m = models.get(key);
    if (m === undefined) {
      const extractorOptions = {
        ...spec,
        ...(options.threads === undefined ? {} : { threads: options.threads }),
        ...(options.cacheDir === undefined ? {} : { cacheDir: options.cacheDir }),
      };
      m =
        concurrency === 1
          ? Extractor.create(extractorOptions).then(singleModel)
          : ExtractorPool.create(extractorOptions, concurrency).then(pooledModel);
      // A model that fails to build is tried again on the next job.
      m.catch(() => models.delete(key));
      models.set(key, m);
    }
    return m;
  };

  const describe = async (job: Job): Promise<JobResult> => {
    const data = checkPayload(job.data, job.id);
    const attempt = job.attemptsMade + 1;
    options.onEvent?.({ type: "start", path: data.path, attempt });
    let extractor: JobModel;
    try {
      extractor = await modelFor(data.spec);
    } catch (cause) {
      throw new UnrecoverableError(
        `${data.path}: worker ${host} cannot build the index's model (${(cause as Error).message})`,
      );
    }
    if (extractor.identity !== data.model) {
      throw new UnrecoverableError(
        `${data.path}: worker ${host} refuses the job: its model is ${extractor.identity} but the index's is ${data.model} (the model files differ between machines)`,
      );
    }
    let bytes: Uint8Array;
    try {
      bytes = await readFile(data.path);
    } catch (cause) {
      const why = fileError(data.path, `cannot be read on worker ${host}`, cause).message;
      throw new Error(
        `${why}; workers need the same image paths as the indexing machine (a shared mount)`,
      );
    }
    const hash = createHash("sha256").update(bytes).digest("hex");
    if (hash !== data.hash) {
      throw new Error(
        `${data.path}: on worker ${host} the file's content differs from what the indexing machine read (sha256 ${hash.slice(0, 12)}… vs ${data.hash.slice(0, 12)}…)`,
      );
    }
    // The local run's loop, for one image: the same failures with the same reasons.
    const { descriptors, failures } = await extractMany([data.path], extractor.forBytes(bytes));
    const failure = failures[0];
    const result: JobResult =
      failure === undefined
        ? { ok: true, descriptor: encodeDescriptor(descriptors) }
        : { ok: false, reason: failure.message };
    options.onEvent?.({
      type: "done",
      path: data.path,
      attempt,
      ...(result.ok ? {} : { reason: result.reason }),
    });
    return result;
  };

  const worker = new Worker(name, describe, {
    connection: bullConnection(address),
    concurrency,
    ...lock,
  });
  worker.on("failed", (job, error) => {
    if (job === undefined) return;
    const path = typeof job.data?.path === "string" ? job.data.path : String(job.id);
    options.onEvent?.({ type: "failed", path, attempt: job.attemptsMade, reason: error.message });
  });
  // Connection trouble is retried by BullMQ; an error event without a listener would crash.
  worker.on("error", () => {});
  await worker.waitUntilReady();
  return {
    async close(force = false) {
      await worker.close(force);
      for (const m of models.values()) {
        await m.then(
          (x) => x.release(),
          () => {},
        );
      }
    },
  };
}

/** A job's model: its identity, and an extractor for one image whose bytes were read and checked. */
interface JobModel {
  identity: string;
  forBytes(bytes: Uint8Array): BatchExtractor;
  release(): Promise<void>;
}

/** One extractor on this thread: it describes the bytes the worker read. */
function singleModel(extractor: Extractor): JobModel {
  return {
    identity: extractor.identity,
    forBytes: (bytes): StagedExtractor<ImageTensor> => ({
      dim: extractor.dim,
      extract: (path) => extractor.extract(path),
      decode: (path) => extractor.prepare(bytes, { name: path }),
      infer: (tensor) => extractor.infer(tensor),
    }),
    release: () => extractor.release(),
  };
}

/** A pool of worker threads: the bytes read and checked here are handed to one of them. */
function pooledModel(pool: ExtractorPool): JobModel {
  return {
    identity: pool.identity,
    forBytes: (bytes): BatchExtractor => ({
      dim: pool.dim,
      extract: (path) => pool.extract(path, { bytes }),
    }),
    release: () => pool.release(),
  };
}
