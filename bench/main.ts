/**
 * `npm run bench -- <name> [options]`: speed and memory benchmarks, each against a peer run in the
 * same invocation (the official PyTorch code, faiss), with ratios, and the retrieval-quality
 * benchmark on real photos (`quality`); results go to bench/results/.
 */
const benches: Record<string, () => Promise<{ main(args: string[]): Promise<void> }>> = {
  distributed: () => import("./distributed.ts"),
  "calibrate-default": () => import("./calibrate-default.ts"),
  extract: () => import("./extract.ts"),
  // `index throughput …`: indexing speed end to end; `index [open] …`: opening 1M descriptors.
  index: async () => {
    if (process.argv[3] === "throughput") {
      const m = await import("./index-throughput.ts");
      return { main: (args: string[]) => m.main(args.slice(1)) };
    }
    const m = await import("./index-open.ts");
    return { main: (args: string[]) => m.main(args[0] === "open" ? args.slice(1) : args) };
  },
  "learn-whitening": () => import("./learn-whitening.ts"),
  quality: () => import("./quality.ts"),
  ann: () => import("./ann.ts"),
  rerank: () => import("./rerank.ts"),
  search: () => import("./search.ts"),
  stress: () => import("./stress.ts"),
  serve: () => import("./serve.ts"),
};

const [name, ...args] = process.argv.slice(2);
const load = name === undefined ? undefined : benches[name];
if (load === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(benches).join("|")}> [options]\n`);
  process.exit(2);
}
await (await load()).main(args);
