/**
 * extractMany, the one batch-extraction loop behind `extract` and `eval --dataset`, with stand-in
 * extractors: rows in input order, failures named and survived, non-finite descriptors counted as
 * failures, the cache, progress events, cancellation, and decode overlapping inference.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import sharp from "sharp";
import {
  type ExtractItem,
  type ExtractProgress,
  extractMany,
} from "../src/descriptor/extract-many.ts";
import { SuperglobalError } from "../src/errors.ts";
import type { Box } from "../src/image/crop.ts";
import { DescriptorStore } from "../src/index/store.ts";

const dir = mkdtempSync(join(tmpdir(), "sg-extract-many-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The stand-in's descriptor of a path: 4 values from its name. */
function vectorOf(path: string): Float32Array {
  const s = [...path].reduce((a, c) => a + c.charCodeAt(0), 0);
  return Float32Array.from([s, s % 7, path.length, 1]);
}

type Behaviour = "fail" | "nan" | "inf" | "bug" | "short";

/** An Extractor-like object: `behaviour` says which paths go wrong and how. */
class FakeExtractor {
  readonly calls: string[] = [];
  constructor(
    private readonly behaviour: Record<string, Behaviour> = {},
    readonly dim?: number,
  ) {}

  async extract(path: string, _input: { bbox?: Box } = {}): Promise<Float32Array> {
    this.calls.push(path);
    await sleep(1);
    return this.outcome(path);
  }

  protected outcome(path: string): Float32Array {
    switch (this.behaviour[path]) {
      case "fail":
        throw new SuperglobalError("BAD_IMAGE", "cannot decode the image", { input: "image" });
      case "bug":
        throw new TypeError("a bug");
      case "nan":
        return new Float32Array(4).fill(Number.NaN);
      case "inf":
        return Float32Array.from([1, Number.POSITIVE_INFINITY, 0, 0]);
      case "short":
        return new Float32Array(3);
      default:
        return vectorOf(path);
    }
  }
}

const rows = (data: Float32Array, dim: number) =>
  Array.from({ length: data.length / dim }, (_, i) => data.subarray(i * dim, (i + 1) * dim));

test("rows in input order; a failed image is named, its row NaN, and the job goes on", async () => {
  const extractor = new FakeExtractor({ "b.jpg": "fail" });
  const result = await extractMany(["a.jpg", "b.jpg", "c.jpg"], extractor);
  assert.equal(result.dim, 4, "taken from the first descriptor");
  const [a, b, c] = rows(result.descriptors, 4);
  assert.deepEqual(a, vectorOf("a.jpg"));
  assert.ok(b!.every(Number.isNaN));
  assert.deepEqual(c, vectorOf("c.jpg"));
  assert.equal(result.failures.length, 1);
  const [f] = result.failures;
  assert.equal(f!.index, 1);
  assert.equal(f!.path, "b.jpg");
  assert.equal(f!.message, "b.jpg: cannot decode the image");
  assert.ok(f!.error instanceof SuperglobalError);
  // Failed rows can take another value (the eval protocol gives them zeros).
  const zero = await extractMany(["b.jpg", "a.jpg"], extractor, { fill: 0 });
  assert.deepEqual(rows(zero.descriptors, 4)[0], new Float32Array(4));
});

test("a descriptor that is not finite is that image's failure, named, and not cached", async () => {
  const store = DescriptorStore.open(join(dir, "nan-cache"), 4, {});
  try {
    const extractor = new FakeExtractor({ "nan.jpg": "nan", "inf.jpg": "inf" });
    const result = await extractMany(["ok.jpg", "nan.jpg", "inf.jpg"], extractor, {
      cache: store,
    });
    assert.deepEqual(
      result.failures.map((f) => [f.index, f.path]),
      [
        [1, "nan.jpg"],
        [2, "inf.jpg"],
      ],
    );
    for (const f of result.failures) {
      assert.match(
        f.message,
        new RegExp(`^${f.path.replace(".", "\\.")}: the descriptor is not finite`),
      );
    }
    assert.ok(rows(result.descriptors, 4)[2]!.every(Number.isNaN), "the whole row is NaN");
    assert.equal(store.size, 1);
    assert.equal(store.has(resolve("nan.jpg")), false);
  } finally {
    store.close();
  }
});

test("errors that are not SuperglobalErrors are bugs: they stop the job", async () => {
  await assert.rejects(
    extractMany(["a.jpg", "bug.jpg", "c.jpg"], new FakeExtractor({ "bug.jpg": "bug" })),
    TypeError,
  );
  // So is a descriptor of the wrong length.
  await assert.rejects(
    extractMany(["a.jpg", "short.jpg"], new FakeExtractor({ "short.jpg": "short" })),
    (e: unknown) =>
      e instanceof SuperglobalError && /short\.jpg: .*3 values.*4 dimensions/.test(e.message),
  );
  await assert.rejects(
    extractMany(["a.jpg"], new FakeExtractor({}, 8)),
    (e: unknown) => e instanceof SuperglobalError && /4 values.*8 dimensions/.test(e.message),
  );
});

test("progress: every item once, in order of completion, done increasing by one to the total", async () => {
  const store = DescriptorStore.open(join(dir, "progress-cache"), 4, {});
  try {
    store.add(resolve("cached.jpg"), vectorOf("cached.jpg"));
    const items = ["a.jpg", "cached.jpg", "bad.jpg", "b.jpg", "a.jpg"];
    const events: ExtractProgress[] = [];
    const result = await extractMany(items, new FakeExtractor({ "bad.jpg": "fail" }), {
      cache: store,
      onProgress: (e) => events.push(e),
    });
    assert.equal(events.length, items.length);
    events.forEach((e, i) => {
      assert.equal(e.done, i + 1);
      assert.equal(e.total, items.length);
      assert.equal(e.index, i, "sequential: completion order is input order");
      assert.equal(e.path, items[i]);
      assert.ok(e.ms >= 0 && Number.isFinite(e.ms));
      assert.equal(e.ok, items[i] !== "bad.jpg");
      if (e.ok) assert.equal(e.error, undefined);
      else assert.equal(e.error, "bad.jpg: cannot decode the image");
    });
    assert.equal(events[1]!.cached, true);
    assert.equal(result.cached, 2, "cached.jpg, and a.jpg the second time");
  } finally {
    store.close();
  }
});

test("the cache: what it holds is not extracted again; keys are extract's", async () => {
  const cacheDir = join(dir, "keys-cache");
  const box: Box = [1, 2, 3, 4];
  const items: ExtractItem[] = [
    "a.jpg",
    { path: "q.jpg", bbox: box },
    { path: "k.jpg", key: "db/k" },
  ];
  const first = new FakeExtractor();
  let store = DescriptorStore.open(cacheDir, 4, {});
  const made = await extractMany(items, first, { cache: store });
  store.close();
  assert.deepEqual(first.calls, ["a.jpg", "q.jpg", "k.jpg"]);
  store = DescriptorStore.open(cacheDir, 4, {});
  try {
    assert.ok(store.has(resolve("a.jpg")));
    assert.ok(store.has(`${resolve("q.jpg")} 1,2,3,4`));
    assert.ok(store.has("db/k"));
    const again = new FakeExtractor();
    const reused = await extractMany(items, again, { cache: store });
    assert.deepEqual(again.calls, []);
    assert.deepEqual(reused.descriptors, made.descriptors);
    assert.equal(reused.cached, 3);
    // The dimension comes from the cache when nothing was extracted.
    assert.equal(reused.dim, 4);
  } finally {
    store.close();
  }
});

test("the dimension: from the option when every image fails", async () => {
  const result = await extractMany(
    ["x.jpg", "y.jpg"],
    new FakeExtractor({ "x.jpg": "fail", "y.jpg": "fail" }),
    {
      dim: 4,
    },
  );
  assert.equal(result.dim, 4);
  assert.equal(result.descriptors.length, 8);
  assert.ok(result.descriptors.every(Number.isNaN));
  const none = await extractMany([], new FakeExtractor(), { dim: 4 });
  assert.equal(none.descriptors.length, 0);
});

test("an AbortSignal stops the job between images", async () => {
  const controller = new AbortController();
  const extractor = new FakeExtractor();
  await assert.rejects(
    extractMany(["a.jpg", "b.jpg", "c.jpg"], extractor, {
      signal: controller.signal,
      onProgress: (e) => {
        if (e.done === 1) controller.abort();
      },
    }),
    (e: unknown) => (e as Error).name === "AbortError",
  );
  assert.deepEqual(extractor.calls, ["a.jpg"]);
});

/** Decode and inference as separate steps, with a timeline of when each starts and ends. */
class StagedFake extends FakeExtractor {
  readonly timeline: string[] = [];
  async decode(path: string, _input: { bbox?: Box }): Promise<string> {
    this.timeline.push(`decode ${path}`);
    await sleep(2);
    if (path === "undecodable.jpg") {
      throw new SuperglobalError("BAD_IMAGE", `${path}: cannot decode`, { input: path });
    }
    return path;
  }
  async infer(decoded: string): Promise<Float32Array> {
    this.timeline.push(`infer ${decoded}`);
    await sleep(15);
    this.timeline.push(`inferred ${decoded}`);
    return this.outcome(decoded);
  }
}

test("decode of the next image overlaps the current inference when the steps are separate", async () => {
  const extractor = new StagedFake();
  const items = ["a.jpg", "undecodable.jpg", "b.jpg", "c.jpg"];
  const result = await extractMany(items, extractor);
  assert.deepEqual(extractor.calls, [], "extract() itself is not used");
  assert.deepEqual(rows(result.descriptors, 4)[2], vectorOf("b.jpg"));
  assert.deepEqual(rows(result.descriptors, 4)[3], vectorOf("c.jpg"));
  assert.deepEqual(
    result.failures.map((f) => f.message),
    ["undecodable.jpg: cannot decode"],
  );
  const at = (event: string) => extractor.timeline.indexOf(event);
  // Each next image is being decoded while the one before is in inference.
  assert.ok(at("decode undecodable.jpg") < at("inferred a.jpg"), extractor.timeline.join("\n"));
  assert.ok(at("decode c.jpg") < at("inferred b.jpg"), extractor.timeline.join("\n"));
});

test("a box partly outside the image is clipped with a warning naming the image and the box", async () => {
  const image = join(dir, "small.png");
  await sharp({ create: { width: 20, height: 10, channels: 3, background: "#808080" } })
    .png()
    .toFile(image);
  const warnings: string[] = [];
  const result = await extractMany(
    [
      { path: image, bbox: [-5, 2, 30, 8] },
      { path: image, bbox: [1, 1, 5, 5] },
    ],
    new FakeExtractor(),
    { onWarning: (message) => warnings.push(message) },
  );
  assert.equal(result.failures.length, 0);
  assert.deepEqual(warnings, [
    `${image}: the box [-5, 2, 30, 8] reaches outside the 20x10 image; clipped to [0, 2, 20, 8]`,
  ]);
});
