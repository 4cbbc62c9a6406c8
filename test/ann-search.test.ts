/**
 * Approximate search: AnnSearch (the usearch seam) against the float64 brute-force oracle on
 * clustered data (ANN on iid random vectors is meaningless), and AnnSync, the ANN kept beside an
 * index's vectors: incremental updates, removals, compaction, a crash between the store's commit
 * and the ANN's save, and damaged or stale ANN files, which are rebuilt, never an error.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AnnSync } from "../src/app/ann-sync.ts";
import type { Float32Matrix } from "../src/core/matrix.ts";
import { SuperglobalError } from "../src/errors.ts";
import { IndexStore } from "../src/index/index-store.ts";
import { AnnSearch, annParameters, DEFAULT_ANN_PARAMETERS } from "../src/search/ann-search.ts";
import { bruteForceSearch } from "../src/search/brute-force.ts";
import { hashOf } from "./helpers/index-fixtures.ts";
import { mulberry32 } from "./helpers/random.ts";

const root = mkdtempSync(join(tmpdir(), "superglobal-ann-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** Clustered unit vectors: `clusters` Gaussian centres + unit noise (same-cluster cosine ≈ 0.5). */
function clustered(rows: number, dim: number, clusters: number, seed: number): Float32Matrix {
  const rnd = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const centres = Float64Array.from({ length: clusters * dim }, normal);
  const data = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const c = Math.floor(rnd() * clusters);
    let norm = 0;
    for (let i = 0; i < dim; i++) {
      const v = centres[c * dim + i]! + normal();
      data[r * dim + i] = v;
      norm += v * v;
    }
    for (let i = 0; i < dim; i++) data[r * dim + i]! /= Math.sqrt(norm);
  }
  return { data, rows, cols: dim };
}

const DIM = 96;
const ROWS = 6000;
const K = 50;
// Queries come from the same centres as the database (same seed for the centres).
const all = clustered(ROWS + 40, DIM, 60, 7);
const db: Float32Matrix = { data: all.data.subarray(0, ROWS * DIM), rows: ROWS, cols: DIM };
const queries: Float32Matrix = { data: all.data.subarray(ROWS * DIM), rows: 40, cols: DIM };
const oracle = bruteForceSearch(db, queries, K);
const query = (q: number) => queries.data.subarray(q * DIM, (q + 1) * DIM);

/** recall@K of `search` (ids per query) against `truth` ids per query. */
function recall(
  search: (q: number) => ArrayLike<number>,
  truth: (q: number) => ArrayLike<number>,
): number {
  let hit = 0;
  for (let q = 0; q < queries.rows; q++) {
    const want = new Set(Array.from(truth(q)));
    const got = Array.from(search(q)).slice(0, K);
    for (const id of got) if (want.has(id)) hit += 1;
  }
  return hit / (queries.rows * K);
}
const oracleIds = (q: number) => oracle.ids.subarray(q * K, (q + 1) * K);
const keys = (from: number, to: number) =>
  Int32Array.from({ length: to - from }, (_, i) => from + i);

function build(chunks: number): AnnSearch {
  const ann = AnnSearch.create(DIM);
  const step = Math.ceil(ROWS / chunks);
  for (let r0 = 0; r0 < ROWS; r0 += step) {
    const r1 = Math.min(ROWS, r0 + step);
    ann.add(keys(r0, r1), db.data.subarray(r0 * DIM, r1 * DIM));
  }
  return ann;
}

const full = build(1);

test("ANN recall@k against the float64 oracle is at least 0.98 at the default parameters", () => {
  assert.equal(full.size, ROWS);
  const r = recall((q) => full.search(query(q), K).keys, oracleIds);
  assert.ok(r >= 0.98, `recall@${K} ${r}`);
  // Best first, and the scores are the dot products (up to float32 rounding).
  const m = full.search(query(0), K);
  for (let j = 1; j < m.scores.length; j++) assert.ok(m.scores[j - 1]! >= m.scores[j]!);
  const id = m.keys[0]!;
  let dot = 0;
  for (let i = 0; i < DIM; i++) dot += query(0)[i]! * db.data[id * DIM + i]!;
  assert.ok(Math.abs(dot - m.scores[0]!) < 1e-5);
});

test("a graph built in several increments is as good as one built at once", () => {
  const parts = build(5);
  const r = recall((q) => parts.search(query(q), K).keys, oracleIds);
  const r1 = recall((q) => full.search(query(q), K).keys, oracleIds);
  assert.ok(r >= 0.98, `incremental recall ${r}`);
  assert.ok(Math.abs(r - r1) <= 0.01, `incremental ${r} vs full ${r1}`);
});

test("save and memory-mapped view give the same results; the view is read-only", () => {
  const file = join(root, "round-trip.usearch");
  full.save(file);
  assert.deepEqual(
    readdirSync(root).filter((n) => n.includes("tmp")),
    [],
  );
  const view = AnnSearch.open(file, DIM);
  assert.equal(view.size, ROWS);
  assert.equal(view.readOnly, true);
  for (const q of [0, 5, 17]) assert.deepEqual(view.search(query(q), K), full.search(query(q), K));
  assert.throws(() => view.add([ROWS], query(0)), { code: "INVALID_ARGUMENT" });
  const loaded = AnnSearch.open(file, DIM, {}, "load");
  loaded.add([ROWS + 1], query(1));
  assert.equal(loaded.search(query(1), 1).keys[0], ROWS + 1);
  // Another dimension is refused, not silently adopted.
  assert.throws(() => AnnSearch.open(file, DIM + 1), { code: "BAD_FILE" });
});

test("removed keys are never found; arguments are checked", () => {
  const ann = AnnSearch.create(DIM);
  ann.add(keys(0, 500), db.data.subarray(0, 500 * DIM));
  const top = ann.search(db.data.subarray(0, DIM), 5).keys;
  assert.equal(top[0], 0);
  assert.equal(ann.remove([0, 1, 2, 999]), 3);
  assert.equal(ann.size, 497);
  for (let q = 0; q < 20; q++) {
    const got = ann.search(db.data.subarray(q * DIM, (q + 1) * DIM), 20).keys;
    assert.ok(!got.includes(0) && !got.includes(1) && !got.includes(2));
  }
  const bad = (f: () => unknown) => assert.throws(f, SuperglobalError);
  bad(() => ann.add([3], db.data.subarray(0, DIM))); // key already held
  bad(() => ann.add([-1], db.data.subarray(0, DIM)));
  bad(() => ann.add([1.5], db.data.subarray(0, DIM)));
  bad(() => ann.add([600, 601], db.data.subarray(0, DIM))); // one vector for two keys
  bad(() => ann.add([600], new Float32Array(DIM).fill(Number.NaN))); // a failed row never enters
  bad(() => ann.search(new Float32Array(DIM - 1), 5));
  bad(() => ann.search(new Float32Array(DIM).fill(Number.POSITIVE_INFINITY), 5));
  bad(() => ann.search(query(0), 0));
  bad(() => AnnSearch.create(0));
  bad(() => annParameters({ connectivity: 1 }));
  bad(() => annParameters({ expansionSearch: 0.5 }));
  assert.deepEqual(annParameters(), { ...DEFAULT_ANN_PARAMETERS });
  assert.equal(AnnSearch.create(4).search(new Float32Array(4).fill(1), 3).keys.length, 0);
});

// --- AnnSync: the ANN beside an index's vectors ----------------------------------------------

let made = 0;
/** A store holding rows [from, to) of `db` as entries `/p/<r>.jpg`. */
function storeWith(from: number, to: number): IndexStore {
  const dir = join(root, `store-${made++}`);
  const store = IndexStore.create(dir, { model: "test-model", dim: DIM });
  putRows(store, from, to);
  return store;
}
function putRows(store: IndexStore, from: number, to: number): void {
  for (let r = from; r < to; r++) {
    const path = `/p/${r}.jpg`;
    store.put(
      { path, size: 1, mtimeMs: 1, hash: hashOf(path) },
      db.data.slice(r * DIM, (r + 1) * DIM),
    );
  }
  store.commit();
}
/** Row id of a store path → db row. */
const dbRow = (store: IndexStore, row: number) =>
  Number(/\/p\/(\d+)\.jpg/.exec(store.entryAt(row).path)![1]);

/** AnnSync results as db rows, checked: best first, exact scores, rows live in the store. */
function annRows(store: IndexStore, sync: AnnSync, q: number, k = K): number[] {
  const c = sync.search(query(q), k);
  for (let j = 0; j < c.ids.length; j++) {
    const row = c.ids[j]!;
    assert.ok(row >= 0 && row < store.size);
    const v = store.vectorAt(row);
    assert.deepEqual(c.vectors.subarray(j * DIM, (j + 1) * DIM), v);
    let dot = 0;
    for (let i = 0; i < DIM; i++) dot += query(q)[i]! * v[i]!;
    assert.equal(c.scores[j], Math.fround(dot));
    if (j > 0) assert.ok(c.scores[j - 1]! >= c.scores[j]!);
  }
  return Array.from(c.ids, (row) => dbRow(store, row));
}

/** The oracle over the store's live rows, as db rows. */
function oracleRows(store: IndexStore): (q: number) => number[] {
  const r = bruteForceSearch(store.matrix(), queries, K);
  return (q) => Array.from(r.ids.subarray(q * r.k, (q + 1) * r.k), (row) => dbRow(store, row));
}

function assertRecall(store: IndexStore, sync: AnnSync, what: string): void {
  const r = recall((q) => annRows(store, sync, q), oracleRows(store));
  assert.ok(r >= 0.98, `${what}: recall@${K} ${r}`);
}

const annFiles = (dir: string) =>
  readdirSync(dir)
    .filter((n) => n.startsWith("ann"))
    .sort();

test("AnnSync: built from the store, saved, reopened (writer loads, reader maps) without a rebuild", () => {
  const store = storeWith(0, 3000);
  const sync = AnnSync.open(store);
  assert.equal(sync.loadState, "missing");
  assert.equal(sync.usable(), false);
  sync.update();
  assert.equal(sync.held, 3000);
  assert.ok(sync.usable());
  assertRecall(store, sync, "fresh build");
  sync.save();
  assert.equal(sync.dirty, false);
  assert.equal(annFiles(store.dir).length, 3); // ann.json + one .usearch + one .keys
  const before = annRows(store, sync, 3);
  store.close();

  const writer = IndexStore.open(store.dir);
  const again = AnnSync.open(writer);
  assert.equal(again.loadState, "loaded");
  assert.equal(again.held, 3000);
  assert.deepEqual(annRows(writer, again, 3), before);
  writer.close();
  const reader = IndexStore.open(store.dir, { readOnly: true });
  const view = AnnSync.open(reader);
  assert.equal(view.loadState, "loaded");
  assert.ok(view.usable());
  assert.deepEqual(annRows(reader, view, 3), before);
  reader.close();
});

test("AnnSync: added, replaced and removed rows, then a compaction, stay correct (keys follow the renumbering)", () => {
  const store = storeWith(0, 2000);
  const sync = AnnSync.open(store);
  sync.update();
  sync.save();
  // More rows, some removed (their rows taken by the last rows), one replaced by another vector.
  putRows(store, 2000, 4000);
  const removed = new Set<number>();
  for (let r = 0; r < 4000; r += 3) removed.add(r);
  store.remove([...removed].map((r) => `/p/${r}.jpg`));
  // Before update: the saved graph lacks the new rows and holds dead ones; results are still right.
  assert.ok(!sync.usable() || sync.held === 2000);
  sync.update();
  assert.equal(sync.held, store.size);
  for (let q = 0; q < queries.rows; q++) {
    for (const r of annRows(store, sync, q)) assert.ok(!removed.has(r), `removed row ${r} found`);
  }
  assertRecall(store, sync, "after adds and removals");

  // Compaction renumbers the vector file; through `compact` the ANN keeps its graph.
  const held = sync.held;
  const generation = store.generation;
  assert.equal(
    sync.compact(() => store.compactIfNeeded(0)),
    true,
  );
  assert.equal(store.generation, generation + 1);
  assert.equal(sync.held, held);
  assert.ok(sync.usable());
  assertRecall(store, sync, "after compaction");
  sync.save();
  store.close();
  const reopened = IndexStore.open(store.dir);
  const again = AnnSync.open(reopened);
  assert.equal(again.loadState, "loaded");
  assertRecall(reopened, again, "reopened after compaction");
  reopened.close();
});

test("AnnSync: a crash between the store's commit and the ANN's save loses nothing", () => {
  const store = storeWith(0, 2000);
  const sync = AnnSync.open(store);
  sync.update();
  sync.save();
  // Committed to the store, then "killed" before the ANN was saved (it is just not saved).
  putRows(store, 2000, 2200);
  store.remove(["/p/5.jpg", "/p/6.jpg"]);
  store.close();

  // A reader searches the saved graph plus the rows it lacks, exactly, and skips the gone ones.
  const reader = IndexStore.open(store.dir, { readOnly: true });
  const view = AnnSync.open(reader);
  assert.equal(view.loadState, "loaded");
  assert.ok(view.usable());
  const newest = annRows(reader, view, 0, 1);
  const row2100 = db.data.subarray(2100 * DIM, 2101 * DIM);
  const exactTop = view.search(row2100, 1);
  assert.equal(dbRow(reader, exactTop.ids[0]!), 2100, "a row added after the save is found");
  assert.ok(newest.length === 1);
  assertRecall(reader, view, "stale graph + exact tail");
  reader.close();

  // The next writer catches up incrementally.
  const writer = IndexStore.open(store.dir);
  const caught = AnnSync.open(writer);
  assert.equal(caught.loadState, "loaded");
  assert.equal(caught.held, 2000);
  caught.update();
  assert.equal(caught.held, 2198);
  assertRecall(writer, caught, "caught up");
  // Far behind (more rows missing than a reader searches exactly): readers fall back to exact.
  putRows(writer, 2200, 3300);
  writer.close();
  const late = IndexStore.open(store.dir, { readOnly: true });
  const behind = AnnSync.open(late);
  assert.equal(behind.loadState, "loaded");
  assert.equal(behind.usable(), false);
  late.close();
});

test("AnnSync: a damaged, foreign or stale ANN is rebuilt, never an error or a crash", () => {
  const store = storeWith(0, 1500);
  const sync = AnnSync.open(store);
  sync.update();
  sync.save();
  store.close();
  const dir = store.dir;
  const annFile = () => join(dir, annFiles(dir).find((n) => n.endsWith(".usearch"))!);
  const reopen = (parameters = {}) => {
    const s = IndexStore.open(dir);
    const a = AnnSync.open(s, { parameters });
    return { s, a };
  };
  const rebuilt = (state: string, parameters = {}) => {
    const { s, a } = reopen(parameters);
    assert.equal(a.loadState, state);
    assert.equal(a.usable(), false);
    a.update();
    assert.equal(a.held, 1500);
    // A rebuild is a new graph (multi-threaded inserts are not deterministic): as good, not equal.
    assertRecall(s, a, `rebuilt (${state})`);
    a.save();
    s.close();
  };

  // A flipped byte in the middle of the graph file (usearch itself would not notice).
  const bytes = readFileSync(annFile());
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(annFile(), bytes);
  rebuilt("corrupt");
  // Truncated (usearch would crash the process on this).
  writeFileSync(annFile(), readFileSync(annFile()).subarray(0, 4096));
  rebuilt("corrupt");
  // The graph file is gone.
  rmSync(annFile());
  rebuilt("missing");
  // ann.json is not JSON.
  writeFileSync(join(dir, "ann.json"), "{ not json");
  rebuilt("corrupt");
  // Made with other parameters: rebuilt with the ones asked for.
  rebuilt("stale", { connectivity: 8 });
  // The store compacted without the ANN (another generation).
  const s = IndexStore.open(dir);
  s.remove(["/p/1.jpg", "/p/2.jpg"]);
  s.compact();
  s.close();
  const { s: s2, a } = reopen({ connectivity: 8 });
  assert.equal(a.loadState, "stale");
  a.update();
  assert.equal(a.held, 1498);
  assertRecall(s2, a, "rebuilt after an outside compaction");
  a.save();
  s2.close();
  // Only the current set of ANN files is left.
  assert.equal(annFiles(dir).length, 3);
});
