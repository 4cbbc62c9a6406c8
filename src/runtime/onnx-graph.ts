/**
 * A small builder for ONNX graphs, so our models (the CVNet backbone, the search and Gram
 * kernels) are generated in TypeScript from weights we read ourselves, not exported by Python.
 * Only what we use is here: float32/int64 initializers, nodes with int/float/ints attributes,
 * inputs and outputs with symbolic dimensions.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** A dimension: a fixed size, or a name for a size known only at run time. */
export type Dim = number | string;

export type AttributeValue = number | number[] | string | { float: number };

/** ONNX opset we target: supported by onnxruntime 1.30, and has Clip/Pad/Resize/TopK in their modern forms. */
export const OPSET = 17;

/**
 * Reductions whose `axes` moved from an attribute to a second input, and the opset where it did.
 * `node()` writes the form the graph's opset wants, so the same builder code serves imported
 * models of any opset.
 */
const AXES_INPUT_SINCE: Readonly<Record<string, number>> = {
  ReduceSum: 13,
  ReduceMax: 18,
  ReduceMin: 18,
  ReduceMean: 18,
  ReduceProd: 18,
  ReduceL1: 18,
  ReduceL2: 18,
  ReduceLogSum: 18,
  ReduceLogSumExp: 18,
  ReduceSumSquare: 18,
};

type NodeProto = InstanceType<typeof onnx.NodeProto>;
type ValueInfoProto = InstanceType<typeof onnx.ValueInfoProto>;

/** What `OnnxGraph.nodeList()` shows of a node. */
export interface NodeView {
  opType: string;
  domain: string;
  inputs: readonly string[];
  outputs: readonly string[];
}

export class OnnxGraph {
  private nodes: NodeProto[] = [];
  private initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  private inputs: ValueInfoProto[] = [];
  private outputs: ValueInfoProto[] = [];
  private readonly metadataProps: { key: string; value: string }[] = [];
  private counter = 0;
  /** Operator sets: ours (default domain at OPSET), or an imported model's. */
  private opsetImports: { domain: string; version: number }[] = [{ domain: "", version: OPSET }];
  private irVersion = 8;
  /** An imported model's sparse initializers and model-local functions, written back unchanged. */
  private imported: {
    sparseInitializer: InstanceType<typeof onnx.GraphProto>["sparseInitializer"];
    functions: InstanceType<typeof onnx.ModelProto>["functions"];
  } = { sparseInitializer: [], functions: [] };
  /** Every tensor name of an imported model, so added names cannot silently collide with them. */
  private readonly taken = new Set<string>();

  constructor(private readonly name: string) {}

  /**
   * A graph holding an existing model (ONNX protobuf bytes): its nodes, initializers, inputs,
   * outputs, operator sets and IR version are kept as they are, and nodes can be added. Names
   * added later must not be tensor names of the model (an Error says which). value_info (optional
   * shape hints) is dropped, so inputs can be given other sizes. Throws when the bytes do not
   * decode as an ONNX model.
   */
  static fromModel(bytes: Uint8Array, name?: string): OnnxGraph {
    const model = onnx.ModelProto.decode(bytes);
    const g = model.graph;
    if (g === null || g === undefined) throw new Error("not an ONNX model: no graph");
    const graph = new OnnxGraph(name ?? g.name ?? "model");
    graph.nodes = [...(g.node ?? [])] as NodeProto[];
    graph.initializers = [...(g.initializer ?? [])] as InstanceType<typeof onnx.TensorProto>[];
    graph.inputs = [...(g.input ?? [])] as ValueInfoProto[];
    graph.outputs = [...(g.output ?? [])] as ValueInfoProto[];
    graph.opsetImports = model.opsetImport.map((o) => ({
      domain: o.domain ?? "",
      version: Number(o.version ?? 1),
    }));
    if (!graph.opsetImports.some((o) => o.domain === "" || o.domain === "ai.onnx")) {
      graph.opsetImports.push({ domain: "", version: 1 });
    }
    graph.irVersion = Math.max(Number(model.irVersion ?? 3), 3);
    graph.imported = {
      sparseInitializer: [...(g.sparseInitializer ?? [])],
      functions: [...(model.functions ?? [])],
    };
    for (const { key, value } of model.metadataProps) {
      graph.metadataProps.push({ key: key ?? "", value: value ?? "" });
    }
    for (const n of graph.nodes) {
      for (const t of [...n.input, ...n.output]) if (t !== "") graph.taken.add(t);
      if (n.name) graph.taken.add(n.name);
    }
    for (const t of [...graph.initializers, ...graph.inputs, ...graph.outputs]) {
      if (t.name) graph.taken.add(t.name);
    }
    return graph;
  }

  /** The default-domain (ai.onnx) opset the graph is written for. */
  get opset(): number {
    return this.opsetImports.find((o) => o.domain === "" || o.domain === "ai.onnx")?.version ?? 1;
  }

  /** Sets the default-domain opset (the nodes already in the graph are not rewritten). */
  setOpset(version: number): void {
    const own = this.opsetImports.find((o) => o.domain === "" || o.domain === "ai.onnx");
    if (own === undefined) this.opsetImports.push({ domain: "", version });
    else own.version = version;
  }

  /** The nodes, in graph order (a read-only view). */
  nodeList(): NodeView[] {
    return this.nodes.map((n) => ({
      opType: n.opType ?? "",
      domain: n.domain ?? "",
      inputs: [...n.input],
      outputs: [...n.output],
    }));
  }

  /** The graph input names that are not initializers (the values a caller feeds). */
  inputNames(): string[] {
    const init = new Set(this.initializers.map((t) => t.name));
    return this.inputs.map((i) => i.name ?? "").filter((n) => !init.has(n));
  }

  /** The declared element type of a graph input ("float", "uint8", …), or undefined. */
  inputType(name: string): string | undefined {
    const elem = this.inputs.find((i) => i.name === name)?.type?.tensorType?.elemType;
    return elem === undefined || elem === null
      ? undefined
      : (onnx.TensorProto.DataType[elem] ?? String(elem)).toLowerCase();
  }

  /** The graph output names, in order. */
  outputNames(): string[] {
    return this.outputs.map((o) => o.name ?? "");
  }

  /** Whether `name` is a tensor of the graph (node output, initializer or input). */
  has(name: string): boolean {
    return (
      this.taken.has(name) ||
      this.nodes.some((n) => n.output.includes(name)) ||
      this.initializers.some((t) => t.name === name) ||
      this.inputs.some((i) => i.name === name)
    );
  }

  /** Removes every graph output (before declaring new ones with `output`). */
  clearOutputs(): void {
    this.outputs = [];
  }

  /**
   * The graph input `name` becomes the input `newName` of these dims and type; when the names
   * differ, an Identity node keeps `name` for the nodes that read it.
   */
  replaceInput(name: string, newName: string, dims: Dim[], elemType: "float" | "int64" = "float") {
    const at = this.inputs.findIndex((i) => i.name === name);
    if (at < 0) throw new Error(`ONNX graph ${this.name}: no input ${name}`);
    if (newName !== name) {
      this.claim(newName);
      this.nodes.unshift(
        onnx.NodeProto.create({
          opType: "Identity",
          input: [newName],
          output: [name],
          name: this.fresh("Identity_node"),
        }),
      );
    }
    this.inputs[at] = valueInfo(newName, dims, elemType);
  }

  /**
   * Drops the nodes, initializers and inputs no declared output depends on (names read inside
   * subgraphs of control-flow nodes count as read).
   */
  prune(): void {
    const needed = new Set(this.outputs.map((o) => o.name ?? ""));
    const kept: NodeProto[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i] as NodeProto;
      if (!node.output.some((o) => needed.has(o))) continue;
      kept.push(node);
      for (const t of readNames(node)) needed.add(t);
    }
    this.nodes = kept.reverse();
    this.initializers = this.initializers.filter((t) => needed.has(t.name ?? ""));
    this.inputs = this.inputs.filter((t) => needed.has(t.name ?? ""));
  }

  /** A fresh tensor name with a readable prefix. */
  fresh(prefix: string): string {
    let name: string;
    do {
      this.counter += 1;
      name = `${prefix}_${this.counter}`;
    } while (this.taken.has(name));
    return name;
  }

  input(name: string, dims: Dim[], elemType: "float" | "int64" = "float"): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, dims, elemType));
    return name;
  }

  /** Declares a graph output; `dims` null leaves its shape (and rank) unstated. */
  output(name: string, dims: Dim[] | null, elemType: "float" | "int64" = "float"): string {
    this.outputs.push(valueInfo(name, dims, elemType));
    return name;
  }

  /** A float32 constant stored in the model (weights). */
  floatInit(name: string, dims: number[], data: Float32Array): string {
    checkLength(name, dims, data.length);
    this.claim(name);
    this.initializers.push(
      onnx.TensorProto.create({
        name,
        dims,
        dataType: onnx.TensorProto.DataType.FLOAT,
        rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      }),
    );
    return name;
  }

  /** An int64 constant (shapes, axes, k of TopK). */
  int64Init(name: string, dims: number[], values: number[]): string {
    checkLength(name, dims, values.length);
    this.claim(name);
    const raw = new BigInt64Array(values.map((v) => BigInt(v)));
    this.initializers.push(
      onnx.TensorProto.create({
        name,
        dims,
        dataType: onnx.TensorProto.DataType.INT64,
        rawData: new Uint8Array(raw.buffer),
      }),
    );
    return name;
  }

  /** Adds a node; returns its output names (one fresh name per output unless given). */
  node(
    opType: string,
    inputs: string[],
    attributes: Record<string, AttributeValue> = {},
    outputs: string[] | number = 1,
  ): string[] {
    const outs =
      typeof outputs === "number"
        ? Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase()))
        : outputs;
    for (const out of outs) this.claim(out);
    let ins = inputs;
    let attrs = attributes;
    const since = AXES_INPUT_SINCE[opType];
    if (since !== undefined && this.opset >= since && Array.isArray(attributes["axes"])) {
      // From that opset on, axes is the second input (an int64 tensor), no longer an attribute.
      const { axes, ...rest } = attributes;
      const values = axes as number[];
      ins = [...inputs, this.int64Init(this.fresh(`${outs[0]}.axes`), [values.length], values)];
      attrs = rest;
    }
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        input: ins,
        output: outs,
        name: this.fresh(`${opType}_node`),
        attribute: Object.entries(attrs).map(([name, value]) => attribute(name, value)),
      }),
    );
    return outs;
  }

  /** An Error if an imported model already uses the name being added. */
  private claim(name: string): void {
    if (this.taken.has(name)) {
      throw new Error(`ONNX graph ${this.name}: the name ${name} is already a tensor of the model`);
    }
  }

  /** A key/value stored in the model's metadata_props (read back with `readMetadata`). */
  metadata(key: string, value: string): void {
    this.metadataProps.push({ key, value });
  }

  /** Serialises the model (ONNX protobuf bytes, loadable by onnxruntime). */
  encode(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: this.irVersion,
      producerName: "superglobal",
      opsetImport: this.opsetImports,
      metadataProps: this.metadataProps,
      functions: this.imported.functions,
      graph: onnx.GraphProto.create({
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        sparseInitializer: this.imported.sparseInitializer,
        input: this.inputs,
        output: this.outputs,
      }),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/**
 * The metadata_props of serialised model bytes, so a saved model can say what it is. Decoding
 * does not copy the weights (protobufjs returns views for bytes fields).
 */
export function readMetadata(model: Uint8Array): Record<string, string> {
  const decoded = onnx.ModelProto.decode(model);
  const out: Record<string, string> = {};
  for (const { key, value } of decoded.metadataProps) out[key ?? ""] = value ?? "";
  return out;
}

function checkLength(name: string, dims: number[], length: number): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== length) {
    throw new Error(`initializer ${name}: dims [${dims}] need ${expected} values, got ${length}`);
  }
}

function valueInfo(name: string, dims: Dim[] | null, elemType: "float" | "int64") {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType:
          elemType === "float" ? onnx.TensorProto.DataType.FLOAT : onnx.TensorProto.DataType.INT64,
        ...(dims === null
          ? {}
          : {
              shape: {
                dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })),
              },
            }),
      },
    },
  });
}

function attribute(name: string, value: AttributeValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === "number") {
    return Number.isInteger(value)
      ? onnx.AttributeProto.create({ name, type: T.INT, i: value })
      : onnx.AttributeProto.create({ name, type: T.FLOAT, f: value });
  }
  if (typeof value === "string") {
    return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(value) });
  }
  if (Array.isArray(value)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: value });
  return onnx.AttributeProto.create({ name, type: T.FLOAT, f: value.float });
}

/** The tensor names a node reads: its inputs and, for control-flow nodes, those of its subgraphs. */
function readNames(node: InstanceType<typeof onnx.NodeProto>): string[] {
  const names = node.input.filter((t) => t !== "");
  for (const a of node.attribute) {
    for (const g of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
      for (const n of g.node ?? [])
        names.push(...readNames(n as InstanceType<typeof onnx.NodeProto>));
    }
  }
  return names;
}
