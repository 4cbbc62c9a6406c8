/**
 * Preloaded into a CLI run (`node --import tsx --import ./peak-rss.ts ...`): on exit, writes the
 * process's peak resident set size (getrusage maxrss, KiB) to $SUPERGLOBAL_PEAK_RSS_FILE. The CLI
 * itself is untouched; this is how a test bounds the memory of a whole job.
 */
import { writeFileSync } from "node:fs";

const file = process.env["SUPERGLOBAL_PEAK_RSS_FILE"];
if (file !== undefined) {
  process.on("exit", () => {
    writeFileSync(file, String(process.resourceUsage().maxRSS));
  });
}
