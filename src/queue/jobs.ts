/**
 * What travels through the queue: one job per image (its path, file state, content hash and the
 * index's model: identity and how to build it), and its result (the descriptor as base64
 * float32, or why the image is unusable). Both are checked when they are read back, since Redis
 * is shared and outlives versions. Job ids are derived from the job's content, so that adding
 * the same job twice (an enqueuer restarted) is one job in BullMQ.
 */
import { createHash } from "node:crypto";
import type { ModelSpec } from "../app/photo-index.ts";
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";

/** BullMQ's name of our jobs. */
export const JOB_NAME = "describe";

export interface JobPayload {
  /** Absolute path: workers read the same path (a shared mount). */
  path: string;
  size: number;
  mtimeMs: number;
  /** sha256 of the file's bytes as the enqueuer read them; the worker checks its copy against it. */
  hash: string;
  /** The index's model identity; a worker whose model differs refuses the job. */
  model: string;
  /** How to build that model (the index's stored spec). */
  spec: ModelSpec;
}

/** A job's return value: the descriptor, or why the image itself is unusable (a bad image). */
export type JobResult = { ok: true; descriptor: string } | { ok: false; reason: string };

/**
 * The job id: a hash of the model identity and the file's path, size and modification time, so
 * the same file state for the same model is always the same job (BullMQ ignores a second add of
 * an id it holds). The hash is not part of it: the enqueuer knows every id before reading a file.
 */
export function jobIdOf(model: string, file: { path: string; size: number; mtimeMs: number }) {
  const key = JSON.stringify([model, file.path, file.size, file.mtimeMs]);
  return `sg-${createHash("sha256").update(key).digest("hex").slice(0, 40)}`;
}

function badJob(id: string | undefined, what: string): never {
  throw new SuperglobalError("INVALID_ARGUMENT", `job ${id ?? "?"}: ${what}`, {
    input: id ?? "job",
  });
}

/** Checks a job's data as read from Redis. */
export function checkPayload(data: unknown, id?: string): JobPayload {
  const d = data as Partial<JobPayload> | null;
  if (d === null || typeof d !== "object") badJob(id, "its data is not an object");
  if (typeof d.path !== "string" || d.path === "") badJob(id, "no path");
  if (typeof d.size !== "number" || !Number.isInteger(d.size) || d.size < 0) badJob(id, "bad size");
  if (typeof d.mtimeMs !== "number" || !Number.isFinite(d.mtimeMs)) badJob(id, "bad mtime");
  if (typeof d.hash !== "string" || !/^[0-9a-f]{64}$/.test(d.hash)) badJob(id, "bad hash");
  if (typeof d.model !== "string" || d.model === "") badJob(id, "no model identity");
  if (d.spec === null || typeof d.spec !== "object" || Array.isArray(d.spec)) {
    badJob(id, "no model spec");
  }
  return d as JobPayload;
}

/** A descriptor as base64 of its little-endian float32 bytes (what Redis keeps). */
export function encodeDescriptor(v: Float32Array): string {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
}

export function decodeDescriptor(text: string, dim: number, id?: string): Float32Array {
  const bytes = Buffer.from(text, "base64");
  if (bytes.length !== dim * 4)
    badJob(id, `the descriptor has ${bytes.length} bytes, not ${dim * 4}`);
  const out = new Float32Array(dim);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** Checks a job's return value as read from Redis. */
export function checkResult(value: unknown, id?: string): JobResult {
  const r = value as Partial<{ ok: boolean; descriptor: string; reason: string }> | null;
  if (r !== null && typeof r === "object") {
    if (r.ok === true && typeof r.descriptor === "string") {
      return { ok: true, descriptor: r.descriptor };
    }
    if (r.ok === false && typeof r.reason === "string") return { ok: false, reason: r.reason };
  }
  badJob(id, "its result is neither a descriptor nor a reason");
}

/** Retry and stalled-job settings; the defaults suit images that take seconds. */
export interface RetrySettings {
  /** Tries per job before it lands in the failed list (default 3). */
  attempts?: number;
  /** First retry delay in ms, doubled each time (default 1000). */
  backoffMs?: number;
}

export interface StalledSettings {
  /**
   * How long a worker's lock on its job lasts (ms, default 30000); the worker renews it every
   * half of that while the job runs, so a job whose worker died is free after at most this long.
   */
  lockMs?: number;
  /** How often workers look for jobs whose lock expired (ms, default 30000). */
  stalledMs?: number;
  /** A job found stalled more than this many times fails (default 2). */
  maxStalled?: number;
}

export function jobOptions(settings: RetrySettings = {}) {
  const attempts = assertInteger("attempts", settings.attempts ?? 3, 1, 100);
  const delay = assertInteger("backoffMs", settings.backoffMs ?? 1000, 0, 3_600_000);
  return { attempts, backoff: { type: "exponential" as const, delay } };
}

export function workerLockOptions(settings: StalledSettings = {}) {
  return {
    lockDuration: assertInteger("lockMs", settings.lockMs ?? 30_000, 100, 3_600_000),
    stalledInterval: assertInteger("stalledMs", settings.stalledMs ?? 30_000, 100, 3_600_000),
    maxStalledCount: assertInteger("maxStalled", settings.maxStalled ?? 2, 0, 100),
  };
}

/** Checks a positive count option (concurrency, window, batch). */
export function positive(name: string, value: unknown, fallback: number, max = 1_000_000): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number") invalidArgument(name, "an integer", value);
  return assertInteger(name, value, 1, max);
}
