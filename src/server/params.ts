/**
 * What a request asks for, checked: search options from the query string, multipart fields or a
 * JSON body (all three spell them the same way), and the uploaded image itself, refused before
 * any pixel is decoded when it is empty, not an image, or claims more pixels than allowed.
 */
import sharp from "sharp";
import { RERANK_MODES, type RerankMode } from "../app/photo-index.ts";
import { looksLikeImage } from "../app/scan.ts";
import type { Box } from "../image/crop.ts";
import { badRequest, HttpError } from "./http-errors.ts";

export interface SearchParams {
  /** Search by this indexed image's stored descriptor ("more like this"). */
  id: number | undefined;
  top: number;
  rerank: RerankMode;
  box: Box | undefined;
}

export const DEFAULT_TOP = 10;

/** Reads `top`, `rerank`, `box` and `id` from strings (query, form fields) or JSON values. */
export function parseSearchParams(raw: Record<string, unknown>, maxTop: number): SearchParams {
  const known = new Set(["id", "top", "rerank", "box"]);
  for (const key of Object.keys(raw)) {
    if (!known.has(key)) throw badRequest(`unknown parameter ${JSON.stringify(key)}`);
  }
  const id = raw["id"] === undefined ? undefined : integer("id", raw["id"], 0, 2 ** 31 - 1);
  const top = raw["top"] === undefined ? DEFAULT_TOP : integer("top", raw["top"], 1, maxTop);
  const rerank = raw["rerank"] === undefined ? "adaptive" : rerankMode(raw["rerank"]);
  const box = raw["box"] === undefined || raw["box"] === "" ? undefined : parseBox(raw["box"]);
  if (id !== undefined && box !== undefined) {
    throw badRequest("box applies to an uploaded image, not to a search by id", "BAD_BOX");
  }
  return { id, top, rerank, box };
}

function integer(name: string, value: unknown, min: number, max: number): number {
  const n = typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw badRequest(`${name} must be an integer from ${min} to ${max}, not ${show(value)}`);
  }
  return n;
}

function rerankMode(value: unknown): RerankMode {
  if (typeof value !== "string" || !(RERANK_MODES as readonly string[]).includes(value)) {
    throw badRequest(`rerank must be one of ${RERANK_MODES.join(", ")}, not ${show(value)}`);
  }
  return value as RerankMode;
}

/** `x1,y1,x2,y2` (or a JSON array of 4 numbers): finite, x1, y1 ≥ 0, x2 > x1, y2 > y1. */
export function parseBox(value: unknown): Box {
  const parts =
    typeof value === "string"
      ? value.split(",").map((s) => (s.trim() === "" ? Number.NaN : Number(s)))
      : Array.isArray(value)
        ? value.map((v) => (typeof v === "number" ? v : Number.NaN))
        : [];
  const ok =
    parts.length === 4 &&
    parts.every(Number.isFinite) &&
    (parts[0] as number) >= 0 &&
    (parts[1] as number) >= 0 &&
    (parts[2] as number) > (parts[0] as number) &&
    (parts[3] as number) > (parts[1] as number);
  if (!ok) {
    throw badRequest(
      `box must be x1,y1,x2,y2 in pixels with 0 ≤ x1 < x2 and 0 ≤ y1 < y2, not ${show(value)}`,
      "BAD_BOX",
    );
  }
  return parts as unknown as Box;
}

/** Image formats by their first bytes, for the Content-Type of served files. */
export function imageType(head: Uint8Array): string | undefined {
  if (!looksLikeImage(head)) return undefined;
  const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
  if (head[0] === 0xff && head[1] === 0xd8) return "image/jpeg";
  if (head[0] === 0x89 && ascii(1, 4) === "PNG") return "image/png";
  if (ascii(0, 3) === "GIF") return "image/gif";
  if (ascii(0, 4) === "RIFF") return "image/webp";
  if (ascii(0, 2) === "II" || ascii(0, 2) === "MM") return "image/tiff";
  const brand = ascii(8, 12);
  return brand === "avif" || brand === "avis" ? "image/avif" : "image/heic";
}

export const EXTENSION: Record<string, string> = {
  "image/jpeg": ".jpg",
  "image/png": ".png",
  "image/gif": ".gif",
  "image/webp": ".webp",
  "image/tiff": ".tif",
  "image/avif": ".avif",
  "image/heic": ".heic",
};

/**
 * Checks an uploaded image before it is decoded: not empty, a format we read (by its bytes, not
 * its declared type), a readable header, and at most `maxPixels` pixels (a decompression bomb is
 * refused from its header alone). Returns the format's media type.
 */
export async function checkUpload(bytes: Uint8Array, maxPixels: number): Promise<string> {
  if (bytes.byteLength === 0) throw badRequest("the image is empty (0 bytes)", "EMPTY_BODY");
  const type = imageType(bytes.subarray(0, 16));
  if (type === undefined) {
    throw new HttpError(
      415,
      "NOT_AN_IMAGE",
      "the upload is not an image in a format we read (JPEG, PNG, GIF, WebP, TIFF, AVIF/HEIF)",
    );
  }
  let width: number;
  let height: number;
  try {
    // The header only: no pixel is decoded here, whatever the image claims.
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
    width = meta.width;
    height = meta.height;
  } catch (error) {
    throw badRequest(`cannot read the image header: ${(error as Error).message}`, "BAD_IMAGE");
  }
  if (!(width > 0 && height > 0)) throw badRequest("the image has no pixels", "BAD_IMAGE");
  if (width * height > maxPixels) {
    throw new HttpError(
      413,
      "TOO_MANY_PIXELS",
      `the image is ${width}x${height} pixels, over the limit of ${(maxPixels / 1e6).toFixed(1)} megapixels`,
    );
  }
  return type;
}

function show(value: unknown): string {
  const s = typeof value === "string" ? JSON.stringify(value) : (JSON.stringify(value) ?? "?");
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
