/**
 * Image preprocessing against the official pipeline: decoding vs the `cv2.imread` goldens, the
 * query crop, the bit-exact normalisation, and torch's bilinear resize.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { crc32, deflateSync } from "node:zlib";
import sharp from "sharp";
import { SuperglobalError } from "../src/errors.ts";
import { clipBox, cropToBox } from "../src/image/crop.ts";
import { type BgrImage, decodeImage } from "../src/image/decode.ts";
import { type ImageTensor, toInputTensor } from "../src/image/normalize.ts";
import { resizeBilinear, scaledSize } from "../src/image/resize.ts";
import { readNpy } from "../src/io/npy.ts";
import { fixture, sharedOnly } from "./helpers/shared.ts";

// The manifest holds NaN (per-query AP of queries without positives), which JSON.parse refuses.
// biome-ignore lint/suspicious/noExplicitAny: the manifest is test data with a loose schema
function loadManifest(): any {
  return JSON.parse(readFileSync(fixture("manifest.json"), "utf8").replace(/\bNaN\b/g, "null"));
}

const tmp = mkdtempSync(join(tmpdir(), "superglobal-image-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function goldenBgr(file: string): BgrImage {
  const a = readNpy(fixture(file));
  return { height: a.shape[0], width: a.shape[1], data: a.data as Uint8Array };
}

function goldenInput(file: string): ImageTensor {
  const a = readNpy(fixture(file));
  return { data: a.data as Float32Array, height: a.shape[2], width: a.shape[3] };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Asserts that `fn` rejects with a SuperglobalError of `code` whose message names `name`. */
async function rejectsWith(fn: () => Promise<unknown>, code: string, name: string): Promise<void> {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof SuperglobalError, `expected a SuperglobalError, got ${err}`);
    assert.equal(err.code, code, err.message);
    assert.ok(err.message.includes(name), `message "${err.message}" should name ${name}`);
    return true;
  });
}

// --- decoding -----------------------------------------------------------------------------------

test(
  "decodeImage (+ cropToBox for the query) reproduces cv2.imread on every fixture",
  sharedOnly,
  async (t) => {
    for (const im of loadManifest().images) {
      let decoded = await decodeImage(fixture(`images/${im.image}`));
      if (im.bbx !== undefined) decoded = cropToBox(decoded, im.bbx);
      const golden = goldenBgr(im.decoded_bgr.file);
      assert.deepEqual([decoded.height, decoded.width], [golden.height, golden.width], im.image);
      const diff = maxDiff(decoded.data, golden.data);
      t.diagnostic(`${im.image}: max abs diff ${diff}`);
      // JPEG decoders may differ by a level or two; sharp's libjpeg-turbo is expected to be exact.
      assert.ok(diff <= (im.image.endsWith(".jpg") ? 2 : 0), `${im.image}: max diff ${diff}`);
    }
  },
);

test(
  "decodeImage applies EXIF orientation as cv2.imread does (JPEG and PNG)",
  sharedOnly,
  async () => {
    const src = fixture("images/a_leuvenA.png");
    const cases = [
      ["jpeg", sharp(src).jpeg({ quality: 95 })],
      ["png", sharp(src).png()],
    ] as const;
    for (const [format, pipeline] of cases) {
      // The same encoder settings with and without the tag give the same stored pixels.
      const plain = await decodeImage(await pipeline.clone().toBuffer(), `plain.${format}`);
      const tagged = await pipeline.clone().withMetadata({ orientation: 6 }).toBuffer();
      assert.equal((await sharp(tagged).metadata()).orientation, 6);
      const rotated = await decodeImage(tagged, `o6.${format}`);
      // Orientation 6 displays the stored image turned 90° clockwise.
      assert.deepEqual([rotated.width, rotated.height], [plain.height, plain.width]);
      const expected = new Uint8Array(rotated.data.length);
      for (let y = 0; y < rotated.height; y++) {
        for (let x = 0; x < rotated.width; x++) {
          const from = ((plain.height - 1 - x) * plain.width + y) * 3;
          expected.set(plain.data.subarray(from, from + 3), (y * rotated.width + x) * 3);
        }
      }
      assert.deepEqual(rotated.data, expected, format);
    }
  },
);

test(
  "decodeImage drops alpha without compositing, as OpenCV's IMREAD_COLOR",
  sharedOnly,
  async () => {
    const bgr = goldenBgr("img0_bgr.npy");
    const n = bgr.width * bgr.height;
    const rgba = new Uint8Array(n * 4);
    const ga = new Uint8Array(n * 2);
    for (let i = 0; i < n; i++) {
      const alpha = (i * 37) % 256; // includes fully transparent pixels
      rgba.set([bgr.data[i * 3 + 2], bgr.data[i * 3 + 1], bgr.data[i * 3], alpha], i * 4);
      ga.set([bgr.data[i * 3 + 1], alpha], i * 2);
    }
    const raw = (channels: 2 | 4) => ({ raw: { width: bgr.width, height: bgr.height, channels } });
    const png = await sharp(rgba, raw(4)).png().toBuffer();
    assert.equal((await sharp(png).metadata()).channels, 4);
    assert.deepEqual((await decodeImage(png, "rgba.png")).data, bgr.data);

    // Gray + alpha: the gray value in all three channels.
    const grayPng = await sharp(ga, raw(2)).toColourspace("b-w").png().toBuffer();
    assert.equal((await sharp(grayPng).metadata()).channels, 2);
    const gray = await decodeImage(grayPng, "ga.png");
    for (let i = 0; i < n; i++) {
      const g = bgr.data[i * 3 + 1];
      assert.deepEqual([...gray.data.subarray(i * 3, i * 3 + 3)], [g, g, g]);
    }
  },
);

test(
  "16-bit PNGs become 8-bit by keeping the high byte (v >> 8), as OpenCV does",
  sharedOnly,
  async () => {
    const bgr = goldenBgr("img1_bgr.npy");
    const n = bgr.width * bgr.height;
    const rgb16 = new Uint16Array(n * 3);
    const gray16 = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      const low = (i * 101) % 256; // low bytes ≥ 128 tell truncation from rounding
      for (let c = 0; c < 3; c++) rgb16[i * 3 + c] = (bgr.data[i * 3 + 2 - c] << 8) | low;
      gray16[i] = (bgr.data[i * 3] << 8) | (255 - low);
    }
    const opts = (channels: 1 | 3) => ({ raw: { width: bgr.width, height: bgr.height, channels } });
    const png = await sharp(rgb16, opts(3)).toColourspace("rgb16").png().toBuffer();
    assert.equal((await sharp(png).metadata()).depth, "ushort");
    assert.deepEqual((await decodeImage(png, "rgb16.png")).data, bgr.data);

    const grayPng = await sharp(gray16, opts(1)).toColourspace("grey16").png().toBuffer();
    assert.equal((await sharp(grayPng).metadata()).depth, "ushort");
    const gray = await decodeImage(grayPng, "gray16.png");
    for (let i = 0; i < n; i++) assert.equal(gray.data[i * 3 + 1], bgr.data[i * 3]);
  },
);

test("CMYK JPEGs are converted with OpenCV's formula", async () => {
  const jpeg = await sharp({
    create: { width: 16, height: 16, channels: 3, background: { r: 200, g: 40, b: 90 } },
  })
    .toColourspace("cmyk")
    .jpeg({ quality: 100 })
    .toBuffer();
  assert.equal((await sharp(jpeg).metadata()).space, "cmyk");
  const im = await decodeImage(jpeg, "solid-cmyk.jpg");
  // cv2.imread (OpenCV 4.6) of these exact bytes gives BGR (118, 8, 214) everywhere.
  for (let i = 0; i < 16 * 16; i++)
    assert.deepEqual([...im.data.subarray(i * 3, i * 3 + 3)], [118, 8, 214]);
});

test("decodeImage reads TIFF and WebP, and the first frame of an animated GIF", async () => {
  const rgb = {
    create: { width: 5, height: 3, channels: 3, background: { r: 10, g: 20, b: 30 } },
  } as const;
  for (const format of ["tiff", "webp"] as const) {
    const buf = await sharp(rgb)
      .toFormat(format, format === "webp" ? { lossless: true } : {})
      .toBuffer();
    const im = await decodeImage(buf, `solid.${format}`);
    assert.deepEqual([im.width, im.height], [5, 3]);
    assert.deepEqual([...im.data.subarray(0, 3)], [30, 20, 10], format);
  }
  // Two 5x3 frames: (10, 20, 30) then (200, 100, 50).
  const frames = new Uint8Array(5 * 6 * 3);
  for (let i = 0; i < 30; i++) frames.set(i < 15 ? [10, 20, 30] : [200, 100, 50], i * 3);
  const gif = await sharp(frames, { raw: { width: 5, height: 6, channels: 3, pageHeight: 3 } })
    .gif()
    .toBuffer();
  assert.equal((await sharp(gif).metadata()).pages, 2);
  const im = await decodeImage(gif, "two-frames.gif");
  assert.deepEqual([im.width, im.height], [5, 3]);
  for (let i = 0; i < 15; i++)
    assert.deepEqual([...im.data.subarray(i * 3, i * 3 + 3)], [30, 20, 10]);
});

test(
  "bad images are refused with BAD_IMAGE or NOT_FOUND naming the input",
  sharedOnly,
  async () => {
    const jpeg = readFileSync(fixture("images/d_kite.jpg"));
    const files: [string, Uint8Array | string][] = [
      ["truncated.jpg", jpeg.subarray(0, jpeg.length >> 1)],
      ["random.bin", Uint8Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 251)],
      ["empty.jpg", new Uint8Array(0)],
      ["notes.txt", "this is not an image\n"],
    ];
    for (const [name, content] of files) {
      const path = join(tmp, name);
      writeFileSync(path, content);
      await rejectsWith(() => decodeImage(path), "BAD_IMAGE", path);
      await rejectsWith(
        () => decodeImage(readFileSync(path), `buffer ${name}`),
        "BAD_IMAGE",
        `buffer ${name}`,
      );
    }
    const missing = join(tmp, "missing.jpg");
    await rejectsWith(() => decodeImage(missing), "NOT_FOUND", missing);
    await rejectsWith(() => decodeImage(tmp), "BAD_IMAGE", tmp);
    await assert.rejects(
      () => decodeImage(42 as unknown as string),
      (e: unknown) => e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT",
    );
  },
);

test("harmless libjpeg warnings are accepted, as OpenCV accepts them", sharedOnly, async () => {
  // "Corrupt JPEG data: 4 extraneous bytes before marker 0xd9": OpenCV warns and decodes.
  const jpeg = readFileSync(fixture("images/d_kite.jpg"));
  const end = jpeg.length - 2;
  const noisy = Buffer.concat([
    jpeg.subarray(0, end),
    Buffer.from([1, 2, 3, 4]),
    jpeg.subarray(end),
  ]);
  assert.deepEqual((await decodeImage(noisy, "noisy.jpg")).data, (await decodeImage(jpeg)).data);
});

test("images over 100 megapixels are refused from their header", async () => {
  // A valid PNG header announcing 20000x20000; the refusal must come before any pixel is read.
  const chunk = (type: string, data: Uint8Array) => {
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(20000, 0);
  ihdr.writeUInt32BE(20000, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const png = Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.alloc(16))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
  await assert.rejects(
    () => decodeImage(png, "huge.png"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_IMAGE" &&
      /huge\.png.*20000x20000.*100 megapixels/.test(e.message),
  );
});

// --- cropping -----------------------------------------------------------------------------------

function ramp(width: number, height: number): BgrImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = i % 256;
  return { width, height, data };
}

test("cropToBox truncates like int() and clamps ends like numpy slicing", () => {
  const im = ramp(10, 6);
  const crop = cropToBox(im, [1.9, 2.99, 4.01, 5.5]);
  assert.deepEqual([crop.width, crop.height], [3, 3]); // x 1..3, y 2..4
  for (let y = 0; y < 3; y++) {
    for (let x = 0; x < 3; x++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(crop.data[(y * 3 + x) * 3 + c], im.data[((y + 2) * 10 + x + 1) * 3 + c]);
      }
    }
  }
  const clamped = cropToBox(im, [7, 4, 25, 99.5]);
  assert.deepEqual([clamped.width, clamped.height], [3, 2]);
  assert.deepEqual(
    clamped.data.subarray(0, 3),
    im.data.subarray((4 * 10 + 7) * 3, (4 * 10 + 8) * 3),
  );
  // -0.5 truncates to 0, like Python's int().
  assert.equal(cropToBox(im, [-0.5, 0, 2, 2]).width, 2);
});

test("a box partly outside the image is clipped to it, on every side alike", () => {
  const im = ramp(10, 6);
  // Negative starts were refused while ends past the image were clipped: one rule now.
  const crop = cropToBox(im, [-2, -3.5, 4, 3]);
  assert.deepEqual([crop.width, crop.height], [4, 3]);
  assert.deepEqual(crop, cropToBox(im, [0, 0, 4, 3]));
  assert.deepEqual(cropToBox(im, [-100, -1, 200, 50]), im);
  assert.deepEqual(clipBox([-2, -3.5, 4, 3], 10, 6), { box: [0, 0, 4, 3], clipped: true });
  assert.deepEqual(clipBox([7, 4, 25, 99.5], 10, 6), { box: [7, 4, 10, 6], clipped: true });
  // Inside: the official int truncation, and nothing to say.
  assert.deepEqual(clipBox([1.9, 2.99, 4.01, 5.5], 10, 6), { box: [1, 2, 4, 5], clipped: false });
  assert.deepEqual(clipBox([-0.5, 0, 2, 2], 10, 6), { box: [0, 0, 2, 2], clipped: false });
});

test("cropToBox refuses boxes that are malformed or empty after clipping, naming the box", () => {
  const im = ramp(10, 6);
  const bad: unknown[] = [
    [1, 2, 3],
    [0, 0, Number.NaN, 3],
    [0, 0, Number.POSITIVE_INFINITY, 3],
    [-5, 0, -2, 5],
    [0, 7, 5, 9],
    [3, 3, 3, 5],
    [4, 1, 2, 5],
    [10, 0, 12, 3],
    [0, 2.5, 5, 2.9],
  ];
  for (const box of bad) {
    assert.throws(
      () => cropToBox(im, box as unknown as readonly [number, number, number, number]),
      (e: unknown) =>
        e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.message.includes("box"),
      JSON.stringify(box),
    );
  }
});

// --- normalisation ------------------------------------------------------------------------------

test("toInputTensor is bit-exact with the official float32 normalisation", sharedOnly, () => {
  for (const im of loadManifest().images) {
    const input = toInputTensor(goldenBgr(im.decoded_bgr.file));
    const golden = goldenInput(im.input.file);
    assert.deepEqual([input.height, input.width], [golden.height, golden.width]);
    assert.deepEqual(input.data, golden.data, im.image);
  }
});

test("toInputTensor keeps BGR order and CHW layout", () => {
  const im: BgrImage = { width: 2, height: 1, data: Uint8Array.from([0, 128, 255, 10, 20, 30]) };
  const t = toInputTensor(im);
  const f = Math.fround;
  const v = (x: number, mean: number, std: number) => f(f(f(x / 255) - f(mean)) / f(std));
  assert.deepEqual(
    [...t.data],
    [
      v(0, 0.406, 0.225),
      v(10, 0.406, 0.225),
      v(128, 0.456, 0.224),
      v(20, 0.456, 0.224),
      v(255, 0.485, 0.229),
      v(30, 0.485, 0.229),
    ],
  );
});

// --- resizing -----------------------------------------------------------------------------------

/** torch's bilinear (align_corners=False) written plainly, one output pixel at a time, in float64. */
function referenceResize(x: ImageTensor, h: number, w: number): Float64Array {
  const tap = (n: number, m: number, d: number) => {
    const src = Math.max((n / m) * (d + 0.5) - 0.5, 0);
    const i0 = Math.floor(src);
    return { i0, i1: Math.min(i0 + 1, n - 1), l1: src - i0, l0: 1 - (src - i0) };
  };
  const out = new Float64Array(3 * h * w);
  const at = (c: number, y: number, xx: number) => x.data[(c * x.height + y) * x.width + xx];
  for (let c = 0; c < 3; c++) {
    for (let oy = 0; oy < h; oy++) {
      const ty = tap(x.height, h, oy);
      for (let ox = 0; ox < w; ox++) {
        const tx = tap(x.width, w, ox);
        const top = tx.l0 * at(c, ty.i0, tx.i0) + tx.l1 * at(c, ty.i0, tx.i1);
        const bottom = tx.l0 * at(c, ty.i1, tx.i0) + tx.l1 * at(c, ty.i1, tx.i1);
        out[(c * h + oy) * w + ox] = ty.l0 * top + ty.l1 * bottom;
      }
    }
  }
  return out;
}

// The official scales are these truncated decimals, not Math.SQRT1_2 and Math.SQRT2.
// biome-ignore lint/suspicious/noApproximativeNumericConstant: the official constant
const LOW_SCALE = 0.7071;
// biome-ignore lint/suspicious/noApproximativeNumericConstant: the official constant
const HIGH_SCALE = 1.4142;

test("scaledSize gives the official per-scale sizes", sharedOnly, () => {
  for (const im of loadManifest().images) {
    const [, , h, w] = im.input.shape;
    for (const ps of im.per_scale) assert.deepEqual(scaledSize(h, w, ps.scale), ps.size, im.image);
  }
  assert.deepEqual(scaledSize(768, 1024, LOW_SCALE), [543, 724]);
  assert.deepEqual(scaledSize(768, 1024, HIGH_SCALE), [1086, 1448]);
  assert.deepEqual(scaledSize(1024, 681, LOW_SCALE), [724, 481]);
  assert.deepEqual(scaledSize(1024, 681, HIGH_SCALE), [1448, 963]);
});

test(
  "resizeBilinear equals a plain float64 torch-formula reference on the golden inputs",
  sharedOnly,
  () => {
    for (const im of loadManifest().images.slice(0, 3)) {
      const input = goldenInput(im.input.file);
      for (const ps of im.per_scale) {
        const [h, w] = ps.size;
        const out = resizeBilinear(input, h, w);
        assert.deepEqual([out.height, out.width], [h, w]);
        if (h === input.height && w === input.width) {
          assert.equal(out, input); // scale 1.0 is the identity
          continue;
        }
        const ref = referenceResize(input, h, w);
        assert.deepEqual(out.data, Float32Array.from(ref), `${im.image} at ${ps.scale}`);
      }
    }
  },
);

test("resizeBilinear matches torch.nn.functional.interpolate on hand-checkable cases", () => {
  const t = (rows: number[][]): ImageTensor => {
    const plane = rows.flat();
    return {
      data: Float32Array.from([...plane, ...plane, ...plane]),
      height: rows.length,
      width: rows[0].length,
    };
  };
  const channel0 = (x: ImageTensor) => [...x.data.subarray(0, x.height * x.width)];
  const close = (actual: number[], expected: number[]) => {
    assert.equal(actual.length, expected.length);
    for (let i = 0; i < actual.length; i++) {
      assert.ok(Math.abs(actual[i] - expected[i]) <= 1e-6, `${i}: ${actual[i]} vs ${expected[i]}`);
    }
  };
  // 2x2 → 4x4: weights (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1) per axis.
  const up = resizeBilinear(
    t([
      [0, 1],
      [2, 3],
    ]),
    4,
    4,
  );
  assert.deepEqual(
    channel0(up),
    [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3],
  );
  // A ramp 0..7 downsampled to 5 samples at src = 1.6·(d + 0.5) − 0.5 (torch float64 values).
  close(channel0(resizeBilinear(t([[0, 1, 2, 3, 4, 5, 6, 7]]), 1, 5)), [0.3, 1.9, 3.5, 5.1, 6.7]);
  // Values from torch 1.13 (float64) for a 3x5 input.
  const x = t([
    [0.0, 1.25, 0.75, 0.25, 1.5],
    [0.75, 0.25, 1.5, 1.0, 0.5],
    [1.5, 1.0, 0.5, 0.0, 1.25],
  ]);
  close(
    channel0(resizeBilinear(x, 2, 3)),
    [0.4583333333333333, 0.9375, 0.9791666666666669, 1.1458333333333333, 0.75, 0.791666666666667],
  );
  close(
    channel0(resizeBilinear(x, 5, 8)),
    [
      0.0, 0.546875, 1.21875, 0.90625, 0.59375, 0.28125, 0.953125, 1.5, 0.3, 0.540625, 0.8625,
      0.9875, 0.89375, 0.58125, 0.859375, 1.1, 0.75, 0.53125, 0.328125, 1.109375, 1.34375, 1.03125,
      0.71875, 0.5, 1.2, 0.98125, 0.7125, 0.8375, 0.74375, 0.43125, 0.709375, 0.95, 1.5, 1.28125,
      0.96875, 0.65625, 0.34375, 0.03125, 0.703125, 1.25,
    ],
  );
  // All three channels are resized alike.
  const three = resizeBilinear(x, 5, 8);
  assert.deepEqual(three.data.subarray(40, 80), three.data.subarray(0, 40));
  assert.deepEqual(three.data.subarray(80), three.data.subarray(0, 40));
  // The same size returns the input itself.
  assert.equal(resizeBilinear(x, 3, 5), x);
});

test("resizeBilinear and scaledSize validate their arguments", () => {
  const x: ImageTensor = { data: new Float32Array(12), height: 2, width: 2 };
  for (const [h, w] of [
    [0, 2],
    [2, 1.5],
    [Number.NaN, 2],
  ]) {
    assert.throws(
      () => resizeBilinear(x, h, w),
      (e: unknown) => e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT",
    );
  }
  assert.throws(
    () => resizeBilinear({ data: new Float32Array(10), height: 2, width: 2 }, 3, 3),
    (e: unknown) => e instanceof SuperglobalError && e.message.includes("input"),
  );
  assert.throws(
    () => scaledSize(10, 10, 0),
    (e: unknown) => e instanceof SuperglobalError && e.message.includes("scale"),
  );
});
