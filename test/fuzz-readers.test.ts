/**
 * A seeded mutation fuzzer over every reader (checkpoints zip and legacy, .npy, ground truths
 * .pkl and .json, images): each case must end in success or a SuperglobalError naming the file,
 * within its time limit, without a crash and without one allocation beyond what its file size
 * allows (see helpers/fuzz-child.ts). A failure names the seed and case index, which reproduce
 * it. `npm run bench -- stress` runs thousands of cases; SUPERGLOBAL_FUZZ_CASES runs more here.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fuzzTargets, runFuzz } from "./helpers/fuzz.ts";

const dir = mkdtempSync(join(tmpdir(), "superglobal-fuzz-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const CASES = Number(process.env["SUPERGLOBAL_FUZZ_CASES"] ?? 400);
const SEED = Number(process.env["SUPERGLOBAL_FUZZ_SEED"] ?? 20261202);

test(`${CASES} mutated files: success or a clear error, no hang, crash or unbounded allocation`, async (t) => {
  const targets = await fuzzTargets(join(dir, "seeds"));
  const report = await runFuzz({ seed: SEED, cases: CASES, targets, dir: join(dir, "cases") });
  t.diagnostic(
    `outcomes ${JSON.stringify(report.outcomes)}; slowest ${report.maxMs.toFixed(0)} ms (case ${report.maxCase}); peak RSS ${report.peakRssMiB.toFixed(0)} MiB`,
  );
  assert.deepEqual(
    report.failures,
    [],
    `seed ${SEED}: ${report.failures.map((f) => `case ${f.index} ${f.target} (${f.how}): ${f.problem}`).join("\n")}`,
  );
  assert.equal(report.cases, CASES);
  // Every reader was fuzzed, and the mutations both broke files and left some readable.
  for (const reader of ["checkpoint", "npy", "gnd", "image"]) {
    const names = targets.filter((x) => x.reader === reader).map((x) => x.name);
    assert.ok(
      names.some((n) => (report.targets[n] ?? 0) > 0),
      `${reader} was fuzzed`,
    );
  }
  assert.ok((report.outcomes["ok"] ?? 0) > 0 && (report.outcomes["BAD_FILE"] ?? 0) > 0);
  assert.ok(report.peakRssMiB < 1024, `peak RSS ${report.peakRssMiB} MiB`);
});

test("the harness itself sees an oversized allocation, a hang and a crash, and goes on", async () => {
  const seed = join(dir, "probe.bin");
  writeFileSync(seed, new Uint8Array(64));
  const probe = (reader: "probe-alloc" | "probe-hang" | "probe-crash", cases: number) =>
    runFuzz({
      seed: 1,
      cases,
      targets: [{ name: reader, path: seed, format: "image", reader }],
      dir: join(dir, reader),
      caseLimitMs: 1500,
    });
  const alloc = await probe("probe-alloc", 2);
  assert.equal(alloc.failures.length, 2);
  assert.equal(alloc.children, 1);
  assert.match(alloc.failures[0]!.problem, /unbounded allocation: new Float64Array/);
  const hang = await probe("probe-hang", 2);
  assert.deepEqual(
    hang.failures.map((f) => [f.index, f.problem]),
    [
      [0, "no result within 1500 ms: killed"],
      [1, "no result within 1500 ms: killed"],
    ],
  );
  assert.equal(hang.children, 2);
  const crash = await probe("probe-crash", 1);
  assert.equal(crash.outcomes["crash"], 1);
  assert.match(crash.failures[0]!.problem, /the child died \(code 70/);
});
