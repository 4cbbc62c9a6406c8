/**
 * A bounded job queue: at most `concurrency` jobs run at once and at most `capacity` are admitted
 * (running plus waiting). A job offered to a full queue is refused at once with QueueFullError,
 * which the server answers with 503 and a Retry-After, so memory stays flat under any load: an
 * extraction holds a decoded image and the model's buffers, and only a few exist at a time.
 */
export class QueueFullError extends Error {
  constructor(
    readonly capacity: number,
    /** Seconds after which a retry is likely to be admitted. */
    readonly retryAfterS: number,
  ) {
    super(`the server is busy: ${capacity} request(s) already queued; retry in ${retryAfterS} s`);
    this.name = "QueueFullError";
  }
}

export interface QueueStats {
  running: number;
  waiting: number;
  capacity: number;
  /** Jobs refused because the queue was full, since start. */
  rejected: number;
  /** Jobs finished (or failed) since start. */
  completed: number;
}

export class JobQueue {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private rejected = 0;
  private completed = 0;
  /** Moving average of a job's run time, in ms (for Retry-After). */
  private averageMs = 0;

  constructor(
    readonly capacity: number,
    readonly concurrency = 1,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be ≥ 1");
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError("concurrency must be ≥ 1");
    }
  }

  /** Jobs admitted and not finished: running plus waiting. */
  get depth(): number {
    return this.running + this.waiting.length;
  }

  get full(): boolean {
    return this.depth >= this.capacity;
  }

  get stats(): QueueStats {
    return {
      running: this.running,
      waiting: this.waiting.length,
      capacity: this.capacity,
      rejected: this.rejected,
      completed: this.completed,
    };
  }

  /** Seconds until a place is likely free: the work ahead divided among the runners, at least 1. */
  retryAfterS(): number {
    const ms = ((this.depth + 1) * Math.max(this.averageMs, 100)) / this.concurrency;
    return Math.max(1, Math.min(60, Math.ceil(ms / 1000)));
  }

  /** Counts a refusal made before offering the job (e.g. before reading a request's body). */
  reject(): QueueFullError {
    this.rejected += 1;
    return new QueueFullError(this.capacity, this.retryAfterS());
  }

  /**
   * Runs `job` when a runner is free; throws QueueFullError at once when `capacity` jobs are
   * already admitted. `waitedMs` tells the job how long it waited for its turn.
   */
  async run<T>(job: (waitedMs: number) => Promise<T>): Promise<T> {
    if (this.full) throw this.reject();
    const queuedAt = performance.now();
    if (this.running >= this.concurrency) {
      await new Promise<void>((start) => this.waiting.push(start));
    } else {
      this.running += 1;
    }
    const started = performance.now();
    try {
      return await job(started - queuedAt);
    } finally {
      const ms = performance.now() - started;
      this.averageMs = this.averageMs === 0 ? ms : 0.8 * this.averageMs + 0.2 * ms;
      this.completed += 1;
      const next = this.waiting.shift();
      if (next === undefined) this.running -= 1;
      else next(); // the runner's place passes straight to the next job
    }
  }
}
