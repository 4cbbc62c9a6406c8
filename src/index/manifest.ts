/**
 * An index folder's manifest.json: what the index is (model identity, dimension, storage type,
 * creation time) and which generation of its data files is current. It is only ever replaced
 * atomically, so switching generations (after a compaction) is one rename.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { badFile, fileError, SuperglobalError } from "../errors.ts";
import { replaceFileAtomically } from "./durable-io.ts";

export const FORMAT = "superglobal-index";
export const FORMAT_VERSION = 1;

export type VectorDtype = "float32" | "float16";

export interface Manifest {
  format: typeof FORMAT;
  version: number;
  /** Opaque identity of the model that made the descriptors, e.g. "cvnet-r50:sha256…:s3". */
  model: string;
  dim: number;
  dtype: VectorDtype;
  /** ISO time of creation. */
  created: string;
  /** Current generation: its files are vectors-<g>.f32|.f16 and journal-<g>.log. */
  generation: number;
  /** The caller's own JSON metadata, given at creation (e.g. how to rebuild the model). */
  extra?: Record<string, unknown>;
}

export const manifestPath = (dir: string) => join(dir, "manifest.json");
export const vectorsName = (m: Pick<Manifest, "dtype">, generation: number) =>
  `vectors-${generation}.${m.dtype === "float16" ? "f16" : "f32"}`;
export const journalName = (generation: number) => `journal-${generation}.log`;

/** Reads the manifest of index folder `dir`; NOT_FOUND if there is none. */
export function readManifest(dir: string): Manifest {
  const path = manifestPath(dir);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new SuperglobalError(
        "NOT_FOUND",
        `${dir}: not a superglobal index (no manifest.json)`,
        {
          input: dir,
        },
      );
    }
    throw fileError(path, "cannot read", error);
  }
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch {
    throw badFile(path, "not JSON");
  }
  if (m === null || typeof m !== "object" || m.format !== FORMAT) {
    throw badFile(path, "not a superglobal index manifest");
  }
  if (m.version !== FORMAT_VERSION) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${path}: index format version ${m.version} (this superglobal reads version ${FORMAT_VERSION})`,
      { input: path },
    );
  }
  const ok =
    typeof m.model === "string" &&
    Number.isInteger(m.dim) &&
    m.dim > 0 &&
    (m.dtype === "float32" || m.dtype === "float16") &&
    typeof m.created === "string" &&
    Number.isInteger(m.generation) &&
    m.generation > 0 &&
    (m.extra === undefined || (m.extra !== null && typeof m.extra === "object"));
  if (!ok) throw badFile(path, "a manifest field is missing or invalid");
  return m;
}

/** Writes (or replaces) the manifest atomically and durably. */
export function writeManifest(dir: string, m: Manifest): void {
  replaceFileAtomically(manifestPath(dir), Buffer.from(`${JSON.stringify(m, null, 2)}\n`, "utf8"));
}
