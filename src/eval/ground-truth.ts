/**
 * The revisitop ground truth of ROxford5k / RParis6k (`gnd_<dataset>.pkl`, or its `.json` twin):
 * database and query names, and per query the crop box and the easy / hard / junk database ids.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { fileError, SuperglobalError } from "../errors.ts";
import { unpickle } from "../io/pickle.ts";

export interface QueryGroundTruth {
  /** Query crop [x1, y1, x2, y2] in the original query image. */
  bbx: [number, number, number, number];
  /** 0-based indices into `imlist`, in file order (duplicates, if any, are kept: they count). */
  easy: number[];
  hard: number[];
  junk: number[];
}

export interface GroundTruth {
  /** From the file name `gnd_<dataset>.pkl|json`, when it has that form. */
  dataset?: string;
  /** Database image names, without extension. */
  imlist: string[];
  /** Query image names, without extension; `gnd[i]` belongs to `qimlist[i]`. */
  qimlist: string[];
  gnd: QueryGroundTruth[];
}

/**
 * Reads `gnd_<dataset>.pkl` (the official pickle) or its `.json` twin (same keys and order). The
 * format is told by the content, not the extension. Throws NOT_FOUND when the file is missing
 * (other read errors as `fileError` maps them), BAD_FILE naming the file when it is not a
 * well-formed ground truth (or not a pickle).
 */
export function readGroundTruth(path: string): GroundTruth {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (cause) {
    throw fileError(path, "cannot read", cause);
  }
  const root = parseContent(bytes, path);
  const gt = validate(root, path, bytes.length);
  const match = /^gnd_(.+)\.(?:pkl|pickle|json)$/i.exec(basename(path));
  return match ? { dataset: match[1]!, ...gt } : gt;
}

function parseContent(bytes: Buffer, path: string): unknown {
  // JSON starts with "{" or "["; no pickle does (protocol 2+ starts with 0x80, 0 and 1 with an opcode).
  const text = bytes.subarray(0, 64).toString("latin1").trimStart();
  if (!text.startsWith("{") && !text.startsWith("[")) return unpickle(bytes, { source: path });
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${path}: invalid JSON (${(cause as Error).message})`, {
      input: path,
      cause,
    });
  }
}

function bad(path: string, what: string): never {
  throw new SuperglobalError("BAD_FILE", `${path}: not a revisitop ground truth: ${what}`, {
    input: path,
  });
}

/** A key of a dict that came from a pickle (Map) or from JSON (plain object). */
function field(dict: unknown, key: string): unknown {
  if (dict instanceof Map) return dict.get(key);
  if (typeof dict === "object" && dict !== null && !Array.isArray(dict)) {
    return Object.hasOwn(dict, key) ? (dict as Record<string, unknown>)[key] : undefined;
  }
  return undefined;
}

function isDict(value: unknown): boolean {
  return (
    value instanceof Map || (typeof value === "object" && value !== null && !Array.isArray(value))
  );
}

/**
 * Counts list items against the file's size before they are walked: every item of an honest
 * pickle or JSON file takes at least one byte, but a pickle may repeat one list by reference
 * (memo), so that 30 kB would name 16 million ids and validation (then evaluation) go quadratic.
 */
class ItemBudget {
  private left: number;
  constructor(
    private readonly path: string,
    private readonly bytes: number,
  ) {
    this.left = bytes;
  }
  take(n: number): void {
    this.left -= n;
    if (this.left < 0) {
      bad(
        this.path,
        `its lists hold more items than ${this.bytes} bytes can (lists repeated by reference)`,
      );
    }
  }
}

function stringList(value: unknown, path: string, key: string, budget: ItemBudget): string[] {
  if (!Array.isArray(value)) bad(path, `"${key}" is not a list`);
  budget.take(value.length);
  value.forEach((name, i) => {
    if (typeof name !== "string") bad(path, `"${key}"[${i}] is not a string`);
  });
  return value as string[];
}

function idList(
  value: unknown,
  path: string,
  key: string,
  dbSize: number,
  budget: ItemBudget,
): number[] {
  if (!Array.isArray(value)) bad(path, `${key} is not a list`);
  budget.take(value.length);
  value.forEach((id, i) => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= dbSize) {
      bad(path, `${key}[${i}] = ${String(id)} is not a database index in 0..${dbSize - 1}`);
    }
  });
  return value as number[];
}

function validate(root: unknown, path: string, fileBytes: number): GroundTruth {
  if (!isDict(root)) bad(path, "the top level is not a dict");
  const budget = new ItemBudget(path, fileBytes);
  const imlist = stringList(field(root, "imlist"), path, "imlist", budget);
  const qimlist = stringList(field(root, "qimlist"), path, "qimlist", budget);
  const gndRaw = field(root, "gnd");
  if (!Array.isArray(gndRaw)) bad(path, `"gnd" is not a list`);
  budget.take(gndRaw.length);
  if (gndRaw.length !== qimlist.length) {
    bad(path, `"gnd" has ${gndRaw.length} entries but "qimlist" has ${qimlist.length} queries`);
  }
  const gnd = gndRaw.map((entry: unknown, q: number): QueryGroundTruth => {
    const at = `gnd[${q}]`;
    if (!isDict(entry)) bad(path, `${at} is not a dict`);
    const bbx = field(entry, "bbx");
    if (
      !Array.isArray(bbx) ||
      bbx.length !== 4 ||
      bbx.some((v) => typeof v !== "number" || !Number.isFinite(v))
    ) {
      bad(path, `${at}.bbx is not a list of 4 numbers`);
    }
    return {
      bbx: bbx as [number, number, number, number],
      easy: idList(field(entry, "easy"), path, `${at}.easy`, imlist.length, budget),
      hard: idList(field(entry, "hard"), path, `${at}.hard`, imlist.length, budget),
      junk: idList(field(entry, "junk"), path, `${at}.junk`, imlist.length, budget),
    };
  });
  return { imlist, qimlist, gnd };
}
