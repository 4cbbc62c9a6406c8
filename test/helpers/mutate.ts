/**
 * Seeded mutations of a file for the reader fuzzer: bit flips, truncations, insertions, deletions,
 * spliced chunks, "interesting" integers written over bytes, and edits of the header fields of
 * each format (zip end record / central directory / local headers, .npy header dict, pickle
 * opcodes, PNG IHDR, JPEG SOF, JSON numbers). Every mutation is a pure function of (bytes, seed).
 */
import { mulberry32 as rng } from "./random.ts";

export type Format = "zip" | "legacy" | "npy" | "pickle" | "json" | "png" | "jpeg" | "image";

/** The seed of case `index` of a run seeded `seed` (independent streams per case). */
export function caseSeed(seed: number, index: number): number {
  return (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
}

const INTERESTING = [
  0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000,
  0xffffffff,
];

export interface Mutation {
  bytes: Uint8Array;
  /** What was done, e.g. "flip 3 bits at 120,77,4000" (reproducible from the seed anyway). */
  how: string;
}

export function mutate(input: Uint8Array, format: Format, seed: number): Mutation {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const kind = pick([
    "flip",
    "flip",
    "truncate",
    "insert",
    "delete",
    "splice",
    "integer",
    "field",
    "field",
    "field",
  ] as const);
  const out = Buffer.from(input);
  const n = out.length;
  switch (kind) {
    case "flip": {
      const count = 1 + int(8);
      const at: number[] = [];
      for (let k = 0; k < count && n > 0; k++) {
        // Half the flips in the first 4 kB, where the headers are.
        const pos = r() < 0.5 ? int(Math.min(n, 4096)) : int(n);
        out[pos] = out[pos]! ^ (1 << int(8));
        at.push(pos);
      }
      return { bytes: out, how: `flip bits at ${at.join(",")}` };
    }
    case "truncate": {
      const end = r() < 0.5 ? int(Math.min(n, 4096)) : int(n);
      return { bytes: out.subarray(0, end), how: `truncate at ${end}` };
    }
    case "insert": {
      const pos = int(n + 1);
      const extra = Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256)));
      return {
        bytes: Buffer.concat([out.subarray(0, pos), extra, out.subarray(pos)]),
        how: `insert ${extra.length} bytes at ${pos}`,
      };
    }
    case "delete": {
      const pos = int(n);
      const len = 1 + int(64);
      return {
        bytes: Buffer.concat([out.subarray(0, pos), out.subarray(pos + len)]),
        how: `delete ${len} bytes at ${pos}`,
      };
    }
    case "splice": {
      const len = 1 + int(Math.min(256, Math.max(1, n)));
      const from = int(Math.max(1, n - len));
      const to = int(Math.max(1, n - len));
      out.set(input.subarray(from, from + len), to);
      return { bytes: out, how: `copy ${len} bytes from ${from} to ${to}` };
    }
    case "integer": {
      const width = pick([1, 2, 4, 8] as const);
      const pos = r() < 0.5 ? int(Math.min(n, 4096)) : int(n);
      writeInt(out, pos, width, pick(INTERESTING), r() < 0.8);
      return { bytes: out, how: `write ${width}-byte integer at ${pos}` };
    }
    case "field":
      return editField(out, format, r);
  }
}

/** Writes `value` (two's complement, `width` bytes) at `pos`, as far as the buffer goes. */
function writeInt(out: Uint8Array, pos: number, width: number, value: number, le: boolean): void {
  let v = BigInt.asUintN(64, BigInt(value));
  for (let k = 0; k < width; k++) {
    const at = le ? pos + k : pos + width - 1 - k;
    if (at >= 0 && at < out.length) out[at] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function interesting(r: () => number, original: number): number {
  const choices = [
    ...INTERESTING,
    original + 1,
    original - 1,
    original * 2,
    Math.floor(r() * 2 ** 32),
  ];
  return choices[Math.floor(r() * choices.length)]!;
}

/** Edits one header field of the format (falls back to an integer overwrite). */
function editField(out: Buffer, format: Format, r: () => number): Mutation {
  const int = (n: number) => Math.floor(r() * n);
  const fields = headerFields(out, format);
  if (format === "npy" && r() < 0.5) return editNpyHeader(out, r);
  if (format === "json") return editJson(out, r);
  if ((format === "pickle" || format === "legacy") && r() < 0.5) return editPickleOpcode(out, r);
  if (fields.length === 0) {
    const pos = int(Math.min(out.length, 256));
    writeInt(out, pos, 4, interesting(r, 0), true);
    return { bytes: out, how: `write 4-byte integer at ${pos}` };
  }
  const f = fields[int(fields.length)]!;
  const original = readInt(out, f.at, f.width, f.le);
  const value = interesting(r, original);
  writeInt(out, f.at, f.width, value, f.le);
  return { bytes: out, how: `set ${f.name} (at ${f.at}) from ${original} to ${value}` };
}

interface Field {
  name: string;
  at: number;
  width: 2 | 4 | 8;
  le: boolean;
}

function readInt(b: Uint8Array, at: number, width: number, le: boolean): number {
  let v = 0;
  for (let k = width - 1; k >= 0; k--) v = v * 256 + (b[le ? at + k : at + width - 1 - k] ?? 0);
  return v;
}

/** The header fields of a zip, PNG or JPEG file (sizes, offsets, counts, dimensions). */
function headerFields(b: Buffer, format: Format): Field[] {
  const fields: Field[] = [];
  if (format === "zip") {
    const eocd = b.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    if (eocd >= 0 && eocd + 22 <= b.length) {
      fields.push(
        { name: "EOCD count", at: eocd + 10, width: 2, le: true },
        { name: "EOCD cd size", at: eocd + 12, width: 4, le: true },
        { name: "EOCD cd offset", at: eocd + 16, width: 4, le: true },
        { name: "EOCD comment length", at: eocd + 20, width: 2, le: true },
      );
      let p = b.readUInt32LE(eocd + 16);
      for (let i = 0; i < 64 && p + 46 <= b.length && b.readUInt32LE(p) === 0x02014b50; i++) {
        for (const [name, off, width] of [
          ["flags", 8, 2],
          ["method", 10, 2],
          ["crc", 16, 4],
          ["compressed size", 20, 4],
          ["size", 24, 4],
          ["name length", 28, 2],
          ["extra length", 30, 2],
          ["local offset", 42, 4],
        ] as const) {
          fields.push({ name: `CD[${i}] ${name}`, at: p + off, width, le: true });
        }
        const local = b.readUInt32LE(p + 42);
        if (local + 30 <= b.length) {
          fields.push(
            { name: `local[${i}] name length`, at: local + 26, width: 2, le: true },
            { name: `local[${i}] extra length`, at: local + 28, width: 2, le: true },
          );
        }
        p += 46 + b.readUInt16LE(p + 28) + b.readUInt16LE(p + 30) + b.readUInt16LE(p + 32);
      }
    }
  } else if (format === "png" && b.length >= 24) {
    fields.push(
      { name: "IHDR width", at: 16, width: 4, le: false },
      { name: "IHDR height", at: 20, width: 4, le: false },
      { name: "IHDR length", at: 8, width: 4, le: false },
    );
  } else if (format === "jpeg") {
    for (let i = 2; i + 9 < b.length && b[i] === 0xff; ) {
      const marker = b[i + 1]!;
      fields.push({ name: `marker ${marker.toString(16)} length`, at: i + 2, width: 2, le: false });
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        fields.push(
          { name: "SOF height", at: i + 5, width: 2, le: false },
          { name: "SOF width", at: i + 7, width: 2, le: false },
        );
      }
      if (marker === 0xda) break;
      i += 2 + b.readUInt16BE(i + 2);
    }
  }
  return fields;
}

/** Rewrites the .npy header dict: shape, descr or order, or the header length field. */
function editNpyHeader(b: Buffer, r: () => number): Mutation {
  const int = (n: number) => Math.floor(r() * n);
  const major = b[6] ?? 1;
  const start = major === 1 ? 10 : 12;
  const len = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const text = b.subarray(start, start + len).toString("latin1");
  const dims = () =>
    [
      0,
      1,
      2,
      7,
      2048,
      65535,
      2 ** 31,
      2 ** 32,
      2 ** 53,
      10 ** 12,
      -1,
      "1e308",
      "0x10",
      "3.5",
      "",
      "None",
    ][int(16)];
  const edits: Array<[string, () => string]> = [
    ["shape", () => text.replace(/'shape':\s*\([^)]*\)/, `'shape': (${dims()}, ${dims()})`)],
    ["shape-1d", () => text.replace(/'shape':\s*\([^)]*\)/, `'shape': (${dims()},)`)],
    [
      "descr",
      () =>
        text.replace(
          /'descr':\s*'[^']*'/,
          `'descr': '${["<f2", ">f4", "|O", "<U8", "<c8", "|b1", "<i2", "<f8", "V16"][int(9)]}'`,
        ),
    ],
    ["order", () => text.replace("False", "True")],
    ["garbage", () => text.replace(/[{}:,]/, "")],
  ];
  const [name, edit] = edits[int(edits.length)]!;
  let next = edit();
  if (r() < 0.8) next = next.padEnd(len, " ").slice(0, Math.max(len, next.length));
  const header = Buffer.alloc(start);
  b.copy(header, 0, 0, start);
  if (r() < 0.2) {
    const lie = [0, 1, len - 1, len + 1, 0xffff, 0xffffffff][int(6)]!;
    if (major === 1) header.writeUInt16LE(lie & 0xffff, 8);
    else header.writeUInt32LE(lie >>> 0, 8);
    return {
      bytes: Buffer.concat([header, Buffer.from(next, "latin1"), b.subarray(start + len)]),
      how: `npy header ${name}, length field ${lie}`,
    };
  }
  if (major === 1) header.writeUInt16LE(next.length & 0xffff, 8);
  else header.writeUInt32LE(next.length, 8);
  return {
    bytes: Buffer.concat([header, Buffer.from(next, "latin1"), b.subarray(start + len)]),
    how: `npy header ${name}: ${next.trim().slice(0, 80)}`,
  };
}

/** Opcodes of protocols 0-5 (and a few bytes that are none). */
const OPCODES = [
  0x28, 0x29, 0x2e, 0x30, 0x31, 0x32, 0x42, 0x43, 0x46, 0x47, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e,
  0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x58, 0x5d, 0x61, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68,
  0x69, 0x6a, 0x6c, 0x6f, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x7d, 0x80, 0x81, 0x82, 0x85, 0x86,
  0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
  0x97, 0x98, 0x00, 0xff,
];

/** Replaces one byte of the first 64 kB by an opcode (the stream's structure goes astray). */
function editPickleOpcode(b: Buffer, r: () => number): Mutation {
  const pos = Math.floor(r() * Math.min(b.length, 65536));
  const op = OPCODES[Math.floor(r() * OPCODES.length)]!;
  b[pos] = op;
  return { bytes: b, how: `opcode 0x${op.toString(16)} at ${pos}` };
}

/** Rewrites one number, string or bracket of a JSON file. */
function editJson(b: Buffer, r: () => number): Mutation {
  const text = b.toString("utf8");
  const tokens = [...text.matchAll(/-?\d+(\.\d+)?|"[^"]*"|[[\]{}]/g)];
  if (tokens.length === 0) return { bytes: b, how: "json unchanged" };
  const t = tokens[Math.floor(r() * tokens.length)]!;
  const replacement = [
    "1e308",
    "-1",
    "99999999999999999999",
    "0.5",
    "null",
    '"x"',
    "[]",
    "{}",
    '"__proto__"',
    "",
    "[[[[[[[[",
  ][Math.floor(r() * 11)]!;
  const out = text.slice(0, t.index) + replacement + text.slice(t.index! + t[0].length);
  return { bytes: Buffer.from(out, "utf8"), how: `json ${t[0].slice(0, 20)} → ${replacement}` };
}
