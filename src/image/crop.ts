/**
 * The official query crop (`test/dataset.py`): `im[int(y1):int(y2), int(x1):int(x2)]` on the
 * decoded image, with Python's `int()` truncation and numpy's clamping of slice ends.
 */
import { invalidArgument } from "../errors.ts";
import type { BgrImage } from "./decode.ts";

/** [x1, y1, x2, y2] in 0-based pixel coordinates; the end is exclusive after truncation. */
export type Box = readonly [x1: number, y1: number, x2: number, y2: number];

/**
 * Crops like the official query loader. Coordinates are truncated toward zero; ends past the image
 * are clamped to it, as numpy slicing does. A box that is not 4 finite numbers, that starts at a
 * negative pixel (numpy would wrap around to the far edge, which no caller means) or that leaves
 * an empty crop is refused with INVALID_ARGUMENT naming the box.
 */
export function cropToBox(image: BgrImage, box: Box): BgrImage {
  if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => Number.isFinite(v))) {
    return invalidArgument("box", "[x1, y1, x2, y2] of 4 finite numbers", box);
  }
  const shown = `[${box.join(", ")}]`;
  const x1 = Math.trunc(box[0]);
  const y1 = Math.trunc(box[1]);
  const x2 = Math.min(Math.trunc(box[2]), image.width);
  const y2 = Math.min(Math.trunc(box[3]), image.height);
  if (x1 < 0 || y1 < 0) {
    return invalidArgument("box", "a box with non-negative x1 and y1", shown);
  }
  if (x2 <= x1 || y2 <= y1) {
    return invalidArgument(
      "box",
      `a box that leaves a non-empty crop of the ${image.width}x${image.height} image`,
      shown,
    );
  }
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
