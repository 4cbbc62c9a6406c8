#!/usr/bin/env node
/**
 * The `superglobal` command line. Each subcommand lives in its own module under commands/ and
 * registers itself on the program; this file only wires them together.
 */
import { Command } from "commander";
import { SuperglobalError } from "../errors.ts";
import { VERSION } from "../version.ts";
import { register as registerBuildModel } from "./commands/build-model.ts";
import { register as registerEval } from "./commands/eval.ts";
import { register as registerExtract } from "./commands/extract.ts";
import { register as registerIndex } from "./commands/index.ts";
import { register as registerInfo } from "./commands/info.ts";
import { register as registerModels } from "./commands/models.ts";
import { register as registerRerank } from "./commands/rerank.ts";
import { register as registerSearch } from "./commands/search.ts";
import { register as registerServe } from "./commands/serve.ts";
import { register as registerWorker } from "./commands/worker.ts";

const program = new Command()
  .name("superglobal")
  .description("SuperGlobal image retrieval: descriptors, search, reranking and evaluation")
  .version(VERSION)
  .showHelpAfterError();

// Subcommands register here, one line each, in pipeline order.
const commands: Array<(program: Command) => void> = [
  registerIndex,
  registerWorker,
  registerInfo,
  registerBuildModel,
  registerExtract,
  registerSearch,
  registerServe,
  registerRerank,
  registerEval,
  registerModels,
];

for (const register of commands) register(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Our own errors are user-facing: print the message alone. Anything else is a bug: full stack.
  if (error instanceof SuperglobalError) {
    process.stderr.write(`superglobal: ${error.message}\n`);
  } else {
    process.stderr.write(
      `superglobal: unexpected error\n${(error as Error).stack ?? String(error)}\n`,
    );
  }
  process.exitCode = 1;
}
