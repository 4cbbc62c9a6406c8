/**
 * Progress on stderr for long CLI jobs: a live bar on a terminal, plain periodic lines otherwise
 * (logs, CI), so stdout stays clean for results.
 */
import cliProgress from "cli-progress";

export interface Progress {
  /** Advance by one item; `label` names the item just finished. */
  tick(label?: string): void;
  stop(): void;
}

export function progress(task: string, total: number): Progress {
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${task} [{bar}] {value}/{total} {percentage}% | ETA {eta_formatted} | {label}`,
      noTTYOutput: true,
      notTTYSchedule: 2000,
      hideCursor: false,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { label: "" });
  return {
    tick(label = "") {
      bar.increment(1, { label });
    },
    stop() {
      bar.stop();
    },
  };
}
