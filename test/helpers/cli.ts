/** Runs the `superglobal` CLI from the sources, as a user would run it, and returns what it printed. */
import { spawnSync } from "node:child_process";
import { repoRoot } from "./shared.ts";

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `superglobal ARGS…` in the repository root, with extra environment variables. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
    cwd: repoRoot,
    encoding: "utf8",
    env: { ...process.env, ...env },
    timeout: 600_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
