/**
 * The one seam around onnxruntime-node: every model we run (backbone, search and Gram kernels)
 * goes through here, so thread settings and tensor plumbing live in one place.
 */
import ort from "onnxruntime-node";

export interface SessionOptions {
  /** Threads for one operator; defaults to all cores ORT sees. */
  threads?: number;
  /**
   * Let idle pool threads spin-wait for the next operator (onnxruntime's default, true): right
   * for long runs of operators (a backbone); for short calls between other work (reranking's
   * Gram matrix in a server) the spinning takes a core from whatever runs next.
   */
  spin?: boolean;
}

export type Feeds = Record<string, { data: Float32Array; dims: readonly number[] }>;

export class OnnxSession {
  private constructor(private readonly session: ort.InferenceSession) {}

  /** Loads a model from ONNX bytes or a `.onnx` file path. */
  static async create(
    model: Uint8Array | string,
    options: SessionOptions = {},
  ): Promise<OnnxSession> {
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      executionMode: "sequential",
      interOpNumThreads: 1,
      ...(options.threads === undefined ? {} : { intraOpNumThreads: options.threads }),
      ...(options.spin === false
        ? { extra: { session: { intra_op: { allow_spinning: "0" } } } }
        : {}),
    };
    const session =
      typeof model === "string"
        ? await ort.InferenceSession.create(model, sessionOptions)
        : await ort.InferenceSession.create(model, sessionOptions);
    return new OnnxSession(session);
  }

  /**
   * Runs the model; returns each output as its data and dims. Float and int64 outputs only.
   * `fetches` names the outputs to return (default: all); onnxruntime still runs every node, but
   * copies out only these.
   */
  async run(
    feeds: Feeds,
    fetches?: readonly string[],
  ): Promise<Record<string, { data: Float32Array | BigInt64Array; dims: readonly number[] }>> {
    const input: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds))
      input[name] = new ort.Tensor("float32", t.data, t.dims);
    const results =
      fetches === undefined
        ? await this.session.run(input)
        : await this.session.run(input, [...fetches]);
    const out: Record<string, { data: Float32Array | BigInt64Array; dims: readonly number[] }> = {};
    for (const [name, t] of Object.entries(results)) {
      out[name] = { data: t.data as Float32Array | BigInt64Array, dims: t.dims };
    }
    return out;
  }

  /** The model's output names, in graph order. */
  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
