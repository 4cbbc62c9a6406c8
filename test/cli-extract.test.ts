/**
 * `superglobal build-model` and `superglobal extract`, run as a user runs them (child processes):
 * descriptors of the fixture images in input order, equal to the library's, a corrupt file in the
 * middle reported by name with a NaN row and exit code 1, and the saved model giving the same rows.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { DESCRIPTOR_DIM, Extractor } from "../src/descriptor/extractor.ts";
import { readNpy } from "../src/io/npy.ts";
import { runCli } from "./helpers/cli.ts";
import { fixture, fixturesDir, manifest, sharedOnly } from "./helpers/shared.ts";

const dir = mkdtempSync(join(tmpdir(), "superglobal-cli-extract-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const cli = (...args: string[]) => runCli(args);

test(
  "build-model, then extract from the checkpoint and from the model: same rows, bad file named",
  sharedOnly,
  async () => {
    const model = join(dir, "r50.onnx");
    const built = cli(
      "build-model",
      "--checkpoint",
      fixture("cvnet_r50_random.pyth"),
      "--out",
      model,
    );
    assert.equal(built.status, 0, built.stderr);
    assert.match(built.stderr, /wrote .*r50\.onnx \(R50, relup true, rgem true, gemp true/);

    const images = (manifest().images as { image: string }[]).map((im) =>
      join(fixturesDir, "images", im.image),
    );
    assert.equal(images.length, 5);
    const corrupt = join(dir, "corrupt.png");
    writeFileSync(corrupt, "\x89PNG\r\n\x1a\n but then nothing a decoder wants");
    const inputs = [...images.slice(0, 2), corrupt, ...images.slice(2)];

    // What the library gives for the same files.
    const extractor = await Extractor.create({ model, threads: 2 });
    const expected: Float32Array[] = [];
    try {
      for (const path of images) expected.push(await extractor.extract(path));
    } finally {
      await extractor.release();
    }

    const rows = (out: string) => {
      const npy = readNpy(out);
      assert.deepEqual(npy.shape, [inputs.length, DESCRIPTOR_DIM]);
      return npy.data as Float32Array;
    };
    const check = (data: Float32Array, label: string) => {
      for (const [i, path] of inputs.entries()) {
        const row = data.subarray(i * DESCRIPTOR_DIM, (i + 1) * DESCRIPTOR_DIM);
        if (path === corrupt) assert.ok(row.every(Number.isNaN), `${label}: row ${i} not NaN`);
        else assert.deepEqual(row, expected[images.indexOf(path)], `${label}: row ${i} (${path})`);
      }
    };

    const fromCheckpoint = join(dir, "from-checkpoint.npy");
    const a = cli(
      "extract",
      ...inputs,
      "--checkpoint",
      fixture("cvnet_r50_random.pyth"),
      "--threads",
      "2",
      "--out",
      fromCheckpoint,
    );
    assert.equal(a.status, 1, a.stderr);
    assert.equal(a.stdout, "");
    assert.match(a.stderr, /extract \[/, "progress on stderr");
    assert.match(a.stderr, new RegExp(`failed .*${corrupt.replaceAll(".", "\\.")}.*cannot decode`));
    assert.match(a.stderr, /1 of 6 image\(s\) failed/);
    check(rows(fromCheckpoint), "--checkpoint");

    const fromModel = join(dir, "from-model.npy");
    const cache = join(dir, "cache");
    const b = cli(
      "extract",
      ...inputs,
      "--model",
      model,
      "--threads",
      "2",
      "--cache",
      cache,
      "--out",
      fromModel,
    );
    assert.equal(b.status, 1, b.stderr);
    check(rows(fromModel), "--model");
    // The cache holds the good rows (not the failed one); a rerun reads them back.
    const keys = readFileSync(join(cache, "keys.txt"), "utf8").trim().split("\n");
    assert.deepEqual(
      keys,
      images.map((p) => resolve(p)),
    );
    const again = join(dir, "again.npy");
    const b2 = cli("extract", ...inputs, "--model", model, "--cache", cache, "--out", again);
    assert.equal(b2.status, 1, b2.stderr);
    check(rows(again), "--cache rerun");
    assert.equal(
      readFileSync(join(cache, "keys.txt"), "utf8").trim().split("\n").length,
      images.length,
    );
    // --list: paths from a file (after any arguments), blank lines skipped; same rows.
    const list = join(dir, "list.txt");
    writeFileSync(list, `${inputs.slice(1).join("\n")}\n\n`);
    const listed = join(dir, "listed.npy");
    const l = cli(
      "extract",
      inputs[0] as string,
      "--list",
      list,
      "--model",
      model,
      "--cache",
      cache,
      "--out",
      listed,
    );
    assert.equal(l.status, 1, l.stderr);
    check(rows(listed), "--list");
    const none = cli("extract", "--model", model, "--out", listed);
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no images/);

    // An option that contradicts the saved model is refused, naming it.
    const c = cli(
      "extract",
      images[0] as string,
      "--model",
      model,
      "--no-gemp",
      "--out",
      fromModel,
    );
    assert.equal(c.status, 1);
    assert.match(c.stderr, /gemp false contradicts the model .*r50\.onnx/);
  },
);
