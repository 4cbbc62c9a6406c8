/**
 * `npm run bench -- stress [--trials 20] [--prune-trials 20] [--fuzz 5000] [--seed 1]
 *   [--photos 16] [--sizes 512,1024,2048] [--quick] [--snapshot]`
 * The long versions of the robustness tests (test/crash-cli, fuzz-readers, hostile-files,
 * cli-bad-images), which must find nothing:
 * - crash (until --trials / --prune-trials processes were really killed, at most 3x as many
 *   trials): `superglobal index <photos> --index X` SIGKILLed at seeded random moments, each with
 *   `search --index X` beside it, the trials going on with one index until a run completes it
 *   (it must then be the clean index; a fresh one follows; the last is resumed to the clean
 *   index), and `--prune` runs SIGKILLed on copies of a clean index after files were deleted
 *   (each then resumed to the clean pruned index);
 * - hostile files: every case of test/helpers/hostile-cases.ts;
 * - fuzz: thousands of mutated checkpoints (with the 113 MB one), .npy files, ground truths and
 *   images in a watched child;
 * - bad images: the image zoo through `superglobal index`, with the job's peak RSS;
 * - memory by photo size: the peak RSS of `superglobal index` on one photo of each --sizes side
 *   (a measurement, reported beside the pass/fail checks).
 * Writes bench/results/stress-<date>.md/.json: trials, faults injected, hostile files tried,
 * failures found, peak memory, the code and the machine.
 *
 * It runs for minutes, starting the CLI hundreds of times: code edited meanwhile mixes versions
 * (an index made by one journal format, read by the next). `--snapshot` runs it on a copy of
 * the committed code (git archive HEAD, with this bench file and models/ as they are here).
 */
import { execFileSync, execSync, spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { SuperglobalError } from "../src/errors.ts";
import {
  checkFinal,
  defaultWhiteningReady,
  killTrial,
  peakRssPreload,
  precreateIndex,
  preparePhotos,
  referenceOf,
  repoRoot,
  runCli,
  snapshot,
  type TrialResult,
} from "../test/helpers/crash-harness.ts";
import { fuzzTargets, runFuzz } from "../test/helpers/fuzz.ts";
import { hostileCases, readCase } from "../test/helpers/hostile-cases.ts";
import { writeImageZoo } from "../test/helpers/image-zoo.ts";
import { seeded } from "../test/helpers/index-fixtures.ts";
import { assetsDir, sharedDir } from "../test/helpers/shared.ts";
import { machine, peakRssMiB, saveResult } from "./machine.ts";

interface TrialRecord {
  kind: "index" | "prune";
  round: number;
  killFrom: "start" | "output";
  killAfterMs: number;
  endedAtMs: number;
  killed: boolean;
  snapshots: number;
  seenCommitted: number;
  entriesAfter: number;
  search?: { code: number | null; ms: number; hits: number };
  problems: string[];
}

const say = (line: string) => process.stdout.write(`${line}\n`);

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      trials: { type: "string", default: "20" },
      "prune-trials": { type: "string", default: "20" },
      fuzz: { type: "string", default: "5000" },
      seed: { type: "string", default: "1" },
      photos: { type: "string", default: "16" },
      sizes: { type: "string", default: "512,1024,2048" },
      // A short run of everything (3 + 2 trials, 300 cases), to check the bench; not saved.
      quick: { type: "boolean", default: false },
      snapshot: { type: "boolean", default: false },
    },
  });
  if (values.snapshot) {
    runInSnapshot(argv.filter((a) => a !== "--snapshot"));
    return;
  }
  const quick = values.quick;
  const trials = quick ? 3 : Number(values.trials);
  const pruneTrials = quick ? 2 : Number(values["prune-trials"]);
  const fuzzCases = quick ? 300 : Number(values.fuzz);
  const seed = Number(values.seed);
  const sizes = quick ? [512] : values.sizes.split(",").filter(Boolean).map(Number);
  const source = join(assetsDir, "debian-photos");
  if (!existsSync(source)) throw new Error(`the stress bench needs the photos at ${source}`);

  const root = mkdtempSync(join(tmpdir(), "superglobal-stress-"));
  const cache = join(root, "cache");
  const env = { ...process.env, SUPERGLOBAL_CACHE: cache };
  const failures: string[] = [];
  const started = Date.now();
  const mode = defaultWhiteningReady()
    ? "default model"
    : "default network, no whitening (pre-created index)";
  say(`stress: seed ${seed}, model: ${mode}, scratch ${root}`);
  try {
    // --- crash trials: superglobal index ----------------------------------------------------
    const photosDir = join(root, "photos");
    const photos = await preparePhotos(source, photosDir, Number(values.photos));
    const allowed = new Set(photos);
    const clean = join(root, "clean.sgi");
    if (!defaultWhiteningReady()) await precreateIndex(clean, cache);
    const first = await runCli(["index", photosDir, "--index", clean], env);
    if (first.code !== 0) throw new Error(`the clean run failed: ${first.stderr}`);
    const reference = await referenceOf(clean, cache);
    const cleanMs = first.ms;
    const startupMs = first.firstOutputMs ?? cleanMs / 2;
    say(
      `clean run: ${photos.length} photos in ${(cleanMs / 1000).toFixed(1)} s (output after ${(startupMs / 1000).toFixed(1)} s)`,
    );
    const random = seeded(seed);
    const records: TrialRecord[] = [];
    const record = (
      kind: "index" | "prune",
      round: number,
      killFrom: "start" | "output",
      killAfterMs: number,
      r: TrialResult,
    ) => {
      const hits =
        r.search?.stdout
          .trim()
          .split("\n")
          .filter((l) => l.length > 0).length ?? 0;
      records.push({
        kind,
        round,
        killFrom,
        killAfterMs: Math.round(killAfterMs),
        endedAtMs: Math.round(r.killedAtMs),
        killed: r.finishedCode === null,
        snapshots: r.snapshots,
        seenCommitted: r.seenCommitted,
        entriesAfter: r.after,
        ...(r.search === undefined
          ? {}
          : { search: { code: r.search.code, ms: Math.round(r.search.ms), hits } }),
        problems: r.problems,
      });
      for (const p of r.problems) failures.push(`${kind} trial ${records.length}: ${p}`);
      say(
        `${kind} trial ${records.length}: ${r.finishedCode === null ? "killed" : "finished"} at ${(r.killedAtMs / 1000).toFixed(1)} s, ${r.seenCommitted} seen committed, ${r.after} after` +
          `${r.search === undefined ? "" : `, search exit ${r.search.code}`}${r.problems.length > 0 ? ` PROBLEMS: ${r.problems.join("; ")}` : ""}`,
      );
    };
    const resumes: Array<{ kind: string; ok: boolean; ms: number }> = [];
    // Trials go on killing one index until it is complete (a run finished before its moment):
    // then it must be the clean index, and the next trial starts a fresh one. The last is resumed.
    let round = 0;
    let dir = "";
    const freshIndex = async () => {
      round += 1;
      dir = join(root, `killed-${round}.sgi`);
      if (!defaultWhiteningReady()) await precreateIndex(dir, cache);
    };
    const finishRound = async (resume: boolean) => {
      const run = resume ? await runCli(["index", photosDir, "--index", dir], env) : undefined;
      const problems =
        run === undefined || run.code === 0
          ? checkFinal(dir, reference)
          : [`exit ${run.code}: ${run.stderr}`];
      resumes.push({
        kind: resume ? "index resumed" : "index completed by a trial",
        ok: problems.length === 0,
        ms: Math.round(run?.ms ?? 0),
      });
      for (const p of problems) failures.push(`index round ${round} end: ${p}`);
      say(
        `index round ${round}: ${resume ? "resumed" : "completed by its last trial"}, ${problems.length === 0 ? "the clean index" : problems.join("; ")}`,
      );
      rmSync(dir, { recursive: true, force: true });
    };
    await freshIndex();
    // Trials until `trials` processes were really killed (a run may finish before its moment).
    for (let k = 0, kills = 0; kills < trials && k < 3 * trials; k++) {
      // A fresh index's first trial may die anywhere (index creation, model loading); the others
      // once the job runs, within 1.5x what the clean run took after its first output: the search
      // beside it slows it down, and it commits every 2 s, so a shorter window mostly kills it
      // before its first commit (a run that finishes first is checked and counted too).
      const fresh = snapshot(dir) === undefined || snapshot(dir)!.rows.size === 0;
      const killFrom = fresh && k % 2 === 0 ? "start" : "output";
      const killAfterMs = random() * (killFrom === "start" ? cleanMs : 1.5 * (cleanMs - startupMs));
      const r = await killTrial({
        args: ["index", photosDir, "--index", dir],
        env,
        dir,
        killFrom,
        killAfterMs,
        reference,
        allowed,
        search: { query: photos[k % photos.length]!, afterMs: random() * cleanMs },
      });
      record("index", round, killFrom, killAfterMs, r);
      if (r.finishedCode === null) kills += 1;
      if (r.finishedCode === 0) {
        await finishRound(false);
        await freshIndex();
      }
    }
    await finishRound(true);

    // --- crash trials: superglobal index --prune ---------------------------------------------
    // A third of the files go (the prune then compacts); each trial prunes a copy of the clean
    // index, killed at a random moment, then resumed.
    const gone = photos.filter((_, i) => i % 3 === 1);
    for (const p of gone) rmSync(p);
    const kept = new Map([...reference].filter(([p]) => !gone.includes(p)));
    const copyOfClean = (name: string) => {
      const dir = join(root, name);
      cpSync(clean, dir, { recursive: true });
      return dir;
    };
    const timing = copyOfClean("prune-timing.sgi");
    const pruneRun = await runCli(["index", photosDir, "--index", timing, "--prune"], env);
    const pruneProblems =
      pruneRun.code === 0
        ? checkFinal(timing, kept)
        : [`exit ${pruneRun.code}: ${pruneRun.stderr}`];
    for (const p of pruneProblems) failures.push(`unkilled prune: ${p}`);
    const pruneAfterOutput = pruneRun.ms - (pruneRun.firstOutputMs ?? 0);
    say(
      `unkilled prune: ${(pruneRun.ms / 1000).toFixed(1)} s, ${pruneProblems.length === 0 ? "the clean pruned index" : pruneProblems.join("; ")}`,
    );
    for (let k = 0, kills = 0; kills < pruneTrials && k < 3 * pruneTrials; k++) {
      const dir = copyOfClean(`prune-${k}.sgi`);
      // Mostly once the job runs (the prune comes at its end), some from the start.
      const killFrom = k % 4 === 3 ? "start" : "output";
      const killAfterMs =
        killFrom === "start"
          ? random() * pruneRun.ms
          : random() * Math.max(200, pruneAfterOutput * 1.2);
      const r = await killTrial({
        args: ["index", photosDir, "--index", dir, "--prune"],
        env,
        dir,
        killFrom,
        killAfterMs,
        reference,
        allowed,
        mustKeep: new Set(kept.keys()),
        mayVanish: new Set(gone),
        ...(k % 2 === 0 ? { search: { query: photos[0]!, afterMs: random() * pruneRun.ms } } : {}),
      });
      record("prune", k, killFrom, killAfterMs, r);
      if (r.finishedCode === null) kills += 1;
      const resumed = await runCli(["index", photosDir, "--index", dir, "--prune"], env);
      const problems =
        resumed.code === 0 ? checkFinal(dir, kept) : [`exit ${resumed.code}: ${resumed.stderr}`];
      resumes.push({
        kind: "prune resumed",
        ok: problems.length === 0,
        ms: Math.round(resumed.ms),
      });
      for (const p of problems) failures.push(`prune trial ${k} resume: ${p}`);
      rmSync(dir, { recursive: true, force: true });
    }

    // --- hostile files -----------------------------------------------------------------------
    const hostile = hostileCases();
    let refused = 0;
    for (const c of hostile) {
      const t0 = performance.now();
      try {
        readCase(c, join(root, "hostile"));
        failures.push(`hostile ${c.name}: accepted`);
      } catch (error) {
        const ok =
          error instanceof SuperglobalError &&
          error.code === c.code &&
          c.message.test(error.message);
        if (ok) refused += 1;
        else
          failures.push(
            `hostile ${c.name}: ${error instanceof Error ? error.message : String(error)}`,
          );
      }
      if (performance.now() - t0 > 5000)
        failures.push(`hostile ${c.name}: took ${performance.now() - t0} ms`);
    }
    say(`hostile files: ${refused}/${hostile.length} refused as expected`);

    // --- fuzz ---------------------------------------------------------------------------------
    const targets = await fuzzTargets(join(root, "fuzz-seeds"), true);
    const fuzz = await runFuzz({
      seed,
      cases: fuzzCases,
      targets,
      dir: join(root, "fuzz"),
      onCase: (m) => {
        if ((m.index + 1) % 1000 === 0) say(`fuzz: ${m.index + 1}/${fuzzCases}`);
      },
    });
    for (const f of fuzz.failures)
      failures.push(`fuzz case ${f.index} (${f.target}: ${f.how}): ${f.problem}`);
    say(
      `fuzz: ${fuzz.cases} cases, ${JSON.stringify(fuzz.outcomes)}, ${fuzz.failures.length} failures, slowest ${fuzz.maxMs.toFixed(0)} ms`,
    );

    // --- bad images through the CLI ------------------------------------------------------------
    const zooDir = join(root, "zoo");
    const zoo = await writeImageZoo(zooDir, join(source, "darknet", "dog.jpg"));
    const zooIndex = join(root, "zoo.sgi");
    if (!defaultWhiteningReady()) await precreateIndex(zooIndex, cache);
    const rssFile = join(root, "zoo-rss");
    const zooRun = await runCli(
      [
        "index",
        zooDir,
        ...zoo.filter((z) => !z.scanned).map((z) => join(zooDir, z.name)),
        "--index",
        zooIndex,
      ],
      { ...env, SUPERGLOBAL_PEAK_RSS_FILE: rssFile },
      undefined,
      ["--import", peakRssPreload],
    );
    const zooSnap = snapshot(zooIndex);
    const zooGood = zoo.filter((z) => z.valid).length;
    const zooPeakMiB = Number(readFileSync(rssFile, "utf8")) / 1024;
    if (
      zooRun.code !== 1 ||
      zooSnap?.rows.size !== zooGood ||
      zooSnap.failed.length !== zoo.length - zooGood
    ) {
      failures.push(
        `image zoo: exit ${zooRun.code}, ${zooSnap?.rows.size} indexed, ${zooSnap?.failed.length} failed: ${zooRun.stderr.slice(-1000)}`,
      );
    }
    if (zooPeakMiB > 1024) failures.push(`image zoo: peak RSS ${zooPeakMiB.toFixed(0)} MiB`);
    say(
      `image zoo: ${zoo.length} files, exit ${zooRun.code}, peak RSS ${zooPeakMiB.toFixed(0)} MiB`,
    );

    // --- memory by photo size (a measurement) ------------------------------------------------------
    const sizeProbe: Array<{
      side: number;
      pixels: number;
      seconds: number;
      peakRssMiB: number;
      code: number | null;
    }> = [];
    for (const side of sizes) {
      const dir = join(root, `size-${side}`);
      mkdirSync(dir, { recursive: true });
      await sharp(join(source, "darknet", "dog.jpg"))
        .resize(side, side, { fit: "fill" })
        .jpeg({ quality: 90 })
        .toFile(join(dir, "photo.jpg"));
      const index = join(root, `size-${side}.sgi`);
      if (!defaultWhiteningReady()) await precreateIndex(index, cache);
      const file = join(root, `size-${side}-rss`);
      const run = await runCli(
        ["index", dir, "--index", index],
        { ...env, SUPERGLOBAL_PEAK_RSS_FILE: file },
        undefined,
        ["--import", peakRssPreload],
      );
      const peak = existsSync(file) ? Number(readFileSync(file, "utf8")) / 1024 : Number.NaN;
      sizeProbe.push({
        side,
        pixels: side * side,
        seconds: run.ms / 1000,
        peakRssMiB: Math.round(peak),
        code: run.code,
      });
      say(
        `one ${side}x${side} photo: ${(run.ms / 1000).toFixed(1)} s, peak RSS ${peak.toFixed(0)} MiB`,
      );
    }

    // --- results -----------------------------------------------------------------------------
    const index = records.filter((r) => r.kind === "index");
    const prune = records.filter((r) => r.kind === "prune");
    const searches = records.filter((r) => r.search !== undefined);
    const result = {
      machine: machine(),
      code: codeVersion(),
      seed,
      model: mode,
      seconds: Math.round((Date.now() - started) / 1000),
      crash: {
        photos: photos.length,
        cleanRunSeconds: cleanMs / 1000,
        indexTrials: index.length,
        pruneTrials: prune.length,
        killed: records.filter((r) => r.killed).length,
        finishedBeforeKill: records.filter((r) => !r.killed).length,
        concurrentSearches: searches.length,
        searchesSucceeded: searches.filter((r) => r.search!.code === 0).length,
        searchesFailedCleanly: searches.filter((r) => r.search!.code === 1).length,
        resumes,
        trials: records,
      },
      hostile: { cases: hostile.length, refusedAsExpected: refused },
      fuzz,
      images: {
        zoo: zoo.length,
        indexed: zooGood,
        failedAsExpected: zoo.length - zooGood,
        exitCode: zooRun.code,
        peakRssMiB: Math.round(zooPeakMiB),
      },
      sizeProbe,
      peakMemoryMiB: {
        bench: Math.round(peakRssMiB()),
        fuzzChild: Math.round(fuzz.peakRssMiB),
        indexJobImageZoo: Math.round(zooPeakMiB),
      },
      failures,
    };
    const killed = result.crash.killed;
    const md = [
      `# Stress: crash trials, hostile files, fuzzing (${result.machine.date.slice(0, 10)})`,
      "",
      `\`npm run bench -- stress\` (seed ${seed}), ${result.seconds} s. Model: ${mode}.`,
      `Code: ${result.code}. Machine: ${result.machine.cpu}, ${result.machine.cores} cores, ${result.machine.memoryGiB} GiB, Node ${result.machine.node}, ${result.machine.os}.`,
      "",
      `**Failures found: ${failures.length}.**`,
      ...failures.map((f) => `- ${f}`),
      "",
      "| what | count |",
      "|---|---|",
      `| \`superglobal index\` SIGKILL trials (${photos.length} photos, clean run ${(cleanMs / 1000).toFixed(1)} s) | ${index.length} |`,
      `| \`superglobal index --prune\` SIGKILL trials (${gone.length} of ${photos.length} files deleted) | ${prune.length} |`,
      `| faults injected: processes SIGKILLed (index / prune; the other trials finished before their moment) | ${killed} (${index.filter((r) => r.killed).length} / ${prune.filter((r) => r.killed).length}) of ${records.length} trials |`,
      `| read-only snapshots checked while they ran | ${records.reduce((a, r) => a + r.snapshots, 0)} |`,
      `| concurrent \`search --index\`: succeeded / failed cleanly | ${result.crash.searchesSucceeded} / ${result.crash.searchesFailedCleanly} of ${searches.length} |`,
      `| indexes ending as exactly the clean one (resumed after the kill, or completed by a trial) | ${resumes.filter((r) => r.ok).length} of ${resumes.length} (${resumes.filter((r) => r.kind.endsWith("resumed")).length} resumed) |`,
      `| hostile files refused as expected | ${refused} of ${hostile.length} |`,
      `| fuzz cases (${Object.entries(fuzz.outcomes)
        .map(([k, v]) => `${k} ${v}`)
        .join(", ")}) | ${fuzz.cases} |`,
      `| images through \`superglobal index\` (indexed / listed as failed) | ${zooGood} / ${zoo.length - zooGood} |`,
      "",
      `Slowest fuzz case: ${fuzz.maxMs.toFixed(0)} ms (${fuzz.maxCase}).`,
      `Peak RSS: the fuzz child ${Math.round(fuzz.peakRssMiB)} MiB; the \`superglobal index\` job over the image zoo ${Math.round(zooPeakMiB)} MiB; this bench ${Math.round(peakRssMiB())} MiB.`,
      "",
      "Memory of `superglobal index` by photo size (one photo; a measurement, not a pass/fail check):",
      "",
      "| photo | seconds | peak RSS MiB |",
      "|---|---|---|",
      ...sizeProbe.map(
        (s) => `| ${s.side}x${s.side} | ${s.seconds.toFixed(1)} | ${s.peakRssMiB} |`,
      ),
    ].join("\n");
    // --quick checks the bench itself: nothing is saved.
    if (quick) say(md);
    else saveResult(`stress-${result.machine.date.slice(0, 10)}`, result, md);
    say(`failures: ${failures.length}`);
    if (failures.length > 0) process.exitCode = 1;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** The commit the run tested (set by --snapshot), or this checkout's HEAD and whether src/ differs. */
function codeVersion(): string {
  const given = process.env["SUPERGLOBAL_STRESS_CODE"];
  if (given !== undefined) return given;
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: repoRoot,
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], {
      cwd: repoRoot,
      encoding: "utf8",
    }).trim();
    return dirty === "" ? `${head}` : `${head} with uncommitted changes in src/`;
  } catch {
    return "unknown";
  }
}

/** Runs the bench on a copy of the committed code, then brings its results back here. */
function runInSnapshot(args: string[]): void {
  const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
    cwd: repoRoot,
    encoding: "utf8",
  }).trim();
  const snap = mkdtempSync(join(tmpdir(), "superglobal-stress-code-"));
  try {
    execSync(`git archive HEAD | tar -x -C ${JSON.stringify(snap)}`, { cwd: repoRoot });
    cpSync(join(repoRoot, "bench", "stress.ts"), join(snap, "bench", "stress.ts"));
    cpSync(join(repoRoot, "bench", "main.ts"), join(snap, "bench", "main.ts"));
    if (existsSync(join(repoRoot, "models")))
      cpSync(join(repoRoot, "models"), join(snap, "models"), { recursive: true });
    symlinkSync(join(repoRoot, "node_modules"), join(snap, "node_modules"));
    say(`stress: running on a snapshot of ${head} in ${snap}`);
    const run = spawnSync(
      process.execPath,
      ["--import", "tsx", "bench/main.ts", "stress", ...args],
      {
        cwd: snap,
        stdio: "inherit",
        env: {
          ...process.env,
          SUPERGLOBAL_SHARED: sharedDir,
          SUPERGLOBAL_STRESS_CODE: `${head} (a git archive snapshot; bench/stress.ts as in the working tree)`,
        },
      },
    );
    const results = join(snap, "bench", "results");
    for (const f of readdirSync(results).filter((n) => n.startsWith("stress-"))) {
      cpSync(join(results, f), join(repoRoot, "bench", "results", f));
    }
    process.exitCode = run.status ?? 1;
  } finally {
    rmSync(snap, { recursive: true, force: true });
  }
}
