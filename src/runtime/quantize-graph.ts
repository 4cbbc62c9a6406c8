/**
 * Static int8 quantisation of our float ONNX graphs, in QDQ form: QuantizeLinear/DequantizeLinear
 * pairs on activations (uint8, asymmetric, ranges calibrated on real photos), per-output-channel
 * int8 weights (symmetric) and int32 biases. onnxruntime's optimizer (level "all") fuses each
 * `DQ → Conv (→ Relu) → Q` into one QLinearConv, `DQ, DQ → Add (→ Relu) → Q` into QLinearAdd and
 * drops the pairs around MaxPool (same scale on both sides), so tensors stay uint8 from conv to
 * conv and run on the VNNI u8s8 kernels. QDQ rather than hand-written QLinearConv: the same graph
 * stays readable as float maths (DQ(Q(x)) is the simulated value), and ORT picks its own kernels.
 *
 * What is quantised: every Conv whose weight is an initializer (depthwise ones optionally), the
 * activation after it (past a single Relu/Clip, which ORT folds into the Q), the residual Adds
 * whose inputs are both quantised, and MaxPool. Everything else (the pooling head, the network's
 * input scaling) stays float.
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
type ModelProto = InstanceType<typeof onnx.ModelProto>;
type NodeProto = InstanceType<typeof onnx.NodeProto>;
type TensorProto = InstanceType<typeof onnx.TensorProto>;

/** A calibrated activation range (real values). */
export interface Range {
  min: number;
  max: number;
}

export interface QuantizeOptions {
  /** Quantise depthwise convolutions (group = input channels) too. */
  depthwise: boolean;
  /** Convolutions left float, by output tensor name. */
  exclude?: readonly string[];
}

/** Bumped when the quantised graph changes for the same ranges (cache keys include it). */
export const QUANTIZER_VERSION = 1;

/** The activation tensors quantisation needs ranges for, in graph order. */
export function quantizationPoints(model: Uint8Array, options: QuantizeOptions): string[] {
  return plan(onnx.ModelProto.decode(model), options).points;
}

interface Plan {
  convs: NodeProto[];
  /** Tensors that get a Q/DQ pair and need a calibrated range. */
  points: string[];
  /** Tensors quantised with another point's parameters (MaxPool output = its input). */
  sameAs: Map<string, string>;
  /** Points whose range starts at 0 whatever calibration saw (before a floored Clip). */
  floored: Set<string>;
}

function plan(model: ModelProto, options: QuantizeOptions): Plan {
  const g = model.graph as NonNullable<ModelProto["graph"]>;
  const nodes = g.node as NodeProto[];
  const inits = new Map((g.initializer as TensorProto[]).map((t) => [t.name ?? "", t]));
  const graphOutputs = new Set((g.output ?? []).map((o) => o.name ?? ""));
  const consumers = new Map<string, NodeProto[]>();
  for (const n of nodes) {
    for (const i of n.input) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  const floored = new Set<string>();
  // The tensor a producer's output is quantised at: past one lone Relu/Clip that ORT folds into
  // the Q. A Clip with a positive floor (CVNet's ReLU+ inside blocks) cannot fold: the producer's
  // output is then quantised on [0, max] (negatives saturate to 0, which the Clip lifts to its
  // floor anyway, so nothing is lost) and the Clip runs between a DQ and a Q.
  const after = (t: string): string => {
    const c = consumers.get(t) ?? [];
    const only = c[0];
    if (c.length === 1 && only !== undefined && !graphOutputs.has(t)) {
      if (only.opType === "Relu") return after(only.output[0] as string);
      if (only.opType === "Clip") {
        const floor = scalarValue(inits.get(only.input[1] ?? ""));
        if (floor !== undefined && floor <= 0) return after(only.output[0] as string);
        floored.add(t);
      }
    }
    return t;
  };
  const points = new Set<string>();
  const convs: NodeProto[] = [];
  for (const n of nodes) {
    if (n.opType !== "Conv" || (n.domain ?? "") !== "") continue;
    const w = inits.get(n.input[1] ?? "");
    if (w === undefined || w.dataType !== onnx.TensorProto.DataType.FLOAT) continue;
    const group = Number(n.attribute.find((a) => a.name === "group")?.i ?? 1);
    if (group > 1 && !options.depthwise) continue;
    if (options.exclude?.includes(n.output[0] as string)) continue;
    if (n.input[2] !== undefined && n.input[2] !== "" && !inits.has(n.input[2])) continue;
    convs.push(n);
    points.add(n.input[0] as string);
    points.add(after(n.output[0] as string));
  }
  const sameAs = new Map<string, string>();
  // Residual Adds between quantised tensors, and MaxPool, in one pass (graph order).
  for (const n of nodes) {
    const [a, b] = n.input;
    if (n.opType === "Add" && a && b && points.has(a) && points.has(b)) {
      points.add(after(n.output[0] as string));
    } else if (n.opType === "MaxPool" && a && points.has(a) && n.output.length === 1) {
      const out = n.output[0] as string;
      if (points.has(out)) sameAs.set(out, a);
    }
  }
  for (const t of sameAs.keys()) points.delete(t);
  const order = new Map<string, number>();
  (g.input ?? []).forEach((i, k) => {
    order.set(i.name ?? "", -1 - k);
  });
  nodes.forEach((n, k) => {
    for (const o of n.output) order.set(o, k);
  });
  const sorted = [...points].sort((x, y) => (order.get(x) ?? 0) - (order.get(y) ?? 0));
  return { convs, points: sorted, sameAs, floored };
}

/** uint8 scale and zero point covering `range` (widened to hold 0, so zero padding is exact). */
export function activationParams(range: Range): { scale: number; zeroPoint: number } {
  const lo = Math.min(0, range.min);
  let hi = Math.max(0, range.max);
  if (!(hi - lo > 1e-12)) hi = lo + 1e-6;
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/**
 * The quantised model: `ranges` must hold every tensor `quantizationPoints` names (an Error
 * names a missing one). The model's inputs and outputs are kept, and its metadata, with the
 * entries of `options.metadata` set.
 */
export function quantizeModel(
  bytes: Uint8Array,
  ranges: Readonly<Record<string, Range>>,
  options: QuantizeOptions & { metadata?: Readonly<Record<string, string>> },
): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  for (const [key, value] of Object.entries(options.metadata ?? {})) {
    const found = model.metadataProps.find((p) => p.key === key);
    if (found === undefined)
      model.metadataProps.push(onnx.StringStringEntryProto.create({ key, value }));
    else found.value = value;
  }
  const g = model.graph as NonNullable<ModelProto["graph"]>;
  const { convs, points, sameAs, floored } = plan(model, options);
  const params = new Map<string, { scale: string; zeroPoint: string; value: number }>();
  const added: TensorProto[] = [];
  const T = onnx.TensorProto.DataType;
  const init = (name: string, dataType: number, dims: number[], raw: ArrayBufferView) =>
    added.push(
      onnx.TensorProto.create({
        name,
        dims,
        dataType,
        rawData: new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength),
      }),
    );
  for (const t of points) {
    const range = ranges[t];
    if (range === undefined || !Number.isFinite(range.min) || !Number.isFinite(range.max)) {
      throw new Error(`quantize: no calibrated range for tensor ${t}`);
    }
    const { scale, zeroPoint } = activationParams(
      floored.has(t) ? { min: 0, max: range.max } : range,
    );
    init(`${t}.q_scale`, T.FLOAT, [], Float32Array.of(scale));
    init(`${t}.q_zero`, T.UINT8, [], Uint8Array.of(zeroPoint));
    params.set(t, { scale: `${t}.q_scale`, zeroPoint: `${t}.q_zero`, value: scale });
  }
  for (const [t, source] of sameAs) params.set(t, params.get(source) as never);

  const inits = new Map((g.initializer as TensorProto[]).map((t) => [t.name ?? "", t]));
  const dropped = new Set<string>();
  const before = new Map<NodeProto, NodeProto[]>();
  for (const conv of convs) {
    const [x, wName, bName] = conv.input as [string, string, string | undefined];
    const w = inits.get(wName) as TensorProto;
    const wData = floatData(w);
    const channels = Number(w.dims[0]);
    const per = wData.length / channels;
    const wq = new Int8Array(wData.length);
    const wScale = new Float32Array(channels);
    for (let c = 0; c < channels; c++) {
      let m = 0;
      for (let i = c * per; i < (c + 1) * per; i++) m = Math.max(m, Math.abs(wData[i] as number));
      const s = Math.fround(m > 0 ? m / 127 : 1);
      wScale[c] = s;
      for (let i = c * per; i < (c + 1) * per; i++) {
        wq[i] = Math.max(-127, Math.min(127, Math.round((wData[i] as number) / s)));
      }
    }
    const pre: NodeProto[] = [];
    const wq8 = `${wName}.int8`;
    init(wq8, T.INT8, w.dims.map(Number), wq);
    init(`${wName}.w_scale`, T.FLOAT, [channels], wScale);
    init(`${wName}.w_zero`, T.INT8, [channels], new Int8Array(channels));
    pre.push(dq(`${wName}.dq`, wq8, `${wName}.w_scale`, `${wName}.w_zero`, 0));
    dropped.add(wName);
    conv.input[1] = `${wName}.dq`;
    if (bName !== undefined && bName !== "") {
      const b = floatData(inits.get(bName) as TensorProto);
      const xScale = (params.get(x) as { value: number }).value;
      const bScale = new Float32Array(channels);
      const bq = new Int32Array(channels);
      for (let c = 0; c < channels; c++) {
        bScale[c] = Math.fround(xScale * (wScale[c] as number));
        const v = Math.round((b[c] as number) / (bScale[c] as number));
        bq[c] = Math.max(-2147483647, Math.min(2147483647, v));
      }
      init(`${bName}.int32`, T.INT32, [channels], bq);
      init(`${bName}.b_scale`, T.FLOAT, [channels], bScale);
      init(`${bName}.b_zero`, T.INT32, [channels], new Int32Array(channels));
      pre.push(dq(`${bName}.dq`, `${bName}.int32`, `${bName}.b_scale`, `${bName}.b_zero`, 0));
      dropped.add(bName);
      conv.input[2] = `${bName}.dq`;
    }
    before.set(conv, pre);
  }

  // Q/DQ pairs: a produced tensor is renamed `<t>.float` at its producer, so the DQ output keeps
  // the name t for every reader (graph outputs included); a graph input's readers are rewired.
  const produced = new Map<string, NodeProto>();
  for (const n of g.node as NodeProto[]) for (const o of n.output) produced.set(o, n);
  const afterNode = new Map<NodeProto, NodeProto[]>();
  const head: NodeProto[] = [];
  for (const t of [...points, ...sameAs.keys()]) {
    const p = params.get(t) as { scale: string; zeroPoint: string };
    const producer = produced.get(t);
    if (producer !== undefined) {
      const k = producer.output.indexOf(t);
      producer.output[k] = `${t}.float`;
      afterNode.set(producer, [
        ...(afterNode.get(producer) ?? []),
        q(`${t}.q`, `${t}.float`, p.scale, p.zeroPoint),
        dq(t, `${t}.q`, p.scale, p.zeroPoint),
      ]);
    } else {
      for (const n of g.node as NodeProto[]) {
        n.input.forEach((i, k) => {
          if (i === t) n.input[k] = `${t}.dq`;
        });
      }
      head.push(
        q(`${t}.q`, t, p.scale, p.zeroPoint),
        dq(`${t}.dq`, `${t}.q`, p.scale, p.zeroPoint),
      );
    }
  }
  const out: NodeProto[] = [...head];
  for (const n of g.node as NodeProto[]) {
    out.push(...(before.get(n) ?? []), n, ...(afterNode.get(n) ?? []));
  }
  g.node = out;
  // A weight read by an unquantised node too stays.
  const stillRead = new Set(out.flatMap((n) => n.input));
  g.initializer = [
    ...(g.initializer as TensorProto[]).filter(
      (t) => !dropped.has(t.name ?? "") || stillRead.has(t.name ?? ""),
    ),
    ...added,
  ];
  return onnx.ModelProto.encode(model).finish();
}

let nodeCounter = 0;

function q(output: string, x: string, scale: string, zeroPoint: string): NodeProto {
  return onnx.NodeProto.create({
    opType: "QuantizeLinear",
    input: [x, scale, zeroPoint],
    output: [output],
    name: `QuantizeLinear_q${++nodeCounter}`,
  });
}

function dq(output: string, x: string, scale: string, zeroPoint: string, axis?: number) {
  return onnx.NodeProto.create({
    opType: "DequantizeLinear",
    input: [x, scale, zeroPoint],
    output: [output],
    name: `DequantizeLinear_q${++nodeCounter}`,
    attribute:
      axis === undefined
        ? []
        : [
            onnx.AttributeProto.create({
              name: "axis",
              type: onnx.AttributeProto.AttributeType.INT,
              i: axis,
            }),
          ],
  });
}

/** The value of a one-element float initializer; undefined otherwise. */
function scalarValue(t: TensorProto | undefined): number | undefined {
  if (t === undefined || t.dataType !== onnx.TensorProto.DataType.FLOAT) return undefined;
  const data = floatData(t);
  return data.length === 1 ? data[0] : undefined;
}

/** A float initializer's values (raw little-endian bytes or the float_data field). */
function floatData(t: TensorProto): Float32Array {
  const raw = t.rawData;
  if (raw !== undefined && raw !== null && raw.length > 0) {
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  }
  return Float32Array.from(t.floatData ?? []);
}
