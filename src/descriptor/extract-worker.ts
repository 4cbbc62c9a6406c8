/**
 * One lane of an ExtractorPool (extract-pool.ts), run in a worker thread: its own Extractor (its
 * own onnxruntime session, whose `run` blocks the thread it is called on, so a second image only
 * runs in parallel on a second thread), fed one image at a time by the pool.
 *
 * Protocol: workerData = the ExtractorOptions; it posts `ready` (or `failed` when the model
 * cannot be made), then answers each `{ id, path, bbox }` with the descriptor and the sha256 of
 * the bytes it read, or with the error (a SuperglobalError's code, message and input, so the pool
 * can rethrow it as the same error; anything else is a bug and is marked so).
 */
import { createHash } from "node:crypto";
import { parentPort, workerData } from "node:worker_threads";
import { SuperglobalError } from "../errors.ts";
import type { Box } from "../image/crop.ts";
import { readImageFile } from "../image/decode.ts";
import { Extractor } from "./extractor.ts";
import type { ExtractorOptions } from "./options.ts";

export interface WorkRequest {
  id: number;
  path: string;
  bbox?: Box;
  /** The file's bytes, when the caller has read them already (else read here). */
  bytes?: Uint8Array;
}

export type WorkReply =
  | { type: "ready"; identity: string; dim: number }
  | { type: "failed"; error: ErrorRecord }
  | { type: "done"; id: number; descriptor: Float32Array; sha256: string }
  | { type: "error"; id: number; error: ErrorRecord };

/** An error as it crosses the thread boundary. */
export interface ErrorRecord {
  /** Set for a SuperglobalError; absent for a bug. */
  code?: SuperglobalError["code"];
  message: string;
  input?: string;
  stack?: string;
}

function record(error: unknown): ErrorRecord {
  if (error instanceof SuperglobalError) {
    return {
      code: error.code,
      message: error.message,
      ...(error.input === undefined ? {} : { input: error.input }),
    };
  }
  const e = error instanceof Error ? error : new Error(String(error));
  return { message: e.message, ...(e.stack === undefined ? {} : { stack: e.stack }) };
}

const port = parentPort;
if (port === null) throw new Error("extract-worker.ts runs only as a worker thread");

let extractor: Extractor;
try {
  extractor = await Extractor.create(workerData as ExtractorOptions);
  port.postMessage({ type: "ready", identity: extractor.identity, dim: extractor.dim });
} catch (error) {
  port.postMessage({ type: "failed", error: record(error) } satisfies WorkReply);
  port.close();
}

port.on("message", async (request: WorkRequest) => {
  try {
    const bytes = request.bytes ?? (await readImageFile(request.path));
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const descriptor = await extractor.extract(bytes, {
      name: request.path,
      ...(request.bbox === undefined ? {} : { bbox: request.bbox }),
    });
    const reply: WorkReply = { type: "done", id: request.id, descriptor, sha256 };
    port.postMessage(reply, [descriptor.buffer as ArrayBuffer]);
  } catch (error) {
    port.postMessage({ type: "error", id: request.id, error: record(error) } satisfies WorkReply);
  }
});
