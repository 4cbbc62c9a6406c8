/**
 * `superglobal search --index PATH QUERY...`: the best matches of query images in an index, with
 * the index's own model (loaded once for all queries). Plain output: one line per result,
 * `rank<TAB>score<TAB>path` (a `# query` line first when there are several queries); `--json`:
 * one object per query per line, `{"query", "method", "results": [{"path", "score"}, …]}`, best
 * first, where method says how the candidates were found: "exact" or "ann" (`--search`).
 */
import { Index, type RerankMode, type SearchMethod } from "../../app/photo-index.ts";
import { SuperglobalError } from "../../errors.ts";
import type { Box } from "../../image/crop.ts";
import { type IndexModelFlags, modelSpecFrom } from "../index-options.ts";

export interface IndexSearchFlags extends IndexModelFlags {
  index: string;
  top?: number;
  bbox?: Box;
  rerank: RerankMode;
  search?: SearchMethod;
  annExpansion?: number;
  json: boolean;
  threads?: number;
}

export async function runIndexSearch(queries: string[], flags: IndexSearchFlags): Promise<void> {
  if (queries.length === 0) {
    throw new SuperglobalError(
      "INVALID_ARGUMENT",
      "no query images: give one or more image files",
      {
        input: "queries",
      },
    );
  }
  const spec = modelSpecFrom(flags);
  const index = await Index.open(flags.index, {
    readOnly: true,
    ...(spec === undefined ? {} : { model: spec }),
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    ...(flags.annExpansion === undefined
      ? {}
      : { annParameters: { expansionSearch: flags.annExpansion } }),
  });
  let failed = 0;
  try {
    for (const query of queries) {
      let hits: Awaited<ReturnType<Index["search"]>>["hits"];
      let method: Awaited<ReturnType<Index["search"]>>["method"];
      try {
        ({ hits, method } = await index.search(query, {
          top: flags.top ?? 10,
          rerank: flags.rerank,
          ...(flags.search === undefined ? {} : { search: flags.search }),
          ...(flags.bbox === undefined ? {} : { bbox: flags.bbox }),
        }));
      } catch (error) {
        if (!(error instanceof SuperglobalError)) throw error;
        failed += 1;
        process.stderr.write(`superglobal: query failed: ${error.message}\n`);
        continue;
      }
      if (flags.json) {
        const results = hits.map((h) => ({ path: h.path, score: h.score }));
        process.stdout.write(`${JSON.stringify({ query, method, results })}\n`);
      } else {
        if (queries.length > 1) process.stdout.write(`# ${query}\n`);
        for (const h of hits) process.stdout.write(`${h.rank}\t${h.score.toFixed(4)}\t${h.path}\n`);
      }
    }
  } finally {
    await index.close();
  }
  if (failed > 0) process.exitCode = 1;
}
