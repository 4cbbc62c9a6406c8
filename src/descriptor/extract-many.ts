/**
 * The one batch-extraction loop (what `superglobal extract` and the revisitop protocol run): many
 * images through one extractor, in input order, with an optional on-disk cache, per-image failures
 * recorded and survived, progress events, cancellation between images, and the next image decoded
 * while the current one is in inference when the extractor has separate steps for the two.
 */
import { resolve } from "node:path";
import { assertInteger, SuperglobalError } from "../errors.ts";
import { type Box, clipBox } from "../image/crop.ts";
import { imageSize } from "../image/decode.ts";

/** An image path, or a path with a box to crop to first and/or its own cache key. */
export type ExtractItem = string | { path: string; bbox?: Box; key?: string };

/** What extractMany needs of an extractor (an `Extractor` is one). */
export interface BatchExtractor {
  /** The descriptor of the image at `path`, cropped to `bbox` when given. */
  extract(path: string, input: { bbox?: Box }): Promise<Float32Array>;
  /** The descriptor dimension, when the extractor knows it before its first image. */
  readonly dim?: number;
}

/**
 * An extractor whose work comes in two steps: `decode` (file → model input, on the CPU) and
 * `infer` (model input → descriptor). extractMany then decodes the next image while the current
 * one is in inference.
 */
export interface StagedExtractor<T = unknown> extends BatchExtractor {
  decode(path: string, input: { bbox?: Box }): Promise<T>;
  infer(decoded: T): Promise<Float32Array>;
}

/** A descriptor cache keyed by name (a `DescriptorStore` is one). */
export interface DescriptorCache {
  readonly dim: number;
  get(key: string): Float32Array | undefined;
  add(key: string, vector: Float32Array): void;
}

/** One image done (or failed): sent once per item, in order of completion. */
export interface ExtractProgress {
  /** Items finished so far, this one included: 1, 2, … total. */
  done: number;
  total: number;
  /** This item's position in the input. */
  index: number;
  path: string;
  ok: boolean;
  /** Why it failed (names the file); only when `ok` is false. */
  error?: string;
  /** Milliseconds this item took (waiting on its decode and inference). */
  ms: number;
  /** The descriptor came from the cache. */
  cached: boolean;
}

export interface ExtractFailure {
  /** Position in the input. */
  index: number;
  path: string;
  /** The reason, naming the file. */
  message: string;
  error: SuperglobalError;
}

export interface ExtractManyOptions {
  /** Descriptors already made are taken from here, new ones are added as they are made. */
  cache?: DescriptorCache;
  /** The descriptor dimension; default: the cache's, the extractor's, or the first descriptor's. */
  dim?: number;
  /** The value of failed images' rows (default NaN). */
  fill?: number;
  onProgress?: (event: ExtractProgress) => void;
  /** Things done that the user should know of: a box clipped to its image (names both). */
  onWarning?: (message: string) => void;
  /** Checked between images: once aborted, the job stops with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Keep every descriptor for the result (default true). Callers that store each one as it is
   * made (through `cache`) pass false, so memory stays flat however many images there are.
   */
  keep?: boolean;
  /**
   * Items in flight at once (default 1). Only worth more than 1 with an extractor that runs them
   * in parallel (an ExtractorPool); with one Extractor they would only take turns.
   */
  concurrency?: number;
}

export interface ExtractManyResult {
  /** [items, dim] row-major, in input order; failed images' rows hold `fill`; empty with `keep: false`. */
  descriptors: Float32Array;
  /** 0 only when nothing told it: no option, cache or extractor dim, and no image succeeded. */
  dim: number;
  /** The images that failed, in input order. */
  failures: ExtractFailure[];
  /** How many descriptors came from the cache. */
  cached: number;
}

/** The cache key of an item: as `superglobal extract` has always keyed its cache. */
export function extractKey(path: string, bbox?: Box): string {
  return bbox === undefined ? resolve(path) : `${resolve(path)} ${bbox.join(",")}`;
}

/** An item a lane has taken, with its decode already started when it is not in the cache. */
interface Claimed {
  index: number;
  decoded?: Promise<Settled<unknown>>;
}

interface Job {
  path: string;
  input: { bbox?: Box };
  key: string;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

function isStaged(extractor: BatchExtractor): extractor is StagedExtractor {
  const e = extractor as Partial<StagedExtractor>;
  return typeof e.decode === "function" && typeof e.infer === "function";
}

function allFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i]!)) return false;
  return true;
}

/**
 * Extracts the descriptor of every item, in input order, one image at a time. A SuperglobalError
 * from one image (unreadable, undecodable, a bad box) or a descriptor that is not finite is that
 * image's failure: it is recorded with a message naming the file, its row is `fill`, and the job
 * goes on. Any other error is a bug and stops the job, as does a descriptor of the wrong length.
 */
export async function extractMany(
  items: readonly ExtractItem[],
  extractor: BatchExtractor,
  options: ExtractManyOptions = {},
): Promise<ExtractManyResult> {
  const { cache, signal } = options;
  const jobs: Job[] = items.map((item) => {
    const { path, bbox, key } = typeof item === "string" ? { path: item } : item;
    return {
      path,
      input: bbox === undefined ? {} : { bbox },
      key: key ?? extractKey(path, bbox),
    };
  });
  let dim = options.dim ?? cache?.dim ?? extractor.dim;
  if (options.dim !== undefined && cache !== undefined && cache.dim !== options.dim) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `the cache holds ${cache.dim}-d descriptors but dim is ${options.dim}`,
      { input: "dim" },
    );
  }
  const keep = options.keep !== false;
  let descriptors = dim === undefined || !keep ? undefined : new Float32Array(jobs.length * dim);
  const failures: ExtractFailure[] = [];
  let cached = 0;

  /** A cached descriptor, unless it is not finite (written before such rows counted as failures). */
  const fromCache = (job: Job): Float32Array | undefined => {
    const v = cache?.get(job.key);
    return v !== undefined && allFinite(v) ? v : undefined;
  };
  const place = (index: number, vector: Float32Array, path: string): void => {
    if (dim === undefined) {
      dim = vector.length;
      descriptors = new Float32Array(jobs.length * dim);
    }
    if (vector.length !== dim) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${path}: the extractor gave ${vector.length} values but the descriptors have ${dim} dimensions`,
        { input: path },
      );
    }
    descriptors!.set(vector, index * dim);
  };

  const concurrency =
    options.concurrency === undefined
      ? 1
      : assertInteger("concurrency", options.concurrency, 1, 1024);
  // Items are taken in input order by `concurrency` lanes. With separate steps, a lane claims its
  // next item and starts decoding it as soon as its current one goes into inference.
  const staged = isStaged(extractor) ? extractor : undefined;
  let cursor = 0;
  let done = 0;
  let stopped = false;
  const claim = (): number | undefined => (stopped || cursor >= jobs.length ? undefined : cursor++);
  const claimAhead = (): Claimed | undefined => {
    const index = claim();
    if (index === undefined) return undefined;
    const job = jobs[index]!;
    if (fromCache(job) !== undefined) return { index };
    return { index, decoded: settle(staged!.decode(job.path, job.input)) };
  };

  const lane = async (): Promise<void> => {
    let ahead: Claimed | undefined;
    for (;;) {
      signal?.throwIfAborted();
      let current = ahead;
      ahead = undefined;
      if (current === undefined) {
        const index = claim();
        if (index === undefined) return;
        current = { index };
      }
      const { index } = current;
      const job = jobs[index]!;
      const start = performance.now();
      let error: SuperglobalError | undefined;
      let vector = fromCache(job);
      const hit = vector !== undefined;
      if (hit) {
        cached += 1;
      } else {
        try {
          if (options.onWarning !== undefined && job.input.bbox !== undefined) {
            await warnIfClipped(job.path, job.input.bbox, options.onWarning);
          }
          if (staged !== undefined) {
            const decoded = await (current.decoded ?? settle(staged.decode(job.path, job.input)));
            ahead = claimAhead();
            if (!decoded.ok) throw decoded.error;
            vector = await staged.infer(decoded.value);
          } else {
            // An extractor without separate steps decodes and infers in one call.
            vector = await extractor.extract(job.path, job.input);
          }
          if (!allFinite(vector)) {
            throw new SuperglobalError(
              "BAD_IMAGE",
              `${job.path}: the descriptor is not finite (NaN or infinite values)`,
              { input: job.path },
            );
          }
        } catch (caught) {
          if (!(caught instanceof SuperglobalError)) throw caught;
          error = caught;
          vector = undefined;
        }
      }
      if (vector !== undefined) {
        if (keep) place(index, vector, job.path);
        if (!hit) cache?.add(job.key, vector);
      }
      let message: string | undefined;
      if (error !== undefined) {
        // Our messages name their input; some (a bad box) name something else: add the file.
        message = error.message.includes(job.path)
          ? error.message
          : `${job.path}: ${error.message}`;
        failures.push({ index, path: job.path, message, error });
      }
      done += 1;
      options.onProgress?.({
        done,
        total: jobs.length,
        index,
        path: job.path,
        ok: error === undefined,
        ...(message === undefined ? {} : { error: message }),
        ms: performance.now() - start,
        cached: hit,
      });
    }
  };

  // A bug or an abort in one lane stops the others after their current item; the job waits for
  // them, so nothing reaches the cache after extractMany has returned or thrown.
  let stop: { error: unknown } | undefined;
  await Promise.all(
    Array.from({ length: concurrency }, () =>
      lane().catch((error: unknown) => {
        stopped = true;
        stop ??= { error };
      }),
    ),
  );
  if (stop !== undefined) throw stop.error;
  failures.sort((a, b) => a.index - b.index);

  const d = dim ?? 0;
  const out = descriptors ?? new Float32Array(0);
  const fill = options.fill ?? Number.NaN;
  if (d > 0) for (const f of failures) out.fill(fill, f.index * d, (f.index + 1) * d);
  return { descriptors: out, dim: d, failures, cached };
}

/** Tells `onWarning` when `bbox` reaches outside the image (read from its header). */
async function warnIfClipped(
  path: string,
  bbox: Box,
  onWarning: (message: string) => void,
): Promise<void> {
  const size = await imageSize(path);
  if (size === undefined) return; // unreadable: extraction says why
  let clipped: ReturnType<typeof clipBox>;
  try {
    clipped = clipBox(bbox, size.width, size.height);
  } catch {
    return; // a box that is refused: extraction says why
  }
  if (clipped.clipped) {
    onWarning(
      `${path}: the box [${bbox.join(", ")}] reaches outside the ${size.width}x${size.height} image; clipped to [${clipped.box.join(", ")}]`,
    );
  }
}
