/**
 * What every command checks before it starts work, run as a user runs it (child processes):
 * output paths, the images folder of `eval --dataset`, a corrupt cache; and the option groups
 * every model command shares (declared once in src/cli/options.ts).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Command } from "commander";
import { addModelOptions, addThreadsOption, modelOptionsFrom } from "../src/cli/options.ts";
import { SuperglobalError } from "../src/errors.ts";
import { writeNpy } from "../src/io/npy.ts";
import { runCli } from "./helpers/cli.ts";
import { fixture, fixturesDir, sharedOnly } from "./helpers/shared.ts";

const dir = mkdtempSync(join(tmpdir(), "sg-cli-checks-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const cli = (...args: string[]) => runCli(args);

/** One clear message: exit 1, one line on stderr, no stack trace. */
function assertOneMessage(r: ReturnType<typeof cli>, pattern: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /unexpected error|SyntaxError|TypeError|\n\s+at /);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
}

test("every output path is checked before any work starts, naming it", () => {
  const missing = join(dir, "no-such-dir");
  const folder = join(dir, "a-folder");
  mkdirSync(folder, { recursive: true });
  // extract: the output is checked before the checkpoint is even opened (it does not exist here).
  let r = cli(
    "extract",
    join(dir, "photo.jpg"),
    "--checkpoint",
    join(dir, "absent.pyth"),
    "--out",
    join(missing, "db.npy"),
  );
  assertOneMessage(
    r,
    /no-such-dir.db\.npy: cannot write \(the folder .*no-such-dir does not exist\)/,
  );
  r = cli("build-model", "--checkpoint", join(dir, "absent.pyth"), "--out", folder);
  assertOneMessage(r, /a-folder: cannot write \(it is a folder, not a file\)/);

  // search: --scores is checked before --out is written.
  const X = join(dir, "X.npy");
  const Q = join(dir, "Q.npy");
  writeNpy(X, new Float32Array([1, 0, 0, 1, 0.6, 0.8]), [3, 2]);
  writeNpy(Q, new Float32Array([1, 0]), [1, 2]);
  const ranks = join(dir, "ranks.npy");
  r = cli("search", "--db", X, "--queries", Q, "--out", ranks, "--scores", join(missing, "s.npy"));
  assertOneMessage(r, /no-such-dir.s\.npy: cannot write/);
  assert.equal(existsSync(ranks), false, "nothing was written");
  r = cli("search", "--db", X, "--queries", Q, "--out", folder);
  assertOneMessage(r, /a-folder: cannot write \(it is a folder/);

  // rerank
  writeNpy(ranks, new Int32Array([0, 2, 1]), [1, 3]);
  r = cli("rerank", "--db", X, "--queries", Q, "--ranks", ranks, "--out", join(missing, "f.npy"));
  assertOneMessage(r, /no-such-dir.f\.npy: cannot write/);
});

test("extract --help states the box rule: clipped to the image, refused only when empty", () => {
  const r = cli("extract", "--help");
  assert.equal(r.status, 0, r.stderr);
  const help = r.stdout.replace(/\s+/g, " ");
  assert.match(help, /--bbox <x1,y1,x2,y2>.*clipped to the image/);
  assert.match(help, /empty after clipping/);
});

/** A tiny revisitop layout: ground truth only, the images folder as `images` says. */
function dataset(images: "none" | "empty"): string {
  const root = mkdtempSync(join(dir, "data-"));
  mkdirSync(join(root, "roxford5k"));
  const gnd = {
    imlist: ["a", "b"],
    qimlist: ["q"],
    gnd: [{ bbx: [0, 0, 10, 10], easy: [0], hard: [], junk: [] }],
  };
  writeFileSync(join(root, "roxford5k", "gnd_roxford5k.json"), JSON.stringify(gnd));
  if (images === "empty") mkdirSync(join(root, "roxford5k", "jpg"));
  return root;
}

test("eval --dataset stops at once when the images folder is missing or empty", () => {
  for (const images of ["none", "empty"] as const) {
    const root = dataset(images);
    // The checkpoint does not exist: the images are checked before the model is built.
    const r = cli(
      "eval",
      "--dataset",
      "roxford5k",
      "--data-dir",
      root,
      "--checkpoint",
      join(dir, "absent.pyth"),
    );
    const jpg = join(root, "roxford5k", "jpg").replaceAll(".", "\\.");
    assertOneMessage(
      r,
      images === "none"
        ? new RegExp(`${jpg}: the images folder does not exist`)
        : new RegExp(`${jpg}: none of the 3 images to extract is there`),
    );
    assert.equal(r.stdout, "", "no table");
  }
});

test(
  "a corrupt meta.json in a descriptor cache is BAD_FILE naming it, not a raw SyntaxError",
  sharedOnly,
  () => {
    const cache = join(dir, "corrupt-cache");
    mkdirSync(cache);
    writeFileSync(join(cache, "meta.json"), '{"dim": 2048, "settings": {');
    const r = cli(
      "extract",
      join(fixturesDir, "images", "b_giraffe.png"),
      "--checkpoint",
      fixture("cvnet_r50_random.pyth"),
      "--cache",
      cache,
      "--out",
      join(dir, "cached.npy"),
    );
    assertOneMessage(r, /corrupt-cache.meta\.json: not a descriptor cache's meta\.json \(/);
  },
);

test("the model options are one group: extract and eval take them all, build-model its part", () => {
  const all = ["--checkpoint", "--model", "--depth", "--scales", "--no-gemp", "--no-rgem"];
  const more = ["--no-sgem", "--no-relup", "--threads"];
  for (const command of ["extract", "eval"]) {
    const r = cli(command, "--help");
    assert.equal(r.status, 0, r.stderr);
    for (const option of [...all, ...more])
      assert.ok(r.stdout.includes(option), `${command} ${option}`);
  }
  const r = cli("build-model", "--help");
  assert.equal(r.status, 0, r.stderr);
  for (const option of ["--checkpoint", "--depth", "--no-gemp", "--no-rgem", "--no-relup"]) {
    assert.ok(r.stdout.includes(option), `build-model ${option}`);
  }
  for (const option of ["--model", "--scales", "--no-sgem"]) {
    assert.ok(!r.stdout.includes(option), `build-model does not take ${option}`);
  }
});

// Today's rule, for a checkpoint too: only the options given on the command line are passed on (a
// saved model records depth, relup, gemp and rgem; the library's defaults are the CLI's).
test("modelOptionsFrom passes on only the options given on the command line", () => {
  const parse = (...args: string[]) => {
    const command = new Command().exitOverride();
    addModelOptions(command);
    addThreadsOption(command);
    command.parse(args, { from: "user" });
    return modelOptionsFrom(command.opts(), command);
  };
  assert.deepEqual(parse("--model", "m.onnx", "--scales", "5", "--no-rgem", "--threads", "2"), {
    model: "m.onnx",
    scales: 5,
    rgem: false,
    threads: 2,
  });
  assert.deepEqual(parse("--model", "m.onnx"), { model: "m.onnx" });
  assert.deepEqual(parse("--checkpoint", "c.pyth", "--depth", "101", "--no-sgem", "--no-relup"), {
    checkpoint: "c.pyth",
    depth: 101,
    sgem: false,
    relup: false,
  });
  // Neither: the library's default model, with what was given.
  assert.deepEqual(parse("--scales", "1"), { scales: 1 });
  assert.throws(
    () => parse("--checkpoint", "c.pyth", "--model", "m.onnx"),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "INVALID_ARGUMENT" &&
      /one of --checkpoint or --model, not both/.test(e.message),
  );
});
