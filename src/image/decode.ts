/**
 * Image decoding to the pixels `cv2.imread(path)` (IMREAD_COLOR, OpenCV 4.6) gives the official
 * code: 8-bit BGR, HWC, EXIF orientation applied. sharp (libvips + libjpeg-turbo) decodes JPEGs
 * bit-exactly like OpenCV; the rest of this file makes the other cases agree with OpenCV too.
 */
import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { fileError, invalidArgument, SuperglobalError } from "../errors.ts";

export interface BgrImage {
  width: number;
  height: number;
  /** HWC, BGR, uint8: pixel (y, x) channel c is at `(y * width + x) * 3 + c`. */
  data: Uint8Array;
}

/** Larger inputs are refused before their pixels are decoded (a 100 MP image is 300 MB as BGR). */
export const MAX_IMAGE_PIXELS = 100_000_000;

/**
 * Decodes JPEG/PNG/WebP/TIFF/GIF (first frame) like `cv2.imread(path)`:
 * - EXIF orientation is applied (OpenCV 4.6 does so for JPEG and PNG; it ignores it in WebP, where
 *   we still apply it, since a rotated photo is never what a caller means).
 * - Grayscale becomes 3 equal channels; an alpha channel is dropped, not composited (libpng's
 *   strip-alpha, as OpenCV does).
 * - 16-bit samples become 8-bit by keeping the high byte (`v >> 8`), as OpenCV does (libpng's
 *   strip-16); sharp's default 16→8 conversion is that same shift.
 * - Embedded ICC profiles are ignored, as OpenCV ignores them.
 * - CMYK JPEGs are converted with OpenCV's own formula (no colour management), which assumes
 *   Adobe-style inverted ink values as Photoshop writes them.
 * Corrupt, truncated, unsupported or empty input → BAD_IMAGE; a missing file → NOT_FOUND. `name`
 * (default: the path, or "image buffer") names the input in errors.
 */
export async function decodeImage(input: string | Uint8Array, name?: string): Promise<BgrImage> {
  let bytes: Uint8Array;
  let label: string;
  if (typeof input === "string") {
    label = name ?? input;
    bytes = await readImageFile(input, label);
  } else if (input instanceof Uint8Array) {
    label = name ?? "image buffer";
    bytes = input;
  } else {
    return invalidArgument("input", "a file path or a Uint8Array", input);
  }
  if (bytes.byteLength === 0) throw badImage(label, "the input is empty (0 bytes)");

  // Read the header first: it tells the colour space, and lets us refuse huge images up front.
  let cmyk: boolean;
  try {
    const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
    if (meta.width * meta.height > MAX_IMAGE_PIXELS) {
      throw badImage(
        label,
        `${meta.width}x${meta.height} pixels exceeds the limit of ${MAX_IMAGE_PIXELS / 1e6} megapixels`,
      );
    }
    cmyk = meta.space === "cmyk";
  } catch (err) {
    if (err instanceof SuperglobalError) throw err;
    throw badImage(label, errorText(err), err);
  }

  let data: Buffer;
  let width: number;
  let height: number;
  let channels: number;
  try {
    let pipeline = sharp(bytes, {
      autoOrient: true,
      ignoreIcc: true,
      limitInputPixels: MAX_IMAGE_PIXELS,
      // Rejects truncated files (OpenCV fills them with grey and warns), but keeps the harmless
      // libjpeg warnings (e.g. extraneous bytes before a marker) that OpenCV also accepts.
      failOn: "truncated",
    });
    // For CMYK we want the ink values themselves, converted below as OpenCV does, not sharp's
    // profile-based conversion.
    if (cmyk) pipeline = pipeline.pipelineColourspace("cmyk").toColourspace("cmyk");
    const out = await pipeline.raw().toBuffer({ resolveWithObject: true });
    data = out.data;
    ({ width, height, channels } = out.info);
  } catch (err) {
    throw badImage(label, errorText(err), err);
  }
  if (width <= 0 || height <= 0) throw badImage(label, "the image has no pixels");
  const pixels = width * height;
  if (cmyk && channels === 4) return { width, height, data: cmykToBgr(data, pixels) };
  return { width, height, data: toBgr(data, pixels, channels, label) };
}

/** The bytes of an image file; a read error is BAD_IMAGE (NOT_FOUND when missing) naming `label`. */
export async function readImageFile(path: string, label = path): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw fileError(label, "cannot read the image", err, "BAD_IMAGE");
  }
}

/**
 * The size `decodeImage` gives the image in `path` (EXIF orientation applied), read from its header
 * alone, or undefined when the header cannot be read (decoding it then reports why).
 */
export async function imageSize(
  path: string,
): Promise<{ width: number; height: number } | undefined> {
  try {
    const meta = await sharp(path, { limitInputPixels: false }).metadata();
    if (!(meta.width > 0 && meta.height > 0)) return undefined;
    // Orientations 5-8 turn the image a quarter: width and height swap.
    const turned = (meta.orientation ?? 1) >= 5;
    return turned
      ? { width: meta.height, height: meta.width }
      : { width: meta.width, height: meta.height };
  } catch {
    return undefined;
  }
}

/**
 * OpenCV's CMYK→BGR (`icvCvt_CMYK2BGR_8u_C4C3R`) on the raw Adobe-inverted libjpeg samples
 * c' = 255 − C, k' = 255 − K: out = k' − ((255 − c')·k' >> 8). libvips hands us C and K uninverted.
 */
function cmykToBgr(src: Uint8Array, pixels: number): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  for (let i = 0, s = 0, d = 0; i < pixels; i++, s += 4, d += 3) {
    const k = 255 - src[s + 3];
    out[d] = k - ((src[s + 2] * k) >> 8);
    out[d + 1] = k - ((src[s + 1] * k) >> 8);
    out[d + 2] = k - ((src[s] * k) >> 8);
  }
  return out;
}

/** Interleaved 1-4 channel samples → BGR: gray is replicated, alpha is dropped. */
function toBgr(src: Uint8Array, pixels: number, channels: number, label: string): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  if (channels === 1 || channels === 2) {
    for (let i = 0, s = 0, d = 0; i < pixels; i++, s += channels, d += 3) {
      const v = src[s];
      out[d] = v;
      out[d + 1] = v;
      out[d + 2] = v;
    }
  } else if (channels === 3 || channels === 4) {
    for (let i = 0, s = 0, d = 0; i < pixels; i++, s += channels, d += 3) {
      out[d] = src[s + 2];
      out[d + 1] = src[s + 1];
      out[d + 2] = src[s];
    }
  } else {
    throw new SuperglobalError("UNSUPPORTED", `${label}: images with ${channels} channels`, {
      input: label,
    });
  }
  return out;
}

function badImage(label: string, why: string, cause?: unknown): SuperglobalError {
  return new SuperglobalError("BAD_IMAGE", `${label}: cannot decode image: ${why}`, {
    input: label,
    cause,
  });
}

/**
 * libvips hands back its whole error log, one line per warning and often the same lines twice
 * ("Corrupt JPEG data: ...\nUnsupported marker ...\nCorrupt JPEG data: ..."): each line once,
 * on one line, so that a reason fits a summary line.
 */
function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text
    .split("\n")
    .map((line) => line.trim().replace(/:$/, ""))
    .filter((line) => line.length > 0);
  const kept: string[] = [];
  for (const line of lines) if (!kept.some((k) => k.includes(line))) kept.push(line);
  return kept.join("; ");
}
