/**
 * A throwaway Redis server for the job-queue tests: Debian's `redis-server` on a free port, in a
 * temporary folder, without persistence; stopped (and its folder removed) by `stop()`. Tests
 * skip with `redisMissing` as the reason where redis-server is not installed.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

const BINARY = process.env["REDIS_SERVER"] ?? "redis-server";

export const hasRedis = spawnSync(BINARY, ["--version"], { encoding: "utf8" }).status === 0;
export const redisMissing = `${BINARY} not found (apt-get install redis-server; .ci/run does)`;

export interface TestRedis {
  url: string;
  port: number;
  /** The server's process id (benchmarks read its CPU time). */
  pid: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => done(port));
    });
  });
}

export async function startRedis(): Promise<TestRedis> {
  const dir = mkdtempSync(join(tmpdir(), "superglobal-redis-"));
  const port = await freePort();
  const child: ChildProcess = spawn(
    BINARY,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { cwd: dir, stdio: "ignore" },
  );
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  const url = `redis://127.0.0.1:${port}`;
  // Ready when it answers PING (it starts in milliseconds; give up after ~10 s).
  for (let i = 0; ; i++) {
    const client = new Redis({
      port,
      host: "127.0.0.1",
      lazyConnect: true,
      retryStrategy: () => null,
    });
    client.on("error", () => {});
    try {
      await client.connect();
      await client.ping();
      client.disconnect();
      break;
    } catch (error) {
      client.disconnect();
      if (i >= 100 || child.exitCode !== null) {
        child.kill("SIGKILL");
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`redis-server did not start on port ${port}: ${(error as Error).message}`);
      }
      await new Promise((done) => setTimeout(done, 100));
    }
  }
  return {
    url,
    port,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
