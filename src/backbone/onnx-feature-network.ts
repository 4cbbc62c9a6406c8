/**
 * A foreign ONNX model as a feature network: any model whose chosen tensor is a feature map
 * [1, C, h, w] (a classifier's last convolutional map, a backbone's output) is cut there, its
 * input becomes our `image` [1, 3, height, width], and the SuperGlobal head can be appended like
 * on our own networks. Quantised models work: a uint8/int8 tensor named as the feature map gets a
 * DequantizeLinear with the scale and zero point its QLinear nodes use.
 *
 * Opset: the model keeps its own operator sets, so its nodes mean what they meant. The head is
 * valid from opset 12 (Clip and Pad take their bounds as inputs from 11, Max takes int64 from 12)
 * through 17 with Reduce* `axes` as attributes, and `OnnxGraph.node` writes `axes` as an input
 * from opset 18 on. A model below opset 12 is raised to 12 (onnxruntime then says whether its
 * nodes still load).
 */
import { basename } from "node:path";
import { SuperglobalError } from "../errors.ts";
import { OnnxGraph } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";
import { IMAGE_INPUT, type InputConvention, type NetworkGraph } from "./network.ts";

export interface FeatureSpec {
  /**
   * The feature-map tensor. Default: the model's first output if it is 4-D, else the input of
   * its one global average pooling (a classifier's last feature map).
   */
  output?: string;
  /** How images become the model's input. */
  input: InputConvention;
}

/** The lowest opset the descriptor head is written for. */
const MIN_OPSET = 12;
/** The probe image: the size ImageNet models are made for. */
const PROBE_SIZE = 224;

/**
 * Where the scale and zero point of a QLinear node's output are among its inputs
 * (ONNX and com.microsoft contrib ops).
 */
const OUTPUT_QPARAMS: Readonly<Record<string, readonly [number, number]>> = {
  QuantizeLinear: [1, 2],
  QLinearConv: [6, 7],
  QLinearMatMul: [6, 7],
  QLinearAdd: [6, 7],
  QLinearMul: [6, 7],
  QLinearGlobalAveragePool: [3, 4],
  QLinearAveragePool: [3, 4],
  QLinearLeakyRelu: [3, 4],
  QLinearSigmoid: [3, 4],
  QLinearConcat: [0, 1],
};

/** Ops that read a quantised tensor at input i with its scale at i+1 and zero point at i+2. */
const QUANTISED_READERS = new Set([
  "DequantizeLinear",
  "QLinearConv",
  "QLinearMatMul",
  "QLinearAdd",
  "QLinearMul",
  "QLinearGlobalAveragePool",
  "QLinearAveragePool",
  "QLinearLeakyRelu",
  "QLinearSigmoid",
]);

/**
 * The feature network of an ONNX model's bytes, and the name of the tensor it was cut at.
 * `source` names the file in errors; `network` is the name recorded for it; `weights(tensor)` the
 * weight hash recorded (the caller's: it covers the file's bytes and the tensor). BAD_FILE for bytes that are not an ONNX model or that
 * onnxruntime cannot run, INVALID_ARGUMENT for a feature tensor that is missing or not 4-D,
 * UNSUPPORTED for a model without exactly one float image input.
 */
export async function onnxFeatureNetwork(
  bytes: Uint8Array,
  spec: FeatureSpec,
  names: { source: string; network: string; weights: (tensor: string) => string },
): Promise<NetworkGraph & { tensor: string }> {
  const { source } = names;
  let graph: OnnxGraph;
  try {
    graph = OnnxGraph.fromModel(bytes, basename(source));
  } catch (cause) {
    throw new SuperglobalError("BAD_FILE", `${source}: not an ONNX model`, {
      input: source,
      cause,
    });
  }
  const inputs = graph.inputNames();
  if (inputs.length !== 1) {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${source}: the model has ${inputs.length} inputs (${inputs.join(", ")}); a feature network takes one image tensor`,
      { input: source },
    );
  }
  const input = inputs[0] as string;
  const type = graph.inputType(input);
  if (type !== undefined && type !== "float") {
    throw new SuperglobalError(
      "UNSUPPORTED",
      `${source}: the input ${input} is ${type}; a feature network takes a float image tensor`,
      { input: source },
    );
  }
  const candidates = spec.output === undefined ? defaultCandidates(graph) : [spec.output];
  for (const name of candidates) {
    if (!graph.has(name)) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${source}: no tensor ${JSON.stringify(name)} in the model (its outputs: ${graph.outputNames().join(", ")})`,
        { input: "feature.output" },
      );
    }
  }
  if (candidates.length === 0) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${source}: the model has no output; name the feature map with feature.output`,
      { input: "feature.output" },
    );
  }
  // The float tensor of each candidate (a DequantizeLinear added where it is quantised).
  let floats = candidates.map((name) => dequantized(graph, name));
  if (graph.opset < MIN_OPSET) graph.setOpset(MIN_OPSET);
  graph.replaceInput(input, IMAGE_INPUT, [1, 3, "height", "width"]);
  graph.clearOutputs();
  for (const f of floats) graph.output(f, null);
  graph.prune();

  let dims: (readonly number[])[];
  try {
    dims = await probe(graph, floats, source);
  } catch (error) {
    if (candidates.length < 2) throw error;
    // The model's own output may not run (e.g. its classifier); its pooled map alone may.
    candidates.splice(0, candidates.length - 1);
    floats = floats.slice(-1);
    graph.clearOutputs();
    graph.output(floats[0] as string, null);
    graph.prune();
    dims = await probe(graph, floats, source);
  }
  const index = spec.output === undefined ? dims.findIndex((d) => d.length === 4 && d[0] === 1) : 0;
  const chosen = dims[index === -1 ? 0 : index] as readonly number[];
  const name = candidates[index === -1 ? 0 : index] as string;
  if (index === -1 || chosen.length !== 4 || chosen[0] !== 1 || !((chosen[1] as number) > 0)) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${source}: ${name} is [${chosen.join(", ")}] for a ${PROBE_SIZE}×${PROBE_SIZE} image, not a ` +
        "feature map [1, C, h, w]; name the feature tensor with feature.output (e.g. the input of " +
        "the model's global pooling)",
      { input: "feature.output" },
    );
  }
  const output = floats[index] as string;
  const channels = chosen[1] as number;
  graph.clearOutputs();
  graph.output(output, [1, channels, "map_height", "map_width"]);
  graph.prune();
  return {
    graph,
    output,
    channels,
    network: names.network,
    input: spec.input,
    relup: null,
    weights: names.weights(name),
    source: `${source} (${name})`,
    tensor: name,
  };
}

/** The first graph output, then the input of the one global average pooling if there is one. */
function defaultCandidates(graph: OnnxGraph): string[] {
  const out = graph.outputNames().slice(0, 1);
  const pools = graph
    .nodeList()
    .filter((n) => n.opType === "GlobalAveragePool" || n.opType === "QLinearGlobalAveragePool");
  const pooled = pools.length === 1 ? pools[0]?.inputs[0] : undefined;
  if (pooled !== undefined && !out.includes(pooled)) out.push(pooled);
  return out;
}

/** `name` itself if it is float; else the output of a DequantizeLinear added on it. */
function dequantized(graph: OnnxGraph, name: string): string {
  const q = quantParams(graph, name);
  if (q === null) return name;
  return graph.node("DequantizeLinear", [name, q.scale, q.zeroPoint], {}, [
    graph.fresh(`${name}.dequantized`),
  ])[0] as string;
}

/** The scale and zero point of a quantised tensor (from its producer, else a reader); null if float. */
function quantParams(graph: OnnxGraph, name: string): { scale: string; zeroPoint: string } | null {
  const nodes = graph.nodeList();
  const producer = nodes.find((n) => n.outputs.includes(name));
  const at = producer === undefined ? undefined : OUTPUT_QPARAMS[producer.opType];
  if (producer !== undefined && at !== undefined) {
    const scale = producer.inputs[at[0]];
    const zeroPoint = producer.inputs[at[1]];
    if (scale && zeroPoint) return { scale, zeroPoint };
  }
  for (const reader of nodes) {
    if (!QUANTISED_READERS.has(reader.opType)) continue;
    for (const i of [0, 3]) {
      if (reader.inputs[i] !== name) continue;
      const scale = reader.inputs[i + 1];
      const zeroPoint = reader.inputs[i + 2];
      if (scale && zeroPoint) return { scale, zeroPoint };
    }
  }
  return null;
}

/** The dims of each output for one zero image; BAD_FILE when onnxruntime cannot run the cut model. */
async function probe(
  graph: OnnxGraph,
  outputs: string[],
  source: string,
): Promise<(readonly number[])[]> {
  let session: OnnxSession;
  try {
    session = await OnnxSession.create(graph.encode(), { threads: 1 });
  } catch (cause) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${source}: onnxruntime cannot load the model cut at ${outputs.join(", ")} ` +
        `(${firstLine(cause)}); a quantised feature tensor needs its scale and zero point, and ` +
        `models below opset ${MIN_OPSET} may need converting`,
      { input: source, cause },
    );
  }
  try {
    const data = new Float32Array(3 * PROBE_SIZE * PROBE_SIZE);
    const out = await session.run({
      [IMAGE_INPUT]: { data, dims: [1, 3, PROBE_SIZE, PROBE_SIZE] },
    });
    return outputs.map((name) => out[name]?.dims ?? []);
  } catch (cause) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${source}: the model does not run on a ${PROBE_SIZE}×${PROBE_SIZE} image (${firstLine(cause)})`,
      { input: source, cause },
    );
  } finally {
    await session.release();
  }
}

function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0] as string;
}
