/**
 * Gram matrices A = G·Gᵀ of a reranking head (m descriptors of dimension d): the dominant cost of
 * MDescAug. Two ways: an onnxruntime MatMul (float32, fast) and a blocked TypeScript product in
 * float64 that computes each symmetric pair once (slow, exact to float64 rounding).
 */
import { dotRows } from "../core/dot.ts";
import { assertInteger, assertOneOf } from "../errors.ts";
import { OnnxGraph } from "../runtime/onnx-graph.ts";
import { OnnxSession } from "../runtime/session.ts";

export class OnnxGram {
  private constructor(private readonly session: OnnxSession) {}

  static async create(options: { threads?: number } = {}): Promise<OnnxGram> {
    const g = new OnnxGraph("gram");
    const x = g.input("g", ["m", "d"]);
    g.node("Gemm", [x, x], { transB: 1 }, ["gram"]);
    g.output("gram", ["m", "m"]);
    // One short product per query, between other work: no spinning threads left behind.
    return new OnnxGram(await OnnxSession.create(g.encode(), { ...options, spin: false }));
  }

  /** A = G·Gᵀ in float32 ([m, m], row-major); `g` holds m rows of d values. */
  async compute(g: Float32Array, m: number, d: number): Promise<Float32Array> {
    const out = await this.session.run({ g: { data: g.subarray(0, m * d), dims: [m, d] } });
    return out["gram"]!.data as Float32Array;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Rows per block: a block's rows stay in cache while every later row is visited once. */
const BLOCK = 16;

/** A = G·Gᵀ in float64 ([m, m], row-major), each pair b ≤ c computed once and mirrored. */
export function gramFloat64(g: Float32Array | Float64Array, m: number, d: number): Float64Array {
  const a = new Float64Array(m * m);
  for (let b0 = 0; b0 < m; b0 += BLOCK) {
    const b1 = Math.min(m, b0 + BLOCK);
    for (let c = b0; c < m; c++) {
      for (let b = b0; b < Math.min(b1, c + 1); b++) {
        const s = dotRows(g, b * d, c * d, d);
        a[b * m + c] = s;
        a[c * m + b] = s;
      }
    }
  }
  return a;
}

/**
 * The Gram engine a reranker's options ask for: onnxruntime (float32, the default; `threads`
 * checked here) or undefined for the plain float64 product.
 */
export async function gramFromOptions(options: {
  gram?: "onnx" | "float64";
  threads?: number;
}): Promise<OnnxGram | undefined> {
  const mode = assertOneOf("gram", options.gram ?? "onnx", ["onnx", "float64"] as const);
  const threads =
    options.threads === undefined ? undefined : assertInteger("threads", options.threads, 1);
  return mode === "onnx" ? OnnxGram.create(threads === undefined ? {} : { threads }) : undefined;
}
