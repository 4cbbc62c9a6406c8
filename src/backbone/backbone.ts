/**
 * The backbone at run time: the ONNX model built from a checkpoint (or loaded from a saved
 * `.onnx`), in an onnxruntime session, mapping one normalised BGR image to its conv5 (s4) map.
 */
import { readFile, writeFile } from "node:fs/promises";
import type { StateDict } from "../checkpoint/state-dict.ts";
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";
import { readMetadata } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";
import type { Depth } from "./resnet-graph.ts";
import {
  BACKBONE_KIND,
  BACKBONE_METADATA,
  buildBackboneModel,
  checkBackboneOptions,
  DEPTHS,
  INPUT_NAME,
  OUTPUT_NAME,
} from "./resnet-graph.ts";

export type { Depth } from "./resnet-graph.ts";

export interface BackboneOptions {
  depth: Depth;
  /** SupG.relup: ReLU+ floors after the s1..s3 blocks. Default true. */
  relup?: boolean;
  /** onnxruntime intra-op threads; default: all cores. */
  threads?: number;
}

export interface BackboneInput {
  /** CHW float32, normalised BGR (spec §2.3). */
  data: Float32Array;
  height: number;
  width: number;
}

export interface BackboneOutput {
  /** CHW float32 [2048, height, width]. */
  data: Float32Array;
  channels: 2048;
  height: number;
  width: number;
}

export class Backbone {
  private released = false;

  private constructor(
    private readonly session: OnnxSession,
    /** The ONNX bytes, kept for save(). */
    private readonly model: Uint8Array,
    readonly depth: Depth,
    readonly relup: boolean,
  ) {}

  /** Builds the ONNX model from a CVNet state dict and opens a session on it. */
  static async fromStateDict(
    sd: StateDict,
    options: BackboneOptions,
    source?: string,
  ): Promise<Backbone> {
    const { depth, relup } = checkBackboneOptions(options);
    const threads = checkThreads(options.threads);
    const model = buildBackboneModel(sd, { depth, relup }, source);
    const session = await OnnxSession.create(model, { threads });
    return new Backbone(session, model, depth, relup);
  }

  /** Loads a model saved with save() (fast start-up: no checkpoint parsing, no graph building). */
  static async load(path: string, options: { threads?: number } = {}): Promise<Backbone> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    const threads = checkThreads(options.threads);
    let model: Uint8Array;
    try {
      model = await readFile(path);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code;
      throw new SuperglobalError(
        code === "ENOENT" ? "NOT_FOUND" : "BAD_FILE",
        `${path}: cannot read the backbone model (${(cause as Error).message})`,
        { input: path, cause },
      );
    }
    const { depth, relup } = savedOptions(model, path);
    let session: OnnxSession;
    try {
      session = await OnnxSession.create(model, { threads });
    } catch (cause) {
      throw new SuperglobalError("BAD_FILE", `${path}: onnxruntime cannot load the model`, {
        input: path,
        cause,
      });
    }
    return new Backbone(session, model, depth, relup);
  }

  /** Writes the built ONNX model to `path` (a .onnx file onnxruntime can load directly). */
  async save(path: string): Promise<void> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    await writeFile(path, this.model);
  }

  /** conv5 (s4) map for one normalised BGR image tensor [3,h,w] (CHW float32). */
  async run(input: BackboneInput): Promise<BackboneOutput> {
    if (this.released) {
      throw new SuperglobalError("INVALID_ARGUMENT", "backbone: run() after release()", {
        input: "backbone",
      });
    }
    if (typeof input !== "object" || input === null) invalidArgument("input", "an object", input);
    const height = assertInteger("input.height", input.height, 1);
    const width = assertInteger("input.width", input.width, 1);
    if (!(input.data instanceof Float32Array)) {
      invalidArgument("input.data", "a Float32Array", input.data);
    }
    if (input.data.length !== 3 * height * width) {
      invalidArgument(
        "input.data",
        `3 × ${height} × ${width} = ${3 * height * width} values`,
        `${input.data.length} values`,
      );
    }
    const result = await this.session.run({
      [INPUT_NAME]: { data: input.data, dims: [1, 3, height, width] },
    });
    const out = result[OUTPUT_NAME];
    if (out === undefined || !(out.data instanceof Float32Array) || out.dims.length !== 4) {
      throw new Error(`backbone: unexpected output ${OUTPUT_NAME} from onnxruntime`);
    }
    return { data: out.data, channels: 2048, height: out.dims[2], width: out.dims[3] };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

function checkThreads(threads: unknown): number | undefined {
  return threads === undefined ? undefined : assertInteger("options.threads", threads, 1, 1024);
}

/** depth and relup from a saved model's metadata; BAD_FILE if it is not a backbone we built. */
function savedOptions(model: Uint8Array, path: string): { depth: Depth; relup: boolean } {
  let meta: Record<string, string>;
  try {
    meta = readMetadata(model);
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${path}: not an ONNX model`, { input: path, cause });
  }
  const depth = Number(meta[BACKBONE_METADATA.depth]) as Depth;
  const relup = meta[BACKBONE_METADATA.relup];
  if (
    meta[BACKBONE_METADATA.kind] !== BACKBONE_KIND ||
    !DEPTHS.includes(depth) ||
    (relup !== "true" && relup !== "false")
  ) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: not a superglobal backbone model (metadata ${JSON.stringify(meta)})`,
      { input: path },
    );
  }
  return { depth, relup: relup === "true" };
}
