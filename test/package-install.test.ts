/**
 * The package as a user gets it: `npm pack`, installed into a new project with no network, then
 * its CLI, its exports and its type declarations used from there.
 *
 * - The pack is made from a staged copy of the package's inputs (package.json, tsconfig, src, the
 *   `files` folders), so the test never rebuilds the working tree's dist/ under other runs.
 * - The install is `npm install --offline` with `ONNXRUNTIME_NODE_INSTALL=skip`, as the README
 *   says. The temporary project gets a package-lock with the exact versions of this repository's
 *   lock (each with its registry URL and integrity), so every tarball comes from npm's cache,
 *   which `npm ci` has just filled: no packument is needed, nothing is fetched.
 * - Slow: onnxruntime-node alone is 288 MB unpacked. About 30 s on 2 cores (pack 4-6 s, install
 *   22-31 s); the timings show as diagnostics. Its temp folder is removed afterwards.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  version: string;
  files: string[];
};
const work = mkdtempSync(join(tmpdir(), "superglobal-package-"));
after(() => rmSync(work, { recursive: true, force: true }));

/**
 * The environment of every child: onnxruntime-node's CUDA download off; no V8 coverage files for
 * npm and tsc (c8 sets NODE_V8_COVERAGE for the test run); none of the outer `npm test`'s
 * per-script variables (they name this repository as the project).
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" };
  delete env.NODE_V8_COVERAGE;
  delete env.INIT_CWD;
  for (const key of Object.keys(env)) {
    if (/^npm_(package_|lifecycle_|config_local_prefix$|config_prefix$)/i.test(key))
      delete env[key];
  }
  return env;
}

async function run(
  file: string,
  args: string[],
  cwd: string,
): Promise<{ stdout: string; stderr: string }> {
  try {
    return await promisify(execFile)(file, args, {
      cwd,
      env: childEnv(),
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    const e = error as { message: string; stdout?: string; stderr?: string };
    throw new Error(
      `${file} ${args.join(" ")} (in ${cwd}) failed: ${e.message}\n${e.stdout ?? ""}`,
    );
  }
}

/** npm itself: the one running `npm test` when there is one, else the npm on PATH. */
function npm(args: string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  const cli = process.env.npm_execpath;
  return cli?.endsWith(".js") ? run(process.execPath, [cli, ...args], cwd) : run("npm", args, cwd);
}

test("superglobal --version prints package.json's version", async () => {
  const { stdout } = await run(
    process.execPath,
    ["--import", "tsx", "src/cli/main.ts", "--version"],
    root,
  );
  assert.equal(stdout.trim(), pkg.version);
});

test("npm pack, then install offline into a new project: CLI, imports and types work", async (t) => {
  const started = performance.now();
  const lap = (what: string) =>
    t.diagnostic(`${what}: ${((performance.now() - started) / 1000).toFixed(1)} s`);

  // 1. Stage what the pack reads and build it there (npm pack runs `prepare`, i.e. the build).
  const stage = join(work, "stage");
  mkdirSync(stage);
  const inputs = ["package.json", "tsconfig.json", "tsconfig.build.json", "README.md", "LICENSE"];
  // Other plain `files` entries (a models/ folder, say) are staged, and allowed in the tarball.
  const shipped = pkg.files
    .filter((f) => !/[*!]/.test(f) && f !== "dist")
    .map((f) => f.replace(/\/$/, ""));
  for (const name of [...inputs, "src", ...shipped]) {
    if (existsSync(join(root, name)))
      cpSync(join(root, name), join(stage, name), { recursive: true });
  }
  symlinkSync(join(root, "node_modules"), join(stage, "node_modules"), "dir");
  const packed = await npm(["pack", "--json", "--pack-destination", work], stage);
  const report = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("[\n"))) as Array<{
    filename: string;
    files: Array<{ path: string }>;
  }>;
  const tarball = join(work, report[0].filename);
  lap("pack");

  // 2. The tarball holds what users need and nothing else: no sources, tests or source maps.
  const paths = report[0].files.map((f) => f.path).sort();
  for (const needed of [
    "LICENSE",
    "README.md",
    "package.json",
    "dist/index.js",
    "dist/index.d.ts",
    "dist/cli/main.js",
  ]) {
    assert.ok(paths.includes(needed), `${needed} is in the tarball`);
  }
  const extras = paths.filter(
    (p) =>
      !["LICENSE", "README.md", "package.json"].includes(p) &&
      !/^dist\/.+(\.js|\.d\.ts)$/.test(p) &&
      !shipped.some((f) => p === f || p.startsWith(`${f}/`)),
  );
  assert.deepEqual(extras, [], "files outside dist/*.js, dist/*.d.ts and the `files` folders");
  // Data the code reads at run time (models/…) ships whenever it exists and is not an empty folder.
  for (const entry of shipped) {
    const at = join(stage, entry);
    if (!existsSync(at) || (statSync(at).isDirectory() && readdirSync(at).length === 0)) continue;
    assert.ok(
      paths.some((p) => p === entry || p.startsWith(`${entry}/`)),
      `${entry} is in the tarball`,
    );
  }

  const stale = paths.filter(
    (p) =>
      p.startsWith("dist/") &&
      !existsSync(join(root, "src", p.slice(5).replace(/(\.d\.ts|\.js)$/, ".ts"))),
  );
  assert.deepEqual(stale, [], "dist files without a source file");

  // 3. A new project: this repository's locked versions, from npm's cache only.
  const app = join(work, "app");
  mkdirSync(app);
  const tgzName = report[0].filename;
  cpSync(tarball, join(app, tgzName));
  const dependencies = { [pkg.name]: `file:${tgzName}` };
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module", dependencies }, null, 2),
  );
  writeFileSync(
    join(app, "package-lock.json"),
    JSON.stringify(consumerLock(dependencies), null, 2),
  );
  await npm(["install", "--offline", "--no-audit", "--no-fund"], app);
  lap("install");

  // 4. The CLI, by its bin name.
  const version = await npm(["exec", "--no", "--", "superglobal", "--version"], app);
  assert.equal(version.stdout.trim(), pkg.version);

  // 5. The library from plain JavaScript: both native runtimes load (sharp on import,
  // onnxruntime-node in ExactSearch.create) and a search runs.
  writeFileSync(
    join(app, "use.mjs"),
    `import { Extractor, ExactSearch, SuperglobalError } from "superglobal";
const search = await ExactSearch.create({ threads: 1 });
const db = { data: Float32Array.from([1, 0, 0, 1, 0.6, 0.8]), rows: 3, cols: 2 };
const q = { data: Float32Array.from([0, 1]), rows: 1, cols: 2 };
const { ids } = await search.search(db, q, 2);
const error = new SuperglobalError("BAD_FILE", "x");
console.log(JSON.stringify({ create: typeof Extractor.create, code: error.code, ids: [...ids] }));
`,
  );
  const used = await run(process.execPath, ["use.mjs"], app);
  assert.deepEqual(JSON.parse(used.stdout), { create: "function", code: "BAD_FILE", ids: [1, 2] });

  // 6. A TypeScript user: the shipped .d.ts type-check with this repository's tsc, and misuse fails.
  writeFileSync(
    join(app, "use.ts"),
    `import { ExactSearch, Extractor, type SearchResult, SuperglobalError } from "superglobal";
const search: ExactSearch = await ExactSearch.create({ threads: 1 });
const m = { data: new Float32Array(4), rows: 2, cols: 2 };
const result: SearchResult = await search.search(m, m, 1);
const first: number = result.ids[0] + result.k;
const make: (options: { checkpoint: string }) => Promise<Extractor> = (o) => Extractor.create(o);
const e: SuperglobalError = new SuperglobalError("NOT_FOUND", "gone");
// @ts-expect-error: k is a number
await search.search(m, m, "1");
export { e, first, make };
`,
  );
  writeFileSync(
    join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "es2022",
        module: "nodenext",
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        typeRoots: [join(root, "node_modules", "@types")],
        types: ["node"],
      },
      files: ["use.ts"],
    }),
  );
  await run(
    process.execPath,
    [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "."],
    app,
  );
  lap("all");
});

/**
 * A package-lock for a project whose one dependency is the tarball: every non-dev package of
 * this repository's lock at its locked version, integrity and registry URL. npm then builds the
 * tree from the lock and takes every tarball from its cache by integrity.
 */
function consumerLock(dependencies: Record<string, string>): object {
  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8")) as {
    packages: Record<string, { version?: string; resolved?: string; dev?: boolean }>;
  };
  const registry = (process.env.npm_config_registry ?? "https://registry.npmjs.org/").replace(
    /\/?$/,
    "/",
  );
  const packages: Record<string, object> = { "": { name: "consumer", dependencies } };
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === "" || entry.dev) continue;
    const name = path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length);
    const base = name.slice(name.lastIndexOf("/") + 1);
    packages[path] = {
      ...entry,
      resolved: entry.resolved ?? `${registry}${name}/-/${base}-${entry.version}.tgz`,
    };
  }
  return { name: "consumer", lockfileVersion: 3, requires: true, packages };
}
