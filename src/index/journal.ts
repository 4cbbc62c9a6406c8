/**
 * The index's metadata journal: an append-only file of checksummed records, grouped in batches
 * that each end with a COMMIT record. Only whole, committed batches count; what follows the last
 * one (a batch a crash cut short) is a torn tail, ignored by readers and trimmed by the writer.
 *
 * Layout (little-endian): a 16-byte header, "SGIJRNL\0", u32 format version, u32 generation;
 * then records, each `u32 bodyLength, u32 crc32(body), body`, the body starting with its type:
 *   1 ENTRY   u32 row, f64 size, f64 mtimeMs, 32-byte sha256, u32 n, n bytes of UTF-8 path
 *   2 FAILED  u8 hasHash, f64 size, f64 mtimeMs, 32-byte sha256 (zeros if none), u32 n, path,
 *             u32 m, m bytes of UTF-8 reason
 *   3 REMOVE  u32 n, path
 *   4 COMMIT  f64 time (ms since the epoch), u32 rows (vector rows once this batch is in),
 *             f64 batchStart (journal offset of the batch's first record), u32 records (before it)
 * ENTRY rows number the vector file's rows in order: 0, 1, 2, ... with no gaps.
 */
import * as zlib from "node:zlib";
import { badFile } from "../errors.ts";

export const JOURNAL_HEADER_BYTES = 16;
const MAGIC = "SGIJRNL\0";
const VERSION = 1;
/** No record is larger (paths are at most a few KiB; reasons are cut to MAX_REASON). */
const MAX_BODY = 1 << 20;
/** Failure reasons are kept to this many UTF-16 units. */
export const MAX_REASON = 4000;
const HASH_BYTES = 32;
const COMMIT_BODY = 1 + 8 + 4 + 8 + 4;

export interface EntryRecord {
  type: "entry";
  row: number;
  path: string;
  size: number;
  mtimeMs: number;
  hash: string;
}

export interface FailedRecord {
  type: "failed";
  path: string;
  size: number;
  mtimeMs: number;
  hash: string | null;
  reason: string;
}

export interface RemoveRecord {
  type: "remove";
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

const crc32: (data: Uint8Array) => number =
  typeof zlib.crc32 === "function" ? (data) => zlib.crc32(data) : jsCrc32;

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
      return 1 + 4 + 8 + 8 + HASH_BYTES + 4 + Buffer.byteLength(r.path, "utf8");
    case "failed":
      return (
        1 +
        1 +
        8 +
        8 +
        HASH_BYTES +
        4 +
        Buffer.byteLength(r.path, "utf8") +
        4 +
        Buffer.byteLength(r.reason, "utf8")
      );
    case "remove":
      return 1 + 4 + Buffer.byteLength(r.path, "utf8");
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
        b.writeUInt32LE(r.row, p);
        b.writeDoubleLE(r.size, p + 4);
        b.writeDoubleLE(r.mtimeMs, p + 12);
        b.write(r.hash, p + 20, HASH_BYTES, "hex");
        p = writeText(b, p + 20 + HASH_BYTES, r.path);
        break;
      case "failed":
        b[p++] = 2;
        b[p++] = r.hash === null ? 0 : 1;
        b.writeDoubleLE(r.size, p);
        b.writeDoubleLE(r.mtimeMs, p + 8);
        if (r.hash !== null) b.write(r.hash, p + 16, HASH_BYTES, "hex");
        p = writeText(b, writeText(b, p + 16 + HASH_BYTES, r.path), r.reason);
        break;
      case "remove":
        b[p++] = 3;
        p = writeText(b, p, r.path);
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
    b.writeUInt32LE(crc32(b.subarray(start, p)), off + 4);
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
 * Reads a journal's committed batches in order, handing each to `onBatch` (its records, then its
 * COMMIT). Stops at the first record that is incomplete or fails its checksum: a torn tail. A
 * tail that holds a later batch's valid COMMIT is not torn but damaged, and is refused (BAD_FILE)
 * rather than trimmed, as is any checksummed record that contradicts the format.
 */
export function parseJournal(
  file: string,
  bytes: Buffer,
  generation: number,
  onBatch: (records: JournalRecord[], commit: CommitRecord) => void,
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
  let batch: JournalRecord[] = [];
  const cursor = new Cursor(file, bytes);
  for (;;) {
    const bodyStart = frameAt(bytes, off);
    if (bodyStart === undefined) break;
    const len = bytes.readUInt32LE(off);
    const r = decodeBody(cursor, bodyStart, len, off);
    off = bodyStart + len;
    if (r.type === "entry") {
      if (r.row !== nextRow) throw damaged(file, off, `row ${r.row} where ${nextRow} was next`);
      nextRow += 1;
      batch.push(r);
    } else if (r.type === "commit") {
      if (r.batchStart !== end || r.records !== batch.length || r.rows !== nextRow) {
        throw damaged(file, off, "a COMMIT that does not match its batch");
      }
      onBatch(batch, r);
      batch = [];
      end = off;
      rows = nextRow;
      time = r.time;
    } else {
      batch.push(r);
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
  const body = bytes.subarray(off + 8, off + 8 + len);
  return crc32(body) === bytes.readUInt32LE(off + 4) ? off + 8 : undefined;
}

function damaged(file: string, offset: number, what: string) {
  return badFile(file, `damaged at byte ${offset}: ${what}; the index cannot be trusted`);
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
      c.need(20 + HASH_BYTES);
      const p = c.p;
      const row = b.readUInt32LE(p);
      const size = b.readDoubleLE(p + 4);
      const mtimeMs = b.readDoubleLE(p + 12);
      const hash = b.toString("hex", p + 20, p + 20 + HASH_BYTES);
      c.p += 20 + HASH_BYTES;
      r = { type: "entry", row, path: c.text(), size, mtimeMs, hash };
      break;
    }
    case 2: {
      c.need(17 + HASH_BYTES);
      const p = c.p;
      const hasHash = b[p] === 1;
      const size = b.readDoubleLE(p + 1);
      const mtimeMs = b.readDoubleLE(p + 9);
      const hash = hasHash ? b.toString("hex", p + 17, p + 17 + HASH_BYTES) : null;
      c.p += 17 + HASH_BYTES;
      const path = c.text();
      r = { type: "failed", path, size, mtimeMs, hash, reason: c.text() };
      break;
    }
    case 3:
      r = { type: "remove", path: c.text() };
      break;
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

let crcTable: Uint32Array | undefined;

/** CRC-32 (zlib's) for Node versions before zlib.crc32 (20.15). */
function jsCrc32(data: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
