/**
 * IEEE 754 half precision for descriptor storage: float32 → float16 bits (round to nearest, ties
 * to even, as numpy's astype(float16) does) and float16 bits → float32 (exact, by table).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 bit pattern nearest to `x` (±Infinity when |x| > 65504 rounds past the range). */
export function toHalfBits(x: number): number {
  f32[0] = x;
  const f = u32[0]!;
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant === 0 ? 0 : 0x200); // Inf, NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    // A half subnormal (or zero): value / 2^-24, rounded.
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let half = full >>> shift;
    const rest = full & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1) === 1)) half += 1;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) half += 1;
  return sign | half;
}

let table: Float32Array | undefined;

/** float32 values of all 65536 float16 bit patterns. */
function halfTable(): Float32Array {
  if (table !== undefined) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = (h & 0x8000) === 0 ? 1 : -1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) table[h] = s * m * 2 ** -24;
    else if (e === 31) table[h] = m === 0 ? s * Infinity : Number.NaN;
    else table[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return table;
}

/** Writes the float16 bits of `src` into `dst` (same length). Returns false if a value overflowed. */
export function narrowToHalf(src: Float32Array, dst: Uint16Array): boolean {
  let ok = true;
  for (let i = 0; i < src.length; i++) {
    const h = toHalfBits(src[i]!);
    if ((h & 0x7c00) === 0x7c00) ok = false;
    dst[i] = h;
  }
  return ok;
}

/** Widens float16 bits into float32 values: dst[offset + i] = half(src[i]). */
export function widenHalf(src: Uint16Array, dst: Float32Array, offset = 0): void {
  const t = halfTable();
  for (let i = 0; i < src.length; i++) dst[offset + i] = t[src[i]!]!;
}
