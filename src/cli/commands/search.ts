/**
 * `superglobal search`: exact inner-product search of query descriptors in a database of
 * descriptors, written as int32 ranks [nq, k] (query-major, best first; equal scores: lower id
 * first) and optionally their float32 scores. Database rows that are not finite (a failed image's
 * NaN row) are skipped, and the command says how many.
 */
import type { Command } from "commander";
import { RERANK_MODES, SEARCH_METHODS } from "../../app/photo-index.ts";
import { SuperglobalError } from "../../errors.ts";
import { readMatrixF32, writeNpy } from "../../io/npy.ts";
import { assertWritable } from "../../io/writable.ts";
import { ExactSearch } from "../../search/exact-search.ts";
import { addIndexModelOptions } from "../index-options.ts";
import {
  addAnnExpansionOption,
  addThreadsOption,
  boxOption,
  choiceOption,
  intOption,
} from "../options.ts";
import { type IndexSearchFlags, runIndexSearch } from "./search-index.ts";

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
  const command = program
    .command("search")
    .description(
      "search an index with query images (--index), or search descriptor files by dot product (--db, --queries)",
    )
    .argument("[images...]", "query images (with --index)")
    .option("--index <dir>", "an index made by `superglobal index`")
    .option(
      "--bbox <x1,y1,x2,y2>",
      "with --index: crop every query image to this box first",
      boxOption,
    )
    .option(
      "--rerank <mode>",
      "with --index: adaptive (default), paper, or off",
      choiceOption("--rerank", RERANK_MODES),
      "adaptive",
    )
    .option(
      "--search <method>",
      "with --index: auto (default: exact below the ANN threshold, approximate above), exact, or ann",
      choiceOption("--search", SEARCH_METHODS),
      "auto",
    )
    .option("--json", "with --index: one JSON object per query per line")
    .option("--db <file>", "database descriptors, float32/float64 .npy [N, D]")
    .option("--queries <file>", "query descriptors, float32/float64 .npy [nq, D]")
    .option(
      "--top <k>",
      "results per query (default: 10 with --index, else all N, a full ranking)",
      intOption("--top", 1),
    )
    .option("--out <file>", "output int32 .npy [nq, k] of database row ids")
    .option("--scores <file>", "also write the float32 scores [nq, k]");
  addIndexModelOptions(command);
  addAnnExpansionOption(command);
  addThreadsOption(command);
  command
    .option(
      "--chunk-rows <n>",
      "database rows per block (default 65536)",
      intOption("--chunk-rows", 1),
    )
    .action(async (images: string[], flags: SearchFlags & IndexSearchFlags) => {
      if (flags.index !== undefined) {
        await runIndexSearch(images, { ...flags, json: flags.json === true });
        return;
      }
      for (const name of ["db", "queries", "out"] as const) {
        if (flags[name] === undefined) {
          throw new SuperglobalError(
            "INVALID_ARGUMENT",
            `--${name} is required without --index (search --index PATH QUERY… searches an index)`,
            { input: `--${name}` },
          );
        }
      }
      if (images.length > 0) {
        throw new SuperglobalError(
          "INVALID_ARGUMENT",
          `query images (${images[0]}) need --index; descriptor files are given with --queries`,
          { input: "images" },
        );
      }
      await runSearch(flags);
    });
}

export async function runSearch(flags: SearchFlags): Promise<void> {
  assertWritable(flags.out);
  if (flags.scores !== undefined) assertWritable(flags.scores);
  // Named after their files: the library's errors then name the files.
  const db = { ...readMatrixF32(flags.db), name: flags.db };
  const queries = { ...readMatrixF32(flags.queries), name: flags.queries };
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
    if (result.skipped === db.rows) {
      throw new SuperglobalError(
        "INVALID_ARGUMENT",
        `${flags.db}: none of its ${db.rows} rows is finite (NaN or infinite values: images that failed to extract?)`,
        { input: flags.db },
      );
    }
    if (result.skipped > 0) {
      process.stderr.write(
        `superglobal: skipped ${result.skipped} of the ${db.rows} rows of ${flags.db}: not finite (NaN or infinite values: images that failed to extract); they are never results\n`,
      );
    }
    writeNpy(flags.out, result.ids, [queries.rows, result.k]);
    if (flags.scores !== undefined) writeNpy(flags.scores, result.scores, [queries.rows, result.k]);
  } finally {
    await search.release();
  }
}
