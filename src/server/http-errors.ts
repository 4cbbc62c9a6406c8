/**
 * Every refusal as an HTTP status with a JSON reason: `{"error": "<why>", "code": "<CODE>"}`.
 * The library's own errors (SuperglobalError) map by code; Fastify's and its plugins' errors keep
 * their 4xx status; anything else is a bug: 500, logged, with no internals in the answer.
 */
import { SuperglobalError } from "../errors.ts";
import { QueueFullError } from "./queue.ts";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export const badRequest = (message: string, code = "BAD_REQUEST") =>
  new HttpError(400, code, message);

const STATUS_OF: Record<SuperglobalError["code"], number> = {
  INVALID_ARGUMENT: 400,
  BAD_IMAGE: 400,
  BAD_FILE: 400,
  NOT_FOUND: 404,
  UNSUPPORTED: 415,
  BUSY: 503,
  MODEL_MISMATCH: 409,
  IO_ERROR: 500,
};

export interface ErrorReply {
  status: number;
  body: { error: string; code: string };
  headers: Record<string, string>;
}

/** How `error` is answered. `internal` is true for 5xx bugs, which the caller logs. */
export function toReply(error: unknown): ErrorReply & { internal: boolean } {
  if (error instanceof HttpError) {
    return {
      status: error.status,
      body: { error: error.message, code: error.code },
      headers: error.headers,
      internal: false,
    };
  }
  if (error instanceof QueueFullError) {
    return {
      status: 503,
      body: { error: error.message, code: "QUEUE_FULL" },
      headers: { "retry-after": String(error.retryAfterS) },
      internal: false,
    };
  }
  if (error instanceof SuperglobalError) {
    const status = STATUS_OF[error.code] ?? 500;
    return {
      status,
      body: { error: status >= 500 ? "internal error" : error.message, code: error.code },
      headers: {},
      internal: status >= 500,
    };
  }
  const e = error as { statusCode?: unknown; code?: unknown; message?: unknown };
  if (typeof e?.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return {
      status: e.statusCode,
      body: {
        error: typeof e.message === "string" ? e.message : "bad request",
        code: typeof e.code === "string" ? e.code : "BAD_REQUEST",
      },
      headers: {},
      internal: false,
    };
  }
  return {
    status: 500,
    body: { error: "internal error", code: "INTERNAL" },
    headers: {},
    internal: true,
  };
}
