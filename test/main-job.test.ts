/**
 * The product's main job, end to end, as a user runs it: `superglobal index DIR --index X` with
 * the default model on a folder of real photos, then `superglobal search --index X QUERY`.
 * Transformed copies of each photo (crop, resize, JPEG re-encode, brightness) find it first;
 * indexing again adds nothing; a deleted file goes with --prune; a killed indexer resumes to the
 * index a clean run gives.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { Index } from "../src/app/photo-index.ts";
import { runCli } from "./helpers/cli.ts";
import { assetsDir } from "./helpers/shared.ts";

const photosDir = join(assetsDir, "debian-photos");
const available = readdirSync(assetsDir, { withFileTypes: true }).length > 0;
const skip = available ? {} : { skip: `test photos not found at ${photosDir}` };

const root = mkdtempSync(join(tmpdir(), "superglobal-main-job-"));
const photos = join(root, "photos");
const queries = join(root, "queries");
const cache = join(root, "cache");
/** Real photos, downscaled so the test stays quick (the model sees ≤ 384 px). */
const SOURCES = [
  "mate/Aqua.jpg",
  "darknet/dog.jpg",
  "darknet/eagle.jpg",
  "darknet/horses.jpg",
  "opencv-pairs/graf1.jpg",
  "opencv-pairs/box.jpg",
  "plasma/Kite.jpg",
  "lomiri/Bridge_by_Sander_Klootwijk.jpg",
];

const cli = (...args: string[]) => runCli(args, { SUPERGLOBAL_CACHE: cache });

before(async () => {
  if (!available) return;
  mkdirSync(photos, { recursive: true });
  mkdirSync(join(photos, "sub"), { recursive: true });
  mkdirSync(queries, { recursive: true });
  for (const [i, rel] of SOURCES.entries()) {
    const name = rel.split("/").pop() as string;
    // One file without an extension and one in a sub-folder: found by content, recursively.
    const dest = i === 0 ? join(photos, "no-extension") : join(photos, i % 2 ? "sub" : "", name);
    await sharp(join(photosDir, rel))
      .resize(384, 384, { fit: "inside" })
      .jpeg({ quality: 92 })
      .toFile(dest);
  }
  // Not images: a text file named .jpg, and an empty file; both must be ignored by the scan.
  writeFileSync(join(photos, "notes.jpg"), "not a photo\n");
  writeFileSync(join(photos, "empty"), "");
});

after(() => rmSync(root, { recursive: true, force: true }));

test(
  "index a folder with the default model, then find each photo by transformed copies",
  skip,
  async () => {
    const index = join(root, "photos.sgi");
    const first = cli("index", photos, "--index", index);
    assert.equal(first.status, 0, first.stderr);
    assert.match(
      first.stderr,
      /8 added, 0 updated, 0 unchanged, 0 removed, 0 failed; 8 searchable/,
    );

    const opened = await Index.open(index, { readOnly: true, cacheDir: cache });
    const paths = opened.paths();
    await opened.close();
    assert.equal(paths.length, 8);
    assert.ok(paths.some((p) => p.endsWith("/no-extension")));
    assert.ok(!paths.some((p) => p.endsWith("notes.jpg")));

    // Transformed copies as queries.
    const queryFiles: Array<{ query: string; original: string }> = [];
    for (const original of paths) {
      const image = sharp(original);
      const { width = 0, height = 0 } = await image.metadata();
      const base = original.split("/").pop() as string;
      const transforms: Array<[string, ReturnType<typeof sharp>]> = [
        [
          "crop",
          sharp(original).extract({
            left: Math.floor(width * 0.1),
            top: Math.floor(height * 0.1),
            width: Math.floor(width * 0.75),
            height: Math.floor(height * 0.75),
          }),
        ],
        ["small", sharp(original).resize(Math.floor(width * 0.6))],
        ["jpeg", sharp(original).jpeg({ quality: 25 })],
        ["bright", sharp(original).modulate({ brightness: 1.3 })],
      ];
      for (const [name, pipeline] of transforms) {
        const query = join(queries, `${base}-${name}.jpg`);
        await pipeline.jpeg({ quality: name === "jpeg" ? 25 : 90 }).toFile(query);
        queryFiles.push({ query, original });
      }
    }
    const result = cli(
      "search",
      "--index",
      index,
      "--json",
      "--top",
      "3",
      ...queryFiles.map((q) => q.query),
    );
    assert.equal(result.status, 0, result.stderr);
    const lines = result.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, queryFiles.length);
    for (const [i, line] of lines.entries()) {
      assert.equal(line.query, queryFiles[i]?.query);
      assert.equal(line.results.length, 3);
      assert.equal(
        line.results[0].path,
        queryFiles[i]?.original,
        `${line.query} found ${line.results[0].path}`,
      );
      assert.ok(line.results[0].score >= line.results[1].score);
    }
    // Plain output: rank, score, path.
    const plain = cli("search", "--index", index, "--top", "2", queryFiles[0]!.query);
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(
      plain.stdout,
      new RegExp(`^1\\t-?\\d+\\.\\d{4}\\t${queryFiles[0]!.original}\\n2\\t`),
    );

    // Indexing again adds nothing.
    const again = cli("index", photos, "--index", index);
    assert.equal(again.status, 0, again.stderr);
    assert.match(
      again.stderr,
      /0 added, 0 updated, 8 unchanged, 0 removed, 0 failed; 8 searchable/,
    );

    // info --json.
    const info = JSON.parse(cli("info", "--index", index, "--json").stdout);
    assert.equal(info.images, 8);
    assert.equal(info.failed, 0);
    assert.equal(info.dim, 1792);
    assert.ok(info.bytes > 8 * 1792 * 4);
    assert.match(info.model, /^mobilenetv2-1\.4-nsfwjs:/);

    // A deleted file leaves with --prune.
    const gone = paths[3] as string;
    rmSync(gone);
    const pruned = cli("index", photos, "--index", index, "--prune");
    assert.equal(pruned.status, 0, pruned.stderr);
    assert.match(
      pruned.stderr,
      /0 added, 0 updated, 7 unchanged, 1 removed, 0 failed; 7 searchable/,
    );
    const after = JSON.parse(cli("info", "--index", index, "--json").stdout);
    assert.equal(after.images, 7);
  },
);

test("a SIGKILLed indexer (2 jobs) resumes to the index a clean run gives", skip, async () => {
  const clean = join(root, "clean.sgi");
  assert.equal(cli("index", photos, "--index", clean).status, 0);
  const killed = join(root, "killed.sgi");
  // Killed mid-job: 1 s after its progress bar starts (the model is loaded by then).
  await new Promise<void>((resolve) => {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "index", photos, "--index", killed, "--jobs", "2"],
      { env: { ...process.env, SUPERGLOBAL_CACHE: cache }, stdio: ["ignore", "ignore", "pipe"] },
    );
    let timer: NodeJS.Timeout | undefined;
    child.stderr.once("data", () => {
      timer = setTimeout(() => child.kill("SIGKILL"), 1000);
    });
    child.on("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  // Resumed with worker threads too: their descriptors must equal the clean one-job run's.
  const resumed = cli("index", photos, "--index", killed, "--jobs", "2");
  assert.equal(resumed.status, 0, resumed.stderr);
  const a = await Index.open(clean, { readOnly: true, cacheDir: cache });
  const b = await Index.open(killed, { readOnly: true, cacheDir: cache });
  try {
    assert.deepEqual([...b.paths()].sort(), [...a.paths()].sort());
    for (const path of a.paths()) {
      assert.deepEqual(b.vector(path), a.vector(path), path);
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test(
  "camera-sized photos are brought down to the model's maxSide before extraction",
  skip,
  async () => {
    const { Extractor } = await import("../src/descriptor/extractor.ts");
    const big = await sharp(join(photosDir, "darknet/dog.jpg")).resize(2400).jpeg().toBuffer();
    const extractor = await Extractor.create({ cacheDir: cache, maxSide: 512, scales: 1 });
    try {
      assert.equal(extractor.options.maxSide, 512);
      const tensor = await extractor.prepare(big, { name: "big.jpg" });
      assert.equal(Math.max(tensor.width, tensor.height), 512);
      const { width = 0, height = 0 } = await sharp(big).metadata();
      assert.ok(Math.abs(tensor.width / tensor.height - width / height) < 0.01);
      // A small image is used as given.
      const small = await sharp(big).resize(300).jpeg().toBuffer();
      assert.equal((await extractor.prepare(small)).width, 300);
    } finally {
      await extractor.release();
    }
    // The default model's default is 1024; CVNet's is none (the paper's protocol).
    const { resolveOptions } = await import("../src/descriptor/options.ts");
    assert.equal(resolveOptions({}).maxSide, 1024);
    assert.equal(resolveOptions({ checkpoint: "x.pyth" }).maxSide, null);
  },
);
