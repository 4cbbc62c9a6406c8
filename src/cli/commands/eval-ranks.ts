/**
 * `superglobal eval --gnd <gnd file> --ranks <ranks.npy> [--json]`: the revisitop evaluation of a
 * ranking computed elsewhere. The ranks are int32/int64 [nq, N], query-major (row q = database
 * ids for query q, best first).
 */
import { SuperglobalError } from "../../errors.ts";
import { readGroundTruth } from "../../eval/ground-truth.ts";
import { formatRevisitopTable, revisitopJson } from "../../eval/report.ts";
import { evaluateRevisitop, findRankingProblem } from "../../eval/revisitop-map.ts";
import { readMatrixI32 } from "../../io/npy.ts";

export interface EvalRanksOptions {
  /** gnd_<dataset>.pkl or its .json twin. */
  gnd: string;
  /** .npy of int32/int64 [nq, N]. */
  ranks: string;
  /** Print the unrounded fractions as JSON instead of the table. */
  json?: boolean;
}

/** Evaluates the ranking and writes the table (or JSON) to `write` (stdout by default). */
export function runEvalRanks(
  opts: EvalRanksOptions,
  write: (text: string) => void = (text) => process.stdout.write(text),
): void {
  const gt = readGroundTruth(opts.gnd);
  const { rows, cols, data } = readMatrixI32(opts.ranks);
  const problem = findRankingProblem(data, rows, cols, gt);
  if (problem !== undefined) {
    const hint =
      rows !== gt.gnd.length && cols === gt.gnd.length
        ? " (it looks database-major [N, nq], like the official ranks: transpose it)"
        : "";
    throw new SuperglobalError(
      "BAD_FILE",
      `${opts.ranks}: shape (${rows}, ${cols}) ${problem}${hint}`,
      {
        input: opts.ranks,
      },
    );
  }
  const results = evaluateRevisitop(data, rows, cols, gt);
  if (opts.json) {
    write(`${JSON.stringify(revisitopJson(results))}\n`);
    return;
  }
  const name = gt.dataset ?? opts.gnd;
  const dbSize = gt.imlist.length;
  let ranked = `${cols} database items ranked per query`;
  if (cols < dbSize) ranked = `top ${cols} ranked per query (of ${dbSize} or more)`;
  if (cols > dbSize) ranked += ` (${dbSize} dataset + ${cols - dbSize} distractors)`;
  write(`${name}: ${rows} queries, ${ranked}\n`);
  write(formatRevisitopTable(results));
}
