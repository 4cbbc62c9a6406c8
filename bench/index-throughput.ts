/**
 * `npm run bench -- index throughput [--images 32] [--models default,cvnet-r50] [--jobs 1,2]
 *   [--checkpoint FILE] [--tag T]`
 * End-to-end indexing speed on real photos: `superglobal index DIR --index X` as a user runs it
 * (scan, decode, 3-scale extraction, fsynced commits), in its own process, timed by wall clock,
 * with the process's peak RSS (worker threads included) from /usr/bin/time. For each model:
 * - the peer in the same run: `superglobal extract` of the same files into a .npy (the bare
 *   batch extraction, no index), so the ratio is what the index costs on top;
 * - each --jobs value (1: one image at a time on every core; 2: two images in flight in worker
 *   threads with the cores shared out), to choose the default by measurement;
 * - start-up: the same command on one image (process start, model load), reported separately.
 * Photos: the first --images of ../shared/assets/multiview-dev (real photos, long side ≤ 768 px).
 * CVNet-R50 runs the fixture checkpoint (random weights: the same graph, hence the same speed as
 * the published weights). The model cache is warmed first, so no run pays for building a model.
 * Results: bench/results/index-throughput-<date>[-<tag>].json/.md.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { contention, cpuTimes, machine, saveResult } from "./machine.ts";

const here = import.meta.dirname;
const repo = resolve(here, "..");
const shared = process.env["SUPERGLOBAL_SHARED"] ?? resolve(repo, "..", "shared");

interface Run {
  command: string;
  images: number;
  seconds: number;
  images_per_s: number;
  peak_rss_mib: number;
}

interface ModelResult {
  model: string;
  args: string[];
  startup: Run;
  extract_peer: Run;
  index: Record<string, Run>;
}

/** CPU seconds the measured commands used (for the contention figure). */
let childCpuS = 0;

/** Runs the CLI from source; returns wall seconds and peak RSS (MiB) of its process. */
function runCli(args: string[], env: NodeJS.ProcessEnv): { seconds: number; peakMiB: number } {
  const r = spawnSync(
    "/usr/bin/time",
    ["-f", "TIME %e %M %U %S", process.execPath, "--import", "tsx", "src/cli/main.ts", ...args],
    { cwd: repo, env: { ...process.env, ...env }, encoding: "utf8", maxBuffer: 1 << 26 },
  );
  // /usr/bin/time writes its line last on stderr; the CLI itself must have succeeded.
  const line = /TIME ([\d.]+) (\d+) ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr ?? "");
  if (r.status !== 0 || line === null) {
    throw new Error(
      `superglobal ${args.slice(0, 3).join(" ")} … failed (${r.status}): ${r.stderr}`,
    );
  }
  childCpuS += Number(line[3]) + Number(line[4]);
  return { seconds: Number(line[1]), peakMiB: Number(line[2]) / 1024 };
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      images: { type: "string", default: "32" },
      models: { type: "string", default: "default,cvnet-r50" },
      jobs: { type: "string", default: "1,2" },
      checkpoint: {
        type: "string",
        default: join(shared, "fixtures/superglobal-r50/cvnet_r50_random.pyth"),
      },
      tag: { type: "string" },
    },
  });
  const photosDir = join(shared, "assets", "multiview-dev");
  if (!existsSync(photosDir)) {
    throw new Error(`real photos not found at ${photosDir} (set SUPERGLOBAL_SHARED)`);
  }
  const count = Number(values.images);
  const photos = listImages(photosDir).slice(0, count);
  const jobsList = values.jobs.split(",").map(Number);
  const work = mkdtempSync(join(tmpdir(), "superglobal-bench-indexing-"));
  const env = { SUPERGLOBAL_CACHE: join(work, "cache") };
  const folder = join(work, "photos");
  const one = join(work, "one");
  mkdirSync(folder);
  mkdirSync(one);
  for (const [i, p] of photos.entries()) {
    execFileSync("cp", [p, join(folder, `${String(i).padStart(4, "0")}.jpg`)]);
  }
  execFileSync("cp", [photos[0] as string, join(one, "first.jpg")]);
  const load = {
    before: loadavg()
      .map((x) => x.toFixed(1))
      .join(" "),
    cpu: cpuTimes(),
  };
  const start = performance.now();
  const results: ModelResult[] = [];
  try {
    for (const model of values.models.split(",")) {
      const modelArgs =
        model === "default"
          ? []
          : model === "cvnet-r50"
            ? ["--checkpoint", values.checkpoint]
            : ["--model", model];
      if (model === "cvnet-r50" && !existsSync(values.checkpoint)) {
        throw new Error(`CVNet checkpoint not found: ${values.checkpoint}`);
      }
      const run = (name: string, args: string[], images: number): Run => {
        const r = runCli(args, env);
        const line = {
          command: name,
          images,
          seconds: r.seconds,
          images_per_s: images / r.seconds,
          peak_rss_mib: r.peakMiB,
        };
        process.stdout.write(
          `${model} ${name}: ${images} images in ${r.seconds.toFixed(1)} s (${line.images_per_s.toFixed(2)} images/s), peak RSS ${r.peakMiB.toFixed(0)} MiB\n`,
        );
        return line;
      };
      const fresh = (name: string) => {
        const p = join(work, `${model}-${name}.sgi`);
        rmSync(p, { recursive: true, force: true });
        return p;
      };
      // Warm the model cache (a first use builds the model), untimed.
      runCli(["index", one, "--index", fresh("warm"), ...modelArgs], env);
      const startup = run(
        "index, 1 image",
        ["index", one, "--index", fresh("one"), ...modelArgs],
        1,
      );
      const extract_peer = run(
        "extract (peer: no index)",
        [
          "extract",
          ...readdirSync(folder).map((f) => join(folder, f)),
          "--out",
          join(work, "x.npy"),
          ...modelArgs,
        ],
        photos.length,
      );
      const index: Record<string, Run> = {};
      for (const jobs of jobsList) {
        index[`jobs ${jobs}`] = run(
          `index --jobs ${jobs}`,
          ["index", folder, "--index", fresh(`jobs${jobs}`), "--jobs", String(jobs), ...modelArgs],
          photos.length,
        );
      }
      results.push({ model, args: modelArgs, startup, extract_peer, index });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const seconds = (performance.now() - start) / 1000;
  const record = {
    machine: machine(),
    cores: availableParallelism(),
    photos: {
      source: "multiview-dev (real photos, long side ≤ 768 px)",
      count: photos.length,
      bytes: photos.reduce((s, p) => s + statSync(p).size, 0),
    },
    load: {
      ...load,
      after: loadavg()
        .map((x) => x.toFixed(1))
        .join(" "),
      contention: contention(load.cpu, cpuTimes(), childCpuS),
      seconds,
    },
    results,
  };
  saveResult(
    `index-throughput-${new Date().toISOString().slice(0, 10)}${values.tag === undefined ? "" : `-${values.tag}`}`,
    record,
    summary(record),
  );
}

function listImages(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (/\.jpe?g$/i.test(entry.name)) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** Images per second once started: the one-image run's time (start-up, model load) taken off. */
function steady(run: Run, m: ModelResult): number {
  return (run.images - 1) / Math.max(1e-9, run.seconds - m.startup.seconds);
}

function summary(r: {
  machine: object;
  cores: number;
  photos: { count: number; source: string };
  load: { before: string; after: string; contention: unknown };
  results: ModelResult[];
}): string {
  const rows = [
    "| model | command | images | seconds | images/s | after start-up, images/s | vs extract | peak RSS (MiB) |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const m of r.results) {
    for (const run of [m.startup, m.extract_peer, ...Object.values(m.index)]) {
      const ratio =
        run === m.startup ? "" : `${(steady(run, m) / steady(m.extract_peer, m)).toFixed(2)}x`;
      const rate = run === m.startup ? "" : steady(run, m).toFixed(2);
      rows.push(
        `| ${m.model} | ${run.command} | ${run.images} | ${run.seconds.toFixed(1)} | ${run.images_per_s.toFixed(2)} | ${rate} | ${ratio} | ${run.peak_rss_mib.toFixed(0)} |`,
      );
    }
  }
  return [
    `# index throughput: \`superglobal index\` end to end on ${r.photos.count} real photos (${r.photos.source}), 3 scales`,
    "",
    `machine: ${JSON.stringify(r.machine)}; ${r.cores} cores`,
    `load average before / after: ${r.load.before} / ${r.load.after}; while it ran: ${JSON.stringify(r.load.contention)}`,
    "",
    "Wall-clock seconds of the whole command (process start and model load included; the model cache was warm). " +
      "`after start-up`: (images − 1) / (seconds − the one-image run's seconds). `vs extract`: that rate against `superglobal extract` of the same files in the same run (the bare batch extraction, no index).",
    "",
    ...rows,
    "",
  ].join("\n");
}
