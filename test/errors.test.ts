/**
 * The one mapping of system errors to our codes (`fileError`) and the up-front check of output
 * paths (`assertWritable`), which every command runs before it starts any work.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { fileError, SuperglobalError } from "../src/errors.ts";
import { assertWritable } from "../src/io/writable.ts";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "sg-errors-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function systemError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something, open 'x'`), { code });
}

test("fileError maps each system error to its code, naming the file and the reason", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["ENOENT", "NOT_FOUND", /no such file/],
    ["EACCES", "IO_ERROR", /permission denied/],
    ["EPERM", "IO_ERROR", /permission denied/],
    ["EROFS", "IO_ERROR", /read-only/],
    ["ENOSPC", "IO_ERROR", /no space left/],
    ["ENOTDIR", "INVALID_ARGUMENT", /not a folder/],
    ["EISDIR", "BAD_FILE", /is a folder/],
  ];
  for (const [errno, code, reason] of cases) {
    const e = fileError("/data/a.npy", "cannot write", systemError(errno));
    assert.ok(e instanceof SuperglobalError, errno);
    assert.equal(e.code, code, errno);
    assert.equal(e.input, "/data/a.npy");
    assert.match(e.message, /^\/data\/a\.npy: cannot write \(/, errno);
    assert.match(e.message, reason, errno);
    assert.equal((e as { cause?: unknown }).cause instanceof Error, true);
  }
  // Images: what is there but unusable is BAD_IMAGE; a missing one is still NOT_FOUND.
  assert.equal(
    fileError("a.jpg", "cannot read", systemError("EISDIR"), "BAD_IMAGE").code,
    "BAD_IMAGE",
  );
  assert.equal(
    fileError("a.jpg", "cannot read", systemError("ENOENT"), "BAD_IMAGE").code,
    "NOT_FOUND",
  );
  // Not a system error at all.
  assert.equal(fileError("a", "cannot read", new Error("boom")).code, "BAD_FILE");
});

test("assertWritable: a new file in an existing folder or an existing file pass, untouched", () => {
  const fresh = join(dir, "fresh.npy");
  assertWritable(fresh);
  assert.equal(existsSync(fresh), false, "the check creates nothing");
  const existing = join(dir, "existing.npy");
  writeFileSync(existing, "old");
  assertWritable(existing);
});

test("assertWritable: a missing folder, a folder, a file as folder are refused naming the path", () => {
  const refused = (path: string, code: string, why: RegExp) =>
    assert.throws(
      () => assertWritable(path),
      (e: unknown) =>
        e instanceof SuperglobalError &&
        e.code === code &&
        e.input === path &&
        e.message.startsWith(`${path}: cannot write`) &&
        why.test(e.message),
      path,
    );
  refused(join(dir, "no-such-dir", "x.npy"), "NOT_FOUND", /folder .*no-such-dir does not exist/);
  mkdirSync(join(dir, "a-folder"));
  refused(join(dir, "a-folder"), "BAD_FILE", /is a folder/);
  writeFileSync(join(dir, "plain"), "");
  refused(join(dir, "plain", "x.npy"), "INVALID_ARGUMENT", /not a folder/);
  assert.throws(
    () => assertWritable(""),
    (e: unknown) => e instanceof SuperglobalError,
  );
});

test("a folder without write permission is refused before any work, naming the path", () => {
  const locked = join(dir, "locked");
  mkdirSync(locked);
  chmodSync(dir, 0o755);
  chmodSync(locked, 0o555);
  const readonlyFile = join(dir, "readonly.npy");
  writeFileSync(readonlyFile, "");
  chmodSync(readonlyFile, 0o444);
  // Root may write anywhere: check as an unprivileged user then (a child process).
  const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  for (const out of [join(locked, "x.npy"), readonlyFile]) {
    const script = `import { assertWritable } from ${JSON.stringify(join(repoRoot, "src/io/writable.ts"))};
try { assertWritable(${JSON.stringify(out)}); console.log("ok"); } catch (e) { console.log(e.code, e.message); }`;
    const r = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      {
        cwd: repoRoot,
        encoding: "utf8",
        env: { ...process.env, TSX_TSCONFIG_PATH: join(repoRoot, "tsconfig.json") },
        ...asUser,
      },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^IO_ERROR /, r.stdout);
    assert.ok(r.stdout.includes(`${out}: cannot write (permission denied`), r.stdout);
  }
});
