import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import {
  npyInfo,
  readMatrixF32,
  readMatrixF32Into,
  readMatrixI32,
  readNpy,
  writeNpy,
} from "../src/io/npy.ts";
import { fixture, sharedOnly } from "./helpers/shared.ts";

const dir = mkdtempSync(join(tmpdir(), "sg-npy-"));

test("npy: every dtype round-trips with its shape", () => {
  const cases = [
    [new Float32Array([1.5, -2, 3.25, 4, 5, 6]), [2, 3]],
    [new Float64Array([Math.PI, -1e-300]), [2]],
    [new Int32Array([-7, 2 ** 31 - 1, 0, 1]), [4, 1]],
    [new BigInt64Array([-1n, 2n ** 40n]), [1, 2]],
    [new Uint8Array([0, 255, 7]), [3]],
    [new Float32Array(0), [0, 2048]],
  ] as const;
  for (const [data, shape] of cases) {
    const path = join(dir, "a.npy");
    writeNpy(path, data, [...shape]);
    const back = readNpy(path);
    assert.deepEqual(back.shape, [...shape]);
    assert.deepEqual(back.data, data);
    // Data starts on a 64-byte boundary, as NumPy writes it.
    const header = readFileSync(path);
    assert.equal((10 + header.readUInt16LE(8)) % 64, 0);
  }
});

test(
  "npy: reads NumPy's own files (golden fixtures) and float64 matrices as float32",
  sharedOnly,
  () => {
    const x = readMatrixF32(fixture("rerank2_X.npy"));
    assert.deepEqual([x.rows, x.cols], [800, 64]);
    const r = readMatrixF32(fixture("rerank0_r.npy")); // float64 on disk
    const raw = readNpy(fixture("rerank0_r.npy"));
    assert.equal(raw.dtype, "float64");
    assert.equal(r.data[5], Math.fround((raw.data as Float64Array)[5]!));
    const ranks = readMatrixI32(fixture("rerank0_ranks.npy"));
    assert.deepEqual([ranks.rows, ranks.cols], [7, 3000]);
    assert.deepEqual(npyInfo(fixture("img0_bgr.npy")), { dtype: "uint8", shape: [180, 240, 3] });
  },
);

test("npy: readMatrixF32Into places rows at an offset, converting float64", () => {
  const path = join(dir, "f64.npy");
  writeNpy(path, new Float64Array([1, 2, 3, 4, 5, 6]), [3, 2]);
  const target = new Float32Array(10).fill(-1);
  assert.equal(readMatrixF32Into(path, target, 2, 2), 3);
  assert.deepEqual([...target], [-1, -1, 1, 2, 3, 4, 5, 6, -1, -1]);
  assert.throws(() => readMatrixF32Into(path, target, 0, 3), SuperglobalError);
  assert.throws(() => readMatrixF32Into(path, new Float32Array(4), 0, 2), SuperglobalError);
});

test("npy: bad files fail with an error naming them", () => {
  const good = join(dir, "g.npy");
  writeNpy(good, new Float32Array(100), [10, 10]);
  const bytes = readFileSync(good);
  const truncated = join(dir, "t.npy");
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 3));
  const notNpy = join(dir, "n.npy");
  writeFileSync(notNpy, "hello, this is not numpy");
  const fortran = join(dir, "f.npy");
  writeFileSync(
    fortran,
    Buffer.from(
      bytes.toString("latin1").replace("'fortran_order': False", "'fortran_order': True "),
      "latin1",
    ),
  );
  for (const path of [truncated, notNpy, fortran, join(dir, "missing.npy")]) {
    assert.throws(
      () => readNpy(path),
      (e: unknown) => e instanceof SuperglobalError && e.message.includes(path),
    );
  }
  assert.throws(
    () => writeNpy(join(dir, "no-such-folder", "x.npy"), new Float32Array(1), [1]),
    (e: unknown) => e instanceof SuperglobalError && e.message.includes("no-such-folder"),
  );
  const cube = join(dir, "c.npy");
  writeNpy(cube, new Float32Array(8), [2, 2, 2]);
  assert.throws(() => readMatrixF32(cube), /2-D/);
  assert.throws(() => readMatrixI32(good), /int32 or int64/);
  const wide = join(dir, "w.npy");
  writeNpy(wide, new BigInt64Array([1n, 2n ** 40n]), [1, 2]);
  assert.throws(() => readMatrixI32(wide), /does not fit int32/);
  writeNpy(wide, new BigInt64Array([1n, -5n]), [1, 2]);
  assert.deepEqual([...readMatrixI32(wide).data], [1, -5]);
});

test("npy: NumPy reads what we write", {
  skip: hasNumpy() ? false : "python3 with numpy not found",
}, () => {
  const path = join(dir, "py.npy");
  writeNpy(path, new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  const out = execFileSync(
    "python3",
    [
      "-c",
      `import numpy as n; a=n.load(${JSON.stringify(path)}); print(a.dtype, a.shape, a.sum())`,
    ],
    {
      encoding: "utf8",
    },
  );
  assert.equal(out.trim(), "float32 (2, 3) 21.0");
});

function hasNumpy(): boolean {
  try {
    execFileSync("python3", ["-c", "import numpy"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
