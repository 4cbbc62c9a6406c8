/**
 * The server's metrics in the Prometheus text exposition format (version 0.0.4), hand-written:
 * requests by route, method and status; latency histograms of whole requests and of each search
 * stage; gauges for the index size, the extraction queue and the process's memory.
 */

/** Histogram upper bounds, in seconds: 1 ms to 30 s. */
export const BUCKETS_S = [
  0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
] as const;

class Histogram {
  readonly counts = new Array<number>(BUCKETS_S.length).fill(0);
  count = 0;
  sum = 0;

  observe(seconds: number): void {
    this.count += 1;
    this.sum += seconds;
    for (let i = 0; i < BUCKETS_S.length; i++) {
      if (seconds <= (BUCKETS_S[i] as number)) this.counts[i] = (this.counts[i] as number) + 1;
    }
  }
}

/** What the gauges read when /metrics is asked for. */
export interface GaugeSources {
  indexImages: () => number;
  queue: () => { running: number; waiting: number; capacity: number; rejected: number };
}

export type Stage = "queue" | "decode" | "extract" | "search" | "rerank";

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly durations = new Map<string, Histogram>();
  private readonly stages = new Map<Stage, Histogram>();
  private readonly started = Date.now();

  constructor(private readonly gauges: GaugeSources) {}

  /** One finished request: `route` is the route pattern (`/images/:id`), never the raw URL. */
  request(method: string, route: string, status: number, seconds: number): void {
    const key = labels({ method, route, status: String(status) });
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    const hkey = labels({ method, route });
    let h = this.durations.get(hkey);
    if (h === undefined) {
      h = new Histogram();
      this.durations.set(hkey, h);
    }
    h.observe(seconds);
  }

  /** Time one search stage took, in milliseconds. */
  stage(stage: Stage, ms: number): void {
    let h = this.stages.get(stage);
    if (h === undefined) {
      h = new Histogram();
      this.stages.set(stage, h);
    }
    h.observe(ms / 1000);
  }

  /** The exposition text (Content-Type: text/plain; version=0.0.4). */
  render(): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    metric("superglobal_http_requests_total", "counter", "HTTP requests by route, method, status.");
    for (const [key, n] of this.requests) out.push(`superglobal_http_requests_total{${key}} ${n}`);
    metric(
      "superglobal_http_request_duration_seconds",
      "histogram",
      "Time from request to response, by route and method.",
    );
    for (const [key, h] of this.durations) {
      histogramLines(out, "superglobal_http_request_duration_seconds", key, h);
    }
    metric(
      "superglobal_search_stage_seconds",
      "histogram",
      "Time per search stage: queue wait, decode, extraction, search, rerank.",
    );
    for (const [stage, h] of this.stages) {
      histogramLines(out, "superglobal_search_stage_seconds", labels({ stage }), h);
    }
    const q = this.gauges.queue();
    const mem = process.memoryUsage();
    const gauges: Array<[string, string, string, number]> = [
      [
        "superglobal_index_images",
        "gauge",
        "Searchable images in the index.",
        this.gauges.indexImages(),
      ],
      ["superglobal_queue_running", "gauge", "Extraction jobs running.", q.running],
      ["superglobal_queue_depth", "gauge", "Extraction jobs waiting for their turn.", q.waiting],
      ["superglobal_queue_capacity", "gauge", "Most jobs admitted at once.", q.capacity],
      [
        "superglobal_queue_rejected_total",
        "counter",
        "Jobs refused with 503 (queue full).",
        q.rejected,
      ],
      ["process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", mem.rss],
      ["nodejs_heap_used_bytes", "gauge", "V8 heap in use, in bytes.", mem.heapUsed],
      [
        "nodejs_external_memory_bytes",
        "gauge",
        "Memory of buffers outside the V8 heap.",
        mem.external,
      ],
      [
        "process_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        (Date.now() - this.started) / 1000,
      ],
    ];
    for (const [name, type, help, value] of gauges) {
      metric(name, type, help);
      out.push(`${name} ${value}`);
    }
    return `${out.join("\n")}\n`;
  }
}

function histogramLines(out: string[], name: string, key: string, h: Histogram): void {
  const sep = key === "" ? "" : ",";
  BUCKETS_S.forEach((le, i) => {
    out.push(`${name}_bucket{${key}${sep}le="${le}"} ${h.counts[i]}`);
  });
  out.push(`${name}_bucket{${key}${sep}le="+Inf"} ${h.count}`);
  out.push(`${name}_sum{${key}} ${h.sum}`);
  out.push(`${name}_count{${key}} ${h.count}`);
}

/** `a="x",b="y"` with label values escaped as the format requires. */
function labels(values: Record<string, string>): string {
  return Object.entries(values)
    .map(
      ([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`,
    )
    .join(",");
}
