/**
 * `superglobal search`: exact inner-product search of query descriptors in a database of
 * descriptors, written as int32 ranks [nq, k] (query-major, best first; equal scores: lower id
 * first) and optionally their float32 scores.
 */
import type { Command } from "commander";
import { SuperglobalError } from "../../errors.ts";
import { readMatrixF32, writeNpy } from "../../io/npy.ts";
import { ExactSearch } from "../../search/exact-search.ts";
import { intOption } from "../options.ts";

interface SearchFlags {
  db: string;
  queries: string;
  top?: number;
  out: string;
  scores?: string;
  threads?: number;
  chunkRows?: number;
}

export function register(program: Command): void {
  program
    .command("search")
    .description("exact search by dot product: int32 ranks [nq, k] of database rows per query")
    .requiredOption("--db <file>", "database descriptors, float32/float64 .npy [N, D]")
    .requiredOption("--queries <file>", "query descriptors, float32/float64 .npy [nq, D]")
    .option(
      "--top <k>",
      "results per query (default: all N, a full ranking)",
      intOption("--top", 1),
    )
    .requiredOption("--out <file>", "output int32 .npy [nq, k] of database row ids")
    .option("--scores <file>", "also write the float32 scores [nq, k]")
    .option(
      "--threads <n>",
      "onnxruntime threads (default: all cores)",
      intOption("--threads", 1, 1024),
    )
    .option(
      "--chunk-rows <n>",
      "database rows per block (default 65536)",
      intOption("--chunk-rows", 1),
    )
    .action(async (flags: SearchFlags) => {
      await runSearch(flags);
    });
}

export async function runSearch(flags: SearchFlags): Promise<void> {
  const db = readMatrixF32(flags.db);
  const queries = readMatrixF32(flags.queries);
  if (queries.cols !== db.cols) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      `${flags.queries}: queries have ${queries.cols} dimensions but the database ${flags.db} has ${db.cols}`,
      { input: flags.queries },
    );
  }
  if (db.rows === 0) {
    throw new SuperglobalError("INVALID_ARGUMENT", `${flags.db}: the database has no rows`, {
      input: flags.db,
    });
  }
  const search = await ExactSearch.create({
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    ...(flags.chunkRows === undefined ? {} : { chunkRows: flags.chunkRows }),
  });
  try {
    const result = await search.search(db, queries, flags.top ?? db.rows);
    writeNpy(flags.out, result.ids, [queries.rows, result.k]);
    if (flags.scores !== undefined) writeNpy(flags.scores, result.scores, [queries.rows, result.k]);
  } finally {
    await search.release();
  }
}
