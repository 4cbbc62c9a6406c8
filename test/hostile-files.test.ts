/**
 * Hostile files against every reader (the cases are in helpers/hostile-cases.ts, built byte by
 * byte): each must end in a SuperglobalError of the expected code naming the file, quickly and
 * without a large allocation; and the unpickler must never call what it was not built to call.
 * Python (when present) confirms that the pickles mean what their names say.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { unpickle } from "../src/io/pickle.ts";
import { Pickle } from "./helpers/hostile.ts";
import { hostileCases, readCase } from "./helpers/hostile-cases.ts";

const dir = mkdtempSync(join(tmpdir(), "superglobal-hostile-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const cases = hostileCases();

test("every hostile file is refused with a clear error naming it, fast, in bounded memory", () => {
  const rssBefore = process.memoryUsage().rss;
  for (const c of cases) {
    const started = performance.now();
    assert.throws(
      () => readCase(c, dir),
      (e: unknown) => {
        assert.ok(e instanceof SuperglobalError, `${c.name}: ${String(e)}`);
        assert.equal(e.code, c.code, `${c.name}: ${e.message}`);
        assert.match(e.message, c.message, c.name);
        assert.ok(e.message.includes(join(dir, c.name)), `${c.name}: names the file: ${e.message}`);
        return true;
      },
    );
    const ms = performance.now() - started;
    // Generous for a loaded machine; the quadratic and exponential paths took minutes.
    assert.ok(ms < 5000, `${c.name} took ${ms.toFixed(0)} ms`);
  }
  // The bombs ask for gigabytes; none of it may be taken (the cases' own bytes are ~40 MB).
  const grown = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  assert.ok(grown < 600, `memory grew by ${grown.toFixed(0)} MiB`);
});

test("BUILD never calls a __setstate__ or append the pickle itself put on an object", () => {
  const calls: unknown[] = [];
  const spy = (...args: unknown[]) => {
    calls.push(args);
    return { spied: true };
  };
  const findClass = (module: string, name: string) =>
    module === "evil" && name === "spy" ? spy : undefined;
  // obj = OrderedDict(); BUILD obj {"__setstate__": spy, "append": spy}; BUILD obj 42; APPEND obj 1
  const bytes = new Pickle()
    .proto(2)
    .global("collections", "OrderedDict")
    .emptyTuple()
    .reduce()
    .emptyDict()
    .str("__setstate__")
    .global("evil", "spy")
    .setitem()
    .str("append")
    .global("evil", "spy")
    .setitem()
    .build()
    .int(42)
    .build()
    .stop()
    .bytes();
  assert.throws(
    () => unpickle(bytes, { source: "setstate.pkl", findClass }),
    /setstate\.pkl: bad pickle at byte \d+ \(BUILD\): BUILD state is not a dict/,
  );
  const appended = new Pickle()
    .proto(2)
    .global("collections", "OrderedDict")
    .emptyTuple()
    .reduce()
    .emptyDict()
    .str("append")
    .global("evil", "spy")
    .setitem()
    .build()
    .int(1)
    .op(0x61) // APPEND
    .stop()
    .bytes();
  assert.throws(
    () => unpickle(appended, { source: "append.pkl", findClass }),
    /append\.pkl: .*APPEND target is not a list/,
  );
  assert.deepEqual(calls, []);
});

test("a __proto__ attribute or key stays data: no prototype is replaced, nothing is polluted", () => {
  // OrderedDict() with BUILD {"__proto__": {"polluted": 1}}, then a plain-object target through
  // findClass with SETITEM "__proto__".
  const bytes = new Pickle()
    .proto(2)
    .global("collections", "OrderedDict")
    .emptyTuple()
    .reduce()
    .emptyDict()
    .str("__proto__")
    .emptyDict()
    .str("polluted")
    .int(1)
    .setitem()
    .setitem()
    .build()
    .stop()
    .bytes();
  const map = unpickle(bytes, { source: "proto.pkl" }) as Map<unknown, unknown>;
  assert.equal(Object.getPrototypeOf(map), Map.prototype);
  assert.ok(Object.hasOwn(map, "__proto__"));
  const made = {};
  const viaSetitem = new Pickle()
    .proto(2)
    .global("my", "Thing")
    .emptyTuple()
    .reduce()
    .str("__proto__")
    .emptyDict()
    .str("polluted")
    .int(1)
    .setitem()
    .setitem()
    .stop()
    .bytes();
  const thing = unpickle(viaSetitem, {
    source: "proto2.pkl",
    findClass: () => () => made,
  }) as object;
  assert.equal(Object.getPrototypeOf(thing), Object.prototype);
  assert.equal(({} as { polluted?: unknown }).polluted, undefined);
  assert.equal((Object.prototype as { polluted?: unknown }).polluted, undefined);
});

test("long integers decode in linear time and match Python's values", () => {
  // 1 MiB LONG4: the byte-by-byte bigint shift took minutes at 200 kB.
  const n = 1 << 20;
  const body = new Uint8Array(n).fill(0xff);
  body[n - 1] = 0x7f; // positive: 2^(8n-1) - 1
  const started = performance.now();
  const v = unpickle(
    new Pickle()
      .proto(2)
      .op(0x8b, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, 0)
      .raw(body)
      .stop()
      .bytes(),
  );
  assert.ok(performance.now() - started < 3000);
  assert.equal(v, (1n << BigInt(8 * n - 1)) - 1n);
  // Small and negative ones, as LONG1 (two's complement).
  for (const x of [0n, 1n, -1n, 255n, -256n, 2n ** 64n, -(2n ** 70n) + 3n]) {
    const out = unpickle(new Pickle().proto(2).long(x).stop().bytes());
    assert.equal(BigInt(out as number | bigint), x);
  }
});

const hasPython = (() => {
  try {
    execFileSync("python3", ["-c", "import pickletools"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

test("Python's pickletools reads the hostile pickles as the globals they name", {
  skip: hasPython ? false : "python3 not found",
}, () => {
  const named = cases.filter((c) => c.reader === "pickle" && /global (\S+)/.test(c.message.source));
  const script = [
    "import pickletools, sys",
    "for path in sys.argv[1:]:",
    "    names = []",
    "    stack = []",
    "    for op, arg, pos in pickletools.genops(open(path, 'rb').read()):",
    "        if op.name in ('SHORT_BINUNICODE', 'BINUNICODE'): stack.append(arg)",
    "        if op.name == 'GLOBAL': names.append(arg.replace(' ', '.'))",
    "        if op.name == 'STACK_GLOBAL': names.append(stack[-2] + '.' + stack[-1])",
    "    print(path, ','.join(names))",
  ].join("\n");
  const paths = named.map((c) => {
    const path = join(dir, c.name);
    writeFileSync(path, c.bytes);
    return path;
  });
  const out = execFileSync("python3", ["-c", script, ...paths], { encoding: "utf8" });
  const lines = out.trim().split("\n");
  assert.equal(lines.length, named.length);
  for (const [i, c] of named.entries()) {
    const global = /refuses global (\S+)/.exec(c.message.source.replace(/\\\./g, "."));
    if (global === null) continue;
    assert.ok(lines[i]!.includes(global[1]!), `${c.name}: python sees ${lines[i]}`);
  }
});
