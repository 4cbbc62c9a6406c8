/**
 * The zip container of `torch.save` (PyTorch ≥ 1.6): `<prefix>/data.pkl` (the object graph),
 * `<prefix>/data/<key>` (raw storage bytes), `<prefix>/version`. Only the container is read here;
 * torch-tensors.ts interprets the pickle. The central directory is parsed directly, with random access, so
 * each record is read once and only when asked for (big checkpoints never sit whole in memory).
 */
import * as zlib from "node:zlib";
import { SuperglobalError } from "../errors.ts";
import type { ByteSource } from "./byte-source.ts";

export interface TorchZip {
  /** The archive's top folder (torch names it after the file, e.g. "cvnet_r50_random"). */
  readonly prefix: string;
  /** Whether `<prefix>/<name>` exists. */
  hasRecord(name: string): boolean;
  /**
   * The bytes of `<prefix>/<name>`, CRC-checked; BAD_FILE when absent, truncated or corrupt, or
   * when it claims more than `maxBytes` (checked before anything is read or inflated).
   */
  readRecord(name: string, maxBytes?: number): Uint8Array;
}

interface Entry {
  name: string;
  flags: number;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const EOCD_SIZE = 22;
/** Deflate's largest expansion (258-byte matches at about 2 bits each). */
const MAX_DEFLATE_RATIO = 1032;
const MAX_COMMENT = 0xffff;

const utf8 = new TextDecoder("utf-8");

export function openTorchZip(src: ByteSource): TorchZip {
  const entries = readCentralDirectory(src);
  const byName = new Map<string, Entry>();
  for (const e of entries) {
    // Which copy a reader takes differs between zip readers: refuse to guess.
    if (byName.has(e.name)) throw bad(src, `the zip archive holds two records named ${e.name}`);
    byName.set(e.name, e);
  }
  const prefix = findPrefix(src, entries, byName);
  const zip: TorchZip = {
    prefix,
    hasRecord: (name) => byName.has(`${prefix}/${name}`),
    readRecord: (name, maxBytes) => {
      const entry = byName.get(`${prefix}/${name}`);
      if (entry === undefined) {
        throw bad(src, `the archive has no record ${prefix}/${name}`);
      }
      if (maxBytes !== undefined && entry.size > maxBytes) {
        throw bad(
          src,
          `zip record ${entry.name} holds ${entry.size} bytes, more than the ${maxBytes} its storage needs`,
        );
      }
      return readEntry(src, entry);
    },
  };
  // torch ≥ 2.1 records the byte order; storages are read as little-endian.
  if (zip.hasRecord("byteorder")) {
    const order = utf8.decode(zip.readRecord("byteorder")).trim();
    if (order !== "little") {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${src.name}: the checkpoint was saved with byte order "${order}"; only little-endian is supported`,
        { input: src.name },
      );
    }
  }
  return zip;
}

function bad(src: ByteSource, what: string): SuperglobalError {
  return new SuperglobalError("BAD_FILE", `${src.name}: ${what}`, { input: src.name });
}

/** torch reads the folder of the first record; archives from other writers may order differently. */
function findPrefix(src: ByteSource, entries: Entry[], byName: Map<string, Entry>): string {
  const first = entries[0]?.name ?? "";
  const slash = first.indexOf("/");
  if (slash > 0 && byName.has(`${first.slice(0, slash)}/data.pkl`)) return first.slice(0, slash);
  const pkl = entries.find((e) => /^[^/]+\/data\.pkl$/.test(e.name));
  if (pkl !== undefined) return pkl.name.slice(0, pkl.name.indexOf("/"));
  throw bad(
    src,
    `a zip archive without <name>/data.pkl (records: ${entries
      .slice(0, 5)
      .map((e) => e.name)
      .join(", ")}${entries.length > 5 ? ", ..." : ""}); it is not a torch.save checkpoint`,
  );
}

function readCentralDirectory(src: ByteSource): Entry[] {
  if (src.size < EOCD_SIZE) throw bad(src, `only ${src.size} bytes: too short to be a zip archive`);
  const tailStart = Math.max(0, src.size - EOCD_SIZE - MAX_COMMENT);
  const tail = src.read(tailStart, src.size - tailStart);
  const tv = view(tail);
  let at = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (
      tv.getUint32(i, true) === SIG_EOCD &&
      i + EOCD_SIZE + tv.getUint16(i + 20, true) <= tail.length
    ) {
      at = i;
      break;
    }
  }
  if (at < 0) {
    throw bad(
      src,
      "no zip end-of-central-directory record: the checkpoint is truncated or not a zip archive",
    );
  }
  const eocdPos = tailStart + at;
  const disk = tv.getUint16(at + 4, true);
  const cdDisk = tv.getUint16(at + 6, true);
  let count = tv.getUint16(at + 10, true);
  let cdSize = tv.getUint32(at + 12, true);
  let cdOffset = tv.getUint32(at + 16, true);

  // Zip64: a locator just before the classic record points at the 64-bit record.
  if (at >= 20 && tv.getUint32(at - 20, true) === SIG_EOCD64_LOCATOR) {
    const recordPos = u64(src, tv, at - 20 + 8, "zip64 end-of-central-directory offset");
    if (recordPos + 56 > eocdPos)
      throw bad(src, "zip64 end-of-central-directory record is out of place");
    const rec = src.read(recordPos, 56);
    const rv = view(rec);
    if (rv.getUint32(0, true) !== SIG_EOCD64) {
      throw bad(src, "zip64 end-of-central-directory record is missing or corrupt");
    }
    count = u64(src, rv, 32, "zip64 entry count");
    cdSize = u64(src, rv, 40, "zip64 central directory size");
    cdOffset = u64(src, rv, 48, "zip64 central directory offset");
  } else if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw bad(src, "zip64 fields without a zip64 end-of-central-directory locator");
  }
  if (disk !== 0 || cdDisk !== 0) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: multi-volume zip archives are not supported`,
      { input: src.name },
    );
  }
  if (cdOffset + cdSize > eocdPos) {
    throw bad(
      src,
      `the zip central directory (bytes ${cdOffset}..${cdOffset + cdSize}) runs past its end record at byte ${eocdPos}: the file is corrupt`,
    );
  }

  const cd = src.read(cdOffset, cdSize);
  const cv = view(cd);
  const entries: Entry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cv.getUint32(p, true) !== SIG_CENTRAL) {
      throw bad(src, `zip central directory entry ${i} is corrupt (at byte ${cdOffset + p})`);
    }
    const nameLen = cv.getUint16(p + 28, true);
    const extraLen = cv.getUint16(p + 30, true);
    const commentLen = cv.getUint16(p + 32, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) throw bad(src, `zip central directory entry ${i} runs past the directory`);
    const entry: Entry = {
      name: utf8.decode(cd.subarray(p + 46, p + 46 + nameLen)),
      flags: cv.getUint16(p + 8, true),
      method: cv.getUint16(p + 10, true),
      crc: cv.getUint32(p + 16, true),
      compressedSize: cv.getUint32(p + 20, true),
      size: cv.getUint32(p + 24, true),
      localOffset: cv.getUint32(p + 42, true),
    };
    applyZip64Extra(src, entry, cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen));
    entries.push(entry);
    p = end;
  }
  return entries;
}

/** Replaces 0xffffffff sizes/offset with the 64-bit values of the zip64 extra field (id 1). */
function applyZip64Extra(src: ByteSource, entry: Entry, extra: Uint8Array): void {
  const fields = (["size", "compressedSize", "localOffset"] as const).filter(
    (f) => entry[f] === 0xffffffff,
  );
  if (fields.length === 0) return;
  const ev = view(extra);
  for (let q = 0; q + 4 <= extra.length; ) {
    const id = ev.getUint16(q, true);
    const len = ev.getUint16(q + 2, true);
    if (id === 0x0001) {
      let r = q + 4;
      for (const f of fields) {
        if (r + 8 > q + 4 + len) break;
        entry[f] = u64(src, ev, r, `zip64 ${f} of ${entry.name}`);
        r += 8;
      }
      return;
    }
    q += 4 + len;
  }
  throw bad(src, `zip entry ${entry.name} lacks its zip64 extra field`);
}

function readEntry(src: ByteSource, entry: Entry): Uint8Array {
  if (entry.flags & 0x1) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: zip record ${entry.name} is encrypted`,
      { input: src.name },
    );
  }
  if (entry.localOffset + 30 > src.size) {
    throw bad(src, `zip record ${entry.name} starts past the end of the file: truncated`);
  }
  const header = src.read(entry.localOffset, 30);
  const hv = view(header);
  if (hv.getUint32(0, true) !== SIG_LOCAL) {
    throw bad(src, `zip record ${entry.name} has no local header at byte ${entry.localOffset}`);
  }
  // The local extra field differs from the central one (torch pads it to align the data).
  const dataStart = entry.localOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
  if (dataStart + entry.compressedSize > src.size) {
    throw bad(
      src,
      `zip record ${entry.name} (bytes ${dataStart}..${dataStart + entry.compressedSize}) runs past the end of the file (${src.size} bytes): truncated`,
    );
  }
  if (entry.method === 0 && entry.size !== entry.compressedSize) {
    throw bad(
      src,
      `zip record ${entry.name} is stored uncompressed but claims ${entry.size} bytes in ${entry.compressedSize}`,
    );
  }
  // Deflate cannot expand data more than 1032-fold: a larger claim is a lie or a bomb, refused
  // before inflating; and inflating stops at the claimed size.
  if (entry.method === 8 && entry.size > MAX_DEFLATE_RATIO * entry.compressedSize + 1024) {
    throw bad(
      src,
      `zip record ${entry.name} claims ${entry.size} bytes from ${entry.compressedSize} deflated ones, more than deflate can produce`,
    );
  }
  const raw = src.read(dataStart, entry.compressedSize);
  let data: Uint8Array;
  if (entry.method === 0) {
    data = raw;
  } else if (entry.method === 8) {
    try {
      const inflated = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
      // An own, 0-aligned buffer, so callers may view it as any typed array.
      data = new Uint8Array(inflated.length);
      data.set(inflated);
    } catch (err) {
      throw new SuperglobalError(
        "BAD_FILE",
        (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE"
          ? `${src.name}: zip record ${entry.name} inflates to more than the ${entry.size} bytes it claims`
          : `${src.name}: zip record ${entry.name} does not inflate: ${(err as Error).message}`,
        { input: src.name, cause: err },
      );
    }
  } else {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${src.name}: zip record ${entry.name} uses compression method ${entry.method} (only stored and deflate are supported)`,
      { input: src.name },
    );
  }
  if (data.length !== entry.size) {
    throw bad(src, `zip record ${entry.name} has ${data.length} bytes, expected ${entry.size}`);
  }
  // torch may skip the CRC (writes 0; `compute_crc32=False`), so only a non-zero CRC is checked.
  if (entry.crc !== 0 && crc32(data) !== entry.crc) {
    throw bad(src, `zip record ${entry.name} fails its CRC check: the file is corrupt`);
  }
  return data;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function u64(src: ByteSource, dv: DataView, at: number, what: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(src, `${what} ${v} is out of range`);
  return Number(v);
}

let crcTable: Uint32Array | undefined;

/** zlib.crc32 where Node has it (≥ 20.15), else a table-driven fallback. */
function crc32(data: Uint8Array): number {
  if (typeof zlib.crc32 === "function") return zlib.crc32(data) >>> 0;
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
