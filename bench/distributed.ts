/**
 * `npm run bench -- distributed [--photos 24] [--side 512] [--reps 3] [--scales 3]
 *   [--workers 1,2,4] [--threads 1]`
 * Distributed indexing on this machine: images per second of `superglobal index DIR --queue URL`
 * with 1, 2 and 4 `superglobal worker` processes (each with --threads onnxruntime threads) against
 * a Redis started here, and the queue's overhead per job against a local `superglobal index` run
 * with the same threads. Photos: real ones from the shared assets, at most ${side} px. Each rate is timed from the indexer's first output (its model loaded,
 * the bar started) to its exit; workers are warmed up first (they build the model on their first
 * job); each rate is the median of --reps runs, each into a fresh index. CPU per image is that
 * of every process involved (indexer, workers, Redis), less the CPU of the same command run again
 * with nothing to do (its start-up). Every index must equal the local one. Writes bench/results/distributed-<date>.md/.json.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { preparePhotos, repoRoot, runCli, snapshot } from "../test/helpers/crash-harness.ts";
import { startRedis } from "../test/helpers/redis.ts";
import { assetsDir } from "../test/helpers/shared.ts";
import { contention, cpuTimes, machine, median, ownCpuSeconds, saveResult } from "./machine.ts";

/** CPU seconds of this process and its finished children (from /proc/self/stat). */
function cpuWithChildren(): number {
  const own = process.cpuUsage();
  let children = 0;
  try {
    const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
    children = (Number(fields[13]) + Number(fields[14])) / 100; // cutime + cstime, USER_HZ 100
  } catch {
    // not Linux: own time only
  }
  return (own.user + own.system) / 1e6 + children;
}

/** CPU seconds (user + system) a live process has used, from /proc/PID/stat (0 elsewhere). */
function processCpu(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, USER_HZ 100
  } catch {
    return 0;
  }
}

interface RunResult {
  label: string;
  workers: number;
  seconds: number;
  /** Each run's seconds. */
  runs: number[];
  imagesPerSecond: number;
  sameAsLocal: boolean;
  otherCpuS: number;
  /** Cores other processes kept busy on average while this was measured. */
  otherCores: number;
  /** CPU ms per image of everything the run used (indexer, workers, Redis) less its start-up. */
  cpuMsPerImage: number;
  load: string;
}

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      photos: { type: "string", default: "24" },
      side: { type: "string", default: "512" },
      reps: { type: "string", default: "3" },
      scales: { type: "string", default: "3" },
      workers: { type: "string", default: "1,2,4" },
      threads: { type: "string", default: "1" },
    },
  });
  const count = Number(values.photos);
  const side = Number(values.side);
  const threads = values.threads;
  const workerCounts = values.workers.split(",").map(Number);
  const root = mkdtempSync(join(tmpdir(), "superglobal-bench-distributed-"));
  const env = { ...process.env, SUPERGLOBAL_CACHE: join(root, "cache") };
  const redis = await startRedis();
  const children: ChildProcess[] = [];
  try {
    const photos = join(root, "photos");
    const warm = join(root, "warm");
    const all = await preparePhotos(join(assetsDir, "debian-photos"), join(root, "all"), count + 8);
    // preparePhotos makes ≤ 256 px copies; larger ones are made again from the originals.
    if (side !== 256) await resizeFromSources(all, side);
    mkdirSync(photos);
    mkdirSync(warm);
    // The measured set and a separate warm-up set (distinct files: no index reuses another's).
    all.forEach((p, i) => {
      renameSync(p, join(i < count ? photos : warm, p.split("/").pop()!));
    });
    const model = ["--scales", values.scales];

    const reps = Number(values.reps);
    /** `reps` runs of `superglobal ARGS… --index DIR-r`; the median time; the indexes made. */
    const timed = async (
      label: string,
      args: string[],
      dir: string,
      workers: number,
      pids: number[] = [],
    ): Promise<RunResult & { dirs: string[] }> => {
      const before = cpuTimes();
      const phaseStart = performance.now();
      const cpu0 = cpuWithChildren();
      const load0 = loadavg()[0]!.toFixed(1);
      const pidCpu0 = [...pids, redis.pid].reduce((a, p) => a + processCpu(p), 0);
      const times: number[] = [];
      const cpus: number[] = [];
      const dirs: string[] = [];
      // The indexer's CPU (a finished child of this process), the workers' and Redis's.
      const used = () =>
        cpuWithChildren() -
        ownCpuSeconds() +
        [...pids, redis.pid].reduce((a, p) => a + processCpu(p), 0);
      for (let r = 0; r < reps; r++) {
        dirs.push(`${dir}-${r}`);
        const c0 = used();
        const run = await runCli([...args, "--index", `${dir}-${r}`], env);
        if (run.code !== 0) throw new Error(`${label} failed: ${run.stderr}`);
        times.push((run.ms - (run.firstOutputMs ?? 0)) / 1000);
        const c1 = used();
        // The same command again has nothing to describe: its CPU is the start-up (model load,
        // scan), which is not per image.
        const again = await runCli([...args, "--index", `${dir}-${r}`], env);
        if (again.code !== 0 || !/ 0 added/.test(again.stderr)) {
          throw new Error(`${label} again: ${again.stderr}`);
        }
        cpus.push(c1 - c0 - (used() - c1));
      }
      const seconds = median(times);
      const ownS =
        cpuWithChildren() -
        cpu0 +
        [...pids, redis.pid].reduce((a, p) => a + processCpu(p), 0) -
        pidCpu0;
      const { otherCpuS } = contention(before, cpuTimes(), ownS);
      const otherCores = otherCpuS / ((performance.now() - phaseStart) / 1000);
      process.stdout.write(`${label}: ${(count / seconds).toFixed(2)} images/s\n`);
      return {
        label,
        workers,
        seconds,
        runs: times,
        imagesPerSecond: count / seconds,
        sameAsLocal: false,
        otherCpuS,
        otherCores,
        cpuMsPerImage: (median(cpus) / count) * 1000,
        load: `${load0} / ${loadavg()[0]!.toFixed(1)}`,
        dirs,
      };
    };

    const results: Array<RunResult & { dirs: string[] }> = [];
    // Warm-up: the first run builds the model's file in the cache.
    const warmLocal = await runCli(
      ["index", warm, "--index", join(root, "warm-local.sgi"), ...model],
      env,
    );
    if (warmLocal.code !== 0) throw new Error(`warm-up failed: ${warmLocal.stderr}`);
    const local1 = await timed(
      `local, --threads ${threads}`,
      ["index", photos, ...model, "--threads", threads],
      join(root, "local"),
      0,
    );
    const reference = snapshot(local1.dirs[0]!)!.rows;
    const same = (dirs: string[]) =>
      dirs.every((dir) => {
        const rows = snapshot(dir)!.rows;
        return rows.size === reference.size && [...reference].every(([p, v]) => rows.get(p) === v);
      });
    local1.sameAsLocal = same(local1.dirs);
    results.push(local1);
    const localAll = await timed(
      "local, all cores",
      ["index", photos, ...model],
      join(root, "local-all"),
      0,
    );
    localAll.sameAsLocal = same(localAll.dirs);
    results.push(localAll);

    for (const k of workerCounts) {
      const started: ChildProcess[] = [];
      const exits: Array<Promise<void>> = [];
      for (let i = 0; i < k; i++) {
        const child = spawn(
          process.execPath,
          [
            "--import",
            "tsx",
            join(repoRoot, "src", "cli", "main.ts"),
            "worker",
            "--queue",
            redis.url,
            "--threads",
            threads,
          ],
          { cwd: repoRoot, env, stdio: "ignore" },
        );
        children.push(child);
        started.push(child);
        exits.push(new Promise((done) => child.on("close", () => done())));
      }
      // Warm-up: every worker builds its model on its first job.
      const warmRun = await runCli(
        ["index", warm, "--index", join(root, `warm-${k}.sgi`), ...model, "--queue", redis.url],
        env,
      );
      if (warmRun.code !== 0) throw new Error(`warm-up failed: ${warmRun.stderr}`);
      const r = await timed(
        `queue, ${k} worker(s) × --threads ${threads}`,
        ["index", photos, ...model, "--queue", redis.url],
        join(root, `queue-${k}`),
        k,
        started.map((c) => c.pid!),
      );
      r.sameAsLocal = same(r.dirs);
      results.push(r);
      for (const c of started) c.kill("SIGTERM");
      await Promise.all(exits);
    }

    const local = results[0]!;
    const one = results.find((r) => r.workers === 1);
    const overheadMs =
      one === undefined ? undefined : ((one.seconds - local.seconds) / count) * 1000;
    const overheadCpuMs = one === undefined ? undefined : one.cpuMsPerImage - local.cpuMsPerImage;
    const m = machine();
    const record = {
      bench: "distributed",
      machine: m,
      settings: {
        photos: count,
        maxSide: 256,
        scales: Number(values.scales),
        threads: Number(threads),
      },
      results: results.map(({ dirs: _, ...r }) => r),
      overheadPerJobMs: overheadMs,
      overheadCpuPerJobMs: overheadCpuMs,
    };
    const table = [
      "| run | images/s | seconds | CPU ms per image (all processes) | same index as local | cores busy with other processes | load avg before / after |",
      "|---|---|---|---|---|---|---|",
      ...results.map(
        (r) =>
          `| ${r.label} | **${r.imagesPerSecond.toFixed(2)}** | ${r.seconds.toFixed(1)} | ${r.cpuMsPerImage.toFixed(0)} | ${r.sameAsLocal ? "yes" : "**no**"} | ${r.otherCores.toFixed(2)} of ${m.cores} | ${r.load} |`,
      ),
    ];
    const summary = [
      "# distributed: `superglobal index --queue` with 1, 2, 4 worker processes on one machine",
      "",
      `machine: ${JSON.stringify(m)} (${m.cores} cores: the workers share them)`,
      `data: ${count} real photos (debian-photos, at most ${side} px), --scales ${values.scales}; each worker --threads ${threads}; Redis ${redis.url.replace(/:\d+$/, "")} (Debian redis-server, local, no persistence); timed from the indexer's first output to its exit (median of ${reps} runs, each into a fresh index), workers warmed up first`,
      "",
      ...table,
      "",
      overheadMs === undefined || overheadCpuMs === undefined
        ? ""
        : `queue overhead per job, 1 worker against the local run (both --threads ${threads}): **${overheadCpuMs.toFixed(0)} ms of CPU** (indexer + worker + Redis: the file hashed by the indexer and again by the worker, Redis round trips, the base64 descriptor, a commit per batch) and **${overheadMs.toFixed(0)} ms of wall time** (the indexer hashes and commits in its own process, beside the worker: on ${m.cores} cores that work overlaps with extraction, which the local run does in one process; the CPU figure is the cost)`,
    ].join("\n");
    saveResult(`distributed-${m.date.slice(0, 10)}-${side}px-s${values.scales}`, record, summary);
    process.stdout.write(`${summary}\n`);
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await redis.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

/** Each prepared copy (named NN-<original name>) made again from its original, at most `side` px. */
async function resizeFromSources(copies: string[], side: number): Promise<void> {
  const source = join(assetsDir, "debian-photos");
  const originals = new Map<string, string>();
  for (const sub of readdirSync(source, { withFileTypes: true })) {
    if (!sub.isDirectory()) continue;
    for (const f of readdirSync(join(source, sub.name)))
      originals.set(f, join(source, sub.name, f));
  }
  for (const copy of copies) {
    const original = originals.get(copy.split("/").pop()!.replace(/^\d+-/, ""));
    if (original === undefined) continue;
    const bytes = await sharp(original)
      .resize(side, side, { fit: "inside", withoutEnlargement: true })
      .jpeg({ quality: 90 })
      .toBuffer();
    writeFileSync(copy, bytes);
  }
}
