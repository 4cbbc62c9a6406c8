/**
 * JPEG thumbnails (at most 256 px on the long side) of indexed images, made with sharp and kept in
 * memory, least recently used first out, within a byte budget. Keyed by id and the file's size and
 * modification time, so an edited photo gets a new thumbnail.
 */
import { stat } from "node:fs/promises";
import sharp from "sharp";
import { MAX_IMAGE_PIXELS } from "../image/decode.ts";

export const THUMB_SIZE = 256;

export class ThumbnailCache {
  private readonly entries = new Map<string, Buffer>();
  private bytes = 0;

  constructor(
    /** Most bytes of JPEG kept. */
    readonly budgetBytes: number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }

  /** The thumbnail of the file at `real` (a checked real path) for image `id`. */
  async get(id: number, real: string): Promise<Buffer> {
    const s = await stat(real);
    const key = `${id}:${s.size}:${s.mtimeMs}`;
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      // Most recently used goes last.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const jpeg = await sharp(real, { autoOrient: true, limitInputPixels: MAX_IMAGE_PIXELS })
      .resize(THUMB_SIZE, THUMB_SIZE, { fit: "inside", withoutEnlargement: true })
      .jpeg({ quality: 80, mozjpeg: false })
      .toBuffer();
    this.put(key, jpeg);
    return jpeg;
  }

  private put(key: string, jpeg: Buffer): void {
    if (jpeg.byteLength > this.budgetBytes) return;
    this.entries.set(key, jpeg);
    this.bytes += jpeg.byteLength;
    for (const [old, buffer] of this.entries) {
      if (this.bytes <= this.budgetBytes) break;
      this.entries.delete(old);
      this.bytes -= buffer.byteLength;
    }
  }
}
