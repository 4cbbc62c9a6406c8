import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { SuperglobalError } from "../errors.ts";
import { sha256OfFile } from "./file-sha256.ts";
import { driveConfirmUrl, driveDownloadUrl } from "./google-drive.ts";

export interface DownloadProgress {
  /** Bytes of the file on disk so far (a resumed part included). */
  received: number;
  /** The file's size when the server says it; null otherwise. */
  total: number | null;
  /** The URL being read (after redirects). */
  url: string;
}

export interface DownloadOptions {
  /** Expected sha256 (hex); a mismatch deletes the download and throws BAD_FILE. */
  sha256?: string;
  /** Called as bytes arrive (and once when a transfer starts). */
  onProgress?: (progress: DownloadProgress) => void;
  /** Aborts the download; the part is kept for a later resume. */
  signal?: AbortSignal;
  /**
   * Checks the complete file (still at `<dest>.part`) before it is renamed into place; what it
   * throws is rethrown after the part is deleted.
   */
  verify?: (partPath: string) => void | Promise<void>;
  /** Automatic resumptions after a broken connection or a 5xx answer. Default 3. */
  retries?: number;
  /** Milliseconds without data after which a connection counts as broken. Default 60 000. */
  idleTimeoutMs?: number;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** sha256 (hex) of the file. */
  sha256: string;
  /** The URL the bytes finally came from (after redirects and confirm pages). */
  url: string;
  /** Whether some of the bytes came from an earlier, interrupted download. */
  resumed: boolean;
}

/** How many web pages (Drive confirm pages) may stand between the URL and the file. */
const MAX_PAGES = 3;

/** A failure worth another attempt (the part is kept). */
class Retryable extends Error {}

/** Downloads `url` to `dest` (see the file doc). */
export async function download(
  url: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const retries = options.retries ?? 3;
  const part = `${dest}.part`;
  await mkdir(dirname(dest), { recursive: true });
  let current = driveDownloadUrl(url);
  let pages = 0;
  let resumed = false;
  let finalUrl = current;
  for (let attempt = 0; ; attempt++) {
    options.signal?.throwIfAborted();
    const offset = await sizeOf(part);
    try {
      const outcome = await transfer(current, part, offset, options);
      if (outcome.kind === "page") {
        pages += 1;
        if (pages > MAX_PAGES) {
          throw new SuperglobalError(
            "BAD_FILE",
            `${url}: the server keeps answering web pages instead of the file`,
            { input: url },
          );
        }
        current = outcome.next;
        attempt -= 1; // following a confirm page is not a retry
        continue;
      }
      if (outcome.kind === "restart") {
        await rm(part, { force: true });
        continue;
      }
      resumed = outcome.resumed;
      finalUrl = outcome.url;
      break;
    } catch (error) {
      if (!(error instanceof Retryable)) throw error;
      if (options.signal?.aborted) throw options.signal.reason;
      if (attempt >= retries) {
        const have = await sizeOf(part);
        throw new SuperglobalError(
          "IO_ERROR",
          `${url}: ${error.message}` +
            (have > 0
              ? `; ${have} bytes are kept in ${part}: run the same command again to resume`
              : ""),
          { input: url, cause: error.cause },
        );
      }
      await new Promise((done) => setTimeout(done, Math.min(4000, 250 * 2 ** attempt)));
    }
  }
  const { sha256, bytes } = await sha256OfFile(part);
  if (options.sha256 !== undefined && sha256 !== options.sha256.toLowerCase()) {
    await rm(part, { force: true });
    throw new SuperglobalError(
      "BAD_FILE",
      `${url}: sha256 mismatch: expected ${options.sha256}, got ${sha256} (${bytes} bytes); ` +
        "the download was deleted",
      { input: url },
    );
  }
  if (options.verify !== undefined) {
    try {
      await options.verify(part);
    } catch (error) {
      await rm(part, { force: true });
      throw error;
    }
  }
  try {
    await rename(part, dest);
  } catch (cause) {
    throw new SuperglobalError(
      "IO_ERROR",
      `${dest}: cannot move the download into place (${(cause as Error).message})`,
      { input: dest, cause },
    );
  }
  return { path: dest, bytes, sha256, url: finalUrl, resumed };
}

type Outcome =
  | { kind: "done"; url: string; resumed: boolean }
  | { kind: "page"; next: string }
  | { kind: "restart" };

/** One HTTP request: appends to `part` from `offset`. Throws Retryable for broken transfers. */
async function transfer(
  url: string,
  part: string,
  offset: number,
  options: DownloadOptions,
): Promise<Outcome> {
  const idle = new AbortController();
  const signal =
    options.signal === undefined ? idle.signal : AbortSignal.any([idle.signal, options.signal]);
  const idleMs = options.idleTimeoutMs ?? 60_000;
  let timer = setTimeout(() => idle.abort(new Error("no data")), idleMs);
  const touch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(new Error("no data")), idleMs);
  };
  try {
    let response: Response;
    try {
      response = await fetch(url, {
        headers: offset > 0 ? { Range: `bytes=${offset}-` } : {},
        redirect: "follow",
        signal,
      });
    } catch (cause) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new Retryable(
        idle.signal.aborted
          ? `no answer within ${idleMs / 1000} s`
          : `cannot connect (${describeNetworkError(cause)})`,
        { cause },
      );
    }
    const at = response.url || url;
    const type = response.headers.get("content-type") ?? "";
    if (response.ok && /^text\/html\b/i.test(type)) {
      const html = await response.text();
      const next = driveConfirmUrl(html, at);
      if (next === null) {
        throw new SuperglobalError(
          "BAD_FILE",
          `${url}: the server sent a web page, not the file (for Google Drive: the file is not ` +
            "shared publicly, or its download quota is exceeded; try later or download it in a browser)",
          { input: url },
        );
      }
      return { kind: "page", next };
    }
    if (response.status === 416 && offset > 0) {
      // The part may already be complete: "bytes */<size>".
      const size = /\/(\d+)\s*$/.exec(response.headers.get("content-range") ?? "")?.[1];
      await response.body?.cancel();
      return size !== undefined && Number(size) === offset
        ? { kind: "done", url: at, resumed: true }
        : { kind: "restart" };
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      const what = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
      if (response.status >= 500 || response.status === 429) throw new Retryable(what);
      throw new SuperglobalError(
        response.status === 404 || response.status === 410 ? "NOT_FOUND" : "IO_ERROR",
        `${url}: ${what}`,
        { input: url },
      );
    }
    let start = 0;
    let total: number | null = null;
    if (response.status === 206) {
      const range = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)/i.exec(
        response.headers.get("content-range") ?? "",
      );
      if (range === null || Number(range[1]) !== offset) {
        await response.body?.cancel();
        return { kind: "restart" };
      }
      start = offset;
      total = range[3] === "*" ? null : Number(range[3]);
    } else {
      const length = response.headers.get("content-length");
      total = length === null || response.headers.has("content-encoding") ? null : Number(length);
    }
    // A 200 answer to a Range request: the server ignored it and sends the whole file.
    const file = await open(part, start > 0 ? "a" : "w");
    let received = start;
    try {
      options.onProgress?.({ received, total, url: at });
      if (response.body === null) throw new Retryable("empty answer");
      try {
        for await (const chunk of response.body) {
          touch();
          await file.write(chunk as Uint8Array).catch((cause: Error) => {
            throw new SuperglobalError("IO_ERROR", `${part}: cannot write (${cause.message})`, {
              input: part,
              cause,
            });
          });
          received += (chunk as Uint8Array).byteLength;
          options.onProgress?.({ received, total, url: at });
        }
      } catch (cause) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (cause instanceof SuperglobalError) throw cause;
        throw new Retryable(
          idle.signal.aborted
            ? `no data for ${idleMs / 1000} s after ${received} bytes`
            : `the connection broke after ${received}${total === null ? "" : ` of ${total}`} bytes`,
          { cause },
        );
      }
    } finally {
      await file.close();
    }
    if (total !== null && received !== total) {
      throw new Retryable(`the connection broke after ${received} of ${total} bytes`);
    }
    return { kind: "done", url: at, resumed: start > 0 };
  } finally {
    clearTimeout(timer);
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** undici's "fetch failed" hides the reason in `cause`: ECONNREFUSED, ENOTFOUND, … */
function describeNetworkError(error: unknown): string {
  let e = error as { message?: string; code?: string; cause?: unknown } | undefined;
  const parts: string[] = [];
  for (let depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    const text = e.code ?? e.message;
    if (text && !parts.includes(text) && text !== "fetch failed") parts.push(text);
    e = e.cause as typeof e;
  }
  return parts.join(": ") || "network error";
}
