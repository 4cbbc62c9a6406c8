/**
 * Distributed indexing end to end through the real CLI, against a real Redis started here
 * (helpers/redis.ts): `superglobal index DIR --queue URL` with three `superglobal worker`s, one
 * SIGKILLed in the middle of its job, and the enqueuer SIGKILLed and restarted once; the final
 * index equals a local index of the same folder (same entries, same failures, descriptors equal
 * byte for byte) and nothing is left in Redis. Then the worker's refusals: another model, a path
 * missing on the worker (shown in the enqueuer's summary), and a graceful SIGTERM.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Queue, QueueEvents } from "bullmq";
import { IndexStore } from "../src/index/index-store.ts";
import { claimKey } from "../src/queue/committer.ts";
import {
  bullConnection,
  connectRedis,
  DEFAULT_QUEUE_NAME,
  parseQueueUrl,
} from "../src/queue/connection.ts";
import { JOB_NAME, type JobPayload } from "../src/queue/jobs.ts";
import {
  defaultWhiteningReady,
  preparePhotos,
  repoRoot,
  runCli,
  snapshot,
} from "./helpers/crash-harness.ts";
import { hasRedis, redisMissing, startRedis, type TestRedis } from "./helpers/redis.ts";
import { assetsDir } from "./helpers/shared.ts";

const source = join(assetsDir, "debian-photos");
const skipReason = !hasRedis
  ? redisMissing
  : !existsSync(source)
    ? `test photos not found at ${source}`
    : !defaultWhiteningReady()
      ? "the default model's whitening has not landed (models/default-whitening/)"
      : undefined;
const skip = skipReason === undefined ? {} : { skip: skipReason };

const root = mkdtempSync(join(tmpdir(), "superglobal-queue-"));
const photosDir = join(root, "photos");
const cache = join(root, "cache");
const env = { ...process.env, SUPERGLOBAL_CACHE: cache };
const cliMain = join(repoRoot, "src", "cli", "main.ts");
let redis: TestRedis | undefined;
const children: ChildProcess[] = [];

/** A CLI process whose stderr is collected by line, with a wait for a line matching a pattern. */
interface Running {
  child: ChildProcess;
  lines: string[];
  waitFor(pattern: RegExp, count?: number): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function start(args: string[]): Running {
  const child = spawn(process.execPath, ["--import", "tsx", cliMain, ...args], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  let rest = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    lines.push(...parts);
    for (const w of [...waiters]) w();
  });
  const exited = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stderr: string;
  }>((done) =>
    child.on("close", (code, signal) => {
      lines.push(rest);
      for (const w of [...waiters]) w();
      done({ code, signal, stderr: lines.join("\n") });
    }),
  );
  return {
    child,
    lines,
    exited,
    waitFor(pattern, count = 1) {
      return new Promise((done, fail) => {
        const check = () => {
          if (lines.filter((l) => pattern.test(l)).length >= count) {
            waiters.splice(waiters.indexOf(check), 1);
            done();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.splice(waiters.indexOf(check), 1);
            fail(new Error(`exited before ${count}× ${pattern}: ${lines.join("\n").slice(-2000)}`));
          }
        };
        waiters.push(check);
        check();
      });
    },
  };
}

/**
 * Locks short enough that a killed worker's job is retried within seconds, long enough that a
 * live worker on a machine busy with the whole test suite keeps renewing its lock (a lock lost
 * by a live worker would describe an image twice, which the test counts).
 */
const workerArgs = (name = DEFAULT_QUEUE_NAME) => [
  "worker",
  "--queue",
  redis!.url,
  "--queue-name",
  name,
  "--threads",
  "1",
  "--lock-ms",
  "10000",
  "--stalled-ms",
  "2000",
];
const describing = /^worker: describing /;

/** Entries (path, size, mtime, hash), failures (path, reason) and descriptors of an index. */
function contents(dir: string) {
  const store = IndexStore.open(dir, { readOnly: true });
  try {
    const byPath = <T extends { path: string }>(a: T, b: T) => (a.path < b.path ? -1 : 1);
    return {
      entries: [...store.entries()].sort(byPath),
      failures: store
        .failures()
        .map((f) => ({ path: f.path, hash: f.hash, reason: f.reason }))
        .sort(byPath),
      descriptors: snapshot(dir)!.rows,
    };
  } finally {
    store.close();
  }
}

before(async () => {
  if (skipReason !== undefined) return;
  redis = await startRedis();
  const photos = await preparePhotos(source, photosDir, 10);
  // A broken image: fails the same way, with the same reason, locally and on a worker.
  writeFileSync(join(photosDir, "broken.jpg"), readFileSync(photos[0]!).subarray(0, 600));
});

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await redis?.stop();
  rmSync(root, { recursive: true, force: true });
});

test(
  "3 workers, one SIGKILLed mid-job, the enqueuer SIGKILLed and restarted: the index equals a local one",
  skip,
  async (t) => {
    const local = join(root, "local.sgi");
    const dist = join(root, "dist.sgi");
    const ref = await runCli(
      ["index", photosDir, "--index", local, "--scales", "1", "--threads", "1"],
      env,
    );
    assert.equal(ref.code, 1, ref.stderr); // the broken image
    const expected = contents(local);
    assert.equal(expected.entries.length, 10);
    assert.equal(expected.failures.length, 1);

    // The third takes two jobs at once, in worker threads (an ExtractorPool).
    const workers = [
      start(workerArgs()),
      start(workerArgs()),
      start([...workerArgs(), "--concurrency", "2"]),
    ];
    const [killed, ...alive] = workers as [Running, Running, Running];
    const indexArgs = [
      "index",
      photosDir,
      "--index",
      dist,
      "--scales",
      "1",
      "--queue",
      redis!.url,
      "--backoff-ms",
      "200",
    ];
    const first = start(indexArgs);

    // Worker 1 dies while it holds its first job (it builds the model after taking it).
    await killed.waitFor(describing);
    killed.child.kill("SIGKILL");
    const lost = killed.lines
      .find((l) => describing.test(l))!
      .replace(describing, "")
      .replace(/ \(attempt \d+\)$/, "");

    // The enqueuer dies once it has committed some results (a reader sees them); the workers go
    // on without it, leaving results in Redis that only the restarted enqueuer can commit.
    const taken = () => alive.flatMap((w) => w.lines).filter((l) => describing.test(l)).length;
    while ((snapshot(dist)?.rows.size ?? 0) < 2) {
      assert.equal(first.child.exitCode, null, first.lines.join("\n"));
      await new Promise((done) => setTimeout(done, 50));
    }
    first.child.kill("SIGKILL");
    const killedFirst = await first.exited;
    assert.equal(
      killedFirst.signal,
      "SIGKILL",
      `the enqueuer ended by itself: ${killedFirst.stderr}`,
    );
    const before = taken();
    await Promise.race(
      alive.map((w) => w.waitFor(describing, w.lines.filter((l) => describing.test(l)).length + 1)),
    );
    assert.ok(taken() > before);

    // Restarted, it resumes: every image once, committed as it arrives.
    const second = await start(indexArgs).exited;
    const summary =
      /indexed 11 image file\(s\) into .*: (\d+) added, 0 updated, (\d+) unchanged, 0 removed, (\d+) failed; 10 searchable/.exec(
        second.stderr,
      );
    assert.ok(summary, second.stderr);
    const [added, unchanged, failed] = summary.slice(1).map(Number) as [number, number, number];
    assert.equal(added + unchanged + failed, 11, second.stderr);
    assert.ok(unchanged >= 2 && added >= 1, second.stderr);
    t.diagnostic(
      `restarted enqueuer: ${added} added, ${unchanged} already committed, ${failed} failed`,
    );
    assert.equal(second.code, failed > 0 ? 1 : 0, second.stderr);
    assert.match(second.stderr, /index \[/); // the progress bar, as a local run's

    const got = contents(dist);
    assert.deepEqual(got.entries, expected.entries);
    assert.deepEqual(got.failures, expected.failures);
    assert.deepEqual(got.descriptors, expected.descriptors);

    // The killed worker's job went back to the queue (stalled) and another worker described it.
    assert.ok(
      alive.some((w) => w.lines.some((l) => l.startsWith(`worker: describing ${lost} (`))),
      `${lost} was not retried:\n${alive.map((w) => w.lines.join("\n")).join("\n")}`,
    );

    // … and nothing else was described twice: the restart re-used the queued jobs and results.
    const described = alive.flatMap((w) => w.lines).filter((l) => describing.test(l));
    const times = new Map<string, number>();
    for (const l of described) {
      const path = l.replace(describing, "").replace(/ \(attempt \d+\)$/, "");
      times.set(path, (times.get(path) ?? 0) + 1);
    }
    assert.equal(times.size, 11, described.join("\n"));
    assert.ok(
      [...times.values()].every((n) => n === 1),
      described.join("\n"),
    );
    t.diagnostic(`worker 1 was killed holding ${lost}; another worker described it`);

    // Nothing left in Redis: every result was committed and its job removed; the queue is free.
    const address = parseQueueUrl(redis!.url);
    const queue = new Queue(DEFAULT_QUEUE_NAME, { connection: bullConnection(address) });
    const client = await connectRedis(address);
    try {
      const counts = await queue.getJobCounts(
        "waiting",
        "active",
        "delayed",
        "completed",
        "failed",
      );
      assert.deepEqual(Object.values(counts), [0, 0, 0, 0, 0], JSON.stringify(counts));
      assert.equal(await client.get(claimKey(DEFAULT_QUEUE_NAME)), null);
    } finally {
      await queue.close();
      client.disconnect();
    }

    // Workers refuse another model's job at once, and fail a path they cannot read, naming it.
    const spec = IndexStore.readExtra(dist)["modelSpec"] as object;
    const store = IndexStore.open(dist, { readOnly: true });
    const identity = store.model;
    store.close();
    const entry = expected.entries[0]!;
    const payload: JobPayload = { ...entry, model: identity, spec };
    const jobs = new Queue(DEFAULT_QUEUE_NAME, { connection: bullConnection(address) });
    const events = new QueueEvents(DEFAULT_QUEUE_NAME, { connection: bullConnection(address) });
    try {
      await events.waitUntilReady();
      const wrong = await jobs.add(
        JOB_NAME,
        { ...payload, model: "not-this-model" },
        { attempts: 3 },
      );
      await assert.rejects(
        wrong.waitUntilFinished(events),
        /refuses the job: its model is .* but the index's is not-this-model/,
      );
      assert.equal((await jobs.getJob(wrong.id!))!.attemptsMade, 1);
      const missing = join(root, "nowhere", "gone.jpg");
      const lostJob = await jobs.add(
        JOB_NAME,
        { ...payload, path: missing },
        { attempts: 2, backoff: { type: "fixed", delay: 10 } },
      );
      const why = new RegExp(
        `${missing}: cannot be read on worker ${hostname()} \\(no such file or folder\\); workers need the same image paths as the indexing machine \\(a shared mount\\)`,
      );
      await assert.rejects(lostJob.waitUntilFinished(events), why);
      assert.equal((await jobs.getJob(lostJob.id!))!.attemptsMade, 2);
      await jobs.obliterate({ force: true });
    } finally {
      await events.close();
      await jobs.close();
    }

    // SIGTERM: a worker finishes what it holds and exits cleanly.
    for (const w of alive) w.child.kill("SIGTERM");
    for (const w of alive) {
      const end = await w.exited;
      assert.equal(end.code, 0, end.stderr);
      assert.match(end.stderr, /SIGTERM: finishing the running jobs/);
    }
  },
);

test(
  "a job that fails every attempt is listed in the summary with its reason, and kept in the failed list",
  skip,
  async () => {
    const dir = join(root, "one");
    mkdirSync(dir);
    const image = join(dir, "photo.jpg");
    copyFileSync(join(photosDir, "00-dog.jpg"), image);
    const index = join(root, "one.sgi");
    // A queue of its own: nothing of the first test can take its job.
    const name = "second";
    const enqueuer = start([
      "index",
      dir,
      "--index",
      index,
      "--scales",
      "1",
      "--queue",
      redis!.url,
      "--queue-name",
      name,
      "--attempts",
      "2",
      "--backoff-ms",
      "10",
    ]);
    // Once the job is queued, the file goes away: the worker cannot read it.
    const address = parseQueueUrl(redis!.url);
    const queue = new Queue(name, { connection: bullConnection(address) });
    try {
      // Queued, and no worker yet: the enqueuer says so.
      await enqueuer.waitFor(
        /no worker is connected to queue second at redis:\/\/127\.0\.0\.1:\d+ yet: start `superglobal worker --queue redis:\/\/127\.0\.0\.1:\d+ --queue-name second`/,
      );
      assert.equal(await queue.getWaitingCount(), 1);
      rmSync(image);
      const worker = start(workerArgs(name));
      const end = await enqueuer.exited;
      assert.equal(end.code, 1, end.stderr);
      assert.match(
        end.stderr,
        /0 added, 0 updated, 0 unchanged, 0 removed, 1 failed; 0 searchable/,
      );
      assert.match(
        end.stderr,
        new RegExp(`failed ${image}: cannot be read on worker ${hostname()} .*a shared mount`),
      );
      assert.equal(await queue.getFailedCount(), 1);
      // Not recorded in the index: the next run tries the file again.
      assert.deepEqual(contents(index).failures, []);
      worker.child.kill("SIGTERM");
      assert.equal((await worker.exited).code, 0);
    } finally {
      await queue.close();
    }
  },
);
