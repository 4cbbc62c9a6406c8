import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { readMatrixF32, readMatrixI32, readNpy, writeNpy } from "../src/io/npy.ts";
import { fixture, manifest, sharedOnly } from "./helpers/shared.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tmp = mkdtempSync(join(tmpdir(), "superglobal-cli-search-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", ...args],
      { cwd: root },
    );
    return { code: 0, stderr };
  } catch (error) {
    const e = error as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? "" };
  }
}

interface RerankCase {
  M: number;
  K: number;
  beta: number;
  X: { file: string };
  Q: { file: string };
  initial_ranks: { file: string };
  final_ranks: { file: string };
}

function cases(): RerankCase[] {
  return manifest().rerank as RerankCase[];
}

/** The full-ranking search of case i, run once (tests may run alone, so each asks for it). */
const searches = new Map<number, Promise<string>>();
function fullSearch(i: number): Promise<string> {
  let done = searches.get(i);
  if (done === undefined) {
    const c = cases()[i]!;
    const out = join(tmp, `search${i}.npy`);
    done = cli(
      "search",
      ...["--db", fixture(c.X.file), "--queries", fixture(c.Q.file)],
      ...["--out", out, "--scores", join(tmp, `scores${i}.npy`)],
    ).then((run) => {
      assert.equal(run.code, 0, run.stderr);
      return out;
    });
    searches.set(i, done);
  }
  return done;
}

/** float64 dot product of query q and database row id. */
function score(X: ReturnType<typeof readMatrixF32>, Q: typeof X, q: number, id: number): number {
  let s = 0;
  for (let i = 0; i < X.cols; i++) s += Q.data[q * Q.cols + i]! * X.data[id * X.cols + i]!;
  return s;
}

test("search: full ranking matches the golden initial ranks up to ties", sharedOnly, async () => {
  for (const [i, c] of cases().entries()) {
    const got = readNpy(await fullSearch(i));
    const scoresOut = join(tmp, `scores${i}.npy`);
    const golden = readMatrixI32(fixture(c.initial_ranks.file));
    assert.equal(got.dtype, "int32");
    assert.deepEqual(got.shape, [golden.rows, golden.cols]);
    const scores = readNpy(scoresOut);
    assert.equal(scores.dtype, "float32");
    assert.deepEqual(scores.shape, [golden.rows, golden.cols]);
    const X = readMatrixF32(fixture(c.X.file));
    const Q = readMatrixF32(fixture(c.Q.file));
    const ids = got.data as Int32Array;
    const s = scores.data as Float32Array;
    for (let at = 0; at < ids.length; at++) {
      if (at % golden.cols !== 0) assert.ok(s[at - 1]! >= s[at]!, "scores are sorted");
      if (ids[at] === golden.data[at]) continue;
      // A different id only where both have the same score to float32 rounding.
      const q = Math.floor(at / golden.cols);
      const diff = score(X, Q, q, ids[at]!) - score(X, Q, q, golden.data[at]!);
      assert.ok(Math.abs(diff) < 1e-6, `${c.X.file}: position ${at} differs by ${diff}`);
    }
  }
});

test("search --top k: the first k of the full ranking, [nq, k]", sharedOnly, async () => {
  const c = cases()[2]!;
  const out = join(tmp, "top.npy");
  const run = await cli(
    "search",
    "--db",
    fixture(c.X.file),
    "--queries",
    fixture(c.Q.file),
    "--top",
    "25",
    "--out",
    out,
  );
  assert.equal(run.code, 0, run.stderr);
  const top = readMatrixI32(out);
  const full = readMatrixI32(await fullSearch(2));
  assert.deepEqual([top.rows, top.cols], [full.rows, 25]);
  for (let q = 0; q < top.rows; q++) {
    assert.deepEqual(
      top.data.subarray(q * 25, q * 25 + 25),
      full.data.subarray(q * full.cols, q * full.cols + 25),
    );
  }
});

test("search accepts float64 inputs", sharedOnly, async () => {
  const c = cases()[2]!;
  const X = readMatrixF32(fixture(c.X.file));
  const Q = readMatrixF32(fixture(c.Q.file));
  writeNpy(join(tmp, "X64.npy"), Float64Array.from(X.data), [X.rows, X.cols]);
  writeNpy(join(tmp, "Q64.npy"), Float64Array.from(Q.data), [Q.rows, Q.cols]);
  const out = join(tmp, "search64.npy");
  const run = await cli(
    "search",
    "--db",
    join(tmp, "X64.npy"),
    "--queries",
    join(tmp, "Q64.npy"),
    "--out",
    out,
  );
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(readMatrixI32(out).data, readMatrixI32(await fullSearch(2)).data);
});

test("rerank: the golden initial ranks give the golden final ranks", sharedOnly, async () => {
  for (const [i, c] of cases().entries()) {
    const out = join(tmp, `final${i}.npy`);
    const run = await cli(
      "rerank",
      ...["--db", fixture(c.X.file), "--queries", fixture(c.Q.file)],
      ...["--ranks", fixture(c.initial_ranks.file), "--out", out],
      ...["--M", String(c.M), "--K", String(c.K), "--beta", String(c.beta)],
    );
    assert.equal(run.code, 0, run.stderr);
    const got = readNpy(out);
    const golden = readMatrixI32(fixture(c.final_ranks.file));
    assert.equal(got.dtype, "int32");
    assert.deepEqual(got.shape, [golden.rows, golden.cols]);
    assert.deepEqual(got.data, golden.data, c.X.file);
  }
});

test(
  "search then rerank on a top-k list: [nq, k], the golden head and untouched tail",
  sharedOnly,
  async () => {
    const c = cases()[0]!; // M = 400, K = 9, beta = 0.15: the defaults
    const ranks = join(tmp, "top500.npy");
    const out = join(tmp, "final500.npy");
    let run = await cli(
      "search",
      "--db",
      fixture(c.X.file),
      "--queries",
      fixture(c.Q.file),
      "--top",
      "500",
      "--out",
      ranks,
    );
    assert.equal(run.code, 0, run.stderr);
    run = await cli(
      "rerank",
      "--db",
      fixture(c.X.file),
      "--queries",
      fixture(c.Q.file),
      "--ranks",
      ranks,
      "--out",
      out,
    );
    assert.equal(run.code, 0, run.stderr);
    const got = readMatrixI32(out);
    const golden = readMatrixI32(fixture(c.final_ranks.file));
    assert.equal(got.cols, 500);
    for (let q = 0; q < got.rows; q++) {
      assert.deepEqual(
        got.data.subarray(q * 500, q * 500 + 500),
        golden.data.subarray(q * golden.cols, q * golden.cols + 500),
      );
    }
  },
);

test("bad files and shapes: exit code 1 and a message naming the file", sharedOnly, async () => {
  const [c0, c1] = cases();
  const missing = join(tmp, "missing.npy");
  let run = await cli(
    "search",
    "--db",
    missing,
    "--queries",
    fixture(c0!.Q.file),
    "--out",
    join(tmp, "x.npy"),
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /missing\.npy: cannot open/);

  run = await cli(
    "search",
    "--db",
    fixture(c0!.X.file),
    "--queries",
    fixture(c1!.Q.file),
    "--out",
    join(tmp, "x.npy"),
  );
  assert.equal(run.code, 1);
  assert.match(
    run.stderr,
    new RegExp(
      `${c1!.Q.file}: queries have 2048 dimensions but the database .*${c0!.X.file} has 128`,
    ),
  );

  run = await cli(
    "search",
    "--db",
    fixture("README.md"),
    "--queries",
    fixture(c0!.Q.file),
    "--out",
    join(tmp, "x.npy"),
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /README\.md: not a \.npy file/);

  run = await cli(
    "rerank",
    ...["--db", fixture(c1!.X.file), "--queries", fixture(c1!.Q.file)],
    ...["--ranks", fixture(c0!.initial_ranks.file), "--out", join(tmp, "x.npy")],
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, new RegExp(`${c0!.initial_ranks.file}: ranks have shape \\(7, 3000\\)`));

  run = await cli(
    "rerank",
    ...["--db", fixture(c0!.X.file), "--queries", fixture(c0!.Q.file)],
    ...["--ranks", fixture(c0!.X.file), "--out", join(tmp, "x.npy")],
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /rerank0_X\.npy: expected int32 or int64 but found float32/);

  run = await cli(
    "rerank",
    ...["--db", fixture(c0!.X.file), "--queries", fixture(c0!.Q.file)],
    ...["--ranks", fixture(c0!.initial_ranks.file), "--out", join(tmp, "x.npy"), "--M", "0"],
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /--M must be an integer/);

  run = await cli(
    "search",
    ...["--db", fixture(c0!.X.file), "--queries", fixture(c0!.Q.file)],
    ...["--out", join(tmp, "no-such-dir", "x.npy")],
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /no-such-dir.x\.npy: cannot write/);
});

test("rerank: ids outside the database are rejected naming the ranks file", async () => {
  writeNpy(join(tmp, "X.npy"), new Float32Array([1, 0, 0, 1]), [2, 2]);
  writeNpy(join(tmp, "Q.npy"), new Float32Array([1, 0]), [1, 2]);
  writeNpy(join(tmp, "bad-ranks.npy"), new Int32Array([0, 2]), [1, 2]);
  const run = await cli(
    "rerank",
    ...["--db", join(tmp, "X.npy"), "--queries", join(tmp, "Q.npy")],
    ...["--ranks", join(tmp, "bad-ranks.npy"), "--out", join(tmp, "x.npy")],
  );
  assert.equal(run.code, 1);
  assert.match(run.stderr, /bad-ranks\.npy at \[0, 1\].*received number 2/);
});

test("search and rerank: a failed image's NaN row is never a result, and they say so", async () => {
  // db rows [bad, a, b]: the all-NaN row of an image that failed to extract.
  const X = join(tmp, "nan-db.npy");
  const Q = join(tmp, "nan-q.npy");
  writeNpy(X, new Float32Array([Number.NaN, Number.NaN, 1, 0, 0.6, 0.8]), [3, 2]);
  writeNpy(Q, new Float32Array([0.8, 0.6]), [1, 2]);
  const out = join(tmp, "nan-ranks.npy");
  const scores = join(tmp, "nan-scores.npy");
  let run = await cli(
    "search",
    "--db",
    X,
    "--queries",
    Q,
    "--top",
    "2",
    "--out",
    out,
    "--scores",
    scores,
  );
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual([...readMatrixI32(out).data], [2, 1]);
  assert.ok([...(readNpy(scores).data as Float32Array)].every(Number.isFinite));
  assert.match(run.stderr, /skipped 1 of the 3 rows of .*nan-db\.npy: not finite/);

  // Ranks made elsewhere that hold the bad row: it is dropped, with a note.
  const ranks = join(tmp, "nan-initial.npy");
  writeNpy(ranks, new Int32Array([0, 2, 1]), [1, 3]);
  const final = join(tmp, "nan-final.npy");
  run = await cli(
    "rerank",
    "--db",
    X,
    "--queries",
    Q,
    "--ranks",
    ranks,
    "--out",
    final,
    "--M",
    "3",
    "--K",
    "1",
  );
  assert.equal(run.code, 0, run.stderr);
  const got = readMatrixI32(final);
  assert.deepEqual([got.rows, got.cols], [1, 2]);
  assert.deepEqual([...got.data].sort(), [1, 2]);
  assert.match(
    run.stderr,
    /dropped 1 candidate row\(s\) of .*nan-db\.npy that are not finite \(row 0\)/,
  );

  // A query that is not finite is an error naming it.
  writeNpy(Q, new Float32Array([Number.NaN, 0.6]), [1, 2]);
  run = await cli("search", "--db", X, "--queries", Q, "--out", out);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /nan-q\.npy row 0 is not finite/);
  run = await cli("rerank", "--db", X, "--queries", Q, "--ranks", ranks, "--out", final);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /nan-q\.npy row 0 is not finite/);
});
