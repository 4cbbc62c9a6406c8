/**
 * Several images in flight (`--jobs`): extractMany's lanes keep their invariants with a
 * concurrent extractor, and the worker-thread pool gives byte for byte the descriptors (and file
 * hashes) of one Extractor, the same errors for bad files, and the same index.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import sharp from "sharp";
import { Index } from "../src/app/photo-index.ts";
import { type BatchExtractor, extractMany } from "../src/descriptor/extract-many.ts";
import { ExtractorPool } from "../src/descriptor/extract-pool.ts";
import { Extractor } from "../src/descriptor/extractor.ts";
import { SuperglobalError } from "../src/errors.ts";
import { mulberry32 } from "./helpers/random.ts";
import { assetsDir, hasShared, missingReason } from "./helpers/shared.ts";

const skip = hasShared ? {} : { skip: missingReason };
const root = mkdtempSync(join(tmpdir(), "superglobal-pool-"));
const cache = join(root, "cache");
const photos = join(root, "photos");
/** Small real photos: the default model at one scale keeps the test quick. */
const SOURCES = [
  "darknet/dog.jpg",
  "darknet/eagle.jpg",
  "opencv-pairs/graf1.jpg",
  "plasma/Kite.jpg",
];
const files: string[] = [];
const model = { scales: 1 as const, cacheDir: cache };

before(async () => {
  if (!hasShared) return;
  mkdirSync(photos, { recursive: true });
  for (const rel of SOURCES) {
    const dest = join(photos, rel.replace("/", "-"));
    await sharp(join(assetsDir, "debian-photos", rel))
      .resize(256, 256, { fit: "inside" })
      .jpeg({ quality: 90 })
      .toFile(dest);
    files.push(dest);
  }
  writeFileSync(join(photos, "broken.jpg"), readFileSync(files[0] as string).subarray(0, 600));
});

after(() => rmSync(root, { recursive: true, force: true }));

test("extractMany with concurrent lanes: every item once, in-order rows, failures in input order", async () => {
  const random = mulberry32(7);
  let inFlight = 0;
  let most = 0;
  // Answers after a random delay, so items finish out of order; "bad*" items fail.
  const slow: BatchExtractor = {
    dim: 2,
    async extract(path) {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, Math.floor(random() * 8)));
      inFlight -= 1;
      if (path.startsWith("bad")) {
        throw new SuperglobalError("BAD_IMAGE", `${path}: not an image`, { input: path });
      }
      const n = Number(path.slice(path.indexOf("-") + 1));
      return new Float32Array([n, -n]);
    },
  };
  const items = Array.from({ length: 40 }, (_, i) => (i % 7 === 3 ? `bad-${i}` : `img-${i}`));
  const seen: number[] = [];
  const dones: number[] = [];
  const result = await extractMany(items, slow, {
    concurrency: 4,
    onProgress: (e) => {
      seen.push(e.index);
      dones.push(e.done);
    },
  });
  assert.equal(most, 4, "four items were in flight at once");
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    items.map((_, i) => i),
    "one progress event per item",
  );
  assert.deepEqual(
    dones,
    items.map((_, i) => i + 1),
    "done counts 1..N in completion order",
  );
  assert.notDeepEqual(
    seen,
    [...seen].sort((a, b) => a - b),
    "items finished out of order",
  );
  items.forEach((item, i) => {
    const row = Array.from(result.descriptors.subarray(2 * i, 2 * i + 2));
    if (item.startsWith("bad")) assert.ok(row.every(Number.isNaN), `${item}: NaN row`);
    else assert.deepEqual(row, [i, -i], `${item}: its own row`);
  });
  assert.deepEqual(
    result.failures.map((f) => f.path),
    items.filter((p) => p.startsWith("bad")),
    "failures in input order",
  );
});

test("a bug in one lane stops the job, after the other lanes finish their item", async () => {
  let finishedAfterBug = 0;
  let bugThrown = false;
  const buggy: BatchExtractor = {
    dim: 1,
    async extract(path) {
      if (path === "x-2") {
        bugThrown = true;
        throw new TypeError("a bug");
      }
      await new Promise((r) => setTimeout(r, 5));
      if (bugThrown) finishedAfterBug += 1;
      return new Float32Array([1]);
    },
  };
  const added: string[] = [];
  await assert.rejects(
    extractMany(
      Array.from({ length: 20 }, (_, i) => `x-${i}`),
      buggy,
      {
        concurrency: 3,
        cache: { dim: 1, get: () => undefined, add: (key) => added.push(key) },
      },
    ),
    TypeError,
  );
  const addedAtReturn = added.length;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(added.length, addedAtReturn, "nothing reaches the cache after the job threw");
  assert.ok(finishedAfterBug <= 2, `lanes took no new items after the bug (${finishedAfterBug})`);
  assert.ok(added.length < 20);
});

test("extractMany refuses a concurrency that is not a positive integer", async () => {
  const one: BatchExtractor = { dim: 1, extract: async () => new Float32Array([1]) };
  for (const bad of [0, 1.5, -1]) {
    await assert.rejects(extractMany(["a"], one, { concurrency: bad }), /concurrency/);
  }
});

test("the pool's descriptors and hashes equal one Extractor's, byte for byte", skip, async () => {
  const single = await Extractor.create(model);
  const pool = await ExtractorPool.create(model, 2);
  try {
    assert.equal(pool.jobs, 2);
    assert.equal(pool.identity, single.identity);
    assert.equal(pool.dim, single.dim);
    const pooled = await Promise.all(files.map((f) => pool.describe(f)));
    for (const [i, file] of files.entries()) {
      const expected = await single.extract(file);
      const got = pooled[i]!;
      assert.deepEqual(
        Buffer.from(got.descriptor.buffer, got.descriptor.byteOffset, got.descriptor.byteLength),
        Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength),
        file,
      );
      assert.equal(got.sha256, createHash("sha256").update(readFileSync(file)).digest("hex"));
    }
    // Bytes the caller already read are described as they are: the path only names them.
    const bytes = readFileSync(files[2]!);
    const given = await pool.describe(join(photos, "not-on-disk.jpg"), { bytes });
    assert.deepEqual(given.descriptor, await single.extract(files[2]!));
    assert.equal(given.sha256, createHash("sha256").update(bytes).digest("hex"));
    // A box crops in the worker as it does in the extractor.
    const box: [number, number, number, number] = [10, 20, 200, 150];
    assert.deepEqual(
      await pool.extract(files[0]!, { bbox: box }),
      await single.extract(files[0]!, { bbox: box }),
    );
  } finally {
    await pool.release();
    await single.release();
  }
});

test("bad files fail in the pool with the error one Extractor gives", skip, async () => {
  const single = await Extractor.create(model);
  const pool = await ExtractorPool.create(model, 2);
  try {
    for (const bad of [join(photos, "broken.jpg"), join(photos, "missing.jpg")]) {
      const expected = await single.extract(bad).then(
        () => assert.fail("should fail"),
        (e: unknown) => e as SuperglobalError,
      );
      await assert.rejects(pool.extract(bad), (e: unknown) => {
        assert.ok(e instanceof SuperglobalError, String(e));
        assert.equal(e.code, expected.code);
        assert.equal(e.message, expected.message);
        assert.ok(e.message.includes(bad), e.message);
        return true;
      });
    }
    // The pool goes on after failures.
    assert.equal((await pool.extract(files[1]!)).length, single.dim);
  } finally {
    await pool.release();
    await single.release();
  }
  await assert.rejects(pool.extract(files[0]!), /released/);
});

test(
  "a model that cannot be made fails the pool's creation with the extractor's error",
  skip,
  async () => {
    const missing = join(root, "nope.pyth");
    await assert.rejects(ExtractorPool.create({ checkpoint: missing }, 2), (e: unknown) => {
      assert.ok(e instanceof SuperglobalError, String(e));
      assert.ok(e.message.includes(missing), e.message);
      return true;
    });
    await assert.rejects(ExtractorPool.create(model, 0), /jobs/);
  },
);

test("Index.add with jobs 2 builds the index that jobs 1 builds", skip, async () => {
  const all = [...files, join(photos, "broken.jpg")];
  const build = async (name: string, jobs: number) => {
    const index = await Index.open(join(root, name), { create: true, model, cacheDir: cache });
    const events: number[] = [];
    const summary = await index.add(all, { jobs, onProgress: (e) => events.push(e.done) });
    const vectors = new Map(index.paths().map((p) => [p, index.vector(p)]));
    const info = index.info();
    await index.close();
    return { summary, events, vectors, info };
  };
  const one = await build("one.sgi", 1);
  const two = await build("two.sgi", 2);
  assert.equal(two.summary.added, files.length);
  assert.deepEqual(two.summary, one.summary);
  assert.deepEqual(two.events, one.events);
  assert.deepEqual([...two.vectors.keys()].sort(), [...one.vectors.keys()].sort());
  for (const [path, v] of one.vectors) assert.deepEqual(two.vectors.get(path), v, path);
  assert.equal(two.info.failed, 1);
});
