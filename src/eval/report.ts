/**
 * How revisitop results are shown: percentages rounded exactly as the official code rounds them
 * (`np.around(map * 100, decimals=2)`), as a small table or as JSON with the unrounded fractions.
 */
import type { Protocol, ProtocolResult } from "./revisitop-map.ts";
import { PROTOCOLS } from "./revisitop-map.ts";

/** Round half to even, like numpy's rint. */
function rint(x: number): number {
  if (!Number.isFinite(x)) return x;
  const floor = Math.floor(x);
  const frac = x - floor;
  if (frac < 0.5) return floor;
  if (frac > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * `np.around(value, decimals)` for decimals ≥ 0, in numpy's three float steps: multiply by 10^d,
 * rint (half to even), divide by 10^d. So 12.5 → 12 at 0 decimals, and 0.125 → 0.12 at 2.
 */
export function npAround(value: number, decimals = 2): number {
  let scale = 1;
  for (let i = 0; i < decimals; i++) scale *= 10;
  return rint(value * scale) / scale;
}

/** A fraction as the paper prints it: np.around(fraction × 100, 2), shown with two decimals. */
export function formatPercent(fraction: number): string {
  if (Number.isNaN(fraction)) return "nan";
  // toFixed on the rounded double prints the decimal it is nearest to, which is the rounded value.
  return npAround(fraction * 100, 2).toFixed(2);
}

const LABEL: Record<Protocol, string> = { easy: "Easy", medium: "Medium", hard: "Hard" };

/**
 * A readable table: one row per setup with mAP and mP@k in percent, then the paper's one-line
 * form `mAP E/M/H: a / b / c`, and a note on queries excluded for having no positives.
 */
export function formatRevisitopTable(results: Record<Protocol, ProtocolResult>): string {
  const kappas = Object.keys(results.easy.mp)
    .map(Number)
    .sort((a, b) => a - b);
  const header = ["", "mAP", ...kappas.map((k) => `mP@${k}`)];
  const rows = PROTOCOLS.map((p) => [
    LABEL[p],
    formatPercent(results[p].map),
    ...kappas.map((k) => formatPercent(results[p].mp[k]!)),
  ]);
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((r) => r[c]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
      .join("  ");
  const out = [line(header), ...rows.map(line)];
  out.push(`mAP E/M/H: ${PROTOCOLS.map((p) => formatPercent(results[p].map)).join(" / ")}`);
  const excluded = PROTOCOLS.map((p) => {
    const count = results[p].perQueryAp.filter(Number.isNaN).length;
    return count > 0 ? `${LABEL[p]} ${count}` : "";
  }).filter((s) => s !== "");
  if (excluded.length > 0) {
    out.push(`queries without positives (excluded, as in revisitop): ${excluded.join(", ")}`);
  }
  return `${out.join("\n")}\n`;
}

export interface RevisitopJsonEntry {
  /** Unrounded fraction in [0, 1]; null when every query was excluded. */
  map: number | null;
  /** Keyed by kappa ("1", "5", "10"). */
  mp: Record<string, number | null>;
}

export type RevisitopJson = Record<Protocol, RevisitopJsonEntry>;

/** `{"easy": {"map": f, "mp": {"1": f, "5": f, "10": f}}, "medium": ..., "hard": ...}`. */
export function revisitopJson(results: Record<Protocol, ProtocolResult>): RevisitopJson {
  const finite = (x: number) => (Number.isNaN(x) ? null : x);
  const out = {} as RevisitopJson;
  for (const p of PROTOCOLS) {
    const mp: Record<string, number | null> = {};
    for (const [k, v] of Object.entries(results[p].mp)) mp[k] = finite(v);
    out[p] = { map: finite(results[p].map), mp };
  }
  return out;
}
