/**
 * JSON schemas of the routes: Fastify validates query strings and parameters with them, serialises
 * answers with them, and @fastify/swagger turns them into the OpenAPI description. Request bodies
 * that are images are described for the documentation only (`documentBodies`): they are checked by
 * their bytes, not by a schema.
 */
import { RERANK_MODES } from "../app/photo-index.ts";

const errorBody = {
  type: "object",
  description: "Why the request was refused.",
  properties: { error: { type: "string" }, code: { type: "string" } },
  required: ["error", "code"],
} as const;

const model = {
  type: "object",
  properties: {
    name: { type: "string" },
    network: { type: "string" },
    dim: { type: "integer" },
    identity: { type: "string" },
  },
  required: ["name", "network", "dim", "identity"],
} as const;

const timings = {
  type: "object",
  description: "Milliseconds per stage (decode and extract are 0 for a search by id).",
  properties: {
    queue: { type: "number" },
    decode: { type: "number" },
    extract: { type: "number" },
    search: { type: "number" },
    rerank: { type: "number" },
    total: { type: "number" },
  },
  required: ["queue", "decode", "extract", "search", "rerank", "total"],
} as const;

const searchAnswer = {
  type: "object",
  properties: {
    results: {
      type: "array",
      items: {
        type: "object",
        properties: {
          id: {
            type: "integer",
            description: "Stable id of the image for this server's lifetime.",
          },
          path: { type: "string" },
          score: { type: "number" },
          rank: { type: "integer", description: "1-based." },
        },
        required: ["id", "path", "score", "rank"],
      },
    },
    model,
    timings,
    method: {
      type: "string",
      enum: ["exact", "ann"],
      description:
        "How candidates were found: every vector scanned, or the ANN graph (large indexes).",
    },
  },
  required: ["results", "model", "timings", "method"],
} as const;

const errors = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((s) => [String(s), errorBody]));

export function searchQuery(maxTop: number) {
  return {
    type: "object",
    properties: {
      id: { type: "integer", minimum: 0, description: "Search by this indexed image (no upload)." },
      top: { type: "integer", minimum: 1, maximum: maxTop, default: 10 },
      rerank: { type: "string", enum: [...RERANK_MODES], default: "adaptive" },
      box: {
        type: "string",
        description: "Crop the uploaded query to x1,y1,x2,y2 (pixels) first.",
        examples: ["10,20,300,400"],
      },
    },
    additionalProperties: false,
  } as const;
}

export function searchSchema(maxTop: number) {
  return {
    summary: "Search by an uploaded image, or by an indexed image's id",
    description:
      "The image as the raw body (Content-Type: image/…) or as the multipart field `image`; " +
      "or `{\"id\": N}` as JSON, or `?id=N`, for 'more like this' by the stored descriptor. " +
      "Options as query parameters, multipart fields or JSON members. Image searches wait in a " +
      "bounded queue: 503 with Retry-After when it is full.",
    querystring: searchQuery(maxTop),
    response: { 200: searchAnswer, ...errors(400, 404, 413, 415, 503) },
  };
}

export const imageParams = {
  type: "object",
  properties: { id: { type: "integer", minimum: 0 } },
  required: ["id"],
} as const;

export const imageSchema = {
  summary: "The original file of an indexed image",
  params: imageParams,
  response: { 200: { type: "string", format: "binary" }, ...errors(400, 404) },
};

export const thumbSchema = {
  summary: "A JPEG thumbnail (at most 256 px) of an indexed image",
  params: imageParams,
  response: { 200: { type: "string", format: "binary" }, ...errors(400, 404, 503) },
};

export const healthSchema = {
  summary: "Liveness and what is served",
  response: {
    200: {
      type: "object",
      properties: {
        status: { type: "string" },
        images: { type: "integer" },
        model,
        queue: {
          type: "object",
          properties: {
            running: { type: "integer" },
            waiting: { type: "integer" },
            capacity: { type: "integer" },
          },
        },
        indexing: { type: "boolean" },
        uptime: { type: "number" },
      },
    },
  },
};

export const metricsSchema = {
  summary: "Prometheus metrics (text exposition format 0.0.4)",
  produces: ["text/plain"],
};

export const indexSchema = {
  summary: "Add uploaded images to the index (only with --allow-index)",
  description:
    "One or more multipart fields `image` (or one image as the raw body). Each is saved into the " +
    "upload folder under a name of the server's own and added while searches go on.",
  response: {
    200: {
      type: "object",
      properties: {
        files: {
          type: "array",
          items: {
            type: "object",
            properties: {
              name: { type: "string" },
              status: { type: "string", enum: ["added", "failed"] },
              id: { type: "integer" },
              reason: { type: "string" },
            },
            required: ["name", "status"],
          },
        },
        images: { type: "integer" },
      },
      required: ["files", "images"],
    },
    ...errors(400, 403, 413, 415, 503),
  },
};

const binary = { type: "string", format: "binary" } as const;

/** Request bodies for the documentation (the routes check them by hand). */
export function documentBodies(url: string, maxTop: number): object | undefined {
  if (url === "/search") {
    return {
      content: {
        "image/*": { schema: binary },
        "multipart/form-data": {
          schema: {
            type: "object",
            properties: {
              image: binary,
              top: { type: "integer", minimum: 1, maximum: maxTop },
              rerank: { type: "string", enum: [...RERANK_MODES] },
              box: { type: "string" },
            },
            required: ["image"],
          },
        },
        "application/json": {
          schema: {
            type: "object",
            properties: {
              id: { type: "integer", minimum: 0 },
              top: { type: "integer", minimum: 1, maximum: maxTop },
              rerank: { type: "string", enum: [...RERANK_MODES] },
            },
            required: ["id"],
          },
        },
      },
    };
  }
  if (url === "/index") {
    return {
      content: {
        "image/*": { schema: binary },
        "multipart/form-data": {
          schema: {
            type: "object",
            properties: { image: { type: "array", items: binary } },
            required: ["image"],
          },
        },
      },
    };
  }
  return undefined;
}
