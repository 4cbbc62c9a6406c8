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

/** Progress of a download on stderr, in megabytes (the total may become known only later). */
export interface ByteProgress {
  update(received: number, total: number | null): void;
  stop(): void;
}

export function byteProgress(task: string): ByteProgress {
  const mb = (n: number) => (n / 1e6).toFixed(1);
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${task} [{bar}] {percentage}% | {got}/{size} MB | ETA {eta_formatted}`,
      noTTYOutput: true,
      notTTYSchedule: 2000,
      hideCursor: false,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let known: number | null = null;
  return {
    update(received, total) {
      if (!started) {
        started = true;
        bar.start(total ?? Math.max(received, 1), received, { got: mb(received), size: "?" });
      }
      if (total !== null && total !== known) {
        known = total;
        bar.setTotal(total);
      }
      bar.update(total === null ? 0 : received, {
        got: mb(received),
        size: total === null ? "?" : mb(total),
      });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
