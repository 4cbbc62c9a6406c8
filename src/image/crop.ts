/**
 * The official query crop (`test/dataset.py`): `im[int(y1):int(y2), int(x1):int(x2)]` on the
 * decoded image, with Python's `int()` truncation, and one rule for a box that reaches outside
 * the image: it is clipped to the image, on every side alike.
 */
import { invalidArgument } from "../errors.ts";
import type { BgrImage } from "./decode.ts";

/** [x1, y1, x2, y2] in 0-based pixel coordinates; the end is exclusive after truncation. */
export type Box = readonly [x1: number, y1: number, x2: number, y2: number];

/** A box in whole pixels inside the image, and whether clipping moved it. */
export interface ClippedBox {
  box: [x1: number, y1: number, x2: number, y2: number];
  /** True when the box reached outside the image and was clipped to it. */
  clipped: boolean;
}

/**
 * The pixels a box selects in a `width`×`height` image. Coordinates are truncated toward zero
 * (Python's `int()`, as the official crop does); a box partly outside the image is clipped to it
 * (`clipped` says so). Refused with INVALID_ARGUMENT naming the box: anything but 4 finite numbers
 * with x1 < x2 and y1 < y2, and a box that is empty after clipping.
 */
export function clipBox(box: Box, width: number, height: number): ClippedBox {
  checkBox(box);
  // + 0 turns the -0 of a truncated -0.5 into 0.
  const [x1, y1, x2, y2] = box.map((v) => Math.trunc(v) + 0) as [number, number, number, number];
  const clip = (v: number, max: number) => Math.min(Math.max(v, 0), max);
  const out: ClippedBox["box"] = [
    clip(x1, width),
    clip(y1, height),
    clip(x2, width),
    clip(y2, height),
  ];
  if (out[2] <= out[0] || out[3] <= out[1]) {
    return invalidArgument(
      "box",
      `a box that is not empty once clipped to the ${width}x${height} image`,
      `[${box.join(", ")}]`,
    );
  }
  return { box: out, clipped: out[0] !== x1 || out[1] !== y1 || out[2] !== x2 || out[3] !== y2 };
}

/** INVALID_ARGUMENT naming the box unless it is 4 finite numbers with x1 < x2 and y1 < y2. */
export function checkBox(box: unknown): asserts box is Box {
  if (
    !Array.isArray(box) ||
    box.length !== 4 ||
    !box.every((v) => typeof v === "number" && Number.isFinite(v)) ||
    !(box[0] < box[2] && box[1] < box[3])
  ) {
    invalidArgument(
      "box",
      "[x1, y1, x2, y2] of 4 finite numbers with x1 < x2 and y1 < y2",
      Array.isArray(box) && box.length === 4 ? `[${box.join(", ")}]` : box,
    );
  }
}

/** Crops like the official query loader, with the box clipped to the image (see clipBox). */
export function cropToBox(image: BgrImage, box: Box): BgrImage {
  const [x1, y1, x2, y2] = clipBox(box, image.width, image.height).box;
  const width = x2 - x1;
  const height = y2 - y1;
  const data = new Uint8Array(width * height * 3);
  const rowBytes = width * 3;
  for (let y = 0; y < height; y++) {
    const from = ((y1 + y) * image.width + x1) * 3;
    data.set(image.data.subarray(from, from + rowBytes), y * rowBytes);
  }
  return { width, height, data };
}
