/**
 * Crash safety through the real CLI: `superglobal index <photos> --index X` (and `--prune`) is
 * killed with SIGKILL at seeded random moments while a reader watches the index and, in one
 * trial, `superglobal search --index X` runs beside it. After each kill the index opens and holds
 * only whole entries, each once, bit-identical to a clean run's; everything a reader saw
 * committed is still there; a resumed run ends with exactly the clean index. The harness is
 * helpers/crash-harness.ts; `npm run bench -- stress` runs 20+ trials of each kind.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  checkFinal,
  defaultWhiteningReady,
  killTrial,
  precreateIndex,
  preparePhotos,
  referenceOf,
  runCli,
} from "./helpers/crash-harness.ts";
import { seeded } from "./helpers/index-fixtures.ts";
import { assetsDir } from "./helpers/shared.ts";

const source = join(assetsDir, "debian-photos");
const skip = existsSync(source) ? {} : { skip: `test photos not found at ${source}` };
const SEED = Number(process.env["SUPERGLOBAL_CRASH_SEED"] ?? 7);
const TRIALS = Number(process.env["SUPERGLOBAL_CRASH_TRIALS"] ?? 2);

const root = mkdtempSync(join(tmpdir(), "superglobal-crash-"));
const photosDir = join(root, "photos");
const cache = join(root, "cache");
const env = { ...process.env, SUPERGLOBAL_CACHE: cache };
const clean = join(root, "clean.sgi");
const killed = join(root, "killed.sgi");
let photos: string[] = [];
let reference = new Map<string, string>();
/** The clean run's length, and how long its start took (model load, scan) before any output. */
let cleanMs = 0;
let startupMs = 0;
/** How long a run that has little to do takes after its first output (the prune's window). */
let quickRunMs = 0;

before(async () => {
  if (!existsSync(source)) return;
  photos = await preparePhotos(source, photosDir, 6);
  // Until the default whitening lands, the index is made with the default network alone.
  if (!defaultWhiteningReady()) {
    await precreateIndex(clean, cache);
    await precreateIndex(killed, cache);
  }
});
after(() => rmSync(root, { recursive: true, force: true }));

test(
  "a SIGKILLed `superglobal index` keeps what it committed and resumes to the clean index",
  skip,
  async (t) => {
    const first = await runCli(["index", photosDir, "--index", clean], env);
    assert.equal(first.code, 0, first.stderr);
    cleanMs = first.ms;
    startupMs = first.firstOutputMs ?? first.ms / 2;
    reference = await referenceOf(clean, cache);
    assert.deepEqual([...reference.keys()].sort(), [...photos].sort());
    const allowed = new Set(photos);
    const random = seeded(SEED);
    for (let trial = 0; trial < TRIALS; trial++) {
      // The first trial may die anywhere, even while the index is made or the model loads; the
      // others die once the job runs. The first has a search running beside it.
      const fromStart = trial === 0;
      const result = await killTrial({
        args: ["index", photosDir, "--index", killed],
        env,
        dir: killed,
        killFrom: fromStart ? "start" : "output",
        killAfterMs: random() * (fromStart ? cleanMs : 0.8 * (cleanMs - startupMs)),
        reference,
        allowed,
        ...(fromStart ? { search: { query: photos[0]!, afterMs: random() * startupMs } } : {}),
      });
      t.diagnostic(
        `trial ${trial}: ended at ${result.killedAtMs.toFixed(0)} ms (${result.finishedCode === null ? "killed" : "finished"}), ${result.snapshots} snapshots, ${result.seenCommitted} seen committed, ${result.after} after` +
          (result.search === undefined ? "" : `; search exit ${result.search.code}`),
      );
      assert.deepEqual(result.problems, [], `trial ${trial} (seed ${SEED})`);
    }
    const resumed = await runCli(["index", photosDir, "--index", killed], env);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.deepEqual(checkFinal(killed, reference), []);
    quickRunMs = resumed.ms - (resumed.firstOutputMs ?? 0);
  },
);

test(
  "a SIGKILLed `superglobal index --prune` loses nothing it keeps and resumes to the pruned index",
  skip,
  async (t) => {
    assert.ok(reference.size > 0, "runs after the index test");
    // Two of six files go: a third of the rows dead, so the prune compacts too.
    const gone = photos.slice(1, 3);
    for (const p of gone) rmSync(p);
    const kept = new Map([...reference].filter(([p]) => !gone.includes(p)));
    const random = seeded(SEED + 1);
    const result = await killTrial({
      args: ["index", photosDir, "--index", killed, "--prune"],
      env,
      dir: killed,
      killFrom: "output",
      killAfterMs: random() * Math.max(300, quickRunMs),
      reference,
      allowed: new Set(photos),
      mustKeep: new Set(kept.keys()),
      mayVanish: new Set(gone),
    });
    t.diagnostic(
      `prune trial: ended at ${result.killedAtMs.toFixed(0)} ms (${result.finishedCode === null ? "killed" : "finished"}), ${result.after} entries after`,
    );
    assert.deepEqual(result.problems, []);
    const resumed = await runCli(["index", photosDir, "--index", killed, "--prune"], env);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.deepEqual(checkFinal(killed, kept), []);
  },
);
