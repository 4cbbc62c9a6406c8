/**
 * The model at run time: the ONNX graph built from a CVNet checkpoint (or loaded from a saved
 * `.onnx`), in an onnxruntime session. It maps one normalised BGR image to its conv5 (s4) map and,
 * when built with the descriptor head, to that scale's FC vector. One saved file holds everything:
 * weights, head and the build options (metadata).
 */
import { readFile, writeFile } from "node:fs/promises";
import type { Depth } from "../backbone/cvnet/resnet-graph.ts";
import {
  BACKBONE_KIND,
  BACKBONE_METADATA,
  buildBackboneGraph,
  checkBackboneOptions,
  DEPTHS,
  INPUT_NAME,
  OUTPUT_NAME,
} from "../backbone/cvnet/resnet-graph.ts";
import type { StateDict } from "../checkpoint/state-dict.ts";
import { assertInteger, invalidArgument, SuperglobalError } from "../errors.ts";
import {
  appendDescriptorHead,
  DESCRIPTOR_DIM,
  type HeadOptions,
  readHeadWeights,
  VECTOR_OUTPUT,
} from "../pooling/head-graph.ts";
import { readMetadata } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";

export type { Depth } from "../backbone/cvnet/resnet-graph.ts";
export type { HeadOptions } from "../pooling/head-graph.ts";

export interface BackboneOptions {
  depth: Depth;
  /** SupG.relup: ReLU+ floors after the s1..s3 blocks. Default true. */
  relup?: boolean;
  /**
   * Append the descriptor head (Regional-GeM, GeM, L2, FC; reads `encoder_q.head.*`), each
   * module on unless set false. Absent: the model ends at s4.
   */
  head?: Partial<HeadOptions>;
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

/** What a model was built as (recorded in a saved model's metadata). */
export interface ModelOptions {
  depth: Depth;
  relup: boolean;
  /** null: no descriptor head. */
  head: HeadOptions | null;
}

/**
 * ONNX bytes of the backbone (and head) for this state dict, with the build options in the
 * metadata. Throws NOT_FOUND naming every missing key, BAD_FILE for a tensor of the wrong shape.
 */
export function buildModel(
  sd: StateDict,
  options: Omit<BackboneOptions, "threads">,
  source = "checkpoint",
): Uint8Array {
  const { depth, relup, head } = checkModelOptions(options);
  // The head's few keys first: a checkpoint without them fails before the slow backbone build.
  const weights = head === null ? null : readHeadWeights(sd, source);
  const { graph } = buildBackboneGraph(sd, { depth, relup }, source);
  graph.metadata(BACKBONE_METADATA.head, String(head !== null));
  if (head !== null && weights !== null) {
    graph.metadata(BACKBONE_METADATA.rgem, String(head.rgem));
    graph.metadata(BACKBONE_METADATA.gemp, String(head.gemp));
    appendDescriptorHead(graph, OUTPUT_NAME, weights, head);
  }
  return graph.encode();
}

export class Backbone {
  private released = false;

  private constructor(
    private readonly session: OnnxSession,
    /** The ONNX bytes, kept for save(). */
    private readonly model: Uint8Array,
    readonly depth: Depth,
    readonly relup: boolean,
    /** How the descriptor head pools; null when the model ends at s4. */
    readonly head: Readonly<HeadOptions> | null,
  ) {}

  /** Builds the ONNX model from a CVNet state dict and opens a session on it. */
  static async fromStateDict(
    sd: StateDict,
    options: BackboneOptions,
    source?: string,
  ): Promise<Backbone> {
    const checked = checkModelOptions(options);
    const threads = checkThreads(options.threads);
    const model = buildModel(sd, options, source);
    const session = await OnnxSession.create(model, { threads });
    return new Backbone(session, model, checked.depth, checked.relup, freeze(checked.head));
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
        `${path}: cannot read the model (${(cause as Error).message})`,
        { input: path, cause },
      );
    }
    const saved = savedOptions(model, path);
    let session: OnnxSession;
    try {
      session = await OnnxSession.create(model, { threads });
    } catch (cause) {
      throw new SuperglobalError("BAD_FILE", `${path}: onnxruntime cannot load the model`, {
        input: path,
        cause,
      });
    }
    return new Backbone(session, model, saved.depth, saved.relup, freeze(saved.head));
  }

  /** What the model was built as. */
  get options(): ModelOptions {
    return { depth: this.depth, relup: this.relup, head: this.head && { ...this.head } };
  }

  /**
   * Writes the model to `path`: one `.onnx` file onnxruntime can load directly, with the weights,
   * the head and the build options.
   */
  async save(path: string): Promise<void> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    await writeFile(path, this.model);
  }

  /** conv5 (s4) map for one normalised BGR image tensor [3,h,w] (CHW float32). */
  async run(input: BackboneInput): Promise<BackboneOutput> {
    const out = await this.session.run(this.feeds(input), [OUTPUT_NAME]);
    return s4Output(out[OUTPUT_NAME]);
  }

  /**
   * The head's FC vector (2048 float32, before Scale-GeM) for one normalised BGR image tensor,
   * and with `{ s4: true }` its conv5 map too (for inspection; it costs a copy).
   */
  async embed(
    input: BackboneInput,
    options: { s4?: boolean } = {},
  ): Promise<{ vector: Float32Array; s4?: BackboneOutput }> {
    if (this.head === null) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        "backbone: built without the descriptor head, so it has no vector (build it with `head`)",
        { input: "backbone" },
      );
    }
    const withMap = options.s4 === true;
    const feeds = this.feeds(input);
    const out = await this.session.run(
      feeds,
      withMap ? [VECTOR_OUTPUT, OUTPUT_NAME] : [VECTOR_OUTPUT],
    );
    const vector = out[VECTOR_OUTPUT];
    if (
      vector === undefined ||
      !(vector.data instanceof Float32Array) ||
      vector.data.length !== DESCRIPTOR_DIM
    ) {
      throw new Error(`backbone: unexpected output ${VECTOR_OUTPUT} from onnxruntime`);
    }
    return withMap
      ? { vector: vector.data, s4: s4Output(out[OUTPUT_NAME]) }
      : { vector: vector.data };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }

  /** Validates an input tensor; the feeds for it. */
  private feeds(input: BackboneInput) {
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
    return { [INPUT_NAME]: { data: input.data, dims: [1, 3, height, width] } };
  }
}

function s4Output(
  out: { data: Float32Array | BigInt64Array; dims: readonly number[] } | undefined,
) {
  if (out === undefined || !(out.data instanceof Float32Array) || out.dims.length !== 4) {
    throw new Error(`backbone: unexpected output ${OUTPUT_NAME} from onnxruntime`);
  }
  return {
    data: out.data,
    channels: 2048 as const,
    height: out.dims[2] as number,
    width: out.dims[3] as number,
  };
}

function freeze(head: HeadOptions | null): Readonly<HeadOptions> | null {
  return head === null ? null : Object.freeze({ ...head });
}

function checkThreads(threads: unknown): number | undefined {
  return threads === undefined ? undefined : assertInteger("options.threads", threads, 1, 1024);
}

function checkModelOptions(options: Omit<BackboneOptions, "threads">): ModelOptions {
  const { depth, relup } = checkBackboneOptions(options);
  const head = options.head;
  if (head === undefined) return { depth, relup, head: null };
  if (typeof head !== "object" || head === null) {
    invalidArgument("options.head", "an object { rgem?, gemp? }", head);
  }
  const flag = (name: "rgem" | "gemp"): boolean => {
    const v = head[name] ?? true;
    if (typeof v !== "boolean") invalidArgument(`options.head.${name}`, "a boolean", v);
    return v;
  };
  return { depth, relup, head: { rgem: flag("rgem"), gemp: flag("gemp") } };
}

/** The build options from a saved model's metadata; BAD_FILE if it is not a model we built. */
function savedOptions(model: Uint8Array, path: string): ModelOptions {
  let meta: Record<string, string>;
  try {
    meta = readMetadata(model);
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${path}: not an ONNX model`, { input: path, cause });
  }
  const bool = (key: string, absent?: boolean): boolean | undefined => {
    const v = meta[key];
    if (v === undefined) return absent;
    return v === "true" ? true : v === "false" ? false : undefined;
  };
  const depth = Number(meta[BACKBONE_METADATA.depth]) as Depth;
  const relup = bool(BACKBONE_METADATA.relup);
  // Models saved before the head existed have no `head` key: they end at s4.
  const hasHead = bool(BACKBONE_METADATA.head, false);
  const rgem = bool(BACKBONE_METADATA.rgem);
  const gemp = bool(BACKBONE_METADATA.gemp);
  if (
    meta[BACKBONE_METADATA.kind] !== BACKBONE_KIND ||
    !DEPTHS.includes(depth) ||
    relup === undefined ||
    hasHead === undefined ||
    (hasHead && (rgem === undefined || gemp === undefined))
  ) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${path}: not a superglobal model (metadata ${JSON.stringify(meta)})`,
      { input: path },
    );
  }
  return {
    depth,
    relup,
    head: hasHead ? { rgem: rgem as boolean, gemp: gemp as boolean } : null,
  };
}
