/**
 * nsfwjs's MobileNetV2-1.4 tfjs graph, from its input up to `MobilenetV2/Conv_1/Relu6`, as an
 * ONNX graph: RGB image in [0,1], NCHW [1,3,H,W] → feature map `features` [1,1792,⌈H/32⌉,⌈W/32⌉].
 *
 * The tfjs graph is NHWC; we convert every op to NCHW in place (no Transpose nodes): the
 * elementwise ops do not care, and the convolutions get their filters rearranged (Conv2D HWIO →
 * OIHW; depthwise [kh,kw,C,M] → [C·M,1,kh,kw] with group C). Only the op kinds on that path are
 * handled — Placeholder, Const, Mul/Sub/AddV2 (the [0,1] → [-1,1] rescale and the residual adds),
 * _FusedConv2D and FusedDepthwiseConv2dNative with BiasAdd or BiasAdd+Relu6 (batch norm is
 * already folded in) — anything else is refused as UNSUPPORTED.
 *
 * TF 'SAME' padding: out = ⌈in/stride⌉, total pad = max((out−1)·stride + (k−1)·d + 1 − in, 0),
 * the odd pixel going to the bottom/right. For stride 1 that is (k−1)·d whatever the size, so
 * those convolutions get explicit pads; for stride 2 it depends on the parity of the size, so
 * they get auto_pad SAME_UPPER, which is the same rule.
 */

import { hashWeights } from "../../core/hash.ts";
import { SuperglobalError } from "../../errors.ts";
import { OnnxGraph } from "../../runtime/onnx-graph.ts";
import type { NetworkGraph } from "../network.ts";
import type { Tensor, TfjsAttr, TfjsGraphModel, TfjsNode } from "./tfjs-model.ts";
import { decodeWeights } from "./tfjs-model.ts";

/** The node we cut at (suffix of its full name in the graph). */
export const CUT_NODE = "MobilenetV2/Conv_1/Relu6";
export const FEATURE_CHANNELS = 1792;
export const FEATURE_STRIDE = 32;
export const INPUT_NAME = "image";
export const OUTPUT_NAME = "features";

/** Metadata keys stored in the model (read back with `readMetadata`). */
export const MOBILENET_METADATA = {
  kind: "superglobal.kind",
  source: "superglobal.source",
  cut: "superglobal.cut",
  input: "superglobal.input",
  channels: "superglobal.channels",
  stride: "superglobal.stride",
  converter: "superglobal.converter",
} as const;
export const MOBILENET_KIND = "nsfwjs-mobilenet_v2_mid";
/** The network's name in model records: MobileNetV2 width 1.4, weights from nsfwjs. */
export const NETWORK_NAME = "mobilenetv2-1.4-nsfwjs";
export const INPUT_CONVENTION = "RGB, x/255 in [0,1], float32 NCHW [1,3,H,W]";

export interface ConvertOptions {
  /** Recorded as the source, e.g. "nsfwjs@4.4.0". */
  source: string;
  /** Recorded as the converter version. */
  converter: string;
}

/** The full name of the node whose name ends with `/${suffix}` (or is `suffix`). */
export function findNode(model: TfjsGraphModel, suffix: string): TfjsNode {
  const found = model.nodes.filter((n) => n.name === suffix || n.name.endsWith(`/${suffix}`));
  if (found.length !== 1) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${model.file}: expected one node named …/${suffix}, found ${found.length}`,
      { input: model.file },
    );
  }
  return found[0];
}

/** The network up to CUT_NODE, as a graph the descriptor head can be appended to. */
export function mobilenetNetwork(model: TfjsGraphModel, options: ConvertOptions): NetworkGraph {
  const weights = decodeWeights(model);
  const graph = new OnnxGraph("nsfwjs_mobilenet_v2_mid_features");
  const cut = findNode(model, CUT_NODE);
  const converter = new Converter(model, weights, graph);
  converter.convert(cut);
  if (converter.channels(cut.name) !== FEATURE_CHANNELS) {
    throw new SuperglobalError(
      "BAD_FILE",
      `${model.file}: ${CUT_NODE} has ${converter.channels(cut.name)} channels, expected ${FEATURE_CHANNELS}`,
      { input: model.file },
    );
  }
  graph.output(OUTPUT_NAME, [1, FEATURE_CHANNELS, "feature_height", "feature_width"]);
  return {
    graph,
    output: OUTPUT_NAME,
    channels: FEATURE_CHANNELS,
    network: NETWORK_NAME,
    input: "rgb-unit",
    relup: null,
    weights: hashWeights(
      [...weights.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, t]) => ({ name, dims: t.shape, data: t.data })),
    ),
    source: `${options.source}, ${CUT_NODE}, converter ${options.converter}`,
  };
}

/** ONNX bytes of the bare network up to CUT_NODE, with its provenance in the metadata. */
export function convertMobilenet(model: TfjsGraphModel, options: ConvertOptions): Uint8Array {
  const { graph } = mobilenetNetwork(model, options);
  graph.metadata(MOBILENET_METADATA.kind, MOBILENET_KIND);
  graph.metadata(MOBILENET_METADATA.source, options.source);
  graph.metadata(MOBILENET_METADATA.cut, CUT_NODE);
  graph.metadata(MOBILENET_METADATA.input, INPUT_CONVENTION);
  graph.metadata(MOBILENET_METADATA.channels, String(FEATURE_CHANNELS));
  graph.metadata(MOBILENET_METADATA.stride, String(FEATURE_STRIDE));
  graph.metadata(MOBILENET_METADATA.converter, options.converter);
  return graph.encode();
}

/** A converted node: an ONNX tensor (activation, NCHW) or a tfjs constant not yet emitted. */
type Value =
  | { kind: "tensor"; name: string; channels: number | null }
  | { kind: "const"; tensor: Tensor };

class Converter {
  private readonly byName: Map<string, TfjsNode>;
  private readonly values = new Map<string, Value>();
  private cutName = "";
  private hasInput = false;

  constructor(
    private readonly model: TfjsGraphModel,
    private readonly weights: Map<string, Tensor>,
    private readonly graph: OnnxGraph,
  ) {
    this.byName = new Map(model.nodes.map((n) => [n.name, n]));
  }

  /** Converts `cut` and everything it depends on; `cut`'s output is named OUTPUT_NAME. */
  convert(cut: TfjsNode): void {
    this.cutName = cut.name;
    const order: TfjsNode[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (name: string): void => {
      if (state.get(name) === "done") return;
      if (state.get(name) === "visiting") this.fail(name, "is part of a cycle");
      const node = this.byName.get(name);
      if (node === undefined) this.fail(name, "is an input of the graph but no node");
      state.set(name, "visiting");
      for (const input of dataInputs(node)) visit(this.inputName(node, input));
      state.set(name, "done");
      order.push(node);
    };
    visit(cut.name);
    for (const node of order) this.values.set(node.name, this.node(node));
  }

  channels(name: string): number | null {
    const v = this.values.get(name);
    return v?.kind === "tensor" ? v.channels : null;
  }

  private node(node: TfjsNode): Value {
    switch (node.op) {
      case "Placeholder":
        return this.placeholder(node);
      case "Const":
        return this.constant(node);
      case "Mul":
      case "Sub":
      case "AddV2":
        return this.elementwise(node);
      case "_FusedConv2D":
        return this.conv(node, false);
      case "FusedDepthwiseConv2dNative":
        return this.conv(node, true);
      default:
        throw new SuperglobalError(
          "UNSUPPORTED",
          `${this.model.file}: op ${node.op} (node ${node.name}) is not supported by the converter`,
          { input: this.model.file },
        );
    }
  }

  private placeholder(node: TfjsNode): Value {
    const dims = node.attr["shape"]?.shape?.dim?.map((d) => Number(d.size));
    if (node.attr["dtype"]?.type !== "DT_FLOAT" || dims?.length !== 4 || dims[3] !== 3) {
      this.fail(node.name, "is not a float32 NHWC RGB image input");
    }
    if (this.hasInput) this.fail(node.name, "is a second graph input");
    this.hasInput = true;
    return {
      kind: "tensor",
      name: this.graph.input(INPUT_NAME, [1, 3, "height", "width"]),
      channels: 3,
    };
  }

  private constant(node: TfjsNode): Value {
    const tensor = this.weights.get(node.name);
    if (tensor === undefined)
      this.fail(node.name, "is a constant missing from the weights manifest");
    return { kind: "const", tensor };
  }

  /** Mul/Sub/AddV2: two activations of one shape, or an activation and a scalar or per-channel constant. */
  private elementwise(node: TfjsNode): Value {
    const inputs = dataInputs(node);
    if (inputs.length !== 2) this.fail(node.name, `has ${inputs.length} inputs, expected 2`);
    const values = inputs.map((input) => this.value(node, input));
    const maps = values.flatMap((v) => (v.kind === "tensor" ? [v] : []));
    if (maps.length === 0) this.fail(node.name, "has only constant operands");
    const channels = maps[0].channels;
    if (maps.length === 2 && channels !== maps[1].channels) {
      this.fail(node.name, `combines maps of ${channels} and ${maps[1].channels} channels`);
    }
    const names = values.map((v) => {
      if (v.kind === "tensor") return v.name;
      const { shape, data } = v.tensor;
      if (shape.length === 0) return this.graph.floatInit(this.graph.fresh("scalar"), [], data);
      if (shape.length === 1 && (channels === null || shape[0] === channels)) {
        return this.graph.floatInit(this.graph.fresh("per_channel"), [shape[0], 1, 1], data);
      }
      return this.fail(
        node.name,
        `has a constant operand of shape [${shape}], not a scalar or a vector of ${channels} channels`,
      );
    });
    const op = { Mul: "Mul", Sub: "Sub", AddV2: "Add" }[node.op as "Mul" | "Sub" | "AddV2"];
    return { kind: "tensor", name: this.emit(node, op, names), channels };
  }

  /** _FusedConv2D / FusedDepthwiseConv2dNative with fused BiasAdd[,Relu6], NHWC, SAME or VALID. */
  private conv(node: TfjsNode, depthwise: boolean): Value {
    const fused = (node.attr["fused_ops"]?.list?.s ?? []).map(decodeString);
    const relu6 = fused.length === 2 && fused[1] === "Relu6";
    if (fused[0] !== "BiasAdd" || !(fused.length === 1 || relu6)) {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${this.model.file}: node ${node.name} fuses [${fused}]; only BiasAdd and BiasAdd+Relu6 are supported`,
        { input: this.model.file },
      );
    }
    const inputs = dataInputs(node);
    if (inputs.length !== 3 || Number(node.attr["num_args"]?.i ?? 1) !== 1) {
      this.fail(node.name, "is not a convolution with one fused bias");
    }
    const format = decodeString(node.attr["data_format"]?.s ?? "TkhXQw==");
    if (format !== "NHWC") this.fail(node.name, `has data_format ${format}, expected NHWC`);
    const strides = this.ints(node, "strides", [1, 1, 1, 1]);
    const dilations = this.ints(node, "dilations", [1, 1, 1, 1]);
    if (strides[0] !== 1 || strides[3] !== 1 || dilations[0] !== 1 || dilations[3] !== 1) {
      this.fail(node.name, "strides or dilates over the batch or channel axis");
    }
    const padding = decodeString(node.attr["padding"]?.s ?? "");
    if (padding !== "SAME" && padding !== "VALID") {
      throw new SuperglobalError(
        "UNSUPPORTED",
        `${this.model.file}: node ${node.name} has padding ${padding}; only SAME and VALID are supported`,
        { input: this.model.file },
      );
    }

    const x = this.value(node, inputs[0]);
    const filter = this.value(node, inputs[1]);
    const bias = this.value(node, inputs[2]);
    if (x.kind !== "tensor" || filter.kind !== "const" || bias.kind !== "const") {
      this.fail(node.name, "does not have an activation input and constant filter and bias");
    }
    const [kh, kw, cin, m] = filter.tensor.shape;
    if (filter.tensor.shape.length !== 4 || (x.channels !== null && x.channels !== cin)) {
      this.fail(
        node.name,
        `has a filter of shape [${filter.tensor.shape}] for ${x.channels} input channels`,
      );
    }
    const cout = depthwise ? cin * m : m;
    if (bias.tensor.shape.length !== 1 || bias.tensor.shape[0] !== cout) {
      this.fail(
        node.name,
        `has a bias of shape [${bias.tensor.shape}] for ${cout} output channels`,
      );
    }
    const w = depthwise ? depthwiseToOihw(filter.tensor) : hwioToOihw(filter.tensor);
    const wName = this.graph.floatInit(`${shortName(node.name)}/weight`, w.shape, w.data);
    const bName = this.graph.floatInit(`${shortName(node.name)}/bias`, [cout], bias.tensor.data);

    const [sh, sw] = [strides[1], strides[2]];
    const [dh, dw] = [dilations[1], dilations[2]];
    const attrs: Record<string, number | number[] | string> = {
      kernel_shape: [kh, kw],
      strides: [sh, sw],
      dilations: [dh, dw],
      group: depthwise ? cin : 1,
    };
    if (padding === "VALID") {
      attrs["pads"] = [0, 0, 0, 0];
    } else if (sh === 1 && sw === 1) {
      const [ph, pw] = [(kh - 1) * dh, (kw - 1) * dw];
      attrs["pads"] = [
        Math.floor(ph / 2),
        Math.floor(pw / 2),
        ph - Math.floor(ph / 2),
        pw - Math.floor(pw / 2),
      ];
    } else {
      attrs["auto_pad"] = "SAME_UPPER";
    }
    if (!relu6)
      return {
        kind: "tensor",
        name: this.emit(node, "Conv", [x.name, wName, bName], attrs),
        channels: cout,
      };
    const [conv] = this.graph.node("Conv", [x.name, wName, bName], attrs);
    const lo = this.graph.floatInit(this.graph.fresh("relu6_min"), [], new Float32Array([0]));
    const hi = this.graph.floatInit(this.graph.fresh("relu6_max"), [], new Float32Array([6]));
    return { kind: "tensor", name: this.emit(node, "Clip", [conv, lo, hi]), channels: cout };
  }

  /** Adds the ONNX node that produces `node`'s output (named OUTPUT_NAME for the cut node). */
  private emit(
    node: TfjsNode,
    op: string,
    inputs: string[],
    attrs: Record<string, number | number[] | string> = {},
  ): string {
    const out = node.name === this.cutName ? OUTPUT_NAME : this.graph.fresh(shortName(node.name));
    return this.graph.node(op, inputs, attrs, [out])[0];
  }

  private value(node: TfjsNode, input: string): Value {
    const v = this.values.get(this.inputName(node, input));
    if (v === undefined) this.fail(node.name, `uses ${input} before it is computed`);
    return v;
  }

  /** `name` or `name:0`; other outputs of a node are refused. */
  private inputName(node: TfjsNode, input: string): string {
    const m = /^(.*?)(?::(\d+))?$/.exec(input)!;
    if (m[2] !== undefined && m[2] !== "0") this.fail(node.name, `uses output ${m[2]} of ${m[1]}`);
    return m[1];
  }

  private ints(node: TfjsNode, key: string, fallback: number[]): number[] {
    const attr: TfjsAttr | undefined = node.attr[key];
    const list = attr?.list?.i?.map(Number) ?? fallback;
    if (list.length !== 4 || !list.every((v) => Number.isInteger(v) && v >= 1)) {
      this.fail(node.name, `has ${key} [${list}], expected 4 positive integers`);
    }
    return list;
  }

  private fail(name: string, what: string): never {
    throw new SuperglobalError("BAD_FILE", `${this.model.file}: graph node ${name} ${what}`, {
      input: this.model.file,
    });
  }
}

/**
 * A node's data inputs. Control inputs (`^name`: the rescale constants wait for `input`) only
 * order execution; in this side-effect-free graph they do not change any value, so we drop them.
 */
function dataInputs(node: TfjsNode): string[] {
  return node.input.filter((input) => !input.startsWith("^"));
}

/** Conv2D filter [kh,kw,I,O] → ONNX [O,I,kh,kw]. */
function hwioToOihw({ shape: [kh, kw, ci, co], data }: Tensor): Tensor {
  const out = new Float32Array(data.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < ci; i++)
        for (let o = 0; o < co; o++)
          out[((o * ci + i) * kh + y) * kw + x] = data[((y * kw + x) * ci + i) * co + o];
  return { shape: [co, ci, kh, kw], data: out };
}

/** Depthwise filter [kh,kw,C,M] → ONNX [C·M,1,kh,kw] (output channel c·M+m, as in TF). */
function depthwiseToOihw({ shape: [kh, kw, c, m], data }: Tensor): Tensor {
  const out = new Float32Array(data.length);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let i = 0; i < c; i++)
        for (let j = 0; j < m; j++)
          out[((i * m + j) * kh + y) * kw + x] = data[((y * kw + x) * c + i) * m + j];
  return { shape: [c * m, 1, kh, kw], data: out };
}

/** A TF string attribute (base64 in the JSON). */
function decodeString(base64: string): string {
  return Buffer.from(base64, "base64").toString("latin1");
}

/** `…/predict/MobilenetV2/expanded_conv_3/expand/Relu6` → `MobilenetV2/expanded_conv_3/expand/Relu6`. */
function shortName(name: string): string {
  const at = name.indexOf("MobilenetV2/");
  return at >= 0 ? name.slice(at) : name.slice(name.lastIndexOf("/") + 1);
}
