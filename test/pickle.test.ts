import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SuperglobalError } from "../src/errors.ts";
import { PickleEndError, unpickle, unpickleAt } from "../src/io/pickle.ts";
import { assetsDir, sharedOnly } from "./helpers/shared.ts";

// Byte-exact outputs of CPython 3.11 `pickle.dumps(value, protocol=p)` for the values in the
// comments, so the expected results are Python's own, not this reader's.
const hex = (s: string) => Uint8Array.from(Buffer.from(s, "hex"));

// {'a': [1, -2, 300, 70000, -70000, 2.5, None, True, False], 'b': ('x', 'é€', b'\x00\xff'),
//  'big': [2**53-1, 2**53+1, -2**70, 2**70]}
const MIXED: Record<number, string> = {
  2: "80027d71002858010000006171015d7102284b014afeffffff4d2c014a701101004a90eefeff4740040000000000004e888965580100000062710358010000007871045805000000c3a9e282ac7105635f636f646563730a656e636f64650a7106580300000000c3bf710758060000006c6174696e31710886710952710a87710b5803000000626967710c5d710d288a07ffffffffffff1f8a07010000000000208a090000000000000000c08a0900000000000000004065752e",
  3: "80037d71002858010000006171015d7102284b014afeffffff4d2c014a701101004a90eefeff4740040000000000004e888965580100000062710358010000007871045805000000c3a9e282ac7105430200ff7106877107580300000062696771085d7109288a07ffffffffffff1f8a07010000000000208a090000000000000000c08a0900000000000000004065752e",
  4: "80049576000000000000007d94288c0161945d94284b014afeffffff4d2c014a701101004a90eefeff4740040000000000004e8889658c0162948c0178948c05c3a9e282ac94430200ff9487948c03626967945d94288a07ffffffffffff1f8a07010000000000208a090000000000000000c08a0900000000000000004065752e",
  5: "80059576000000000000007d94288c0161945d94284b014afeffffff4d2c014a701101004a90eefeff4740040000000000004e8889658c0162948c0178948c05c3a9e282ac94430200ff9487948c03626967945d94288a07ffffffffffff1f8a07010000000000208a090000000000000000c08a0900000000000000004065752e",
};
// l = [1]; {'p': l, 'q': l}, protocol 2 (BINGET of a memoised list)
const SHARED = "80027d71002858010000007071015d71024b016158010000007171036802752e";
// od = OrderedDict([('w', 1.0), ('v', 2)]); od._metadata = {'': {'version': 1}}, protocol 2
const ORDERED =
  "800263636f6c6c656374696f6e730a4f726465726564446963740a710029527101285801000000777102473ff000000000000058010000007671034b02757d710458090000005f6d6574616461746171057d7106580000000071077d7108580700000076657273696f6e71094b01737373622e";
// datetime.date(2020, 1, 2), protocols 2 (GLOBAL + _codecs.encode) and 4 (STACK_GLOBAL)
const DATE2 =
  "8002636461746574696d650a646174650a7100635f636f646563730a656e636f64650a7101580500000007c3a40102710258060000006c6174696e3171038671045271058571065271072e";
const DATE4 =
  "80049520000000000000008c086461746574696d65948c0464617465949394430407e4010294859452942e";
// A Pickler whose persistent_id maps markers to ('storage', key):
// {'t': Marker('k1'), 'u': [Marker('k2')]}, protocol 2
const PERSISTENT =
  "80027d7100285801000000747101580700000073746f72616765710258020000006b3171038671045158010000007571055d7106680258020000006b3271078671085161752e";
// [{1, 2}, frozenset({3})], protocol 4
const SETS = "80049512000000000000005d94288f94284b014b0290284b039194652e";
// [inf, -inf, -0.0, 1e-310], protocol 2
const FLOATS =
  "80025d710028477ff000000000000047fff000000000000047800000000000000047000012688b70e62b652e";
// pickle.dumps(7, protocol=2) + pickle.dumps('z', protocol=2)
const TWO = "80024b072e800258010000007a71002e";

/** Python-like view of an unpickled value, for deepStrictEqual against JSON or literals. */
function plain(v: unknown): unknown {
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

for (const proto of [2, 3, 4, 5]) {
  test(`protocol ${proto}: dict of ints, floats, None, bools, str, bytes, big ints`, () => {
    const v = unpickle(hex(MIXED[proto]!)) as Map<string, unknown>;
    assert.ok(v instanceof Map);
    assert.deepEqual([...v.keys()], ["a", "b", "big"]);
    assert.deepEqual(v.get("a"), [1, -2, 300, 70000, -70000, 2.5, null, true, false]);
    const b = v.get("b") as unknown[];
    assert.equal(b[0], "x");
    assert.equal(b[1], "é€");
    assert.deepEqual(b[2], Uint8Array.of(0, 255));
    // 2^53-1 is still exact as a number; beyond it ints are bigint.
    assert.deepEqual(v.get("big"), [2 ** 53 - 1, 2n ** 53n + 1n, -(2n ** 70n), 2n ** 70n]);
  });
}

test("a memoised object comes back as the same JS object (BINGET)", () => {
  const v = unpickle(hex(SHARED)) as Map<string, unknown>;
  assert.deepEqual(v.get("p"), [1]);
  assert.equal(v.get("p"), v.get("q"));
});

test("OrderedDict: keys in order, BUILD state becomes attributes, not keys", () => {
  const v = unpickle(hex(ORDERED)) as Map<string, unknown> & { _metadata?: unknown };
  assert.ok(v instanceof Map);
  assert.deepEqual(
    [...v.entries()],
    [
      ["w", 1],
      ["v", 2],
    ],
  );
  assert.deepEqual(plain(v._metadata), { "": { version: 1 } });
});

test("unknown globals are an error naming them; findClass resolves them", () => {
  for (const bytes of [DATE2, DATE4]) {
    assert.throws(
      () => unpickle(hex(bytes), { source: "date.pkl" }),
      (e: unknown) =>
        e instanceof SuperglobalError &&
        e.code === "BAD_FILE" &&
        e.message.includes("datetime.date") &&
        e.message.includes("date.pkl"),
    );
    const seen: string[] = [];
    const date = unpickle(hex(bytes), {
      findClass: (module, name) => {
        seen.push(`${module}.${name}`);
        if (module === "datetime" && name === "date") {
          // date's pickled state: year (2 bytes, big-endian), month, day.
          return (state) => {
            const s = state as Uint8Array;
            return `${s[0]! * 256 + s[1]!}-${s[2]}-${s[3]}`;
          };
        }
        return undefined;
      },
    });
    assert.equal(date, "2020-1-2");
    assert.ok(seen.includes("datetime.date"));
  }
});

test("BINPERSID ids go through persistentLoad; without it they are an error", () => {
  const ids: unknown[] = [];
  const v = unpickle(hex(PERSISTENT), {
    persistentLoad: (pid) => {
      ids.push(pid);
      return `loaded:${(pid as string[])[1]}`;
    },
  }) as Map<string, unknown>;
  assert.deepEqual(ids, [
    ["storage", "k1"],
    ["storage", "k2"],
  ]);
  assert.deepEqual(plain(v), { t: "loaded:k1", u: ["loaded:k2"] });
  assert.throws(() => unpickle(hex(PERSISTENT)), SuperglobalError);
});

test("sets, frozensets and special floats", () => {
  const [s, f] = unpickle(hex(SETS)) as [Set<number>, Set<number>];
  assert.deepEqual([...s], [1, 2]);
  assert.deepEqual([...f], [3]);
  const floats = unpickle(hex(FLOATS)) as number[];
  assert.deepEqual(floats, [Infinity, -Infinity, -0, 1e-310]);
  assert.ok(Object.is(floats[2], -0));
});

test("unpickleAt reads pickles back to back and reports where each ends", () => {
  const bytes = hex(TWO);
  const first = unpickleAt(bytes, 0);
  assert.deepEqual(first, { value: 7, end: 5 });
  const second = unpickleAt(bytes, first.end);
  assert.deepEqual(second, { value: "z", end: bytes.length });
});

test("an unknown opcode is BAD_FILE with its byte offset; truncation is BAD_FILE too", () => {
  // PROTO 2, EMPTY_LIST, then 0xff (no such opcode)
  assert.throws(
    () => unpickle(Uint8Array.of(0x80, 0x02, 0x5d, 0xff, 0x2e), { source: "odd.pkl" }),
    (e: unknown) =>
      e instanceof SuperglobalError &&
      e.code === "BAD_FILE" &&
      /odd\.pkl/.test(e.message) &&
      /0xff at byte 3/.test(e.message),
  );
  const full = hex(MIXED[4]!);
  for (const cut of [1, 20, full.length - 1]) {
    assert.throws(
      () => unpickle(full.subarray(0, cut), { source: "cut.pkl" }),
      (e: unknown) =>
        e instanceof PickleEndError && e.code === "BAD_FILE" && /cut\.pkl/.test(e.message),
      `cut at ${cut}`,
    );
  }
  // Stack misuse (SETITEMS without a MARK) is BAD_FILE, not a crash.
  assert.throws(
    () => unpickle(Uint8Array.of(0x80, 0x02, 0x7d, 0x75, 0x2e)),
    (e: unknown) => e instanceof SuperglobalError && e.code === "BAD_FILE",
  );
});

for (const name of ["roxford5k", "rparis6k"]) {
  test(`revisitop gnd_${name}.pkl equals its JSON twin`, sharedOnly, () => {
    const dir = join(assetsDir, "revisitop-gnd");
    const fromPickle = unpickle(readFileSync(join(dir, `gnd_${name}.pkl`)), {
      source: `gnd_${name}.pkl`,
    }) as Map<string, unknown>;
    const fromJson = JSON.parse(readFileSync(join(dir, `gnd_${name}.json`), "utf8"));
    assert.deepStrictEqual(plain(fromPickle), fromJson);
    // The README's counts, as a guard that the comparison saw the real data.
    assert.equal((fromPickle.get("qimlist") as unknown[]).length, 70);
    assert.equal(
      (fromPickle.get("imlist") as unknown[]).length,
      name === "roxford5k" ? 4993 : 6322,
    );
  });
}
