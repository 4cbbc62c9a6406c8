/**
 * Reads a tfjs graph model as nsfwjs bundles it: `model.min.js` (the model JSON: modelTopology +
 * weightsManifest) and one `<path>.min.js` per weight shard (the shard's bytes, base64), all JS
 * modules read with `readModuleExports`. `decodeWeights` turns the shard bytes into named float32
 * tensors, dequantising as tfjs does (`io.decodeWeights`): for `quantization: {dtype: "uint8" |
 * "uint16", min, scale}`, value = q·scale + min (computed in double, stored as float32).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { badFile, fileError, SuperglobalError } from "../../errors.ts";
import { readModuleExports } from "./js-module-literal.ts";

/** One attribute of a node, as tfjs's converter writes TF's AttrValue to JSON. */
export interface TfjsAttr {
  s?: string; // base64 bytes
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  list?: { s?: string[]; i?: (string | number)[]; f?: number[] };
  shape?: { dim?: { size: string | number }[]; unknownRank?: boolean };
  tensor?: unknown;
}

export interface TfjsNode {
  name: string;
  op: string;
  input: string[];
  attr: Record<string, TfjsAttr>;
}

export interface TfjsWeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; min?: number; scale?: number; original_dtype?: string };
}

export interface TfjsGraphModel {
  /** The model file read (for error messages). */
  file: string;
  /** The model JSON as read (what tfjs's `loadGraphModel` takes as modelTopology etc.). */
  json: Record<string, unknown>;
  /** modelTopology.node, checked. */
  nodes: TfjsNode[];
  /** All weight specs of the manifest, in byte order. */
  weightSpecs: TfjsWeightSpec[];
  /** All shards' bytes concatenated, in manifest order (tfjs's `weightData`). */
  weightData: Uint8Array;
}

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/**
 * Reads `<dir>/<modelFile>` and the shards its manifest names (`<dir>/<path>.min.js`). Throws
 * NOT_FOUND for a missing file, BAD_FILE for a malformed one, each naming the file.
 */
export function readTfjsGraphModel(dir: string, modelFile = "model.min.js"): TfjsGraphModel {
  const file = join(dir, modelFile);
  const json = readModuleExports(readText(file), file);
  if (!isObject(json) || !isObject(json["modelTopology"])) {
    throw badFile(file, "no modelTopology in the model JSON");
  }
  const nodes = checkNodes(json["modelTopology"]["node"], file);
  const manifest = json["weightsManifest"];
  if (!Array.isArray(manifest)) throw badFile(file, "no weightsManifest in the model JSON");
  const weightSpecs: TfjsWeightSpec[] = [];
  const shards: { name: string; bytes: Uint8Array }[] = [];
  for (const group of manifest) {
    if (!isObject(group) || !Array.isArray(group["paths"]) || !Array.isArray(group["weights"])) {
      throw badFile(file, "a weightsManifest entry lacks paths or weights");
    }
    for (const spec of group["weights"]) weightSpecs.push(checkSpec(spec, file));
    for (const path of group["paths"]) {
      if (typeof path !== "string" || path.includes("/") || path.includes("\\")) {
        throw badFile(file, `bad shard path ${JSON.stringify(path)}`);
      }
      const name = `${path}.min.js`;
      shards.push({ name, bytes: readShard(join(dir, name)) });
    }
  }
  const weightData = concat(shards.map((s) => s.bytes));
  const expected = weightSpecs.reduce((sum, s) => sum + byteLength(s, file), 0);
  if (expected !== weightData.length) {
    const sizes = shards.map((s) => `${s.name} ${s.bytes.length}`).join(", ");
    throw badFile(
      file,
      `its weight shards hold ${weightData.length} bytes (${sizes}), its manifest needs ${expected}: a shard is truncated or from another model`,
    );
  }
  return { file, json, nodes, weightSpecs, weightData };
}

/** The model's weights by name, dequantised to float32. */
export function decodeWeights(model: TfjsGraphModel): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const bytes = model.weightData;
  let offset = 0;
  for (const spec of model.weightSpecs) {
    const size = elementCount(spec.shape);
    const data = new Float32Array(size);
    const q = spec.quantization;
    if (q === undefined) {
      // float32, little-endian; copied because the offset need not be 4-byte aligned.
      data.set(new Float32Array(bytes.slice(offset, offset + 4 * size).buffer));
    } else {
      const min = q.min ?? 0;
      const scale = q.scale ?? 1;
      const view = new DataView(
        bytes.buffer,
        bytes.byteOffset + offset,
        size * (q.dtype === "uint8" ? 1 : 2),
      );
      if (q.dtype === "uint8") {
        for (let i = 0; i < size; i++) data[i] = view.getUint8(i) * scale + min;
      } else {
        for (let i = 0; i < size; i++) data[i] = view.getUint16(2 * i, true) * scale + min;
      }
    }
    offset += byteLength(spec, model.file);
    out.set(spec.name, { shape: spec.shape, data });
  }
  return out;
}

function byteLength(spec: TfjsWeightSpec, file: string): number {
  const size = elementCount(spec.shape);
  const q = spec.quantization;
  if (q === undefined) return 4 * size;
  if (q.dtype === "uint8") return size;
  if (q.dtype === "uint16") return 2 * size;
  throw new SuperglobalError(
    "UNSUPPORTED",
    `${file}: weight ${spec.name} is quantised as ${q.dtype}; only uint8 and uint16 are read`,
    { input: file },
  );
}

function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkSpec(spec: unknown, file: string): TfjsWeightSpec {
  if (
    !isObject(spec) ||
    typeof spec["name"] !== "string" ||
    !Array.isArray(spec["shape"]) ||
    !spec["shape"].every((d) => Number.isInteger(d) && d >= 0) ||
    typeof spec["dtype"] !== "string"
  ) {
    throw badFile(file, `malformed weight spec ${JSON.stringify(spec)?.slice(0, 200)}`);
  }
  const name = spec["name"];
  if (spec["dtype"] !== "float32") {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${file}: weight ${name} has dtype ${spec["dtype"]}; only float32 weights are read`,
      { input: file },
    );
  }
  const q = spec["quantization"];
  if (q !== undefined) {
    if (
      !isObject(q) ||
      typeof q["dtype"] !== "string" ||
      (q["min"] !== undefined && typeof q["min"] !== "number") ||
      (q["scale"] !== undefined && typeof q["scale"] !== "number") ||
      (q["original_dtype"] !== undefined && q["original_dtype"] !== "float32")
    ) {
      throw badFile(file, `weight ${name} has a malformed quantization ${JSON.stringify(q)}`);
    }
  }
  return spec as unknown as TfjsWeightSpec;
}

function checkNodes(nodes: unknown, file: string): TfjsNode[] {
  if (!Array.isArray(nodes)) throw badFile(file, "modelTopology.node is not a list");
  const names = new Set<string>();
  for (const node of nodes) {
    if (
      !isObject(node) ||
      typeof node["name"] !== "string" ||
      typeof node["op"] !== "string" ||
      (node["input"] !== undefined &&
        !(Array.isArray(node["input"]) && node["input"].every((i) => typeof i === "string"))) ||
      (node["attr"] !== undefined && !isObject(node["attr"]))
    ) {
      throw badFile(file, `malformed graph node ${JSON.stringify(node)?.slice(0, 200)}`);
    }
    if (names.has(node["name"])) throw badFile(file, `two graph nodes are named ${node["name"]}`);
    names.add(node["name"]);
  }
  return nodes.map((n) => ({ name: n.name, op: n.op, input: n.input ?? [], attr: n.attr ?? {} }));
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (cause) {
    throw fileError(file, "cannot read", cause);
  }
}

function readShard(file: string): Uint8Array {
  const base64 = readModuleExports(readText(file), file);
  if (
    typeof base64 !== "string" ||
    !/^[A-Za-z0-9+/]*={0,2}$/.test(base64) ||
    base64.length % 4 !== 0
  ) {
    throw badFile(file, "the weight shard is not one base64 string");
  }
  return Buffer.from(base64, "base64");
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
