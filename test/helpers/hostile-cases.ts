/**
 * Every hostile file the readers must refuse, with the error each must give: pickles that name
 * code or unknown classes, persistent ids that point elsewhere, tensors whose geometry lies, zip
 * archives that lie about sizes or hold bombs, .npy headers that lie, ground truths that repeat
 * themselves by reference. Each case ends in a SuperglobalError naming the file, quickly and
 * with bounded memory. Used by test/hostile-files.test.ts and by the stress bench.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadCheckpoint } from "../../src/checkpoint/load.ts";
import type { ErrorCode } from "../../src/errors.ts";
import { readGroundTruth } from "../../src/eval/ground-truth.ts";
import { readNpy } from "../../src/io/npy.ts";
import { unpickle } from "../../src/io/pickle.ts";
import {
  floats,
  latin1,
  Pickle,
  stateDictPickle,
  type TensorSpec,
  torchLegacy,
  torchZip,
} from "./hostile.ts";

export type Reader = "pickle" | "checkpoint" | "npy" | "gnd";

export interface HostileCase {
  /** File name (also what the error must name). */
  name: string;
  reader: Reader;
  bytes: Uint8Array;
  code: ErrorCode;
  message: RegExp;
}

/** Runs the case's reader on its file (written into `dir`); returns what it returned. */
export function readCase(c: HostileCase, dir: string): unknown {
  const path = join(dir, c.name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path, c.bytes);
  switch (c.reader) {
    case "pickle":
      return unpickle(c.bytes, { source: path });
    case "checkpoint":
      return loadCheckpoint(path);
    case "npy":
      return readNpy(path);
    case "gnd":
      return readGroundTruth(path);
  }
}

const W: TensorSpec = { name: "w", key: "0", numel: 6, size: [2, 3], stride: [3, 1] };

/** A zip checkpoint holding tensor `w` viewed as `spec`, over `data` (default 6 floats). */
function ckpt(spec: Partial<TensorSpec>, data = floats(6)): Uint8Array {
  return torchZip(stateDictPickle([{ ...W, ...spec }]), { "0": data });
}

/** A zip checkpoint whose state dict also holds `epoch` = what `value` pushes. */
function ckptWith(value: (p: Pickle) => void): Uint8Array {
  return torchZip(
    stateDictPickle([W], (p) => {
      p.str("epoch");
      value(p);
      p.setitem();
    }),
    { "0": floats(6) },
  );
}

/** A .npy v1 file with this header dict and `data` after it. */
function npy(dict: string, data = new Uint8Array(16), version = 1): Uint8Array {
  const text = `${dict.padEnd(117, " ")}\n`;
  const pre = Buffer.alloc(10);
  pre.write("\x93NUMPY", 0, "latin1");
  pre[6] = version;
  pre.writeUInt16LE(text.length, 8);
  return new Uint8Array(Buffer.concat([pre, Buffer.from(text, "latin1"), data]));
}

/** A revisitop-like ground truth whose query list and id lists are one list repeated by reference. */
function sharedGnd(n: number): Uint8Array {
  const p = new Pickle().proto(2).emptyDict();
  p.str("imlist").emptyList().mark().str("a").put(1);
  for (let i = 1; i < n; i++) p.get(1);
  p.appends().setitem();
  p.str("qimlist").emptyList().mark();
  for (let i = 0; i < n; i++) p.get(1);
  p.appends().setitem();
  p.str("gnd").emptyList().mark();
  p.emptyDict().str("bbx").mark().int(0).int(0).int(1).int(1).op(0x6c).setitem();
  p.str("easy").emptyList().mark();
  for (let i = 0; i < n; i++) p.int(0);
  p.appends().put(3).setitem();
  p.str("hard").get(3).setitem().str("junk").get(3).setitem().put(2);
  for (let i = 1; i < n; i++) p.get(2);
  return p.appends().setitem().stop().bytes();
}

/** Lists nested `depth` deep, each holding `width` references to the one below (2 bytes each). */
function nestedLists(p: Pickle, depth: number, width: number): Pickle {
  p.emptyList().put(0);
  for (let d = 1; d < depth; d++) {
    p.emptyList().mark();
    for (let k = 0; k < width; k++) p.get(d - 1);
    p.appends().put(d);
  }
  return p;
}

const ZEROS = new Uint8Array(16 << 20);

export function hostileCases(): HostileCase[] {
  const cases: HostileCase[] = [];
  const add = (
    name: string,
    reader: Reader,
    bytes: Uint8Array,
    code: ErrorCode,
    message: RegExp,
  ) => {
    cases.push({ name, reader, bytes, code, message });
  };

  // --- globals that run code: refused in any pickle, whatever the reader -----------------------
  const payloads: Array<[string, (p: Pickle) => Pickle, RegExp]> = [
    [
      "os-system",
      (p) => p.global("os", "system").str("touch /tmp/pwned").tuple1().reduce(),
      /refuses global os\.system/,
    ],
    [
      "builtins-eval",
      (p) => p.stackGlobal("builtins", "eval").str("__import__('os')").tuple1().reduce(),
      /refuses global builtins\.eval/,
    ],
    [
      "subprocess-popen",
      (p) =>
        p
          .global("subprocess", "Popen")
          .mark()
          .str("id")
          .op(0x6c) // LIST
          .tuple1()
          .newobj(),
      /refuses global subprocess\.Popen/,
    ],
    [
      "builtins-getattr",
      (p) =>
        p
          .global("__builtin__", "getattr")
          .global("collections", "OrderedDict")
          .str("x")
          .tuple2()
          .reduce(),
      /refuses global __builtin__\.getattr/,
    ],
    [
      "posix-system-proto0",
      // The classic protocol-0 payload: cposix\nsystem\n(S'id'\ntR.
      (p) => p.raw(latin1("cposix\nsystem\n(S'id'\ntR")),
      /refuses global posix\.system/,
    ],
    [
      "numpy-runstring",
      (p) =>
        p
          .global("numpy.testing._private.utils", "runstring")
          .str("x=1")
          .emptyDict()
          .tuple2()
          .reduce(),
      /refuses global numpy\.testing\._private\.utils\.runstring/,
    ],
    [
      "operator-attrgetter",
      (p) => p.global("operator", "attrgetter").str("system").tuple1().reduce(),
      /refuses global operator\.attrgetter/,
    ],
  ];
  for (const [name, push, re] of payloads) {
    const plain = push(new Pickle().proto(2)).stop().bytes();
    add(`${name}.pkl`, "pickle", plain, "BAD_FILE", re);
    add(`gnd_${name}.pkl`, "gnd", plain, "BAD_FILE", re);
    add(
      `${name}.pth`,
      "checkpoint",
      ckptWith((p) => push(p)),
      "BAD_FILE",
      re,
    );
  }
  add(
    "torch-load.pth",
    "checkpoint",
    ckptWith((p) => p.global("torch", "load").str("other.pth").tuple1().reduce()),
    "BAD_FILE",
    /refuses global torch\.load/,
  );

  // --- opcodes that call classes the old way: not supported at all ------------------------------
  add(
    "inst.pkl",
    "pickle",
    new Pickle()
      .proto(2)
      .mark()
      .str("id")
      .raw(latin1("icollections\nOrderedDict\n"))
      .stop()
      .bytes(),
    "BAD_FILE",
    /unsupported pickle opcode INST/,
  );
  add(
    "obj.pkl",
    "pickle",
    new Pickle().proto(2).mark().global("collections", "OrderedDict").op(0x6f).stop().bytes(),
    "BAD_FILE",
    /unsupported pickle opcode OBJ/,
  );

  // --- unknown classes -------------------------------------------------------------------------
  add(
    "unknown-reduce.pkl",
    "pickle",
    new Pickle().proto(2).global("mymodule", "Evil").emptyTuple().reduce().stop().bytes(),
    "BAD_FILE",
    /unknown global mymodule\.Evil/,
  );
  add(
    "unknown-reduce.pth",
    "checkpoint",
    ckptWith((p) => p.global("__main__", "Evil").emptyTuple().reduce()),
    "UNSUPPORTED",
    /__main__\.Evil, which is neither a tensor nor plain data/,
  );
  add(
    "unknown-newobj-build.pth",
    "checkpoint",
    ckptWith((p) =>
      p
        .global("mymodule", "Model")
        .emptyTuple()
        .newobj()
        .emptyDict()
        .str("w")
        .int(1)
        .setitem()
        .build(),
    ),
    "UNSUPPORTED",
    /mymodule\.Model/,
  );
  add(
    "build-on-global.pkl",
    "pickle",
    new Pickle().proto(2).global("collections", "OrderedDict").emptyDict().build().stop().bytes(),
    "BAD_FILE",
    /BUILD target is not an object/,
  );

  // --- persistent ids --------------------------------------------------------------------------
  add(
    "pid-outside.pth",
    "checkpoint",
    torchZip(stateDictPickle([{ ...W, key: "../../../etc/passwd" }]), { "0": floats(6) }),
    "BAD_FILE",
    /no record archive\/data\/\.\.\/\.\.\/\.\.\/etc\/passwd/,
  );
  add(
    "pid-outside-legacy.pth",
    "checkpoint",
    torchLegacy(stateDictPickle([{ ...W, key: "/etc/passwd" }]), { "0": floats(6) }),
    "BAD_FILE",
    /storage 0 is listed in the file but no tensor refers to it|not among the file's storages/,
  );
  add(
    "pid-file.pth",
    "checkpoint",
    torchZip(
      new Pickle().proto(2).str("file").str("/etc/passwd").tuple2().binpersid().stop().bytes(),
      {},
    ),
    "BAD_FILE",
    /unexpected persistent id in the pickle: \("file", "\/etc\/passwd"\)/,
  );
  add(
    "pid-storage-type.pth",
    "checkpoint",
    torchZip(pidWithType(), { "0": floats(6) }),
    "UNSUPPORTED",
    /storage type .* is not supported/,
  );
  add(
    "pid-nested.pth",
    "checkpoint",
    torchZip(nestedLists(new Pickle().proto(2), 40, 8).binpersid().stop().bytes(), {}),
    "BAD_FILE",
    /unexpected persistent id/,
  );
  add(
    "pid-mutated.pth",
    "checkpoint",
    torchZip(mutatedStorage(), { "0": floats(6) }),
    "BAD_FILE",
    /cannot set attribute kind/,
  );
  add(
    "fake-storage.pth",
    "checkpoint",
    torchZip(fakeStorage(), { "0": floats(6) }),
    "BAD_FILE",
    /a tensor is built from a dict of 4 entries, not a storage/,
  );

  // --- tensor geometry ---------------------------------------------------------------------------
  add(
    "storage-claims-more.pth",
    "checkpoint",
    ckpt({ numel: 1000 }),
    "BAD_FILE",
    /storage 0 claims 1000 float32 elements \(4000 bytes\) but its record holds 24 bytes/,
  );
  add(
    "record-larger.pth",
    "checkpoint",
    ckpt({}, floats(1000)),
    "BAD_FILE",
    /holds 4000 bytes, more than the 24 its storage needs/,
  );
  add(
    "past-storage.pth",
    "checkpoint",
    ckpt({ offset: 4 }),
    "BAD_FILE",
    /tensor w \(offset 4, size \[2,3\], stride \[3,1\]\) reaches element 9 of storage 0, which has 6/,
  );
  add("negative-offset.pth", "checkpoint", ckpt({ offset: -3 }), "BAD_FILE", /offset -3/);
  add(
    "negative-stride.pth",
    "checkpoint",
    ckpt({ offset: 5, stride: [-3, -1] }),
    "BAD_FILE",
    /stride \(-3, -1\)/,
  );
  add(
    "shape-overflow.pth",
    "checkpoint",
    ckpt({ size: [2n ** 62n, 2n ** 62n], stride: [1, 1] }),
    "BAD_FILE",
    /malformed size/,
  );
  add(
    "shape-product-overflow.pth",
    "checkpoint",
    ckpt({ numel: 1, size: [2 ** 30, 2 ** 30, 2 ** 30], stride: [0, 0, 0] }, floats(1)),
    "BAD_FILE",
    /impossible size/,
  );
  add(
    "stride0-bomb.pth",
    "checkpoint",
    ckpt({ numel: 1, size: [30000, 30000], stride: [0, 0] }, floats(1)),
    "BAD_FILE",
    /overlapping views of storage 0 multiply memory/,
  );
  add(
    "many-views.pth",
    "checkpoint",
    torchZip(
      stateDictPickle(
        Array.from({ length: 400 }, (_, i) => ({
          name: `t${i}`,
          key: "0",
          numel: 250000,
          offset: 1,
          size: [249999],
          stride: [1],
        })),
      ),
      { "0": floats(250000) },
    ),
    "BAD_FILE",
    /overlapping views of storage 0 multiply memory/,
  );
  add(
    "legacy-count-lies.pth",
    "checkpoint",
    torchLegacy(stateDictPickle([W]), { "0": floats(6) }, { "0": 2n ** 60n }),
    "BAD_FILE",
    /storage 0 \(1152921504606846976 elements at byte \d+\) runs past the end of the file/,
  );
  add(
    "legacy-count-negative.pth",
    "checkpoint",
    torchLegacy(stateDictPickle([W]), { "0": floats(6) }, { "0": -6 }),
    "BAD_FILE",
    /storage 0 \(-6 elements/,
  );

  // --- zip container -----------------------------------------------------------------------------
  const pkl = stateDictPickle([W]);
  const bomb = (size?: number) =>
    torchZip(pkl, { "0": floats(6) }, (es) =>
      es.map((e) =>
        e.name === "archive/data/0"
          ? { ...e, data: ZEROS, method: 8 as const, ...(size === undefined ? {} : { size }) }
          : e,
      ),
    );
  add("zip-bomb.pth", "checkpoint", bomb(), "BAD_FILE", /holds 16777216 bytes, more than the 24/);
  add("zip-bomb-lying.pth", "checkpoint", bomb(24), "BAD_FILE", /inflates to more than the 24/);
  add(
    "zip-ratio.pth",
    "checkpoint",
    torchZip(
      stateDictPickle([{ ...W, numel: 2 ** 29, size: [2 ** 29], stride: [1] }]),
      { "0": floats(6) },
      (es) =>
        es.map((e) =>
          e.name === "archive/data/0" ? { ...e, method: 8 as const, size: 2 ** 31 } : e,
        ),
    ),
    "BAD_FILE",
    /claims 2147483648 bytes from \d+ deflated ones, more than deflate can produce/,
  );
  add(
    "zip64-size-lies.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) =>
      es.map((e) =>
        e.name === "archive/data/0"
          ? { ...e, zip64: { size: 2 ** 50, compressedSize: 2 ** 50 } }
          : e,
      ),
    ),
    "BAD_FILE",
    /holds 1125899906842624 bytes, more than the 24 its storage needs/,
  );
  add(
    "zip64-data-pkl-lies.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) =>
      es.map((e) =>
        e.name === "archive/data.pkl"
          ? { ...e, zip64: { size: 2 ** 50, compressedSize: 2 ** 50 } }
          : e,
      ),
    ),
    "BAD_FILE",
    /runs past the end of the file/,
  );
  add(
    "zip64-count-lies.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, undefined, { zip64: { count: 2 ** 40 } }),
    "BAD_FILE",
    /zip central directory entry 3 is corrupt/,
  );
  add(
    "zip64-cd-lies.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, undefined, { zip64: { count: 3, cdSize: 2 ** 52 } }),
    "BAD_FILE",
    /runs past its end record/,
  );
  add(
    "zip-duplicate.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) => [...es, { name: "archive/data/0", data: floats(6) }]),
    "BAD_FILE",
    /two records named archive\/data\/0/,
  );
  add(
    "zip-cd-past-end.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, undefined, { cdSize: 1 << 30 }),
    "BAD_FILE",
    /runs past its end record/,
  );
  add(
    "zip-local-offset.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) =>
      es.map((e) => (e.name === "archive/data.pkl" ? { ...e, localOffset: 0x7fffffff } : e)),
    ),
    "BAD_FILE",
    /zip record archive\/data\.pkl starts past the end of the file/,
  );
  add(
    "zip-stored-size.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) =>
      es.map((e) => (e.name === "archive/data/0" ? { ...e, size: 12 } : e)),
    ),
    "BAD_FILE",
    /stored uncompressed but claims 12 bytes in 24/,
  );
  add(
    "zip-encrypted.pth",
    "checkpoint",
    torchZip(pkl, { "0": floats(6) }, (es) => es.map((e) => ({ ...e, flags: 1 }))),
    "UNSUPPORTED",
    /zip record archive\/data\.pkl is encrypted/,
  );

  // --- .npy headers ------------------------------------------------------------------------------
  const f4 = (shape: string) => `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  const huge = Buffer.alloc(12 + 60);
  huge.write("\x93NUMPY", 0, "latin1");
  huge[6] = 2;
  huge.writeUInt32LE(0xfffffff0, 8);
  add("header-4gb.npy", "npy", huge, "BAD_FILE", /its header claims 4294967280 bytes/);
  add("version-9.npy", "npy", npy(f4("(2,)"), undefined, 9), "UNSUPPORTED", /format version 9/);
  add(
    "elements-1e12.npy",
    "npy",
    npy(f4("(1000000, 1000000)")),
    "BAD_FILE",
    /16 of 4000000000000 data bytes/,
  );
  add("shape-1e308.npy", "npy", npy(f4("(1e308, 1e308, 0)")), "BAD_FILE", /bad shape/);
  add("shape-2e53.npy", "npy", npy(f4("(9007199254740993, 0)")), "BAD_FILE", /bad shape/);
  add("shape-negative.npy", "npy", npy(f4("(-1, 4)")), "BAD_FILE", /bad shape/);
  add(
    "big-endian.npy",
    "npy",
    npy("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }"),
    "UNSUPPORTED",
    /dtype >f4/,
  );
  add(
    "objects.npy",
    "npy",
    npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"),
    "UNSUPPORTED",
    /dtype \|O/,
  );
  add("no-shape.npy", "npy", npy("{'descr': '<f4', 'fortran_order': False}"), "BAD_FILE", /header/);

  // --- ground truths -------------------------------------------------------------------------------
  add(
    "gnd_shared.pkl",
    "gnd",
    sharedGnd(20000),
    "BAD_FILE",
    /lists hold more items than \d+ bytes can/,
  );
  add(
    "gnd_proto.json",
    "gnd",
    Buffer.from('{"__proto__": {"imlist": ["a"], "qimlist": [], "gnd": []}}'),
    "BAD_FILE",
    /"imlist" is not a list/,
  );
  add(
    "gnd_deep.json",
    "gnd",
    Buffer.from(`${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}`),
    "BAD_FILE",
    /the top level is not a dict|invalid JSON/,
  );
  const long4 = 1 << 20;
  add(
    "gnd_long4.pkl",
    "gnd",
    new Pickle()
      .proto(2)
      .op(0x8b)
      .raw([long4 & 0xff, (long4 >> 8) & 0xff, (long4 >> 16) & 0xff, 0])
      .raw(new Uint8Array(long4).fill(0x5a))
      .stop()
      .bytes(),
    "BAD_FILE",
    /the top level is not a dict/,
  );
  add(
    "gnd_digits.pkl",
    "gnd",
    new Pickle()
      .proto(2)
      .raw(latin1(`I${"7".repeat(100_000)}\n`))
      .stop()
      .bytes(),
    "BAD_FILE",
    /an integer of more than 4300 digits/,
  );
  add(
    "gnd_marks.pkl",
    "gnd",
    new Pickle()
      .proto(2)
      .raw(new Uint8Array(1 << 20).fill(0x28))
      .stop()
      .bytes(),
    "BAD_FILE",
    /the stack is empty/,
  );
  return cases;
}

/** A persistent id whose storage type is a dict class, not a storage. */
function pidWithType(): Uint8Array {
  return new Pickle()
    .proto(2)
    .mark()
    .str("storage")
    .global("collections", "OrderedDict")
    .str("0")
    .str("cpu")
    .int(6)
    .tuple()
    .binpersid()
    .stop()
    .bytes();
}

/** A storage whose `kind` a SETITEM rewrites after the persistent id made it. */
function mutatedStorage(): Uint8Array {
  const p = new Pickle().proto(2).global("collections", "OrderedDict").emptyTuple().reduce();
  p.str("w").global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(6);
  p.tuple().binpersid().str("kind").str("nonsense").setitem();
  p.int(0).mark().int(2).int(3).tuple().mark().int(3).int(1).tuple().bool(false);
  p.global("collections", "OrderedDict").emptyTuple().reduce().tuple().reduce().setitem();
  return p.stop().bytes();
}

/** A tensor rebuilt from a dict that has a storage's fields, but is no storage. */
function fakeStorage(): Uint8Array {
  const p = new Pickle().proto(2).global("collections", "OrderedDict").emptyTuple().reduce();
  p.str("w").global("torch._utils", "_rebuild_tensor_v2").mark();
  p.emptyDict().mark();
  p.str("key").str("0").str("kind").str("float32").str("base").int(0).str("numel").int(6);
  p.setitems();
  p.int(0).mark().int(2).int(3).tuple().mark().int(3).int(1).tuple().bool(false);
  p.global("collections", "OrderedDict").emptyTuple().reduce().tuple().reduce().setitem();
  return p.stop().bytes();
}
