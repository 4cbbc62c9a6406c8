/**
 * `superglobal rerank`: SuperGlobal reranking (MDescAug + RerankwMDA) of initial rankings,
 * written as int32 [nq, k]: per query the reranked top M, then the rest in its original order.
 * Candidates whose database rows are not finite (a failed image's NaN row) are dropped, with a
 * note. The checks of the inputs are the library's; the matrices carry their file names into them.
 */
import type { Command } from "commander";
import { readMatrixF32, readMatrixI32, writeNpy } from "../../io/npy.ts";
import { assertWritable } from "../../io/writable.ts";
import { SuperGlobalReranker } from "../../rerank/superglobal-rerank.ts";
import { addThreadsOption, floatOption, intOption } from "../options.ts";

interface RerankFlags {
  db: string;
  queries: string;
  ranks: string;
  M: number;
  K: number;
  beta: number;
  threads?: number;
  out: string;
}

export function register(program: Command): void {
  const command = program
    .command("rerank")
    .description("SuperGlobal reranking of initial ranks: int32 [nq, k], reranked head then tail")
    .requiredOption("--db <file>", "database descriptors, float32/float64 .npy [N, D]")
    .requiredOption("--queries <file>", "query descriptors, float32/float64 .npy [nq, D]")
    .requiredOption(
      "--ranks <file>",
      "initial ranks, int32/int64 .npy [nq, k] (k ≤ N), e.g. from search",
    )
    .option("--M <n>", "size of the reranked head", intOption("--M", 1), 400)
    .option("--K <n>", "neighbours besides the item itself", intOption("--K", 0), 9)
    .option("--beta <x>", "neighbour weight factor", floatOption("--beta", 0), 0.15);
  addThreadsOption(command);
  command
    .requiredOption("--out <file>", "output int32 .npy [nq, k]")
    .action(async (flags: RerankFlags) => {
      await runRerank(flags);
    });
}

export async function runRerank(flags: RerankFlags): Promise<void> {
  assertWritable(flags.out);
  const db = { ...readMatrixF32(flags.db), name: flags.db };
  const queries = { ...readMatrixF32(flags.queries), name: flags.queries };
  const ranks = { ...readMatrixI32(flags.ranks), name: flags.ranks };
  const reranker = await SuperGlobalReranker.create({
    M: flags.M,
    K: flags.K,
    beta: flags.beta,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
  });
  try {
    const result = await reranker.rerankRanks(db, queries, ranks);
    if (result.dropped.length > 0) {
      const rows = [...result.dropped.subarray(0, 10)].join(", ");
      const more = result.dropped.length > 10 ? ", …" : "";
      process.stderr.write(
        `superglobal: dropped ${result.dropped.length} candidate row(s) of ${flags.db} that are not finite (row${result.dropped.length > 1 ? "s" : ""} ${rows}${more}): images that failed to extract; the output has ${result.cols} columns\n`,
      );
    }
    writeNpy(flags.out, result.ranks, [result.rows, result.cols]);
  } finally {
    await reranker.release();
  }
}
