/**
 * `superglobal eval --dataset roxford5k|rparis6k --data-dir DIR --checkpoint FILE`: the whole
 * protocol from images, printing the paper's table row (E/M/H mAP, without and with reranking).
 */
import { Extractor } from "../../descriptor/extractor.ts";
import type { ExtractorOptions } from "../../descriptor/options.ts";
import { type Dataset, preflightRevisitop, runRevisitop } from "../../eval/protocol.ts";
import { formatPercent, revisitopJson } from "../../eval/report.ts";
import { PROTOCOLS, type Protocol, type ProtocolResult } from "../../eval/revisitop-map.ts";
import { progress } from "../progress.ts";

export interface EvalDatasetOptions {
  dataset: Dataset;
  dataDir: string;
  /** The model group's options (see `modelOptionsFrom`), threads included. */
  extractor: ExtractorOptions;
  distractors?: string[];
  cacheDir?: string;
  json?: boolean;
}

export async function runEvalDataset(
  opts: EvalDatasetOptions,
  write: (text: string) => void = (text) => process.stdout.write(text),
): Promise<void> {
  // Fail before the model is built: no ground truth, no images.
  preflightRevisitop({
    dataset: opts.dataset,
    dataDir: opts.dataDir,
    ...(opts.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }),
  });
  const extractor = await Extractor.create(opts.extractor);
  const threads = opts.extractor.threads;
  let bar: ReturnType<typeof progress> | undefined;
  const warnings: string[] = [];
  try {
    const result = await runRevisitop({
      dataset: opts.dataset,
      dataDir: opts.dataDir,
      extractor,
      ...(opts.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }),
      ...(opts.distractors === undefined ? {} : { distractors: opts.distractors }),
      ...(threads === undefined ? {} : { threads }),
      onProgress: (_done, total, name) => {
        bar ??= progress(`descriptors ${opts.dataset}`, total);
        bar.tick(name);
      },
      onWarning: (message) => warnings.push(message),
    });
    bar?.stop();
    bar = undefined;
    for (const w of warnings) process.stderr.write(`superglobal: warning: ${w}\n`);
    for (const f of result.failures) process.stderr.write(`superglobal: failed ${f}\n`);
    if (result.failures.length > 0) {
      process.stderr.write(
        `superglobal: ${result.failures.length} image(s) failed and were given zero descriptors: the numbers below are not comparable\n`,
      );
      process.exitCode = 1;
    }
    if (opts.json) {
      write(
        `${JSON.stringify({ dataset: result.dataset, distractors: result.distractors, global: revisitopJson(result.global), rerank: revisitopJson(result.reranked) })}\n`,
      );
      return;
    }
    const name = `${result.dataset}${result.distractors > 0 ? `+${result.distractors} distractors` : ""}`;
    const row = (label: string, r: Record<Protocol, ProtocolResult>) =>
      `${label.padEnd(22)}${PROTOCOLS.map((p) => formatPercent(r[p].map).padStart(8)).join("")}\n`;
    write(
      `${name}: ${result.queries} queries, ${result.database + result.distractors} database images\n`,
    );
    write(`${"mAP (%)".padEnd(22)}${["E", "M", "H"].map((h) => h.padStart(8)).join("")}\n`);
    write(row("SuperGlobal (global)", result.global));
    write(row("SuperGlobal (+rerank)", result.reranked));
  } finally {
    bar?.stop();
    await extractor.release();
  }
}
