/**
 * Good and bad image files for `superglobal index`, generated with sharp (plus a few headers
 * written by hand): every format and pixel layout the decoder must take, and the broken files it
 * must refuse with a reason. Shared by test/cli-bad-images.test.ts and the stress bench.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32, deflateSync } from "node:zlib";
import sharp from "sharp";

export interface ZooImage {
  /** File name inside the zoo folder. */
  name: string;
  /** True when it must be indexed; false when it must be listed as failed. */
  valid: boolean;
  /** Found by a folder scan (false: the scan skips it by content, so it is named explicitly). */
  scanned: boolean;
  /** For a broken one, what its reason must say. */
  reason?: RegExp;
}

/** A PNG chunk: length, type, data, CRC. */
function pngChunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const out = Buffer.alloc(body.length + 8);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), body.length + 4);
  return out;
}

/** A PNG whose header claims width x height RGB pixels, with almost no pixel data. */
export function pngHeaderBomb(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", deflateSync(Buffer.alloc(64))),
    pngChunk("IEND", new Uint8Array(0)),
  ]);
}

/** The JPEG `jpeg` with the size in its SOF header replaced by width x height. */
export function jpegHeaderBomb(jpeg: Uint8Array, width: number, height: number): Buffer {
  const out = Buffer.from(jpeg);
  for (let i = 2; i + 9 < out.length; ) {
    if (out[i] !== 0xff) break;
    const marker = out[i + 1]!;
    const len = out.readUInt16BE(i + 2);
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc).
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      out.writeUInt16BE(height, i + 5);
      out.writeUInt16BE(width, i + 7);
      return out;
    }
    i += 2 + len;
  }
  throw new Error("no SOF marker found");
}

const PNG_MAGIC = [137, 80, 78, 71, 13, 10, 26, 10];

/**
 * Writes the zoo into `dir` from one real photo (`photo`, any size: downscaled here) and returns
 * what each file is. Names include non-ASCII ones.
 */
export async function writeImageZoo(dir: string, photo: string): Promise<ZooImage[]> {
  mkdirSync(dir, { recursive: true });
  const base = sharp(photo).resize(160, 160, { fit: "inside" });
  const rgb = await base.clone().removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const { width, height } = rgb.info;
  const raw = () => sharp(rgb.data, { raw: { width, height, channels: 3 } });
  const files: Array<ZooImage & { bytes: Uint8Array }> = [];
  const good = (name: string, bytes: Uint8Array) =>
    files.push({ name, bytes, valid: true, scanned: true });
  const broken = (name: string, bytes: Uint8Array, reason: RegExp, scanned = true) =>
    files.push({ name, bytes, valid: false, scanned, reason });

  const jpeg = await raw().jpeg({ quality: 90 }).toBuffer();
  const png = await raw().png().toBuffer();
  good("plain.jpg", jpeg);
  good("фото ü 照片.jpg", jpeg.subarray()); // same bytes, another (non-ASCII) name
  good(
    "one-pixel.png",
    await sharp(rgb.data.subarray(0, 3), { raw: { width: 1, height: 1, channels: 3 } })
      .png()
      .toBuffer(),
  );
  good(
    "sliver-5x3000.png",
    await raw().resize(5, 3000, { fit: "fill" }).png({ compressionLevel: 9 }).toBuffer(),
  );
  good("cmyk.jpg", await raw().toColourspace("cmyk").jpeg({ quality: 90 }).toBuffer());
  good("sixteen-bit.png", await raw().toColourspace("rgb16").png().toBuffer());
  good("rgba.png", await raw().ensureAlpha(0.5).png().toBuffer());
  good("gray.png", await raw().toColourspace("b-w").png().toBuffer());
  // Two frames (the photo, then it flipped): the first is read.
  const flipped = await raw().flip().raw().toBuffer();
  const frames = Buffer.concat([rgb.data, flipped]);
  const animated = () =>
    sharp(frames, { raw: { width, height: height * 2, channels: 3, pageHeight: height } });
  good("animated.gif", await animated().gif().toBuffer());
  good("animated.webp", await animated().webp({ quality: 90 }).toBuffer());
  good("still.webp", await raw().webp({ quality: 90 }).toBuffer());
  good("scan.tiff", await raw().tiff().toBuffer());
  // EXIF orientation 6 (rotate 90° clockwise to display).
  good(
    "exif-rotated.jpg",
    await raw().jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer(),
  );

  broken("truncated.jpg", jpeg.subarray(0, jpeg.length >> 1), /cannot decode image/);
  broken("truncated.png", png.subarray(0, png.length >> 1), /cannot decode image/);
  // A JPEG whose quantisation and Huffman tables are overwritten with noise after the header.
  const corrupt = Buffer.from(jpeg);
  for (let i = 20; i < Math.min(corrupt.length - 2, 600); i++) corrupt[i] = (i * 151 + 7) & 0xff;
  broken("corrupt.jpg", corrupt, /cannot decode image/);
  // A PNG whose compressed pixel data is noise (libspng ignores chunk CRCs, as many decoders do,
  // so only the deflate stream itself is broken).
  const noisy = Buffer.from(png);
  const idat = noisy.indexOf("IDAT", 0, "latin1");
  for (let i = idat + 6; i < Math.min(noisy.length - 12, idat + 400); i++)
    noisy[i] = (i * 97 + 5) & 0xff;
  broken("corrupt.png", noisy, /cannot decode image/);
  broken(
    "bomb-50000x50000.png",
    pngHeaderBomb(50000, 50000),
    /50000x50000 pixels exceeds the limit of 100 megapixels/,
  );
  broken(
    "bomb-50000x50000.jpg",
    jpegHeaderBomb(jpeg, 50000, 50000),
    /50000x50000 pixels exceeds the limit of 100 megapixels/,
  );
  // PNG magic, then nothing: found by the scan, refused by the decoder.
  broken("magic-only.png", Uint8Array.from(PNG_MAGIC), /cannot decode image/);
  // Not found by a folder scan (their first bytes are no image's): named explicitly.
  broken("empty.jpg", new Uint8Array(0), /empty \(0 bytes\)/, false);
  broken("text.jpg", Buffer.from("this is a note, not a photo\n"), /cannot decode image/, false);

  for (const f of files) writeFileSync(join(dir, f.name), f.bytes);
  return files.map(({ bytes: _bytes, ...rest }) => rest);
}

/** The bytes of a zoo file (for the fuzzer's image seeds). */
export function zooBytes(dir: string, name: string): Uint8Array {
  return readFileSync(join(dir, name));
}
