/**
 * Hostile files built byte by byte (no Python needed): pickles opcode by opcode, zip archives
 * field by field, torch.save checkpoints from both. Shared by test/hostile-files.test.ts and the
 * stress bench (bench/stress.ts), which tries every case of `hostileCases()`.
 */
import { crc32, deflateRawSync } from "node:zlib";

/** A pickle written opcode by opcode (the pickletools names). */
export class Pickle {
  private readonly parts: number[] = [];

  op(...bytes: number[]): this {
    this.parts.push(...bytes);
    return this;
  }
  raw(bytes: Uint8Array | number[]): this {
    for (const b of bytes) this.parts.push(b);
    return this;
  }
  proto(n = 2): this {
    return this.op(0x80, n);
  }
  /** GLOBAL "module\nname\n". */
  global(module: string, name: string): this {
    return this.op(0x63).raw(latin1(`${module}\n${name}\n`));
  }
  /** SHORT_BINUNICODE (or BINUNICODE when longer than 255 bytes). */
  str(s: string): this {
    const b = Buffer.from(s, "utf8");
    if (b.length < 256) return this.op(0x8c, b.length).raw(b);
    return this.op(0x58).raw(u32(b.length)).raw(b);
  }
  /** A non-negative int: BININT1, BININT2 or BININT (LONG1 beyond 2^31). */
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n);
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 0xff, n >> 8);
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.op(0x4a).raw(i32(n));
    return this.long(BigInt(n));
  }
  /** LONG1: two's complement, little-endian. */
  long(v: bigint): this {
    const bytes: number[] = [];
    let x = v;
    do {
      bytes.push(Number(BigInt.asUintN(8, x)));
      x >>= 8n;
    } while (!((x === 0n && (bytes.at(-1)! & 0x80) === 0) || (x === -1n && bytes.at(-1)! & 0x80)));
    return this.op(0x8a, bytes.length).raw(bytes);
  }
  none(): this {
    return this.op(0x4e);
  }
  bool(b: boolean): this {
    return this.op(b ? 0x88 : 0x89);
  }
  mark(): this {
    return this.op(0x28);
  }
  tuple(): this {
    return this.op(0x74);
  }
  tuple1(): this {
    return this.op(0x85);
  }
  tuple2(): this {
    return this.op(0x86);
  }
  emptyTuple(): this {
    return this.op(0x29);
  }
  emptyDict(): this {
    return this.op(0x7d);
  }
  emptyList(): this {
    return this.op(0x5d);
  }
  setitem(): this {
    return this.op(0x73);
  }
  setitems(): this {
    return this.op(0x75);
  }
  appends(): this {
    return this.op(0x65);
  }
  reduce(): this {
    return this.op(0x52);
  }
  build(): this {
    return this.op(0x62);
  }
  newobj(): this {
    return this.op(0x81);
  }
  binpersid(): this {
    return this.op(0x51);
  }
  put(i: number): this {
    return this.op(0x71, i);
  }
  get(i: number): this {
    return this.op(0x68, i);
  }
  stackGlobal(module: string, name: string): this {
    return this.str(module).str(name).op(0x93);
  }
  stop(): this {
    return this.op(0x2e);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export function latin1(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}
function i32(n: number): number[] {
  return u32(n >>> 0);
}

/** One zip entry; the optional fields override what the writer would put in the headers. */
export interface ZipEntry {
  name: string;
  data: Uint8Array;
  /** 0 stored (default), 8 deflate. */
  method?: 0 | 8;
  /** Claimed sizes / CRC (both headers), instead of the true ones. */
  size?: number;
  compressedSize?: number;
  crc?: number;
  /** Write the sizes and offset as 0xffffffff with a zip64 extra field holding these values. */
  zip64?: { size: number; compressedSize: number; localOffset?: number };
  /** General purpose flags (bit 0: encrypted). */
  flags?: number;
  /** Local header offset written in the central directory, instead of the true one. */
  localOffset?: number;
}

/** Overrides of the end records of `zipArchive`. */
export interface ZipEnd {
  /** Entry count, central directory size and offset of the end record. */
  count?: number;
  cdSize?: number;
  cdOffset?: number;
  /** Write a zip64 end record (with these values) and its locator, and 0xffff... in the classic one. */
  zip64?: { count: number; cdSize?: number; cdOffset?: number };
}

/** A zip archive (PKWARE APPNOTE layout), entries in order, with an optional trailing comment. */
export function zipArchive(entries: ZipEntry[], end: ZipEnd = {}): Uint8Array {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, "utf8");
    const method = e.method ?? 0;
    const body = method === 8 ? deflateRawSync(e.data) : Buffer.from(e.data);
    const crc = e.crc ?? crc32(e.data);
    const size = e.size ?? e.data.length;
    const csize = e.compressedSize ?? body.length;
    let extra = Buffer.alloc(0);
    if (e.zip64 !== undefined) {
      extra = Buffer.alloc(4 + 24);
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(e.zip64.size), 4);
      extra.writeBigUInt64LE(BigInt(e.zip64.compressedSize), 12);
      extra.writeBigUInt64LE(BigInt(e.zip64.localOffset ?? offset), 20);
    }
    const z = e.zip64 !== undefined;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(z ? 45 : 20, 4);
    local.writeUInt16LE(e.flags ?? 0, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc >>> 0, 14);
    local.writeUInt32LE(z ? 0xffffffff : csize, 18);
    local.writeUInt32LE(z ? 0xffffffff : size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(z ? 45 : 20, 4);
    cd.writeUInt16LE(z ? 45 : 20, 6);
    cd.writeUInt16LE(e.flags ?? 0, 8);
    cd.writeUInt16LE(method, 10);
    cd.writeUInt32LE(crc >>> 0, 16);
    cd.writeUInt32LE(z ? 0xffffffff : csize, 20);
    cd.writeUInt32LE(z ? 0xffffffff : size, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt16LE(extra.length, 30);
    cd.writeUInt32LE(z ? 0xffffffff : (e.localOffset ?? offset), 42);
    locals.push(local, name, extra, body);
    central.push(cd, name, extra);
    offset += local.length + name.length + extra.length + body.length;
  }
  const cdBytes = Buffer.concat(central);
  const tail: Buffer[] = [];
  if (end.zip64 !== undefined) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeUInt16LE(45, 12);
    rec.writeUInt16LE(45, 14);
    rec.writeBigUInt64LE(BigInt(end.zip64.count), 24);
    rec.writeBigUInt64LE(BigInt(end.zip64.count), 32);
    rec.writeBigUInt64LE(BigInt(end.zip64.cdSize ?? cdBytes.length), 40);
    rec.writeBigUInt64LE(BigInt(end.zip64.cdOffset ?? offset), 48);
    const locator = Buffer.alloc(20);
    locator.writeUInt32LE(0x07064b50, 0);
    locator.writeBigUInt64LE(BigInt(offset + cdBytes.length), 8);
    locator.writeUInt32LE(1, 16);
    tail.push(rec, locator);
  }
  const z = end.zip64 !== undefined;
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(z ? 0xffff : (end.count ?? entries.length), 8);
  eocd.writeUInt16LE(z ? 0xffff : (end.count ?? entries.length), 10);
  eocd.writeUInt32LE(z ? 0xffffffff : (end.cdSize ?? cdBytes.length), 12);
  eocd.writeUInt32LE(z ? 0xffffffff : (end.cdOffset ?? offset), 16);
  return new Uint8Array(Buffer.concat([...locals, cdBytes, ...tail, eocd]));
}

/** One tensor of a hand-made state dict: a view into storage `key`. */
export interface TensorSpec {
  name: string;
  key: string;
  /** Storage class, e.g. FloatStorage. */
  storage?: string;
  /** Elements the persistent id claims the storage has. */
  numel: number;
  offset?: number | bigint;
  size: Array<number | bigint>;
  stride: Array<number | bigint>;
}

/**
 * The data.pkl of `torch.save(OrderedDict(name=tensor, ...))` at protocol 2, as torch writes it:
 * `_rebuild_tensor_v2(BINPERSID(('storage', torch.FloatStorage, key, 'cpu', numel)), offset,
 * size, stride, False, OrderedDict())`.
 */
export function stateDictPickle(tensors: TensorSpec[], extra?: (p: Pickle) => void): Uint8Array {
  const p = new Pickle().proto(2).global("collections", "OrderedDict").emptyTuple().reduce();
  p.mark();
  for (const t of tensors) {
    p.str(t.name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark()
      .str("storage")
      .global("torch", t.storage ?? "FloatStorage")
      .str(t.key)
      .str("cpu")
      .int(t.numel)
      .tuple()
      .binpersid();
    intOrLong(p, t.offset ?? 0);
    p.mark();
    for (const s of t.size) intOrLong(p, s);
    p.tuple();
    p.mark();
    for (const s of t.stride) intOrLong(p, s);
    p.tuple();
    p.bool(false).global("collections", "OrderedDict").emptyTuple().reduce();
    p.tuple().reduce();
  }
  p.setitems();
  extra?.(p);
  return p.stop().bytes();
}

function intOrLong(p: Pickle, v: number | bigint): void {
  if (typeof v === "bigint") p.long(v);
  else p.int(v);
}

/** A torch.save zip archive: `archive/data.pkl`, `archive/data/<key>` records, `archive/version`. */
export function torchZip(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  tweak?: (entries: ZipEntry[]) => ZipEntry[],
  end?: ZipEnd,
): Uint8Array {
  let entries: ZipEntry[] = [
    { name: "archive/data.pkl", data: pickle },
    ...Object.entries(storages).map(([key, data]) => ({ name: `archive/data/${key}`, data })),
    { name: "archive/version", data: latin1("3\n") },
  ];
  if (tweak !== undefined) entries = tweak(entries);
  return zipArchive(entries, end);
}

/**
 * A legacy (pre-1.6) torch.save stream: the magic number, protocol 1001 and sys_info pickles, the
 * object graph `pickle`, the list of storage keys, then each storage as an int64 element count
 * (`counts[key]`, default its float32 count) and its bytes.
 */
export function torchLegacy(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  counts: Record<string, number | bigint> = {},
): Uint8Array {
  const magic = new Pickle().proto(2).long(0x1950a86a20f9469cfc6cn).stop().bytes();
  const version = new Pickle().proto(2).int(1001).stop().bytes();
  const sysInfo = new Pickle()
    .proto(2)
    .emptyDict()
    .mark()
    .str("protocol_version")
    .int(1001)
    .str("little_endian")
    .bool(true)
    .setitems()
    .stop()
    .bytes();
  const keys = new Pickle().proto(2).emptyList().mark();
  for (const key of Object.keys(storages)) keys.str(key);
  const parts: Uint8Array[] = [magic, version, sysInfo, pickle, keys.appends().stop().bytes()];
  for (const [key, data] of Object.entries(storages)) {
    const count = Buffer.alloc(8);
    count.writeBigInt64LE(BigInt(counts[key] ?? data.length / 4));
    parts.push(count, data);
  }
  return new Uint8Array(Buffer.concat(parts));
}

/** `n` float32 values 0, 1, 2, ... as bytes. */
export function floats(n: number): Uint8Array {
  return new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer);
}
