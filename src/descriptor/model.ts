/**
 * The descriptor model at run time: a feature network (CVNet's ResNet from a checkpoint, or the
 * default MobileNetV2) with the SuperGlobal head appended, as one ONNX graph in an onnxruntime
 * session. It maps one image tensor to its feature map and, with the head, to that scale's vector.
 * One saved file holds everything: weights, head and the record of what it is (model-metadata.ts).
 */
import { readFile, writeFile } from "node:fs/promises";
import { cvnetNetwork, readHeadWeights } from "../backbone/cvnet/cvnet-network.ts";
import type { Depth } from "../backbone/cvnet/resnet-graph.ts";
import { IMAGE_INPUT, type NetworkGraph } from "../backbone/network.ts";
import type { StateDict } from "../checkpoint/state-dict.ts";
import { hashWeights } from "../core/hash.ts";
import { assertInteger, fileError, invalidArgument, SuperglobalError } from "../errors.ts";
import {
  appendDescriptorHead,
  type HeadOptions,
  type HeadWeights,
  VECTOR_OUTPUT,
} from "../pooling/head-graph.ts";
import { OnnxSession } from "../runtime/session.ts";
import { type ModelInfo, readModelInfo, writeModelInfo } from "./model-metadata.ts";

export type { Depth } from "../backbone/cvnet/resnet-graph.ts";
export type { HeadOptions } from "../pooling/head-graph.ts";

export interface BackboneOptions {
  /** ResNet depth; detected from the checkpoint when left out (a contradicting one is refused). */
  depth?: Depth;
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
  /** CHW float32, as the network's input convention wants it. */
  data: Float32Array;
  height: number;
  width: number;
}

export interface BackboneOutput {
  /** CHW float32 [channels, height, width]. */
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
}

/** What a CVNet model was built as. */
export interface ModelOptions {
  depth: Depth | null;
  relup: boolean | null;
  /** null: no descriptor head. */
  head: HeadOptions | null;
}

/**
 * ONNX bytes of the CVNet backbone (and head) for this state dict, with the record of what it is.
 * Throws NOT_FOUND naming every missing key, BAD_FILE for a tensor of the wrong shape.
 */
export function buildModel(
  sd: StateDict,
  options: Omit<BackboneOptions, "threads">,
  source = "checkpoint",
): Uint8Array {
  const { relup, head } = checkModelOptions(options);
  // The head's few keys first: a checkpoint without them fails before the slow backbone build.
  const weights = head === null ? null : readHeadWeights(sd, source);
  const network = cvnetNetwork(sd, { depth: options.depth, relup }, source);
  return assembleModel(
    network,
    head === null || weights === null ? null : { options: head, weights },
  );
}

/**
 * Appends the head (when given) to a network's graph and records what the model is. The
 * recorded weight hash covers the network's weights and the head's (FC or whitening).
 */
export function assembleModel(
  network: NetworkGraph,
  head: { options: HeadOptions; weights: HeadWeights } | null,
): Uint8Array {
  const { graph } = network;
  let weights = network.weights;
  if (head !== null) {
    appendDescriptorHead(graph, network.output, network.channels, head.weights, head.options);
    const { fcWeight, fcBias, poolP } = head.weights;
    weights = hashWeights([
      { name: "network", dims: [], data: new Float32Array(0) },
      { name: network.weights, dims: [], data: new Float32Array(0) },
      { name: "fc.weight", dims: [fcBias.length, network.channels], data: fcWeight },
      { name: "fc.bias", dims: [fcBias.length], data: fcBias },
      { name: "pool.p", dims: [1], data: new Float32Array([poolP]) },
    ]);
  }
  writeModelInfo(graph, {
    network: network.network,
    input: network.input,
    channels: network.channels,
    dim: head === null ? null : head.weights.fcBias.length,
    relup: network.relup,
    head: head === null ? null : { ...head.options },
    weights,
  });
  return graph.encode();
}

/** CVNet's depth from a network name such as `cvnet-r101`; null for other networks. */
function depthOf(network: string): Depth | null {
  const m = /^cvnet-r(50|101)$/.exec(network);
  return m === null ? null : (Number(m[1]) as Depth);
}

export class DescriptorModel {
  private released = false;

  private constructor(
    private readonly session: OnnxSession,
    /** The ONNX bytes, kept for save(). */
    private readonly model: Uint8Array,
    /** What the model is (as recorded in its file). */
    readonly info: Readonly<ModelInfo>,
  ) {}

  /** Builds the ONNX model from a CVNet state dict and opens a session on it. */
  static async fromStateDict(
    sd: StateDict,
    options: BackboneOptions,
    source?: string,
  ): Promise<DescriptorModel> {
    const threads = checkThreads(options.threads);
    return DescriptorModel.fromBytes(buildModel(sd, options, source), "model", threads);
  }

  /** Opens a session on model bytes made by `buildModel`/`assembleModel`. */
  static async fromBytes(
    model: Uint8Array,
    name: string,
    threads?: number,
  ): Promise<DescriptorModel> {
    const info = readModelInfo(model, name);
    let session: OnnxSession;
    try {
      session = await OnnxSession.create(model, { threads: checkThreads(threads) });
    } catch (cause) {
      throw new SuperglobalError("BAD_FILE", `${name}: onnxruntime cannot load the model`, {
        input: name,
        cause,
      });
    }
    return new DescriptorModel(session, model, Object.freeze(info));
  }

  /** Loads a model saved with save() (fast start-up: no checkpoint parsing, no graph building). */
  static async load(path: string, options: { threads?: number } = {}): Promise<DescriptorModel> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    const threads = checkThreads(options.threads);
    let model: Uint8Array;
    try {
      model = await readFile(path);
    } catch (cause) {
      throw fileError(path, "cannot read the model", cause);
    }
    return DescriptorModel.fromBytes(model, path, threads);
  }

  /** CVNet's depth; null for other networks. */
  get depth(): Depth | null {
    return depthOf(this.info.network);
  }

  get relup(): boolean | null {
    return this.info.relup;
  }

  get head(): Readonly<HeadOptions> | null {
    return this.info.head;
  }

  /** What the model was built as. */
  get options(): ModelOptions {
    return { depth: this.depth, relup: this.relup, head: this.head && { ...this.head } };
  }

  /**
   * Writes the model to `path`: one `.onnx` file onnxruntime can load directly, with the weights,
   * the head and the record of what it is.
   */
  async save(path: string): Promise<void> {
    if (typeof path !== "string" || path === "") invalidArgument("path", "a file path", path);
    await writeFile(path, this.model);
  }

  /** The feature map (CVNet: conv5, s4) for one image tensor [3,h,w] (CHW float32). */
  async run(input: BackboneInput): Promise<BackboneOutput> {
    const out = await this.session.run(this.feeds(input), [this.featureOutput]);
    return featureMap(out[this.featureOutput], this.featureOutput);
  }

  /**
   * The head's vector (before Scale-GeM) for one image tensor, and with `{ s4: true }` its
   * feature map too (for inspection; it costs a copy).
   */
  async embed(
    input: BackboneInput,
    options: { s4?: boolean } = {},
  ): Promise<{ vector: Float32Array; s4?: BackboneOutput }> {
    if (this.info.head === null) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        "model: built without the descriptor head, so it has no vector (build it with `head`)",
        { input: "model" },
      );
    }
    const withMap = options.s4 === true;
    const out = await this.session.run(
      this.feeds(input),
      withMap ? [VECTOR_OUTPUT, this.featureOutput] : [VECTOR_OUTPUT],
    );
    const vector = out[VECTOR_OUTPUT];
    if (
      vector === undefined ||
      !(vector.data instanceof Float32Array) ||
      vector.data.length !== this.info.dim
    ) {
      throw new Error(`model: unexpected output ${VECTOR_OUTPUT} from onnxruntime`);
    }
    return withMap
      ? { vector: vector.data, s4: featureMap(out[this.featureOutput], this.featureOutput) }
      : { vector: vector.data };
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }

  /** The feature map's output name: the first graph output that is not the vector. */
  private get featureOutput(): string {
    const name = this.session.outputNames.find((n) => n !== VECTOR_OUTPUT);
    if (name === undefined) throw new Error("model: no feature map output");
    return name;
  }

  /** Validates an input tensor; the feeds for it. */
  private feeds(input: BackboneInput) {
    if (this.released) {
      throw new SuperglobalError("INVALID_ARGUMENT", "model: run() after release()", {
        input: "model",
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
    return { [IMAGE_INPUT]: { data: input.data, dims: [1, 3, height, width] } };
  }
}

function featureMap(
  out: { data: Float32Array | BigInt64Array; dims: readonly number[] } | undefined,
  name: string,
): BackboneOutput {
  if (out === undefined || !(out.data instanceof Float32Array) || out.dims.length !== 4) {
    throw new Error(`model: unexpected output ${name} from onnxruntime`);
  }
  return {
    data: out.data,
    channels: out.dims[1] as number,
    height: out.dims[2] as number,
    width: out.dims[3] as number,
  };
}

function checkThreads(threads: unknown): number | undefined {
  return threads === undefined ? undefined : assertInteger("options.threads", threads, 1, 1024);
}

function checkModelOptions(options: Omit<BackboneOptions, "threads">): {
  relup: boolean;
  head: HeadOptions | null;
} {
  if (typeof options !== "object" || options === null) {
    invalidArgument("options", "an object", options);
  }
  if (options.depth !== undefined && options.depth !== 50 && options.depth !== 101) {
    invalidArgument("options.depth", "one of 50, 101", options.depth);
  }
  const relup = options.relup ?? true;
  if (typeof relup !== "boolean") invalidArgument("options.relup", "a boolean", relup);
  const head = options.head;
  if (head === undefined) return { relup, head: null };
  if (typeof head !== "object" || head === null) {
    invalidArgument("options.head", "an object { rgem?, gemp? }", head);
  }
  const flag = (name: "rgem" | "gemp"): boolean => {
    const v = head[name] ?? true;
    if (typeof v !== "boolean") invalidArgument(`options.head.${name}`, "a boolean", v);
    return v;
  };
  return { relup, head: { rgem: flag("rgem"), gemp: flag("gemp") } };
}
