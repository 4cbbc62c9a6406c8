/**
 * What a saved model says about itself: the one record stored in every `.onnx` file superglobal
 * builds (`metadata_props` key `superglobal.model`, JSON), read back on load. Caches and indexes
 * key descriptors by the identity derived from it, so two different weight files never share
 * descriptors, whatever their names.
 */
import { createHash } from "node:crypto";
import { INPUT_CONVENTIONS, type InputConvention } from "../backbone/network.ts";
import { SuperglobalError } from "../errors.ts";
import type { HeadOptions } from "../pooling/head-graph.ts";
import type { OnnxGraph } from "../runtime/onnx-graph.ts";
import { readMetadata } from "../runtime/onnx-graph.ts";

export interface ModelInfo {
  /** The feature network, e.g. `cvnet-r50`, `cvnet-r101`, `mobilenetv2-1.4-nsfwjs`. */
  network: string;
  input: InputConvention;
  /** Channels of the feature map the head pools. */
  channels: number;
  /** Descriptor dimension (the head's output); null for a model without a head. */
  dim: number | null;
  /** CVNet's ReLU+ floors (null for other networks). */
  relup: boolean | null;
  /** The pooling the head applies; null: the model ends at the feature map. */
  head: HeadOptions | null;
  /** sha256 (hex) of every weight the model holds: backbone, head and any whitening. */
  weights: string;
  /**
   * Absent: float32 (the exact model). "int8": the backbone quantised from that float model
   * (runtime/quantize-graph.ts); its descriptors differ, so the identity does too.
   */
  precision?: "int8";
  /** With int8: sha256 (hex) of the calibrated activation ranges it was quantised with. */
  calibration?: string;
}

/** The metadata key holding the record. */
export const MODEL_INFO_KEY = "superglobal.model";
const KEY = MODEL_INFO_KEY;
/** Bumped when the record or the graph's contract changes; older files are refused with a hint. */
const FORMAT = 2;

export function writeModelInfo(graph: OnnxGraph, info: ModelInfo): void {
  graph.metadata(KEY, encodeModelInfo(info));
}

/** The record's stored text (the value under MODEL_INFO_KEY). */
export function encodeModelInfo(info: ModelInfo): string {
  return JSON.stringify({ format: FORMAT, ...info });
}

/** The record of a model file's bytes; BAD_FILE naming `path` if it is not a model we built. */
export function readModelInfo(model: Uint8Array, path: string): ModelInfo {
  let meta: Record<string, string>;
  try {
    meta = readMetadata(model);
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${path}: not an ONNX model`, { input: path, cause });
  }
  const text = meta[KEY];
  if (text === undefined) {
    const old = meta["superglobal.kind"] !== undefined;
    throw new SuperglobalError(
      "BAD_FILE",
      old
        ? `${path}: built by an older superglobal; rebuild it with \`superglobal build-model\``
        : `${path}: not a superglobal model (no ${KEY} metadata)`,
      { input: path },
    );
  }
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(text) as Record<string, unknown>;
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${path}: unreadable ${KEY} metadata`, {
      input: path,
      cause,
    });
  }
  if (record["format"] !== FORMAT || !isModelInfo(record)) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: unsupported model record ${text.slice(0, 200)}; rebuild it with this version`,
      { input: path },
    );
  }
  const { format: _format, ...info } = record;
  return info as unknown as ModelInfo;
}

/**
 * The identity of the descriptors a model makes with given extraction settings: equal identities
 * mean interchangeable descriptors. Readable prefix (network, scales), then a content hash.
 */
export function modelIdentity(info: ModelInfo, extraction: Record<string, unknown>): string {
  const digest = createHash("sha256")
    .update(JSON.stringify({ info, extraction }))
    .digest("hex")
    .slice(0, 16);
  return `${info.network}:${digest}`;
}

function isModelInfo(r: Record<string, unknown>): boolean {
  const head = r["head"] as Record<string, unknown> | null;
  const isInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  return (
    typeof r["network"] === "string" &&
    INPUT_CONVENTIONS.includes(r["input"] as InputConvention) &&
    isInt(r["channels"]) &&
    (r["dim"] === null || isInt(r["dim"])) &&
    (r["relup"] === null || typeof r["relup"] === "boolean") &&
    (head === null ||
      (typeof head === "object" &&
        typeof head["rgem"] === "boolean" &&
        typeof head["gemp"] === "boolean")) &&
    typeof r["weights"] === "string" &&
    (r["precision"] === undefined || r["precision"] === "int8") &&
    (r["calibration"] === undefined || typeof r["calibration"] === "string")
  );
}
