/**
 * The index's metadata journal: an append-only file of checksummed records, grouped in batches
 * that each end with a COMMIT record. Only whole, committed batches count; what follows the last
 * one (a batch a crash cut short) is a torn tail, ignored by readers and trimmed by the writer.
 *
 * Layout (little-endian): a 16-byte header, "SGIJRNL\0", u32 format version, u32 generation;
 * then records, each `u32 bodyLength, u32 crc32(body), body`, the body starting with its type:
 *   1 ENTRY   u8 replacesFailure, u32 row, u32 replaces, f64 size, f64 mtimeMs, 32-byte sha256,
 *             u32 n, n bytes of UTF-8 path
 *   2 FAILED  u8 hasHash, u32 replaces, f64 size, f64 mtimeMs, 32-byte sha256 (zeros if none),
 *             u32 n, path, u32 m, m bytes of UTF-8 reason
 *   3 REMOVE  u32 row (NO_ROW: the path's failure), u32 n, path
 *   4 COMMIT  f64 time (ms since the epoch), u32 rows (vector rows once this batch is in),
 *             f64 batchStart (journal offset of the batch's first record), u32 records (before it)
 * ENTRY rows number the vector file's rows in order: 0, 1, 2, ... with no gaps. `replaces` is the
 * vector row of the entry the record supersedes (NO_ROW if none), so a replay marks dead rows by
 * number and needs no lookup by path.
 */
import { badFile } from "../errors.ts";

export const JOURNAL_HEADER_BYTES = 16;
const MAGIC = "SGIJRNL\0";
const VERSION = 2;
/** "No row" in a row field. */
export const NO_ROW = 0xffffffff;
/** No record is larger (paths are at most a few KiB; reasons are cut to MAX_REASON). */
const MAX_BODY = 1 << 20;
/** Failure reasons are kept to this many UTF-16 units. */
export const MAX_REASON = 4000;
const HASH_BYTES = 32;
const COMMIT_BODY = 1 + 8 + 4 + 8 + 4;

export interface EntryRecord {
  type: "entry";
  row: number;
  /** The vector row this entry supersedes (same path), or NO_ROW. */
  replaces: number;
  /** Whether it supersedes a failure of the same path. */
  replacesFailure: boolean;
  path: string;
  size: number;
  mtimeMs: number;
  hash: string;
}

export interface FailedRecord {
  type: "failed";
  /** The vector row of the entry this failure supersedes, or NO_ROW. */
  replaces: number;
  path: string;
  size: number;
  mtimeMs: number;
  hash: string | null;
  reason: string;
}

export interface RemoveRecord {
  type: "remove";
  /** The vector row removed, or NO_ROW when the path's failure is removed. */
  row: number;
  path: string;
}

export interface CommitRecord {
  type: "commit";
  time: number;
  rows: number;
  batchStart: number;
  records: number;
}

export type JournalRecord = EntryRecord | FailedRecord | RemoveRecord | CommitRecord;

export function encodeHeader(generation: number): Buffer {
  const b = Buffer.alloc(JOURNAL_HEADER_BYTES);
  b.write(MAGIC, 0, "latin1");
  b.writeUInt32LE(VERSION, 8);
  b.writeUInt32LE(generation, 12);
  return b;
}

function bodyLength(r: JournalRecord): number {
  switch (r.type) {
    case "entry":
      return 1 + 1 + 4 + 4 + 8 + 8 + HASH_BYTES + 4 + Buffer.byteLength(r.path, "utf8");
    case "failed":
      return (
        1 +
        1 +
        4 +
        8 +
        8 +
        HASH_BYTES +
        4 +
        Buffer.byteLength(r.path, "utf8") +
        4 +
        Buffer.byteLength(r.reason, "utf8")
      );
    case "remove":
      return 1 + 4 + 4 + Buffer.byteLength(r.path, "utf8");
    case "commit":
      return COMMIT_BODY;
  }
}

/** The framed bytes of `records`, in order. */
export function encodeRecords(records: readonly JournalRecord[]): Buffer {
  let total = 0;
  for (const r of records) total += 8 + bodyLength(r);
  const b = Buffer.alloc(total);
  let off = 0;
  for (const r of records) {
    const start = off + 8;
    let p = start;
    switch (r.type) {
      case "entry":
        b[p++] = 1;
        b[p++] = r.replacesFailure ? 1 : 0;
        b.writeUInt32LE(r.row, p);
        b.writeUInt32LE(r.replaces, p + 4);
        b.writeDoubleLE(r.size, p + 8);
        b.writeDoubleLE(r.mtimeMs, p + 16);
        b.write(r.hash, p + 24, HASH_BYTES, "hex");
        p = writeText(b, p + 24 + HASH_BYTES, r.path);
        break;
      case "failed":
        b[p++] = 2;
        b[p++] = r.hash === null ? 0 : 1;
        b.writeUInt32LE(r.replaces, p);
        b.writeDoubleLE(r.size, p + 4);
        b.writeDoubleLE(r.mtimeMs, p + 12);
        if (r.hash !== null) b.write(r.hash, p + 20, HASH_BYTES, "hex");
        p = writeText(b, writeText(b, p + 20 + HASH_BYTES, r.path), r.reason);
        break;
      case "remove":
        b[p++] = 3;
        b.writeUInt32LE(r.row, p);
        p = writeText(b, p + 4, r.path);
        break;
      case "commit":
        b[p++] = 4;
        b.writeDoubleLE(r.time, p);
        b.writeUInt32LE(r.rows, p + 8);
        b.writeDoubleLE(r.batchStart, p + 12);
        b.writeUInt32LE(r.records, p + 20);
        p += 24;
        break;
    }
    b.writeUInt32LE(p - start, off);
    b.writeUInt32LE(crc32(b, start, p), off + 4);
    off = p;
  }
  return b;
}

/** Writes u32 length + UTF-8 of `s` at `p`; returns the offset after it. */
function writeText(b: Buffer, p: number, s: string): number {
  const n = b.write(s, p + 4, "utf8");
  b.writeUInt32LE(n, p);
  return p + 4 + n;
}

export interface ParsedJournal {
  /** Offset just past the last committed batch (the header's end when there is none). */
  end: number;
  /** Vector rows the committed batches account for. */
  rows: number;
  /** Time of the last COMMIT, or undefined when there is none. */
  time: number | undefined;
}

/**
 * What a replay does with each record of a committed batch, in order. ENTRY records are handed
 * over without an object per record: the path, and where the 32 hash bytes lie in `bytes`.
 */
export interface RecordVisitor {
  entry(
    row: number,
    replaces: number,
    replacesFailure: boolean,
    path: string,
    size: number,
    mtimeMs: number,
    bytes: Buffer,
    hashAt: number,
  ): void;
  failed(record: FailedRecord): void;
  remove(row: number, path: string): void;
}

/**
 * Reads a journal's committed batches in order, handing each batch's records to `visit` once the
 * batch's COMMIT is found whole and consistent. Stops at the first record that is incomplete or
 * fails its checksum: a torn tail. A tail that holds a later batch's valid COMMIT is not torn but
 * damaged, and is refused (BAD_FILE) rather than trimmed, as is any checksummed record that
 * contradicts the format.
 */
export function parseJournal(
  file: string,
  bytes: Buffer,
  generation: number,
  visit: RecordVisitor,
): ParsedJournal {
  if (
    bytes.length < JOURNAL_HEADER_BYTES ||
    bytes.toString("latin1", 0, 8) !== MAGIC ||
    bytes.readUInt32LE(8) !== VERSION ||
    bytes.readUInt32LE(12) !== generation
  ) {
    throw badFile(file, `not a superglobal index journal of generation ${generation}`);
  }
  let off = JOURNAL_HEADER_BYTES;
  let end = off;
  let rows = 0;
  let nextRow = 0;
  let time: number | undefined;
  let records = 0;
  const cursor = new Cursor(file, bytes);
  // Pass 1 checks each frame and finds the batch's COMMIT; pass 2 decodes the batch.
  for (;;) {
    const bodyStart = frameAt(bytes, off);
    if (bodyStart === undefined) break;
    const frame = off;
    const len = bytes.readUInt32LE(off);
    off = bodyStart + len;
    const type = bytes[bodyStart];
    if (type === 1) {
      if (len < 6 || bytes.readUInt32LE(bodyStart + 2) !== nextRow) {
        throw damaged(file, frame, `an entry out of row order (row ${nextRow} was next)`);
      }
      nextRow += 1;
      records += 1;
    } else if (type === 4) {
      const c = decodeBody(cursor, bodyStart, len, frame) as CommitRecord;
      if (c.batchStart !== end || c.records !== records || c.rows !== nextRow) {
        throw damaged(file, frame, "a COMMIT that does not match its batch");
      }
      for (let p = end; p < frame; ) {
        const n = bytes.readUInt32LE(p);
        decodeInto(cursor, p + 8, n, p, c.rows, visit);
        p += 8 + n;
      }
      records = 0;
      end = off;
      rows = nextRow;
      time = c.time;
    } else {
      records += 1;
    }
  }
  // Torn tail, or damage? Only the one batch being written when a crash came may be torn, and
  // its COMMIT (if it reached the disk at all) names `end` as the batch's start.
  for (let p = end; p + 8 + COMMIT_BODY <= bytes.length; p++) {
    if (bytes.readUInt32LE(p) !== COMMIT_BODY || bytes[p + 8] !== 4) continue;
    if (frameAt(bytes, p) === undefined) continue;
    if (bytes.readDoubleLE(p + 8 + 1 + 12) !== end) {
      throw damaged(file, end, "records that fail their checksum before later committed ones");
    }
  }
  return { end, rows, time };
}

/** The body offset of a whole, checksum-valid record at `off`, or undefined. */
function frameAt(bytes: Buffer, off: number): number | undefined {
  if (off + 8 > bytes.length) return undefined;
  const len = bytes.readUInt32LE(off);
  if (len < 1 || len > MAX_BODY || off + 8 + len > bytes.length) return undefined;
  return crc32(bytes, off + 8, off + 8 + len) === bytes.readUInt32LE(off + 4) ? off + 8 : undefined;
}

function damaged(file: string, offset: number, what: string) {
  return badFile(file, `damaged at byte ${offset}: ${what}; the index cannot be trusted`);
}

/** Decodes one record of a committed batch (of `rows` vector rows) and hands it to `visit`. */
function decodeInto(
  c: Cursor,
  start: number,
  len: number,
  frame: number,
  rows: number,
  visit: RecordVisitor,
): void {
  const b = c.b;
  if (b[start] !== 1) {
    const r = decodeBody(c, start, len, frame);
    const row = r.type === "failed" ? r.replaces : r.type === "remove" ? r.row : 0;
    if (row !== NO_ROW && row >= rows) throw damaged(c.file, frame, `row ${row} out of range`);
    if (r.type === "failed") visit.failed(r);
    else if (r.type === "remove") visit.remove(r.row, r.path);
    else throw damaged(c.file, frame, "a COMMIT inside a batch");
    return;
  }
  c.p = start + 1;
  c.stop = start + len;
  c.frame = frame;
  c.need(25 + HASH_BYTES);
  const p = c.p;
  c.p += 25 + HASH_BYTES;
  const path = c.text();
  if (c.p !== c.stop) throw damaged(c.file, frame, "a record longer than its fields");
  const row = b.readUInt32LE(p + 1);
  const replaces = b.readUInt32LE(p + 5);
  if (replaces !== NO_ROW && replaces >= row) {
    throw damaged(c.file, frame, `row ${row} replacing row ${replaces}`);
  }
  const size = b.readDoubleLE(p + 9);
  const mtimeMs = b.readDoubleLE(p + 17);
  visit.entry(row, replaces, b[p] === 1, path, size, mtimeMs, b, p + 25);
}

/** Reads a record body's fields in order (one per journal parse: no closure per record). */
class Cursor {
  p = 0;
  stop = 0;
  frame = 0;
  constructor(
    readonly file: string,
    readonly b: Buffer,
  ) {}

  need(n: number): void {
    if (this.p + n > this.stop)
      throw damaged(this.file, this.frame, "a record shorter than its fields");
  }

  text(): string {
    this.need(4);
    const n = this.b.readUInt32LE(this.p);
    this.p += 4;
    this.need(n);
    const s = this.b.toString("utf8", this.p, this.p + n);
    this.p += n;
    return s;
  }
}

function decodeBody(c: Cursor, start: number, len: number, frame: number): JournalRecord {
  const b = c.b;
  c.p = start + 1;
  c.stop = start + len;
  c.frame = frame;
  let r: JournalRecord;
  switch (b[start]) {
    case 1: {
      c.need(25 + HASH_BYTES);
      const p = c.p;
      const replacesFailure = b[p] === 1;
      const row = b.readUInt32LE(p + 1);
      const replaces = b.readUInt32LE(p + 5);
      const size = b.readDoubleLE(p + 9);
      const mtimeMs = b.readDoubleLE(p + 17);
      const hash = b.toString("hex", p + 25, p + 25 + HASH_BYTES);
      c.p += 25 + HASH_BYTES;
      r = { type: "entry", row, replaces, replacesFailure, path: c.text(), size, mtimeMs, hash };
      break;
    }
    case 2: {
      c.need(21 + HASH_BYTES);
      const p = c.p;
      const hasHash = b[p] === 1;
      const replaces = b.readUInt32LE(p + 1);
      const size = b.readDoubleLE(p + 5);
      const mtimeMs = b.readDoubleLE(p + 13);
      const hash = hasHash ? b.toString("hex", p + 21, p + 21 + HASH_BYTES) : null;
      c.p += 21 + HASH_BYTES;
      const path = c.text();
      r = { type: "failed", replaces, path, size, mtimeMs, hash, reason: c.text() };
      break;
    }
    case 3: {
      c.need(4);
      const row = b.readUInt32LE(c.p);
      c.p += 4;
      r = { type: "remove", row, path: c.text() };
      break;
    }
    case 4: {
      c.need(COMMIT_BODY - 1);
      const p = c.p;
      r = {
        type: "commit",
        time: b.readDoubleLE(p),
        rows: b.readUInt32LE(p + 8),
        batchStart: b.readDoubleLE(p + 12),
        records: b.readUInt32LE(p + 20),
      };
      c.p += COMMIT_BODY - 1;
      break;
    }
    default:
      throw damaged(c.file, frame, `a record of unknown type ${b[start]}`);
  }
  if (c.p !== c.stop) throw damaged(c.file, frame, "a record longer than its fields");
  return r;
}

let crcTables: Uint32Array[] | undefined;

/**
 * CRC-32 (zlib's polynomial) of bytes[start, end), slicing by 8. In JavaScript rather than
 * zlib.crc32 (Node ≥ 20.15) because that needs a view per record, which costs more than the sum.
 */
export function crc32(bytes: Uint8Array, start: number, end: number): number {
  const t = crcTables ?? makeCrcTables();
  const [t0, t1, t2, t3, t4, t5, t6, t7] = t as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let c = 0xffffffff;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a =
      (c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24))) >>>
      0;
    c =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[bytes[i + 4]!]! ^
      t2[bytes[i + 5]!]! ^
      t1[bytes[i + 6]!]! ^
      t0[bytes[i + 7]!]!;
  }
  for (; i < end; i++) c = t0[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function makeCrcTables(): Uint32Array[] {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = tables[0]!;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t0[n]!;
    for (let k = 1; k < 8; k++) {
      c = t0[c & 0xff]! ^ (c >>> 8);
      tables[k]![n] = c >>> 0;
    }
  }
  crcTables = tables;
  return tables;
}
