/**
 * Folding an inference-mode BatchNorm into the bias-free convolution before it, so the ONNX graph
 * has one Conv (with bias) per conv+BN pair and onnxruntime can fuse the activation into it.
 */

/** BatchNorm eps of the pycls/CVNet backbone (`BN_EPS` in model/resnet.py). */
export const BN_EPS = 1e-5;

export interface BatchNormParams {
  weight: Float32Array;
  bias: Float32Array;
  runningMean: Float32Array;
  runningVar: Float32Array;
}

export interface FoldOptions {
  eps?: number;
  /**
   * A constant the conv's real input exceeds the tensor fed to it by (x_real = x + offset), folded
   * into the bias as offset·Σw. Exact only for a conv without padding (1×1 here).
   */
  inputOffset?: number;
  /** A constant added to every output (folded into the bias). */
  outputShift?: number;
}

/**
 * `bn(conv(x)) = conv'(x) + b'` with `conv' = conv · γ/√(σ²+ε)` per output channel and
 * `b' = β − μ·γ/√(σ²+ε)` (+ the offsets of `options`). Computed in float64 (the official
 * reference runs in float64), stored as float32. `weight` is [out, ...] in C order; its length
 * must be a multiple of the channel count.
 */
export function foldBatchNorm(
  weight: Float32Array,
  bn: BatchNormParams,
  options: FoldOptions = {},
): { weight: Float32Array; bias: Float32Array } {
  const { eps = BN_EPS, inputOffset = 0, outputShift = 0 } = options;
  const channels = bn.weight.length;
  const perChannel = weight.length / channels;
  if (!Number.isInteger(perChannel)) {
    throw new Error(
      `foldBatchNorm: ${weight.length} weights do not split into ${channels} channels`,
    );
  }
  const folded = new Float32Array(weight.length);
  const bias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    const scale = bn.weight[c] / Math.sqrt(bn.runningVar[c] + eps);
    let sum = 0;
    const start = c * perChannel;
    for (let i = start; i < start + perChannel; i++) {
      const w = weight[i] * scale;
      folded[i] = w;
      sum += w;
    }
    bias[c] = bn.bias[c] - bn.runningMean[c] * scale + inputOffset * sum + outputShift;
  }
  return { weight: folded, bias };
}
