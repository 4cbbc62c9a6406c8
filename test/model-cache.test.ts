/**
 * The user cache of models made at first use: the folder rule, reuse, rebuild of a corrupt or
 * stale file, and the in-memory fallback when the folder cannot be written.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CACHE_KEY, cachedModel, defaultCacheDir } from "../src/runtime/model-cache.ts";
import { OnnxGraph } from "../src/runtime/onnx-graph.ts";

/** A tiny real model (y = x + 1) recording `key`; counts how often it is built. */
function builder() {
  const calls = { count: 0 };
  const build = (key: string): Uint8Array => {
    calls.count += 1;
    const g = new OnnxGraph("tiny");
    const x = g.input("x", [1]);
    g.node("Add", [x, g.floatInit("one", [1], new Float32Array([1]))], {}, ["y"]);
    g.output("y", [1]);
    g.metadata(CACHE_KEY, key);
    return g.encode();
  };
  return { build, calls };
}

test("the cache folder follows SUPERGLOBAL_CACHE, then XDG_CACHE_HOME, then ~/.cache", () => {
  assert.equal(defaultCacheDir({ SUPERGLOBAL_CACHE: "/a", XDG_CACHE_HOME: "/b" }), "/a");
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: "/b" }), join("/b", "superglobal"));
  assert.match(defaultCacheDir({ XDG_CACHE_HOME: "relative" }), /\.cache\/superglobal$/);
  assert.match(defaultCacheDir({}), /\.cache\/superglobal$/);
});

test("a model is cached, reused, and rebuilt when the file is corrupt or made for another key", async () => {
  const dir = mkdtempSync(join(tmpdir(), "superglobal-cache-"));
  try {
    const { build, calls } = builder();
    const first = await cachedModel("tiny", "k1", build, { cacheDir: dir });
    assert.equal(first.fromCache, false);
    assert.equal(first.cachePath, join(dir, "tiny.onnx"));
    assert.deepEqual(readFileSync(join(dir, "tiny.onnx")), Buffer.from(first.model));
    const second = await cachedModel("tiny", "k1", build, { cacheDir: dir });
    assert.equal(second.fromCache, true);
    assert.deepEqual(Buffer.from(second.model), readFileSync(join(dir, "tiny.onnx")));
    assert.equal(calls.count, 1);
    for (const corrupt of [
      first.model.subarray(0, first.model.length - 5),
      new TextEncoder().encode("garbage"),
      new Uint8Array(0),
    ]) {
      writeFileSync(join(dir, "tiny.onnx"), corrupt);
      const rebuilt = await cachedModel("tiny", "k1", build, { cacheDir: dir });
      assert.equal(rebuilt.fromCache, false);
      assert.deepEqual(readFileSync(join(dir, "tiny.onnx")), Buffer.from(first.model));
    }
    // Another key (say, a new whitening) never reads the old file.
    const other = await cachedModel("tiny", "k2", build, { cacheDir: dir });
    assert.equal(other.fromCache, false);
    assert.equal((await cachedModel("tiny", "k2", build, { cacheDir: dir })).fromCache, true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an unwritable cache folder falls back to building in memory", async () => {
  const dir = mkdtempSync(join(tmpdir(), "superglobal-cache-"));
  try {
    const blocker = join(dir, "a-file");
    writeFileSync(blocker, "");
    const { build } = builder();
    const result = await cachedModel("tiny", "k", build, { cacheDir: join(blocker, "cache") });
    assert.equal(result.fromCache, false);
    assert.equal(result.cachePath, null);
    assert.ok(result.model.length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
