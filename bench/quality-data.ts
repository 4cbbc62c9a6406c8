/**
 * The quality benchmark's evaluation sets, built from the shared real photos (read at run time,
 * never part of the project): multiview-dev (every image a query once, the rest of all four
 * folders the database, group-mates the positives), debian-photos transformed copies (harsh,
 * seeded sharp transformations of each of the 54 photos against the 54 originals) and the 5 real
 * opencv-pairs (each of the 10 images against the other 53, its partner the positive).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import sharp from "sharp";
import { SeededRandom } from "./machine.ts";

export interface QualityQuery {
  /** Index of the query image in `images`. */
  image: number;
  /** Indices (into `images`) of the relevant database images. */
  positives: number[];
  /** Indices of database images that count neither way (revisitop junk). */
  junk: number[];
  /** A label to break results down by (group size class, transformation recipe…). */
  breakdown: string;
}

export interface QualitySet {
  name: string;
  /** Every image file the set needs (queries and database). */
  images: string[];
  /** Short names of `images`, for reports. */
  labels: string[];
  /** Indices into `images`; a query that is itself in the database is left out of its own. */
  database: number[];
  queries: QualityQuery[];
  /** Breakdown labels in report order. */
  breakdowns: string[];
}

/** The group sizes at which multiview-dev results are split (< 15 views vs ≥ 15). */
export const LARGE_GROUP = 15;

/** multiview-dev, exactly as its README's protocol says. */
export function multiviewDev(assets: string): QualitySet {
  const root = join(assets, "multiview-dev");
  const folders = readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const images: string[] = [];
  const labels: string[] = [];
  const groupOf: number[] = [];
  const groups: number[][] = [];
  for (const folder of folders) {
    const groupsJson = JSON.parse(
      readFileSync(join(root, folder, "groups.json"), "utf8"),
    ) as Record<string, string[]>;
    for (const name of Object.keys(groupsJson).sort()) {
      const members: number[] = [];
      for (const path of groupsJson[name]!) {
        members.push(images.length);
        groupOf.push(groups.length);
        images.push(join(root, folder, path));
        labels.push(`${folder}/${path}`);
      }
      groups.push(members);
    }
  }
  const queries = images.map((_, i): QualityQuery => {
    const group = groups[groupOf[i]!]!;
    return {
      image: i,
      positives: group.filter((j) => j !== i),
      junk: [],
      breakdown: group.length < LARGE_GROUP ? `group<${LARGE_GROUP}` : `group>=${LARGE_GROUP}`,
    };
  });
  return {
    name: "multiview-dev",
    images,
    labels,
    database: images.map((_, i) => i),
    queries,
    breakdowns: [`group<${LARGE_GROUP}`, `group>=${LARGE_GROUP}`],
  };
}

/** The 54 debian photos, sorted by folder and name. */
function debianOriginals(assets: string): { paths: string[]; labels: string[] } {
  const root = join(assets, "debian-photos");
  const paths: string[] = [];
  for (const folder of readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort()) {
    for (const file of readdirSync(join(root, folder)).sort()) {
      if (file.toLowerCase().endsWith(".jpg")) paths.push(join(root, folder, file));
    }
  }
  return { paths, labels: paths.map((p) => relative(root, p)) };
}

/** The five real view pairs of opencv-pairs, by file stem. */
const OPENCV_PAIRS = [
  ["aero1", "aero3"],
  ["basketball1", "basketball2"],
  ["box", "box_in_scene"],
  ["graf1", "graf3"],
  ["leuvenA", "leuvenB"],
] as const;

/** Index of each opencv-pairs image's partner, by original index. */
function pairPartners(labels: string[]): Map<number, number> {
  const byStem = new Map<string, number>();
  labels.forEach((l, i) => {
    const m = /^opencv-pairs\/(.+)\.jpg$/.exec(l);
    if (m) byStem.set(m[1]!, i);
  });
  const partners = new Map<number, number>();
  for (const [a, b] of OPENCV_PAIRS) {
    const ia = byStem.get(a);
    const ib = byStem.get(b);
    if (ia === undefined || ib === undefined) throw new Error(`opencv-pairs: ${a}/${b} missing`);
    partners.set(ia, ib);
    partners.set(ib, ia);
  }
  return partners;
}

/** debian-photos (b): each of the 10 opencv-pairs images queries the other 53; its partner is the positive. */
export function debianPairs(assets: string): QualitySet {
  const { paths, labels } = debianOriginals(assets);
  const partners = pairPartners(labels);
  const queries = [...partners.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([i, j]): QualityQuery => ({ image: i, positives: [j], junk: [], breakdown: "pairs" }));
  return {
    name: "debian-pairs",
    images: paths,
    labels,
    database: paths.map((_, i) => i),
    queries,
    breakdowns: ["pairs"],
  };
}

/**
 * A harsh transformation recipe: the random parameters are drawn from `rng` per image, so a seed
 * fixes every query. Each returns a low-quality JPEG.
 */
export interface Recipe {
  name: string;
  make(original: string, rng: SeededRandom): Promise<Buffer>;
}

function between(rng: SeededRandom, lo: number, hi: number): number {
  return lo + (hi - lo) * rng.uniform();
}

function quality(rng: SeededRandom, lo: number, hi: number): { quality: number } {
  return { quality: Math.round(between(rng, lo, hi)) };
}

/** A random crop holding about `area` of the image, aspect within ±30% of the original's. */
function cropBox(
  width: number,
  height: number,
  area: number,
  rng: SeededRandom,
): { left: number; top: number; width: number; height: number } {
  const aspect = between(rng, 0.7, 1.3);
  const w = Math.max(16, Math.min(width, Math.round(width * Math.sqrt(area * aspect))));
  const h = Math.max(16, Math.min(height, Math.round(height * Math.sqrt(area / aspect))));
  return {
    left: Math.floor(rng.uniform() * (width - w + 1)),
    top: Math.floor(rng.uniform() * (height - h + 1)),
    width: w,
    height: h,
  };
}

async function size(path: string): Promise<{ width: number; height: number }> {
  const meta = await sharp(path).metadata();
  return { width: meta.width, height: meta.height };
}

/** The recipes: every query is one of these applied to one original. */
export const RECIPES: readonly Recipe[] = [
  {
    // 20-50% of the area, shown at a random smaller size.
    name: "small-crop",
    async make(original, rng) {
      const { width, height } = await size(original);
      const box = cropBox(width, height, between(rng, 0.2, 0.5), rng);
      return sharp(original)
        .extract(box)
        .resize({ width: Math.round(box.width * between(rng, 0.6, 1)) })
        .jpeg(quality(rng, 20, 30))
        .toBuffer();
    },
  },
  {
    // A thumbnail: 15-30% of the width, JPEG 15-20.
    name: "downscale",
    async make(original, rng) {
      const { width } = await size(original);
      return sharp(original)
        .resize({ width: Math.round(width * between(rng, 0.15, 0.3)) })
        .jpeg(quality(rng, 15, 20))
        .toBuffer();
    },
  },
  {
    // Half to 80% of the area with strong brightness, saturation, hue and contrast changes.
    name: "colour",
    async make(original, rng) {
      const { width, height } = await size(original);
      const dark = rng.uniform() < 0.5;
      const grey = rng.uniform() < 0.5;
      return sharp(original)
        .extract(cropBox(width, height, between(rng, 0.5, 0.8), rng))
        .modulate({
          brightness: dark ? between(rng, 0.45, 0.65) : between(rng, 1.4, 1.8),
          saturation: grey ? between(rng, 0.1, 0.3) : between(rng, 1.8, 2.5),
          hue: Math.round(between(rng, -40, 40)),
        })
        .linear(between(rng, 0.5, 1.6), between(rng, -40, 40))
        .jpeg(quality(rng, 20, 30))
        .toBuffer();
    },
  },
  {
    // 6-15 degrees either way, then a crop inside the rotated frame (no background corners).
    name: "rotate-crop",
    async make(original, rng) {
      const deg = (rng.uniform() < 0.5 ? -1 : 1) * between(rng, 6, 15);
      const rotated = await sharp(original)
        .rotate(deg, { background: "#000000" })
        .toBuffer({ resolveWithObject: true });
      const { width, height } = await size(original);
      const t = (Math.abs(deg) * Math.PI) / 180;
      // The centred axis-aligned box inside a w×h frame rotated by t (small t, w·sin t < h·cos t).
      const iw = Math.floor((width * Math.cos(t) - height * Math.sin(t)) * between(rng, 0.7, 0.9));
      const ih = Math.floor((height * Math.cos(t) - width * Math.sin(t)) * between(rng, 0.7, 0.9));
      const cw = Math.max(16, iw);
      const ch = Math.max(16, ih);
      return sharp(rotated.data)
        .extract({
          left: Math.floor((rotated.info.width - cw) / 2),
          top: Math.floor((rotated.info.height - ch) / 2),
          width: cw,
          height: ch,
        })
        .jpeg(quality(rng, 20, 30))
        .toBuffer();
    },
  },
  {
    // Mirrored crop (50-80% of the area) with a strong Gaussian blur.
    name: "mirror-blur",
    async make(original, rng) {
      const { width, height } = await size(original);
      return sharp(original)
        .extract(cropBox(width, height, between(rng, 0.5, 0.8), rng))
        .flop()
        .blur(between(rng, 2, 4))
        .jpeg(quality(rng, 20, 30))
        .toBuffer();
    },
  },
  {
    // Grayscale crop (35-60% of the area) with harsh contrast.
    name: "gray-contrast",
    async make(original, rng) {
      const { width, height } = await size(original);
      return sharp(original)
        .extract(cropBox(width, height, between(rng, 0.35, 0.6), rng))
        .grayscale()
        .linear(between(rng, 1.5, 2.2), -between(rng, 60, 120))
        .jpeg(quality(rng, 15, 25))
        .toBuffer();
    },
  },
];

/**
 * debian-photos (a): every recipe applied once to each of the 54 photos (seeded), written under
 * `outDir`; the database is the 54 originals and each copy's positive is its original. For the
 * copies of an opencv-pairs photo, the real partner view is junk (neither right nor wrong).
 */
export async function debianCopies(
  assets: string,
  outDir: string,
  seed: number,
): Promise<QualitySet> {
  const { paths, labels } = debianOriginals(assets);
  const partners = pairPartners(labels);
  const folder = join(outDir, `debian-copies-seed${seed}`);
  mkdirSync(folder, { recursive: true });
  const images = [...paths];
  const allLabels = [...labels];
  const queries: QualityQuery[] = [];
  const rng = new SeededRandom(seed);
  for (const [i, original] of paths.entries()) {
    for (const recipe of RECIPES) {
      const file = join(folder, `${String(i).padStart(2, "0")}-${recipe.name}.jpg`);
      writeFileSync(file, await recipe.make(original, rng));
      queries.push({
        image: images.length,
        positives: [i],
        junk: partners.has(i) ? [partners.get(i)!] : [],
        breakdown: recipe.name,
      });
      images.push(file);
      allLabels.push(`${labels[i]}#${recipe.name}`);
    }
  }
  return {
    name: `debian-copies-s${seed}`,
    images,
    labels: allLabels,
    database: paths.map((_, i) => i),
    queries,
    breakdowns: RECIPES.map((r) => r.name),
  };
}
