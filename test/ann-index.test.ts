/**
 * The exact/ANN switch of `Index.search` and `superglobal search --search`, on a small real index
 * (the default model, a few photos) with the ANN threshold lowered so the ANN path runs: auto
 * picks exact below the threshold and ANN above, ANN results match the exact ones (the oracle at
 * this size), the ANN follows adds and removals, and `--json` says which method ran.
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Index } from "../src/app/photo-index.ts";
import { runCli } from "./helpers/cli.ts";
import { buildServerFixture, hasPhotos, type ServerFixture } from "./helpers/server-fixture.ts";

const skip = hasPhotos ? {} : { skip: "test photos not found" };
let fx: ServerFixture;

before(async () => {
  if (hasPhotos) fx = await buildServerFixture("superglobal-ann-index-");
});
after(() => {
  if (fx !== undefined) rmSync(fx.root, { recursive: true, force: true });
});

const photo = (name: string) => fx.files.get(name)!;

test("auto search: exact below the threshold, ANN above, same results as exact", skip, async () => {
  const index = await Index.open(fx.indexDir, { cacheDir: fx.cacheDir, annThreshold: 4 });
  try {
    const q = index.vector(photo("dog.jpg"))!;
    const ann = await index.search(q, { top: 8, rerank: "off" });
    assert.equal(ann.method, "ann");
    const exact = await index.search(q, { top: 8, rerank: "off", search: "exact" });
    assert.equal(exact.method, "exact");
    assert.deepEqual(
      ann.hits.map((h) => h.path),
      exact.hits.map((h) => h.path),
    );
    for (const [j, h] of ann.hits.entries()) {
      assert.ok(
        Math.abs(h.score - exact.hits[j]!.score) < 1e-4,
        `${h.score} vs ${exact.hits[j]!.score}`,
      );
    }
    // With reranking, too (the reranker gets the exact vectors of the ANN's candidates).
    const reranked = await index.search(photo("eagle.jpg"), { top: 3 });
    const exactReranked = await index.search(photo("eagle.jpg"), { top: 3, search: "exact" });
    assert.equal(reranked.method, "ann");
    assert.deepEqual(reranked.hits, exactReranked.hits);
  } finally {
    await index.close();
  }
  // The writer saved the ANN beside the vectors; a reader above the threshold uses it.
  assert.ok(existsSync(join(fx.indexDir, "ann.json")));
  const reader = await Index.open(fx.indexDir, {
    readOnly: true,
    cacheDir: fx.cacheDir,
    annThreshold: 8,
  });
  const below = await Index.open(fx.indexDir, {
    readOnly: true,
    cacheDir: fx.cacheDir,
    annThreshold: 9,
  });
  try {
    const q = reader.vector(photo("horses.jpg"))!;
    const r = await reader.search(q, { top: 1, rerank: "off" });
    assert.equal(r.method, "ann");
    assert.equal(r.hits[0]!.path, photo("horses.jpg"));
    const b = await below.search(q, { top: 1, rerank: "off" });
    assert.equal(b.method, "exact");
    assert.deepEqual(b.hits, r.hits);
    // Forced ANN below the threshold.
    assert.equal((await below.search(q, { top: 1, rerank: "off", search: "ann" })).method, "ann");
    await assert.rejects(reader.search(q, { search: "fast" as "ann" }), {
      code: "INVALID_ARGUMENT",
    });
  } finally {
    await reader.close();
    await below.close();
  }
  await assert.rejects(Index.open(fx.indexDir, { cacheDir: fx.cacheDir, annThreshold: -1 }), {
    code: "INVALID_ARGUMENT",
  });
  await assert.rejects(
    Index.open(fx.indexDir, { cacheDir: fx.cacheDir, annParameters: { connectivity: 0 } }),
    { code: "INVALID_ARGUMENT" },
  );
});

test(
  "updateAnn builds and saves the ANN for readers; refused on a read-only index",
  skip,
  async () => {
    rmSync(join(fx.indexDir, "ann.json"), { force: true });
    const writer = await Index.open(fx.indexDir, { cacheDir: fx.cacheDir });
    const reader = await Index.open(fx.indexDir, {
      readOnly: true,
      cacheDir: fx.cacheDir,
      annThreshold: 1,
    });
    try {
      const q = reader.vector(photo("dog.jpg"))!;
      // No saved ANN: the reader falls back to exact search rather than build one per process.
      assert.equal((await reader.search(q, { rerank: "off" })).method, "exact");
      await writer.updateAnn();
      assert.ok(existsSync(join(fx.indexDir, "ann.json")));
      await assert.rejects(reader.updateAnn(), { code: "INVALID_ARGUMENT" });
    } finally {
      await writer.close();
      await reader.close();
    }
    const fresh = await Index.open(fx.indexDir, {
      readOnly: true,
      cacheDir: fx.cacheDir,
      annThreshold: 1,
    });
    try {
      const r = await fresh.search(fresh.vector(photo("dog.jpg"))!, { rerank: "off" });
      assert.equal(r.method, "ann");
      assert.equal(r.hits[0]!.path, photo("dog.jpg"));
    } finally {
      await fresh.close();
    }
  },
);

test("the ANN follows adds and removals", skip, async () => {
  const index = await Index.open(fx.indexDir, { cacheDir: fx.cacheDir, annThreshold: 4 });
  try {
    const copy = join(fx.photos, "kite-copy.jpg");
    copyFileSync(photo("Kite.jpg"), copy);
    const summary = await index.add([copy]);
    assert.equal(summary.added, 1);
    const q = index.vector(copy)!;
    let r = await index.search(q, { top: 2, rerank: "off" });
    assert.equal(r.method, "ann");
    assert.deepEqual(new Set(r.hits.map((h) => h.path)), new Set([copy, photo("Kite.jpg")]));
    assert.equal(await index.remove([copy]), 1);
    r = await index.search(q, { top: 8, rerank: "off" });
    assert.equal(r.method, "ann");
    assert.ok(!r.hits.some((h) => h.path === copy), "a removed image is never a result");
    assert.equal(r.hits[0]!.path, photo("Kite.jpg"));
  } finally {
    await index.close();
  }
});

test(
  "superglobal search --json says which method ran; --search forces it; --ann-expansion is checked",
  skip,
  () => {
    const cli = (...args: string[]) =>
      runCli(["search", "--index", fx.indexDir, photo("box.jpg"), "--json", ...args], {
        SUPERGLOBAL_CACHE: fx.cacheDir,
      });
    const auto = cli();
    assert.equal(auto.status, 0, auto.stderr);
    const a = JSON.parse(auto.stdout);
    assert.equal(a.method, "exact"); // 8 images: far below the default threshold
    assert.equal(a.results[0].path, photo("box.jpg"));
    const forced = cli("--search", "ann");
    assert.equal(forced.status, 0, forced.stderr);
    const f = JSON.parse(forced.stdout);
    assert.equal(f.method, "ann");
    assert.deepEqual(
      f.results.map((r: { path: string }) => r.path),
      a.results.map((r: { path: string }) => r.path),
    );
    // The search expansion is a reader's setting: any value searches the same saved graph.
    const wide = cli("--search", "ann", "--ann-expansion", "512");
    assert.equal(wide.status, 0, wide.stderr);
    assert.deepEqual(JSON.parse(wide.stdout).results, f.results);
    const bad = cli("--search", "fast");
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--search/);
    const zero = cli("--search", "ann", "--ann-expansion", "0");
    assert.notEqual(zero.status, 0);
    assert.match(zero.stderr, /--ann-expansion/);
  },
);
