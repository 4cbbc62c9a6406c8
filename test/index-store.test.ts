import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { io } from "../src/index/durable-io.ts";
import { fileIdentity } from "../src/index/file-hash.ts";
import { toHalfBits, widenHalf } from "../src/index/float16.ts";
import { type IndexEntry, IndexStore } from "../src/index/index-store.ts";
import { sha256OfFile, sha256OfFileSync } from "../src/io/file-sha256.ts";
import { descriptorFor, hashOf, seeded } from "./helpers/index-fixtures.ts";

const DIM = 16;
const MODEL = "test-model:sha256-0123:s3";
const here = import.meta.dirname;

const tempDir = () => mkdtempSync(join(tmpdir(), "sg-index-"));

function entry(path: string, size = 100, mtimeMs = 1700000000000.5): IndexEntry {
  return { path, size, mtimeMs, hash: hashOf(path) };
}

/** Random float32 bit patterns that are finite (no NaN/Inf), including subnormals and -0. */
function randomBits(dim: number, random: () => number): Float32Array {
  const u = new Uint32Array(dim);
  for (let i = 0; i < dim; i++) {
    let b: number;
    do b = Math.floor(random() * 2 ** 32) >>> 0;
    while (((b >>> 23) & 0xff) === 0xff);
    u[i] = b;
  }
  return new Float32Array(u.buffer);
}

const bytesOf = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

function rowOf(store: IndexStore, path: string): Float32Array {
  const row = store.rowOfPath(path);
  assert.notEqual(row, undefined, `${path} is searchable`);
  const m = store.matrix();
  return m.data.subarray(row! * m.cols, (row! + 1) * m.cols);
}

/** What a reader sees: path → descriptor bytes (hex), failures by path. */
function snapshot(dir: string): { rows: Map<string, string>; failed: string[] } {
  const s = IndexStore.open(dir, { readOnly: true });
  try {
    const m = s.matrix();
    const rows = new Map<string, string>();
    for (let r = 0; r < s.size; r++) {
      const p = s.entryAt(r).path;
      assert.equal(rows.has(p), false, `${p} appears once`);
      rows.set(p, bytesOf(m.data.subarray(r * m.cols, (r + 1) * m.cols)).toString("hex"));
    }
    return { rows, failed: s.failures().map((f) => f.path) };
  } finally {
    s.close();
  }
}

const isCode = (code: string, re?: RegExp) => (e: unknown) =>
  e instanceof SuperglobalError && e.code === code && (re === undefined || re.test(e.message));

test("index: create, add, reopen: entries and descriptors round-trip bit-exactly", () => {
  const dir = join(tempDir(), "photos.sgi");
  const random = seeded(1);
  const paths = [
    "/a/b.jpg",
    "/фото/été 2024/🌅.jpeg",
    "/x/with\nnewline.png",
    "/e/\u0065\u0301.jpg",
  ];
  const vectors = paths.map(() => randomBits(DIM, random));
  assert.equal(IndexStore.exists(dir), false);
  const extra = { modelSpec: { checkpoint: "/m/cvnet.pyth", scales: 3 } };
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM, extra });
  assert.equal(IndexStore.exists(dir), true);
  assert.deepEqual(IndexStore.readExtra(dir), extra);
  s.put(entry(paths[0]!, 1, 2.25), vectors[0]!);
  s.put(entry(paths[1]!, 3, 4), vectors[1]!);
  s.commit();
  s.add(entry(paths[2]!, 5, 6), vectors[2]!);
  s.add(entry(paths[3]!, 7, 8), vectors[3]!);
  const before = s.info();
  s.close();

  const r = IndexStore.open(dir, { model: MODEL });
  assert.equal(r.size, 4);
  assert.equal(r.dim, DIM);
  assert.equal(r.model, MODEL);
  assert.deepEqual(r.extra, extra);
  paths.forEach((p, i) => {
    assert.deepEqual(bytesOf(rowOf(r, p)), bytesOf(vectors[i]!));
    assert.deepEqual(bytesOf(r.vector(p)!), bytesOf(vectors[i]!));
    assert.equal(r.get(p)!.hash, hashOf(p));
  });
  assert.deepEqual(r.get(paths[0]!), {
    path: paths[0],
    size: 1,
    mtimeMs: 2.25,
    hash: hashOf(paths[0]!),
  });
  // "as given": the decomposed é is not normalised to the composed one
  assert.equal(r.get("/e/\u00e9.jpg"), undefined);
  const info = r.info();
  assert.equal(info.images, 4);
  assert.equal(info.failed, 0);
  assert.equal(info.created, before.created);
  assert.equal(info.updated, before.updated);
  assert.ok(info.bytes >= 4 * DIM * 4);
  r.close();
  // an empty index opens too
  const empty = IndexStore.create(join(tempDir(), "e.sgi"), { model: MODEL, dim: 3 });
  assert.deepEqual(empty.matrix(), { data: new Float32Array(0), rows: 0, cols: 3 });
  empty.close();
});

test("index: float16 storage halves the vector file and widens on load", () => {
  assert.equal(toHalfBits(1), 0x3c00);
  assert.equal(toHalfBits(-2), 0xc000);
  assert.equal(toHalfBits(65504), 0x7bff);
  assert.equal(toHalfBits(65520), 0x7c00); // rounds past the range
  assert.equal(toHalfBits(2 ** -24), 0x0001);
  assert.equal(toHalfBits(2 ** -25), 0x0000); // tie to even (0)
  assert.equal(toHalfBits(3 * 2 ** -25), 0x0002); // tie to even (2)
  assert.equal(toHalfBits(1 + 2 ** -11), 0x3c00); // tie to even
  assert.equal(toHalfBits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(toHalfBits(-0), 0x8000);
  const wide = new Float32Array(3);
  widenHalf(Uint16Array.from([0x3c00, 0x0001, 0xfbff]), wide);
  assert.deepEqual([...wide], [1, 2 ** -24, -65504]);

  const dir = join(tempDir(), "h.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM, dtype: "float16" });
  const v = descriptorFor("/h.jpg", DIM);
  s.add(entry("/h.jpg"), v);
  const expected = Float32Array.from(v, (x) => {
    const out = new Float32Array(1);
    widenHalf(Uint16Array.of(toHalfBits(x)), out);
    return out[0]!;
  });
  assert.deepEqual(rowOf(s, "/h.jpg"), expected);
  assert.throws(
    () => s.put(entry("/big.jpg"), new Float32Array(DIM).fill(1e6)),
    isCode("INVALID_ARGUMENT"),
  );
  s.close();
  assert.equal(statSync(join(dir, "vectors-1.f16")).size, DIM * 2);
  const r = IndexStore.open(dir, { readOnly: true });
  assert.equal(r.dtype, "float16");
  assert.deepEqual(r.matrix().data, expected);
  r.close();
});

test("index: vectors load and compact in bounded chunks (float32 and float16)", () => {
  const chunk = io.chunkBytes;
  io.chunkBytes = 3 * DIM * 4 + 5; // 3 float32 rows, 6 float16 rows per chunk
  try {
    for (const dtype of ["float32", "float16"] as const) {
      const dir = join(tempDir(), `${dtype}.sgi`);
      const s = IndexStore.create(dir, { model: MODEL, dim: DIM, dtype });
      for (let i = 0; i < 23; i++) s.put(entry(`/k/${i}.jpg`), descriptorFor(`/k/${i}.jpg`, DIM));
      s.commit();
      const want = (store: IndexStore) =>
        store.allPaths().map((p) => {
          const v = descriptorFor(p, DIM);
          if (dtype === "float16") widenHalf(Uint16Array.from(v, toHalfBits), v);
          return bytesOf(v).toString("hex");
        });
      const rows = (store: IndexStore) => {
        const m = store.matrix();
        return store
          .allPaths()
          .map((_, r) => bytesOf(m.data.subarray(r * DIM, (r + 1) * DIM)).toString("hex"));
      };
      s.remove(["/k/4.jpg", "/k/5.jpg", "/k/13.jpg", "/k/22.jpg"]);
      s.close();
      const r = IndexStore.open(dir);
      assert.deepEqual(rows(r), want(r)); // runs of live rows around the dead ones
      r.compact();
      assert.deepEqual(rows(r), want(r));
      r.close();
      const again = IndexStore.open(dir, { readOnly: true });
      assert.equal(again.size, 19);
      assert.deepEqual(rows(again), want(again));
      again.close();
    }
  } finally {
    io.chunkBytes = chunk;
  }
});

test("index: status says unchanged, changed or new; a changed entry is replaced", () => {
  const dir = join(tempDir(), "s.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM });
  s.add(entry("/p/1.jpg", 10, 1000), descriptorFor("v1", DIM));
  s.add(entry("/p/2.jpg", 20, 2000), descriptorFor("v2", DIM));
  assert.equal(s.status({ path: "/p/1.jpg", size: 10, mtimeMs: 1000 }), "unchanged");
  assert.equal(s.status({ path: "/p/1.jpg", size: 11, mtimeMs: 1000 }), "changed");
  assert.equal(s.status({ path: "/p/1.jpg", size: 10, mtimeMs: 1001 }), "changed");
  assert.equal(s.status({ path: "/p/3.jpg", size: 10, mtimeMs: 1000 }), "new");
  // replace /p/1.jpg: the old row is no longer there, the new one is
  s.add(entry("/p/1.jpg", 11, 1001), descriptorFor("v1 new", DIM));
  assert.equal(s.size, 2);
  assert.equal(s.deadRows, 1);
  assert.deepEqual(rowOf(s, "/p/1.jpg"), descriptorFor("v1 new", DIM));
  const m = s.matrix();
  const rows = [0, 1].map((r) => bytesOf(m.data.subarray(r * DIM, (r + 1) * DIM)).toString("hex"));
  assert.equal(rows.includes(bytesOf(descriptorFor("v1", DIM)).toString("hex")), false);
  assert.equal(s.status({ path: "/p/1.jpg", size: 11, mtimeMs: 1001 }), "unchanged");
  // staged changes are not visible before commit
  s.put(entry("/p/3.jpg"), descriptorFor("v3", DIM));
  assert.equal(s.get("/p/3.jpg"), undefined);
  s.close(); // close commits what is staged
  const r = IndexStore.open(dir, { model: MODEL });
  assert.equal(r.size, 3);
  assert.equal(r.deadRows, 1);
  assert.equal(r.get("/p/1.jpg")!.size, 11);
  assert.deepEqual(rowOf(r, "/p/1.jpg"), descriptorFor("v1 new", DIM));
  assert.deepEqual(rowOf(r, "/p/3.jpg"), descriptorFor("v3", DIM));
  r.close();
});

test("index: failed images are recorded with their reason, never searchable, retried when changed", () => {
  const dir = join(tempDir(), "f.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM });
  s.add(entry("/ok.jpg"), descriptorFor("ok", DIM));
  s.addFailed({
    path: "/bad.jpg",
    size: 5,
    mtimeMs: 50,
    hash: hashOf("bad"),
    reason: "not a JPEG",
  });
  s.addFailed({ path: "/unreadable.jpg", size: 0, mtimeMs: 60, hash: null, reason: "EACCES" });
  assert.equal(s.size, 1);
  assert.equal(s.rowOfPath("/bad.jpg"), undefined);
  assert.equal(s.status({ path: "/bad.jpg", size: 5, mtimeMs: 50 }), "unchanged");
  assert.equal(s.status({ path: "/bad.jpg", size: 6, mtimeMs: 50 }), "changed");
  s.close();
  const r = IndexStore.open(dir, { model: MODEL });
  const info = r.info();
  assert.equal(info.images, 1);
  assert.equal(info.failed, 2);
  assert.deepEqual(
    info.failures.map((f) => [f.path, f.reason, f.hash]),
    [
      ["/bad.jpg", "not a JPEG", hashOf("bad")],
      ["/unreadable.jpg", "EACCES", null],
    ],
  );
  // the file changed and now works: the failure goes, the entry comes
  r.add(entry("/bad.jpg", 6, 70), descriptorFor("fixed", DIM));
  assert.equal(r.getFailed("/bad.jpg"), undefined);
  // an image that used to work and now fails is no longer a result
  r.addFailed({ path: "/ok.jpg", size: 1, mtimeMs: 1, hash: null, reason: "truncated" });
  assert.equal(r.rowOfPath("/ok.jpg"), undefined);
  assert.equal(r.size, 1);
  r.close();
  const again = snapshot(dir);
  assert.deepEqual([...again.rows.keys()], ["/bad.jpg"]);
  assert.deepEqual(again.failed.sort(), ["/ok.jpg", "/unreadable.jpg"]);
});

test("index: remove, prune and compaction keep the right rows", () => {
  const dir = join(tempDir(), "c.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM });
  const paths = Array.from({ length: 20 }, (_, i) => `/c/${i}.jpg`);
  for (const p of paths) s.put(entry(p), descriptorFor(p, DIM));
  s.putFailed({ path: "/c/failed.jpg", size: 1, mtimeMs: 1, hash: null, reason: "r" });
  s.commit();
  s.matrix(); // loaded: removals must move rows in memory too
  assert.equal(s.remove(["/c/3.jpg", "/c/0.jpg", "/c/nope.jpg", "/c/failed.jpg"]), 3);
  assert.equal(s.size, 18);
  assert.equal(s.deadRows, 2);
  assert.equal(s.compactIfNeeded(0.25), false);
  const pruned = s.prune((p) => !p.endsWith("7.jpg") && p !== "/c/19.jpg");
  assert.deepEqual(pruned.sort(), ["/c/17.jpg", "/c/19.jpg", "/c/7.jpg"]);
  assert.equal(s.deadRows, 5);
  const check = (store: IndexStore) => {
    const live = paths.filter(
      (p) => !["/c/0.jpg", "/c/3.jpg", "/c/7.jpg", "/c/17.jpg", "/c/19.jpg"].includes(p),
    );
    assert.equal(store.size, live.length);
    for (const p of live) assert.deepEqual(rowOf(store, p), descriptorFor(p, DIM));
    assert.deepEqual(store.failures(), []);
  };
  check(s);
  assert.equal(s.compactIfNeeded(0.2), true);
  assert.equal(s.deadRows, 0);
  check(s);
  assert.deepEqual(readdirSync(dir).sort(), [
    "LOCK",
    "journal-2.log",
    "manifest.json",
    "vectors-2.f32",
  ]);
  assert.equal(statSync(join(dir, "vectors-2.f32")).size, 15 * DIM * 4);
  s.add(entry("/c/new.jpg"), descriptorFor("/c/new.jpg", DIM));
  s.close();
  const r = IndexStore.open(dir, { model: MODEL });
  assert.deepEqual(rowOf(r, "/c/new.jpg"), descriptorFor("/c/new.jpg", DIM));
  r.remove(["/c/new.jpg"]);
  check(r);
  r.compact();
  r.close();
  check(IndexStore.open(dir, { readOnly: true }));
});

test("index: another model identity or dimension is refused, naming the index and both", () => {
  const dir = join(tempDir(), "m.sgi");
  IndexStore.create(dir, { model: MODEL, dim: DIM }).close();
  for (const readOnly of [false, true]) {
    assert.throws(
      () => IndexStore.open(dir, { model: "other-model", readOnly }),
      (e: unknown) =>
        isCode("MODEL_MISMATCH")(e) &&
        (e as Error).message.includes(dir) &&
        (e as Error).message.includes(MODEL) &&
        (e as Error).message.includes("other-model"),
    );
  }
  assert.throws(
    () => IndexStore.openOrCreate(dir, { model: MODEL, dim: 32 }),
    isCode("MODEL_MISMATCH", /32/),
  );
  assert.throws(
    () => IndexStore.create(dir, { model: MODEL, dim: DIM }),
    isCode("INVALID_ARGUMENT", /already/),
  );
  assert.throws(() => IndexStore.open(join(dir, "nope")), isCode("NOT_FOUND"));
  const notEmpty = tempDir();
  writeFileSync(join(notEmpty, "photo.jpg"), "x");
  assert.throws(
    () => IndexStore.create(notEmpty, { model: MODEL, dim: DIM }),
    isCode("INVALID_ARGUMENT", /photo\.jpg/),
  );
  assert.throws(() => IndexStore.open(notEmpty), isCode("NOT_FOUND"));
  IndexStore.openOrCreate(dir, { model: MODEL, dim: DIM }).close();
});

test("index: a second writer gets BUSY; readers may open alongside; a dead holder's lock is taken over", async () => {
  const dir = join(tempDir(), "l.sgi");
  const w = IndexStore.create(dir, { model: MODEL, dim: DIM });
  w.add(entry("/1.jpg"), descriptorFor("1", DIM));
  assert.throws(
    () => IndexStore.open(dir),
    isCode("BUSY", new RegExp(`in use by process ${process.pid}`)),
  );
  const reader = IndexStore.open(dir, { readOnly: true });
  w.add(entry("/2.jpg"), descriptorFor("2", DIM));
  assert.equal(reader.size, 1); // its snapshot
  assert.throws(
    () => reader.add(entry("/3.jpg"), descriptorFor("3", DIM)),
    isCode("INVALID_ARGUMENT", /read-only/),
  );
  reader.close();
  w.close();
  assert.equal(existsSync(join(dir, "LOCK")), false);

  // A lock whose process has died (as after SIGKILL) is stale.
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"]);
  const pid = child.pid!;
  const exited = new Promise((done) => child.on("exit", done));
  child.kill("SIGKILL");
  await exited;
  const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  const lock = (p: number, extra: object = {}) =>
    JSON.stringify({
      pid: p,
      host: hostname(),
      boot,
      start: null,
      token: "00",
      since: new Date().toISOString(),
      ...extra,
    });
  writeFileSync(join(dir, "LOCK"), lock(pid));
  const taken = IndexStore.open(dir);
  assert.equal(taken.size, 2);
  taken.close();
  // so is one from before a reboot, or one whose pid now runs another process
  writeFileSync(join(dir, "LOCK"), lock(process.pid, { boot: "another-boot" }));
  IndexStore.open(dir).close();
  writeFileSync(join(dir, "LOCK"), lock(process.pid, { start: 1 }));
  IndexStore.open(dir).close();
  // a live one is not, nor one from another host (it cannot be checked)
  writeFileSync(join(dir, "LOCK"), lock(process.ppid));
  assert.throws(() => IndexStore.open(dir), isCode("BUSY", /delete .*LOCK/));
  writeFileSync(join(dir, "LOCK"), lock(pid, { host: "elsewhere" }));
  assert.throws(() => IndexStore.open(dir), isCode("BUSY", /elsewhere/));
  rmSync(join(dir, "LOCK"));
});

test("index: a journal or vector file cut at any byte reopens to exactly the committed prefix", () => {
  const base = tempDir();
  const dir = join(base, "t.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM });
  s.add(entry("/t/0.jpg"), descriptorFor("0", DIM));
  s.put(entry("/t/1.jpg"), descriptorFor("1", DIM));
  s.putFailed({ path: "/t/f.jpg", size: 1, mtimeMs: 2, hash: null, reason: "bad" });
  s.commit();
  const journal = join(dir, "journal-1.log");
  const vectors = join(dir, "vectors-1.f32");
  const j0 = statSync(journal).size;
  const v0 = statSync(vectors).size;
  const prefix = snapshot(dir);
  // the last batch: a replacement, a new entry, a removal
  s.put(entry("/t/0.jpg", 7, 7), descriptorFor("0 again", DIM));
  s.put(entry("/t/2.jpg"), descriptorFor("2", DIM));
  s.delete("/t/f.jpg");
  s.commit();
  s.close();
  const full = snapshot(dir);
  const j1 = statSync(journal).size;
  const v1 = statSync(vectors).size;
  const keepJ = readFileSync(journal);
  const keepV = readFileSync(vectors);
  const restore = () => {
    writeFileSync(journal, keepJ);
    writeFileSync(vectors, keepV);
  };
  // every cut of the last batch's journal bytes (its vectors whole, or cut too)
  for (let cut = j0; cut <= j1; cut++) {
    restore();
    truncateSync(journal, cut);
    if (cut % 3 === 0) truncateSync(vectors, v0 + ((cut * 7) % (v1 - v0 + 1)));
    const want = cut === j1 && cut % 3 !== 0 ? full : prefix;
    if (cut === j1 && cut % 3 === 0) continue; // whole journal with cut vectors cannot happen
    assert.deepEqual(snapshot(dir), want, `journal cut at ${cut}`);
    if (cut % 16 === 0 || cut === j1) {
      // the writer trims the tail and carries on
      const w = IndexStore.open(dir, { model: MODEL });
      assert.equal(statSync(journal).size, cut === j1 ? j1 : j0);
      w.add(entry("/t/after.jpg"), descriptorFor("after", DIM));
      w.close();
      const after = snapshot(dir);
      assert.equal(
        after.rows.get("/t/after.jpg"),
        bytesOf(descriptorFor("after", DIM)).toString("hex"),
      );
      assert.equal(after.rows.size, want.rows.size + 1);
    }
  }
  // garbage after the last commit is a torn tail too
  restore();
  appendFileSync(journal, Buffer.from("\x19\x00\x00\x00garbage that is no record"));
  assert.deepEqual(snapshot(dir), full);
  // but a damaged record before later committed ones is refused, not trimmed
  restore();
  const damaged = Buffer.from(keepJ);
  damaged[j0 - 40] = damaged[j0 - 40]! ^ 0xff;
  writeFileSync(journal, damaged);
  assert.throws(() => IndexStore.open(dir, { readOnly: true }), isCode("BAD_FILE", /damaged/));
  assert.throws(() => IndexStore.open(dir), isCode("BAD_FILE", /damaged/));
  assert.deepEqual(readFileSync(journal), damaged); // left as it was
  // a vector file shorter than its committed rows is refused
  restore();
  truncateSync(vectors, v1 - 1);
  assert.throws(() => IndexStore.open(dir, { readOnly: true }), isCode("BAD_FILE", /committed/));
});

test("index: a writer SIGKILLed at random moments loses nothing it reported committed", async () => {
  const dir = join(tempDir(), "k.sgi");
  const random = seeded(42);
  const script = join(here, "helpers", "index-writer.ts");
  const present = new Set<string>(); // reported added, not reported removed
  const absent = new Set<string>(); // reported removed
  // SUPERGLOBAL_KILL_TRIALS=50 for a longer soak
  const trials = Number(process.env["SUPERGLOBAL_KILL_TRIALS"] ?? 5);
  for (let trial = 0; trial < trials; trial++) {
    const child = spawn(
      process.execPath,
      ["--import", "tsx", script, dir, String(DIM), String(trial + 1), String(trial)],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const lines: string[] = [];
    let buffered = "";
    let ready: () => void;
    const started = new Promise<void>((done) => {
      ready = done;
    });
    child.stdout.setEncoding("utf8"); // whole characters, even when a chunk splits one
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split("\n");
      buffered = parts.pop()!;
      for (const line of parts) {
        if (line !== "ready") lines.push(line);
        if (lines.length === 1) ready();
      }
    });
    // "close": the process has exited and its stdout has been read to the end
    const exited = new Promise((done) => child.on("close", done));
    await started;
    // (it has committed once) readers opened while it writes see a consistent snapshot
    const until = Date.now() + 30 + random() * 250;
    while (Date.now() < until) {
      const snap = snapshot(dir);
      for (const [p, hex] of snap.rows)
        assert.equal(hex, bytesOf(descriptorFor(p, DIM)).toString("hex"));
      await new Promise((done) => setTimeout(done, random() * 20));
    }
    // a second writer, in another process, is refused while this one lives
    assert.throws(() => IndexStore.open(dir), isCode("BUSY", new RegExp(`process ${child.pid}`)));
    child.kill("SIGKILL");
    await exited;
    for (const line of lines) {
      if (line.startsWith("add ")) {
        for (const p of line.slice(4).split("\t")) present.add(p);
      } else if (line.startsWith("removing ")) {
        present.delete(line.slice(9)); // in doubt until "remove"
      } else if (line.startsWith("remove ")) {
        absent.add(line.slice(7));
      }
    }
    const snap = snapshot(dir);
    for (const p of present)
      assert.equal(snap.rows.get(p), bytesOf(descriptorFor(p, DIM)).toString("hex"), `${p} kept`);
    for (const p of absent) assert.equal(snap.rows.has(p), false, `${p} removed`);
    for (const [p, hex] of snap.rows)
      assert.equal(hex, bytesOf(descriptorFor(p, DIM)).toString("hex"));
  }
  // and a writer opens it (taking over the dead child's lock)
  IndexStore.open(dir, { model: "test-model" }).close();
});

test("index: a write error (disk full) is a clear IO_ERROR and leaves a valid index", () => {
  const dir = join(tempDir(), "n.sgi");
  const s = IndexStore.create(dir, { model: MODEL, dim: DIM });
  s.add(entry("/n/0.jpg"), descriptorFor("0", DIM));
  const write = io.write;
  let budget = 0;
  io.write = (fd, bytes, offset, length, position) => {
    if (budget <= 0)
      throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    const n = Math.min(length, budget);
    budget -= n;
    return write(fd, bytes, offset, n, position);
  };
  try {
    for (const allowed of [0, DIM * 4 + 10, DIM * 8, DIM * 8 + 30]) {
      budget = allowed; // fail in the vectors, between files, inside the journal
      s.put(entry("/n/1.jpg"), descriptorFor("1", DIM));
      s.put(entry("/n/2.jpg"), descriptorFor("2", DIM));
      assert.throws(
        () => s.commit(),
        isCode("IO_ERROR", /n\.sgi: could not commit .*no space left on the device/),
      );
      assert.equal(s.size, 1);
      assert.deepEqual([...snapshot(dir).rows.keys()], ["/n/0.jpg"]);
    }
  } finally {
    io.write = write;
  }
  s.add(entry("/n/3.jpg"), descriptorFor("3", DIM));
  s.remove(["/n/0.jpg"]);
  budget = 0;
  io.write = () => {
    throw Object.assign(new Error("ENOSPC"), { code: "ENOSPC" });
  };
  try {
    assert.throws(() => s.compact(), isCode("IO_ERROR", /compact the index \(it is unchanged\)/));
  } finally {
    io.write = write;
  }
  assert.deepEqual(readdirSync(dir).sort(), [
    "LOCK",
    "journal-1.log",
    "manifest.json",
    "vectors-1.f32",
  ]);
  s.close();
  assert.deepEqual([...snapshot(dir).rows.keys()], ["/n/3.jpg"]);
});

test("index: on a really full file system (tmpfs, as root) commits fail cleanly", (t) => {
  if (process.getuid?.() !== 0) return t.skip("needs root to mount a tmpfs");
  const mnt = tempDir();
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=160k", "tmpfs", mnt], { stdio: "ignore" });
  } catch {
    return t.skip("mount -t tmpfs is not permitted here");
  }
  try {
    const dir = join(mnt, "full.sgi");
    const dim = 1024; // 4 KiB rows
    const s = IndexStore.create(dir, { model: MODEL, dim });
    const committed: string[] = [];
    let failure: unknown;
    for (let i = 0; i < 100 && failure === undefined; i++) {
      const p = `/full/${i}.jpg`;
      try {
        s.add(entry(p), descriptorFor(p, dim));
        committed.push(p);
      } catch (error) {
        failure = error;
      }
    }
    assert.ok(isCode("IO_ERROR", /no space left on the device/)(failure), String(failure));
    assert.ok(committed.length > 5);
    assert.equal(s.size, committed.length);
    s.close();
    const r = IndexStore.open(dir, { model: MODEL });
    assert.deepEqual(
      [...r.entries()].map((e) => e.path),
      committed,
    );
    for (const p of committed) assert.deepEqual(rowOf(r, p), descriptorFor(p, dim));
    r.close();
  } finally {
    execFileSync("umount", [mnt]);
  }
});

test("index: sha256OfFile, sha256OfFileSync and fileIdentity read the file's sha256, size and mtime", async () => {
  const dir = tempDir();
  const file = join(dir, "ünï.bin");
  const bytes = Buffer.alloc(3 * 1024 * 1024 + 17);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff;
  writeFileSync(file, bytes);
  const want = createHash("sha256").update(bytes).digest("hex");
  assert.deepEqual(await sha256OfFile(file), { sha256: want, bytes: bytes.length });
  assert.deepEqual(sha256OfFileSync(file), { sha256: want, bytes: bytes.length });
  const id = await fileIdentity(file);
  const st = statSync(file);
  assert.deepEqual(id, { size: st.size, mtimeMs: st.mtimeMs, hash: want });
  const empty = join(dir, "empty");
  writeFileSync(empty, "");
  const none = createHash("sha256").digest("hex");
  assert.deepEqual(await sha256OfFile(empty), { sha256: none, bytes: 0 });
  assert.deepEqual(sha256OfFileSync(empty), { sha256: none, bytes: 0 });
  await assert.rejects(sha256OfFile(join(dir, "missing")), { code: "ENOENT" });
  assert.throws(() => sha256OfFileSync(join(dir, "missing")), { code: "ENOENT" });
  // an index folder copied elsewhere still opens (no absolute paths inside)
  const idx = join(dir, "a.sgi");
  IndexStore.create(idx, { model: MODEL, dim: DIM }).close();
  mkdirSync(join(dir, "b.sgi"));
  for (const name of readdirSync(idx)) copyFileSync(join(idx, name), join(dir, "b.sgi", name));
  IndexStore.open(join(dir, "b.sgi")).close();
});
