/**
 * `superglobal rerank`: SuperGlobal reranking (MDescAug + RerankwMDA) of initial rankings,
 * written as int32 [nq, k]: per query the reranked top M, then the rest in its original order.
 */
import type { Command } from "commander";
import { invalidArgument, SuperglobalError } from "../../errors.ts";
import { readMatrixF32, readMatrixI32, writeNpy } from "../../io/npy.ts";
import { SuperGlobalReranker } from "../../rerank/superglobal-rerank.ts";
import { floatOption, intOption } from "../options.ts";

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
  program
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
    .option("--beta <x>", "neighbour weight factor", floatOption("--beta", 0), 0.15)
    .option(
      "--threads <n>",
      "onnxruntime threads (default: all cores)",
      intOption("--threads", 1, 1024),
    )
    .requiredOption("--out <file>", "output int32 .npy [nq, k]")
    .action(async (flags: RerankFlags) => {
      await runRerank(flags);
    });
}

export async function runRerank(flags: RerankFlags): Promise<void> {
  const db = readMatrixF32(flags.db);
  const queries = readMatrixF32(flags.queries);
  const ranks = readMatrixI32(flags.ranks);
  if (queries.cols !== db.cols) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${flags.queries}: queries have ${queries.cols} dimensions but the database ${flags.db} has ${db.cols}`,
      { input: flags.queries },
    );
  }
  if (ranks.rows !== queries.rows || ranks.cols > db.rows) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${flags.ranks}: ranks have shape (${ranks.rows}, ${ranks.cols}) but ${flags.queries} has ${queries.rows} queries and ${flags.db} has ${db.rows} rows (expected (${queries.rows}, k ≤ ${db.rows}))`,
      { input: flags.ranks },
    );
  }
  for (let i = 0; i < ranks.data.length; i++) {
    const id = ranks.data[i]!;
    if (id < 0 || id >= db.rows) {
      invalidArgument(
        `${flags.ranks} at [${Math.floor(i / ranks.cols)}, ${i % ranks.cols}]`,
        `a row id of ${flags.db} in [0, ${db.rows})`,
        id,
      );
    }
  }
  const reranker = await SuperGlobalReranker.create({
    M: flags.M,
    K: flags.K,
    beta: flags.beta,
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
  });
  try {
    const result = await reranker.rerankRanks(db, queries, ranks);
    writeNpy(flags.out, result.ranks, [result.rows, result.cols]);
  } finally {
    await reranker.release();
  }
}
