/**
 * A small real index for the server's tests: a few photos of the shared Debian set, downscaled to
 * at most 256 px, indexed with the default model (with its shipped whitening when
 * models/default-whitening/ exists, else none) and a model cache in a temp folder.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { Index } from "../../src/app/photo-index.ts";
import { DEFAULT_WHITENING_DIR } from "../../src/descriptor/default-model.ts";
import { assetsDir } from "./shared.ts";

export const photosDir = join(assetsDir, "debian-photos");
export const hasPhotos =
  existsSync(photosDir) && readdirSync(photosDir).some((n) => !n.includes("."));

/** Photos of clearly different scenes. */
export const SERVER_PHOTOS = [
  "darknet/dog.jpg",
  "darknet/eagle.jpg",
  "darknet/horses.jpg",
  "mate/Aqua.jpg",
  "mate/LadyBird.jpg",
  "opencv-pairs/graf1.jpg",
  "opencv-pairs/box.jpg",
  "plasma/Kite.jpg",
];

export interface ServerFixture {
  root: string;
  /** Folder of the downscaled photos (the indexed files). */
  photos: string;
  /** The index folder. */
  indexDir: string;
  cacheDir: string;
  /** Indexed paths by source name (`dog.jpg` → /tmp/…/photos/dog.jpg). */
  files: Map<string, string>;
}

export function modelSpec() {
  return existsSync(join(DEFAULT_WHITENING_DIR, "README.md")) ||
    (existsSync(DEFAULT_WHITENING_DIR) && readdirSync(DEFAULT_WHITENING_DIR).length > 0)
    ? {}
    : { whitening: null };
}

/** Builds the photos and the index in a new temp folder (the caller removes `root`). */
export async function buildServerFixture(prefix = "superglobal-server-"): Promise<ServerFixture> {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const photos = join(root, "photos");
  const cacheDir = join(root, "cache");
  mkdirSync(photos, { recursive: true });
  process.env["SUPERGLOBAL_CACHE"] = cacheDir;
  const files = new Map<string, string>();
  for (const rel of SERVER_PHOTOS) {
    const name = rel.split("/").pop() as string;
    const dest = join(photos, name);
    await sharp(join(photosDir, rel))
      .resize(256, 256, { fit: "inside" })
      .jpeg({ quality: 90 })
      .toFile(dest);
    files.set(name, dest);
  }
  const indexDir = join(root, "photos.sgi");
  const index = await Index.open(indexDir, { create: true, model: modelSpec(), cacheDir });
  try {
    const summary = await index.add([...files.values()]);
    if (summary.failed.length > 0) throw new Error(`fixture: ${JSON.stringify(summary.failed)}`);
  } finally {
    await index.close();
  }
  return { root, photos, indexDir, cacheDir, files };
}
