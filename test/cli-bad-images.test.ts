/**
 * Bad and unusual images through `superglobal index`: every format and pixel layout the decoder
 * takes is indexed; every broken file (corrupt, truncated, empty, text named .jpg, a 2.5-gigapixel
 * header bomb as PNG and JPEG) is listed in the summary with its reason on one line, the job
 * finishes with exit code 1, and the whole job's peak RSS stays bounded. The files are made by
 * helpers/image-zoo.ts.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import sharp from "sharp";
import {
  defaultWhiteningReady,
  peakRssPreload,
  precreateIndex,
  runCli,
  snapshot,
} from "./helpers/crash-harness.ts";
import { writeImageZoo } from "./helpers/image-zoo.ts";
import { assetsDir } from "./helpers/shared.ts";

const root = mkdtempSync(join(tmpdir(), "superglobal-bad-images-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** The job's peak RSS limit: the model and runtime take ~300 MB; images here are small. */
const RSS_LIMIT_MIB = 1024;

test("superglobal index: good images indexed, broken ones listed with their reason, memory bounded", async (t) => {
  const photo = join(assetsDir, "debian-photos", "darknet", "dog.jpg");
  // A real photo when the shared assets are here, else a generated one (noise over a gradient).
  let source = photo;
  if (!existsSync(photo)) {
    source = join(root, "source.png");
    const px = Buffer.from(
      Array.from({ length: 200 * 150 * 3 }, (_, i) => (i * 7 + ((i * 2654435761) >>> 27)) & 0xff),
    );
    await sharp(px, { raw: { width: 200, height: 150, channels: 3 } })
      .png()
      .toFile(source);
  }
  const zooDir = join(root, "zoo");
  const zoo = await writeImageZoo(zooDir, source);
  const cache = join(root, "cache");
  const index = join(root, "zoo.sgi");
  if (!defaultWhiteningReady()) await precreateIndex(index, cache);
  const rssFile = join(root, "peak-rss");
  const explicit = zoo.filter((z) => !z.scanned).map((z) => join(zooDir, z.name));
  const run = await runCli(
    ["index", zooDir, ...explicit, "--index", index],
    { ...process.env, SUPERGLOBAL_CACHE: cache, SUPERGLOBAL_PEAK_RSS_FILE: rssFile },
    undefined,
    ["--import", peakRssPreload],
  );
  const good = zoo.filter((z) => z.valid);
  const broken = zoo.filter((z) => !z.valid);
  assert.equal(run.code, 1, run.stderr);
  assert.doesNotMatch(run.stderr, /unexpected error/);
  assert.match(
    run.stderr,
    new RegExp(
      `indexed ${zoo.length} image file\\(s\\) into .*: ${good.length} added, 0 updated, 0 unchanged, 0 removed, ${broken.length} failed; ${good.length} searchable`,
    ),
  );
  // The summary: one line each, the libvips error log folded onto it (it used to spill its
  // repeated lines over several).
  const lines = run.stderr.trimEnd().split("\n");
  const failedLines = lines.slice(lines.findIndex((l) => l.startsWith("indexed ")) + 1);
  assert.equal(failedLines.length, broken.length, run.stderr);
  for (const l of failedLines) assert.match(l, /^ {2}failed \//);
  for (const z of broken) {
    const path = join(zooDir, z.name);
    const line = failedLines.find((l) => l.startsWith(`  failed ${path}: `));
    assert.ok(line !== undefined, `${z.name} is listed: ${run.stderr}`);
    assert.match(line, z.reason!, z.name);
  }
  const snap = snapshot(index)!;
  assert.deepEqual([...snap.rows.keys()].sort(), good.map((z) => join(zooDir, z.name)).sort());
  assert.deepEqual([...snap.failed].sort(), broken.map((z) => join(zooDir, z.name)).sort());
  const peakMiB = Number(readFileSync(rssFile, "utf8")) / 1024;
  t.diagnostic(`peak RSS of the job: ${peakMiB.toFixed(0)} MiB`);
  assert.ok(peakMiB > 50 && peakMiB < RSS_LIMIT_MIB, `peak RSS ${peakMiB.toFixed(0)} MiB`);
});
