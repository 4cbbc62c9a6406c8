/**
 * The HTTP API and the web page, on Fastify: routes, body parsing, limits and error answers.
 *
 *   POST /search            image (raw body or multipart `image`) or id → ranked results
 *   GET  /images/:id        the original file of an indexed image
 *   GET  /images/:id/thumb  a JPEG thumbnail (≤ 256 px)
 *   POST /index             add uploaded images (only with allowIndex)
 *   GET  /health, /metrics, /openapi.json, / (the page: /app.js, /app.css)
 *
 * Clients name images only by id; a path never comes from a request. Every refusal is a 4xx (or a
 * 503 when busy) with a JSON reason, and nothing a client sends can take the server down.
 */
import { createReadStream } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { resolve } from "node:path";
import multipart from "@fastify/multipart";
import swagger from "@fastify/swagger";
import Fastify, { type FastifyInstance, type FastifyRequest } from "fastify";
import type { Index } from "../app/photo-index.ts";
import { MAX_IMAGE_PIXELS } from "../image/decode.ts";
import { VERSION } from "../version.ts";
import { badRequest, HttpError, toReply } from "./http-errors.ts";
import { Metrics } from "./metrics.ts";
import { PAGE_CSP, pageFiles } from "./page.ts";
import { checkUpload, imageType, parseSearchParams } from "./params.ts";
import { JobQueue } from "./queue.ts";
import {
  documentBodies,
  healthSchema,
  imageSchema,
  indexSchema,
  metricsSchema,
  searchSchema,
  thumbSchema,
} from "./schemas.ts";
import { SearchService } from "./search-service.ts";
import { ThumbnailCache } from "./thumbnails.ts";

export interface ServerOptions {
  /** An open index (the caller closes it after `close()`). */
  index: Index;
  /** Most image searches (and index requests) admitted at once, running or waiting (default 8). */
  queue?: number;
  /** Largest upload, in MiB (default 20). */
  maxUploadMb?: number;
  /** Largest image, in pixels (default 40 million), checked from the header before decoding. */
  maxPixels?: number;
  /** Accept POST /index (default false). */
  allowIndex?: boolean;
  /** Where POST /index saves uploads (required with allowIndex). */
  uploadDir?: string;
  /** Seconds to receive a whole request (default 30). */
  requestTimeoutS?: number;
  /** Memory for cached thumbnails, in MiB (default 64). */
  thumbCacheMb?: number;
  /** Largest `top` (default 1000). */
  maxTop?: number;
  /** Fastify's request log on stderr (default false). */
  log?: boolean;
}

export interface SearchServer {
  app: FastifyInstance;
  service: SearchService;
  metrics: Metrics;
  /** Starts listening; returns the base URL (`http://127.0.0.1:8080`). */
  listen(port: number, host?: string): Promise<string>;
  /** Stops accepting, lets in-flight requests finish, then resolves (the index stays open). */
  close(): Promise<void>;
}

export const DEFAULTS = {
  queue: 8,
  maxUploadMb: 20,
  maxPixels: 40_000_000,
  requestTimeoutS: 30,
  thumbCacheMb: 64,
  maxTop: 1000,
} as const;

/** Most files one POST /index may carry. */
const MAX_INDEX_FILES = 16;

export async function createServer(options: ServerOptions): Promise<SearchServer> {
  const maxUploadBytes = Math.round((options.maxUploadMb ?? DEFAULTS.maxUploadMb) * 2 ** 20);
  const maxPixels = Math.min(options.maxPixels ?? DEFAULTS.maxPixels, MAX_IMAGE_PIXELS);
  const maxTop = options.maxTop ?? DEFAULTS.maxTop;
  const allowIndex = options.allowIndex ?? false;
  if (allowIndex && options.uploadDir === undefined) {
    throw new Error("allowIndex needs uploadDir: the folder uploads are saved into");
  }
  const uploadDir = options.uploadDir === undefined ? undefined : resolve(options.uploadDir);
  if (allowIndex && uploadDir !== undefined) await mkdir(uploadDir, { recursive: true });

  const queue = new JobQueue(options.queue ?? DEFAULTS.queue, 1);
  // Thumbnails decode whole photos: two at a time, and a bounded line behind them.
  const thumbQueue = new JobQueue(64, 2);
  const thumbs = new ThumbnailCache((options.thumbCacheMb ?? DEFAULTS.thumbCacheMb) * 2 ** 20);
  const metrics = new Metrics({
    indexImages: () => options.index.size,
    queue: () => queue.stats,
  });
  const svc = new SearchService(options.index, queue, metrics);
  const page = pageFiles();
  const timeoutMs = (options.requestTimeoutS ?? DEFAULTS.requestTimeoutS) * 1000;

  const app = Fastify({
    logger: options.log === true ? { level: "info", stream: process.stderr } : false,
    bodyLimit: maxUploadBytes,
    requestTimeout: timeoutMs,
    connectionTimeout: timeoutMs * 2,
    keepAliveTimeout: 5000,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false } },
  });

  // Refusals: one JSON shape, the right status, bugs logged and never shown.
  app.setErrorHandler((error, request, reply) => {
    const r = toReply(error);
    if (r.body.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      r.body.error =
        `Content-Type ${JSON.stringify(request.headers["content-type"] ?? "")} is not accepted: ` +
        "send image/…, multipart/form-data or application/json";
    }
    if (r.internal) {
      request.log.error(error);
      if (options.log !== true) process.stderr.write(`superglobal serve: ${String(error)}\n`);
    }
    void reply.code(r.status).headers(r.headers).send(r.body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply
      .code(404)
      .send({ error: `no route ${request.method} ${request.url.split("?")[0]}`, code: "NO_ROUTE" });
  });
  app.addHook("onSend", async (_request, reply, payload) => {
    reply.header("x-content-type-options", "nosniff");
    return payload;
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    metrics.request(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
  });

  // Bodies: images raw, multipart forms, JSON; nothing else (text/plain is Fastify's default).
  app.removeContentTypeParser("text/plain");
  for (const type of [/^image\/[\w.+-]+$/, "application/octet-stream"]) {
    app.addContentTypeParser(
      type,
      { parseAs: "buffer", bodyLimit: maxUploadBytes },
      (_request, body, done) => done(null, body),
    );
  }
  await app.register(multipart, {
    limits: {
      fileSize: maxUploadBytes,
      files: MAX_INDEX_FILES,
      fields: 16,
      parts: MAX_INDEX_FILES + 16,
      fieldSize: 4096,
    },
    throwFileSizeLimit: true,
  });
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "superglobal",
        version: VERSION,
        description:
          "Image retrieval over one index: search by image or by id, thumbnails, metrics.",
      },
    },
    transform: ({ schema, url }) => {
      const body = documentBodies(url, maxTop);
      return { schema: body === undefined ? schema : { ...schema, body }, url };
    },
  });

  /**
   * An image search about to be refused for a full queue is refused before its body is read (an
   * upload of 20 MiB is not buffered only to be turned away).
   */
  const refuseWhenFull = async (request: FastifyRequest) => {
    const type = request.headers["content-type"] ?? "";
    const byId = (request.query as Record<string, unknown>)["id"] !== undefined;
    if (!byId && !type.startsWith("application/json") && queue.full) throw queue.reject();
  };

  app.post(
    "/search",
    { schema: searchSchema(maxTop), onRequest: refuseWhenFull },
    async (request) => {
      const fields: Record<string, unknown> = { ...(request.query as Record<string, unknown>) };
      let image: Uint8Array | undefined;
      if (request.isMultipart()) {
        const form = await readMultipart(request, 1, maxUploadBytes);
        for (const file of form.files) {
          if (file.field !== "image") {
            throw badRequest("send one image, in the multipart field `image`");
          }
          image = file.bytes;
        }
        Object.assign(fields, form.fields);
        if (image === undefined && fields["id"] === undefined) {
          throw badRequest("the multipart form has no field `image`", "NO_IMAGE");
        }
      } else if (Buffer.isBuffer(request.body)) {
        image = request.body;
      } else if (request.body !== undefined && request.body !== null) {
        if (typeof request.body !== "object" || Array.isArray(request.body)) {
          throw badRequest('a JSON body must be an object such as {"id": 3}');
        }
        Object.assign(fields, request.body);
      }
      const params = parseSearchParams(fields, maxTop);
      if (params.id !== undefined) {
        if (image !== undefined) throw badRequest("send an image or an id, not both");
        return svc.byId(params.id, params);
      }
      if (image === undefined) {
        throw badRequest(
          "send an image (raw body with Content-Type image/…, or multipart field `image`) or an id",
          "EMPTY_BODY",
        );
      }
      await checkUpload(image, maxPixels);
      return svc.byImage(image, params);
    },
  );

  app.get("/images/:id", { schema: imageSchema }, async (request, reply) => {
    const { id } = request.params as { id: number };
    const file = await svc.catalog.file(id);
    if (file === undefined) throw unknownImage(id);
    const type = await sniffFile(file);
    if (type === undefined) throw unknownImage(id);
    return reply
      .type(type)
      .header("cache-control", "private, max-age=300")
      .header("content-disposition", "inline")
      .send(createReadStream(file));
  });

  app.get("/images/:id/thumb", { schema: thumbSchema }, async (request, reply) => {
    const { id } = request.params as { id: number };
    const file = await svc.catalog.file(id);
    if (file === undefined) throw unknownImage(id);
    let jpeg: Buffer;
    try {
      jpeg = await thumbQueue.run(() => thumbs.get(id, file));
    } catch (error) {
      if (error instanceof HttpError || (error as Error).name === "QueueFullError") throw error;
      throw new HttpError(404, "BAD_IMAGE", `image ${id} cannot be read as an image`);
    }
    return reply.type("image/jpeg").header("cache-control", "private, max-age=300").send(jpeg);
  });

  app.post("/index", { schema: indexSchema, onRequest: refuseWhenFull }, async (request) => {
    if (!allowIndex || uploadDir === undefined) {
      throw new HttpError(
        403,
        "INDEXING_OFF",
        "adding images is off: start the server with --allow-index --upload-dir DIR",
      );
    }
    const files: Array<{ name: string; bytes: Uint8Array; type: string }> = [];
    if (request.isMultipart()) {
      const form = await readMultipart(request, MAX_INDEX_FILES, maxUploadBytes);
      if (Object.keys(form.fields).length > 0 || form.files.some((f) => f.field !== "image")) {
        throw badRequest("send images in multipart fields named `image`, and nothing else");
      }
      for (const file of form.files) {
        files.push({ name: file.filename || "image", bytes: file.bytes, type: "" });
      }
    } else if (Buffer.isBuffer(request.body)) {
      files.push({ name: "body", bytes: request.body, type: "" });
    }
    if (files.length === 0) throw badRequest("send at least one image", "NO_IMAGE");
    for (const file of files) {
      try {
        file.type = await checkUpload(file.bytes, maxPixels);
      } catch (error) {
        if (error instanceof HttpError) error.message = `${file.name}: ${error.message}`;
        throw error;
      }
    }
    const added = await svc.add(uploadDir, files);
    if (added.every((f) => f.status === "failed")) {
      throw badRequest(
        added.map((f) => `${f.name}: ${f.reason ?? "failed"}`).join("; "),
        "BAD_IMAGE",
      );
    }
    return { files: added, images: options.index.size };
  });

  app.get("/health", { schema: healthSchema }, async () => ({
    status: "ok",
    images: options.index.size,
    model: svc.model,
    queue: queue.stats,
    indexing: allowIndex,
    uptime: process.uptime(),
  }));

  app.get("/metrics", { schema: metricsSchema }, async (_request, reply) =>
    reply.type("text/plain; version=0.0.4; charset=utf-8").send(metrics.render()),
  );

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  for (const [route, name] of [
    ["/", "index.html"],
    ["/app.js", "app.js"],
    ["/app.css", "app.css"],
  ] as const) {
    const file = page.get(name) as { type: string; body: Buffer };
    app.get(route, { schema: { hide: true } }, async (_request, reply) =>
      reply
        .type(file.type)
        .header("content-security-policy", PAGE_CSP)
        .header("cache-control", "no-cache")
        .send(file.body),
    );
  }

  await app.ready();
  await svc.warm();

  return {
    app,
    service: svc,
    metrics,
    async listen(port: number, host = "127.0.0.1") {
      await app.listen({ port, host });
      const address = app.server.address();
      const actual = typeof address === "object" && address !== null ? address.port : port;
      const shown = host.includes(":") ? `[${host}]` : host;
      return `http://${shown}:${actual}`;
    },
    async close() {
      await app.close();
    },
  };
}

interface Form {
  files: Array<{ field: string; filename: string; bytes: Buffer }>;
  fields: Record<string, unknown>;
}

/**
 * A multipart body, read whole: at most `maxFiles` files of at most `maxBytes` together (413
 * beyond either); a malformed body (no boundary, cut short) is a 400, not an error of ours.
 */
async function readMultipart(
  request: FastifyRequest,
  maxFiles: number,
  maxBytes: number,
): Promise<Form> {
  const form: Form = { files: [], fields: {} };
  let total = 0;
  try {
    for await (const part of request.parts({ limits: { files: maxFiles } })) {
      if (part.type === "file") {
        const bytes = await part.toBuffer();
        total += bytes.byteLength;
        if (total > maxBytes) {
          throw new HttpError(413, "TOO_LARGE", `the upload is over ${maxBytes} bytes`);
        }
        form.files.push({ field: part.fieldname, filename: part.filename, bytes });
      } else {
        form.fields[part.fieldname] = part.value;
      }
    }
  } catch (error) {
    const status = (error as { statusCode?: unknown }).statusCode;
    if (error instanceof HttpError || (typeof status === "number" && status < 500)) throw error;
    throw badRequest(`malformed multipart body: ${(error as Error).message}`, "BAD_MULTIPART");
  }
  return form;
}

function unknownImage(id: number): HttpError {
  return new HttpError(404, "UNKNOWN_ID", `no indexed image with id ${id} can be served`);
}

/** The media type of a file from its first bytes. */
async function sniffFile(path: string): Promise<string | undefined> {
  const handle = await open(path, "r");
  try {
    const head = new Uint8Array(16);
    const { bytesRead } = await handle.read(head, 0, 16, 0);
    return imageType(head.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
}
