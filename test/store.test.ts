import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { DescriptorStore } from "../src/index/store.ts";

const vec = (seed: number, dim: number) =>
  Float32Array.from({ length: dim }, (_, i) => Math.sin(seed * 31 + i));

test("store: vectors survive a reopen, in insertion order", () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-store-"));
  const a = DescriptorStore.open(dir, 8, { model: "x" });
  for (let i = 0; i < 40; i++) a.add(`img${i}`, vec(i, 8));
  a.add("img3", vec(99, 8)); // a key already present is not stored twice
  a.close();
  const b = DescriptorStore.open(dir, 8, { model: "x" });
  assert.equal(b.size, 40);
  assert.deepEqual(b.get("img7"), vec(7, 8));
  assert.deepEqual(b.get("img3"), vec(3, 8));
  assert.equal(b.get("nope"), undefined);
  const m = b.matrix(["img1", "img0"]);
  assert.deepEqual(m.subarray(0, 8), vec(1, 8));
  assert.deepEqual(m.subarray(8), vec(0, 8));
  assert.throws(
    () => b.matrix(["missing"]),
    (e: unknown) => e instanceof SuperglobalError && /missing/.test(e.message),
  );
  b.close();
});

test("store: a torn write from a killed run is trimmed and the rest kept", () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-store-"));
  const a = DescriptorStore.open(dir, 4, {});
  a.add("a", vec(1, 4));
  a.add("b", vec(2, 4));
  a.close();
  // A crash after writing a third vector partly and no key, or a key line without its newline.
  appendFileSync(join(dir, "vectors.f32"), new Uint8Array(10));
  appendFileSync(join(dir, "keys.txt"), "c");
  const b = DescriptorStore.open(dir, 4, {});
  assert.equal(b.size, 2);
  assert.equal(statSync(join(dir, "vectors.f32")).size, 2 * 16);
  assert.equal(readFileSync(join(dir, "keys.txt"), "utf8"), "a\nb\n");
  b.add("c", vec(3, 4));
  b.close();
  const c = DescriptorStore.open(dir, 4, {});
  assert.deepEqual(c.get("c"), vec(3, 4));
  assert.deepEqual(c.get("b"), vec(2, 4));
  c.close();
});

test("store: a vector written without its key line is dropped", () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-store-"));
  const a = DescriptorStore.open(dir, 4, {});
  a.add("a", vec(1, 4));
  a.close();
  appendFileSync(join(dir, "vectors.f32"), new Uint8Array(new Float32Array(4).buffer));
  const b = DescriptorStore.open(dir, 4, {});
  assert.equal(b.size, 1);
  assert.equal(statSync(join(dir, "vectors.f32")).size, 16);
  b.close();
});

test("store: refuses a cache made with other settings, and bad vectors", () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-store-"));
  DescriptorStore.open(dir, 4, { scales: 3 }).close();
  assert.throws(
    () => DescriptorStore.open(dir, 4, { scales: 5 }),
    (e: unknown) => e instanceof SuperglobalError && e.message.includes(dir),
  );
  const s = DescriptorStore.open(dir, 4, { scales: 3 });
  assert.throws(() => s.add("x", new Float32Array(3)), SuperglobalError);
  assert.throws(() => s.add("x\ny", new Float32Array(4)), SuperglobalError);
  s.close();
});

test("store: a corrupt or foreign meta.json is BAD_FILE naming it; a folder it cannot make is named", () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-store-"));
  const meta = join(dir, "meta.json");
  for (const text of ['{"dim": 4, "settings": {', "null", "[1, 2]", '{"dim": "4"}']) {
    writeFileSync(meta, text);
    assert.throws(
      () => DescriptorStore.open(dir, 4, {}),
      (e: unknown) =>
        e instanceof SuperglobalError &&
        e.code === "BAD_FILE" &&
        e.input === meta &&
        e.message.startsWith(`${meta}: not a descriptor cache's meta.json (`),
      text,
    );
  }
  const file = join(dir, "a-file");
  writeFileSync(file, "");
  assert.throws(
    () => DescriptorStore.open(join(file, "cache"), 4, {}),
    (e: unknown) =>
      e instanceof SuperglobalError && e.code === "INVALID_ARGUMENT" && e.message.includes(file),
  );
});
