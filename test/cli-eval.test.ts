/**
 * `superglobal eval --gnd --ranks [--json]`, run as a user runs it (a child process), on the
 * official goldens: the printed percentages are numpy's rounding of the golden values, and the
 * JSON holds the unrounded fractions.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { readMatrixI32, writeNpy } from "../src/io/npy.ts";
import { runCli } from "./helpers/cli.ts";
import { assetsDir, fixture, sharedOnly } from "./helpers/shared.ts";

const cli = (...args: string[]) => runCli(["eval", ...args]);

const gnd = (dataset: string, ext = "pkl") =>
  join(assetsDir, "revisitop-gnd", `gnd_${dataset}.${ext}`);
const ranks = (dataset: string) => fixture(`map_${dataset}_ranks.npy`);

// np.around(value * 100, decimals=2) of the manifest's goldens, printed by numpy 2.4: mAP, mP@1/5/10.
const printed = {
  roxford5k: {
    Easy: ["44.06", "86.76", "74.41", "64.85"],
    Medium: ["37.88", "90.00", "81.71", "73.14"],
    Hard: ["28.86", "84.29", "66.86", "57.57"],
  },
  rparis6k: {
    Easy: ["48.19", "100.00", "96.00", "93.29"],
    Medium: ["44.10", "100.00", "100.00", "100.00"],
    Hard: ["35.45", "100.00", "99.43", "98.43"],
  },
};

// The manifest's mAP and mP@[1,5,10] (unrounded), for the JSON form.
const exact = {
  easy: [0.48187817825710844, 1.0, 0.9600000000000001, 0.932857142857143],
  medium: [0.44100594027396284, 1.0, 1.0, 1.0],
  hard: [0.35446993123401077, 1.0, 0.9942857142857142, 0.9842857142857143],
};

test("eval --gnd --ranks prints the paper-rounded table for both datasets", sharedOnly, () => {
  for (const [dataset, rows] of Object.entries(printed)) {
    const r = cli("--gnd", gnd(dataset), "--ranks", ranks(dataset));
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.match(lines[0]!, new RegExp(`^${dataset}: 70 queries`));
    for (const [label, values] of Object.entries(rows)) {
      const line = lines.find((l) => l.startsWith(`${label} `));
      assert.ok(line, `${dataset}: no ${label} row in\n${r.stdout}`);
      assert.deepEqual(line.trim().split(/\s+/).slice(1), values, `${dataset} ${label}`);
    }
    const maps = Object.values(rows).map((v) => v[0]);
    assert.ok(r.stdout.includes(`mAP E/M/H: ${maps.join(" / ")}`), r.stdout);
  }
});

test(
  "eval --json gives the unrounded fractions (and .json ground truth works too)",
  sharedOnly,
  () => {
    const r = cli("--gnd", gnd("rparis6k", "json"), "--ranks", ranks("rparis6k"), "--json");
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(out), ["easy", "medium", "hard"]);
    for (const [p, [map, ...mp]] of Object.entries(exact)) {
      assert.ok(Math.abs(out[p].map - map!) <= 1e-12, `${p} mAP ${out[p].map}`);
      assert.deepEqual(Object.keys(out[p].mp), ["1", "5", "10"]);
      [1, 5, 10].forEach((k, j) => {
        assert.ok(Math.abs(out[p].mp[k] - mp[j]!) <= 1e-12, `${p} mP@${k}`);
      });
    }
  },
);

test("eval: bad inputs exit 1 with a message naming the file", sharedOnly, () => {
  const dir = mkdtempSync(join(tmpdir(), "sg-cli-eval-"));
  const { rows, cols, data } = readMatrixI32(ranks("roxford5k"));

  // Database-major (the official layout) instead of query-major.
  const transposed = new Int32Array(rows * cols);
  for (let q = 0; q < rows; q++)
    for (let i = 0; i < cols; i++) transposed[i * rows + q] = data[q * cols + i]!;
  const tPath = join(dir, "transposed.npy");
  writeNpy(tPath, transposed, [cols, rows]);
  let r = cli("--gnd", gnd("roxford5k"), "--ranks", tPath);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /transposed\.npy.*4993 rows.*70 queries.*transpose/);

  // 1-based ids: 4993 is out of range for a full ranking of 4993 items.
  const oneBased = Int32Array.from(data, (id) => id + 1);
  const oPath = join(dir, "one-based.npy");
  writeNpy(oPath, oneBased, [rows, cols]);
  r = cli("--gnd", gnd("roxford5k"), "--ranks", oPath);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /one-based\.npy.*holds id 4993.*0\.\.4992/);

  // A float array, a missing ground truth, a missing option.
  const fPath = join(dir, "float.npy");
  writeNpy(fPath, new Float32Array(70 * 3), [70, 3]);
  r = cli("--gnd", gnd("roxford5k"), "--ranks", fPath);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /float\.npy.*int32 or int64/);
  r = cli("--gnd", join(dir, "gnd_missing.pkl"), "--ranks", ranks("roxford5k"));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /gnd_missing\.pkl/);
  r = cli("--gnd", gnd("roxford5k"));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--ranks/);
});
