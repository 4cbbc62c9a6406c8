/**
 * `superglobal search --index DIR QUERY...` for the crash trials while the CLI's search command
 * does not route `--index` yet: the index search the command will run (runIndexSearch), with
 * main.ts's error handling (our errors: the message and exit 1; anything else: "unexpected
 * error" and the stack). `node --import tsx index-search-child.ts DIR QUERY...`.
 */
import { runIndexSearch } from "../../src/cli/commands/search-index.ts";
import { SuperglobalError } from "../../src/errors.ts";

const [index, ...queries] = process.argv.slice(2);
try {
  await runIndexSearch(queries, { index: index!, rerank: "adaptive", json: false });
} catch (error) {
  if (error instanceof SuperglobalError) {
    process.stderr.write(`superglobal: ${error.message}\n`);
  } else {
    process.stderr.write(
      `superglobal: unexpected error\n${(error as Error).stack ?? String(error)}\n`,
    );
  }
  process.exitCode = 1;
}
