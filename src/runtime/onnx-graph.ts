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

export class OnnxGraph {
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private readonly initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  private readonly inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly metadataProps: { key: string; value: string }[] = [];
  private counter = 0;

  constructor(private readonly name: string) {}

  /** A fresh tensor name with a readable prefix. */
  fresh(prefix: string): string {
    this.counter += 1;
    return `${prefix}_${this.counter}`;
  }

  input(name: string, dims: Dim[], elemType: "float" | "int64" = "float"): string {
    this.inputs.push(valueInfo(name, dims, elemType));
    return name;
  }

  output(name: string, dims: Dim[], elemType: "float" | "int64" = "float"): string {
    this.outputs.push(valueInfo(name, dims, elemType));
    return name;
  }

  /** A float32 constant stored in the model (weights). */
  floatInit(name: string, dims: number[], data: Float32Array): string {
    checkLength(name, dims, data.length);
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
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        input: inputs,
        output: outs,
        name: this.fresh(`${opType}_node`),
        attribute: Object.entries(attributes).map(([name, value]) => attribute(name, value)),
      }),
    );
    return outs;
  }

  /** A key/value stored in the model's metadata_props (read back with `readMetadata`). */
  metadata(key: string, value: string): void {
    this.metadataProps.push({ key, value });
  }

  /** Serialises the model (ONNX protobuf bytes, loadable by onnxruntime). */
  encode(): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: "superglobal",
      opsetImport: [{ domain: "", version: OPSET }],
      metadataProps: this.metadataProps,
      graph: onnx.GraphProto.create({
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
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

function valueInfo(name: string, dims: Dim[], elemType: "float" | "int64") {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType:
          elemType === "float" ? onnx.TensorProto.DataType.FLOAT : onnx.TensorProto.DataType.INT64,
        shape: {
          dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })),
        },
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
