/**
 * Several images in flight at once: `jobs` worker threads, each with its own Extractor (and
 * onnxruntime session) built from the same options. onnxruntime-node runs a model synchronously
 * on the calling thread, so within one thread images go one after another however many are
 * awaited; only separate threads (or processes) put two images on two cores. What `jobs` buys
 * over one extractor using all cores is measured in `npm run bench -- index throughput` (on 2
 * cores, within the VM's noise: +5% to +19% in two runs, -20% in an earlier one; see the
 * README); what it costs is one model in memory per job.
 *
 * The pool is a BatchExtractor: hand it to `extractMany` with `concurrency: 2 * jobs`, so each
 * worker has its next image waiting (its decode then overlaps the current inference).
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { assertInteger, SuperglobalError } from "../errors.ts";
import type { Box } from "../image/crop.ts";
import type { BatchExtractor } from "./extract-many.ts";
import type { ErrorRecord, WorkReply, WorkRequest } from "./extract-worker.ts";
import type { ExtractorOptions } from "./options.ts";

export interface PooledDescriptor {
  descriptor: Float32Array;
  /** sha256 (hex) of the file's bytes as the worker read them. */
  sha256: string;
}

interface Pending {
  resolve: (value: PooledDescriptor) => void;
  reject: (error: Error) => void;
}

interface Lane {
  worker: Worker;
  pending: Map<number, Pending>;
}

/** Run from TypeScript source (tests, benchmarks, tsx) rather than the built package. */
const FROM_SOURCE = import.meta.url.endsWith(".ts");
/** The worker's module beside this one. */
const WORKER_URL = new URL(`./extract-worker.${FROM_SOURCE ? "ts" : "js"}`, import.meta.url);

/**
 * A worker thread running extract-worker. From source, Node 20 workers do not get the parent's
 * `--import tsx` hooks, so a two-line bootstrap registers tsx in the worker first.
 */
function newWorker(options: ExtractorOptions): Worker {
  if (!FROM_SOURCE) return new Worker(WORKER_URL, { workerData: options });
  const tsx = JSON.stringify(import.meta.resolve("tsx/esm/api"));
  const entry = JSON.stringify(WORKER_URL.href);
  return new Worker(`import(${tsx}).then((m) => { m.register(); return import(${entry}); })`, {
    eval: true,
    workerData: options,
  });
}

function rebuild(record: ErrorRecord): Error {
  if (record.code !== undefined) {
    return new SuperglobalError(record.code, record.message, {
      ...(record.input === undefined ? {} : { input: record.input }),
    });
  }
  const error = new Error(`extraction worker: ${record.message}`);
  if (record.stack !== undefined) error.stack = record.stack;
  return error;
}

export class ExtractorPool implements BatchExtractor {
  private nextId = 0;
  private broken: Error | undefined;

  private constructor(
    private readonly lanes: Lane[],
    /** The model's identity, as each worker's Extractor computed it. */
    readonly identity: string,
    readonly dim: number,
  ) {}

  /** Images in flight at once (worker threads). */
  get jobs(): number {
    return this.lanes.length;
  }

  /**
   * Starts `jobs` workers. Each gets `options.threads` onnxruntime threads (default: the cores
   * shared out, at least 1). The first worker builds the model (and fills the model cache) before
   * the others start, so they load it from there rather than all building it.
   */
  static async create(options: ExtractorOptions, jobs: number): Promise<ExtractorPool> {
    assertInteger("jobs", jobs, 1, 256);
    const threads = options.threads ?? Math.max(1, Math.floor(availableParallelism() / jobs));
    const workerOptions: ExtractorOptions = { ...options, threads };
    const lanes: Lane[] = [];
    try {
      const first = await startLane(workerOptions);
      lanes.push(first.lane);
      const rest = await Promise.all(
        Array.from({ length: jobs - 1 }, () => startLane(workerOptions)),
      );
      for (const r of rest) lanes.push(r.lane);
      if (rest.some((r) => r.identity !== first.identity)) {
        throw new Error("extraction workers built different models from the same options");
      }
      const pool = new ExtractorPool(lanes, first.identity, first.dim);
      for (const lane of lanes) pool.watch(lane);
      return pool;
    } catch (error) {
      await Promise.all(lanes.map((l) => l.worker.terminate()));
      throw error;
    }
  }

  /**
   * The descriptor of the image file at `path` (cropped to `bbox`), and the file's sha256. With
   * `bytes` (the file as the caller already read it; copied to the worker), the worker describes
   * them instead of reading the file again, and `path` only names the image.
   */
  describe(
    path: string,
    input: { bbox?: Box; bytes?: Uint8Array } = {},
  ): Promise<PooledDescriptor> {
    if (this.broken !== undefined) return Promise.reject(this.broken);
    // The lane with the fewest images waiting.
    let lane = this.lanes[0] as Lane;
    for (const l of this.lanes) if (l.pending.size < lane.pending.size) lane = l;
    const id = this.nextId++;
    const request: WorkRequest = {
      id,
      path,
      ...(input.bbox === undefined ? {} : { bbox: input.bbox }),
      ...(input.bytes === undefined ? {} : { bytes: input.bytes }),
    };
    return new Promise<PooledDescriptor>((resolve, reject) => {
      lane.pending.set(id, { resolve, reject });
      lane.worker.postMessage(request);
    });
  }

  async extract(
    path: string,
    input: { bbox?: Box; bytes?: Uint8Array } = {},
  ): Promise<Float32Array> {
    return (await this.describe(path, input)).descriptor;
  }

  /** Stops the workers; images still in flight fail. */
  async release(): Promise<void> {
    this.broken ??= new Error("the extractor pool was released");
    await Promise.all(this.lanes.map((l) => l.worker.terminate()));
  }

  private watch(lane: Lane): void {
    const failAll = (error: Error) => {
      this.broken ??= error;
      for (const p of lane.pending.values()) p.reject(error);
      lane.pending.clear();
    };
    lane.worker.on("message", (reply: WorkReply) => {
      if (reply.type !== "done" && reply.type !== "error") return;
      const p = lane.pending.get(reply.id);
      if (p === undefined) return;
      lane.pending.delete(reply.id);
      if (reply.type === "done") p.resolve({ descriptor: reply.descriptor, sha256: reply.sha256 });
      else p.reject(rebuild(reply.error));
    });
    lane.worker.on("error", (error) => failAll(new Error(`extraction worker: ${error.message}`)));
    lane.worker.on("exit", (code) => {
      failAll(new Error(`an extraction worker stopped (exit code ${code})`));
    });
  }
}

/** One worker, once its extractor is ready (or its failure to make one, rethrown here). */
function startLane(
  options: ExtractorOptions,
): Promise<{ lane: Lane; identity: string; dim: number }> {
  const worker = newWorker(options);
  return new Promise((resolve, reject) => {
    const onExit = (code: number) =>
      reject(new Error(`an extraction worker stopped while starting (exit code ${code})`));
    worker.once("error", reject);
    worker.once("exit", onExit);
    worker.once("message", (reply: WorkReply) => {
      worker.off("error", reject);
      worker.off("exit", onExit);
      if (reply.type === "ready") {
        resolve({ lane: { worker, pending: new Map() }, identity: reply.identity, dim: reply.dim });
      } else {
        void worker.terminate();
        reject(reply.type === "failed" ? rebuild(reply.error) : new Error("bad worker reply"));
      }
    });
  });
}
